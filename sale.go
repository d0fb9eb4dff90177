package flashsale

import (
	"strconv"
	"strings"
	"time"
)

// MaxIDLen caps every id (sale, user, order, envelope) so keys stay small.
const MaxIDLen = 64

// ValidID reports whether s is a usable id: 1–64 characters from
// [A-Za-z0-9_-:@]. Dots are reserved as the separator inside order ids and
// '|' and braces never appear, so ids can sit inside Redis records and hash
// tags without escaping.
func ValidID(s string) bool { return validID(s) }

// ValidIDBytes is ValidID for bytes, so a parser can check an id in its
// input without converting it to a string first.
func ValidIDBytes(b []byte) bool { return validID(b) }

func validID[T ~string | ~[]byte](s T) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_' || c == '-' || c == ':' || c == '@':
		default:
			return false
		}
	}
	return true
}

// Sale is a ticket sale: a fixed stock sold to users, each limited to
// PerUserLimit active (pending or paid) orders.
type Sale struct {
	ID           string
	Name         string
	Stock        int64
	PriceCents   int64
	PerUserLimit int64
	PayTimeout   time.Duration
	StartsAt     time.Time // zero: open from creation
	EndsAt       time.Time // zero: open until sold out
	WaitingRoom  WaitingRoom
}

// WaitingRoom is a sale's optional fair queue (package waitroom): buyers
// join it, are admitted AdmitPerSec a second, and only admitted buyers may
// buy. Everyone who joined in the PreQueue window before StartsAt is
// shuffled once at the opening; later joiners are served in arrival order.
type WaitingRoom struct {
	Enabled     bool
	AdmitPerSec int64
	PreQueue    time.Duration // how long before StartsAt joining opens; 0: from the opening
}

// Books are a sale's counters. Once in-flight operations settle,
// Remaining + Pending + Paid == Stock; Expired, Cancelled and Aborted count
// orders whose unit went back to Remaining.
type Books struct {
	Stock     int64
	Remaining int64
	Pending   int64
	Paid      int64
	Expired   int64
	Cancelled int64
	Aborted   int64
}

// Balanced reports whether the conservation law holds.
func (b Books) Balanced() bool { return b.Remaining+b.Pending+b.Paid == b.Stock }

// OrderStatus is where an order is in its life.
type OrderStatus string

// Order statuses. Pending orders hold a unit until paid, cancelled or expired;
// aborted orders were undone because they could not be made durable.
const (
	OrderPending   OrderStatus = "pending"
	OrderPaid      OrderStatus = "paid"
	OrderCancelled OrderStatus = "cancelled"
	OrderExpired   OrderStatus = "expired"
	OrderAborted   OrderStatus = "aborted"
)

// Order is one unit held or bought by one user.
type Order struct {
	ID        string
	SaleID    string
	UserID    string
	Node      string // the node that sold it
	Status    OrderStatus
	CreatedAt time.Time
	ExpiresAt time.Time // the pay deadline
}

// OrderID builds the public id of order number n of a sale: "<sale>.<n>".
func OrderID(saleID string, n int64) string {
	return saleID + "." + strconv.FormatInt(n, 10)
}

// AppendOrderID is OrderID without allocation, for the hot path.
func AppendOrderID(b []byte, saleID string, n int64) []byte {
	b = append(b, saleID...)
	b = append(b, '.')
	return strconv.AppendInt(b, n, 10)
}

// ParseOrderID splits an order id into its sale id and order number.
func ParseOrderID(id string) (saleID string, n int64, err error) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 || len(id) > MaxIDLen+21 {
		return "", 0, Errorf(EINVALID, "order id must look like <sale>.<number>")
	}
	saleID = id[:i]
	n, perr := strconv.ParseInt(id[i+1:], 10, 64)
	if perr != nil || n <= 0 || !ValidID(saleID) {
		return "", 0, Errorf(EINVALID, "order id must look like <sale>.<number>")
	}
	return saleID, n, nil
}
