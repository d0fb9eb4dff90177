package waitroom

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/order"
)

// Ticket is a buyer's place in a sale's waiting room. It is handed out
// signed, so any node can check it without asking Redis.
type Ticket struct {
	Sale      string
	Buyer     string
	Seq       int64 // join order: the n-th ticket of the sale
	ExpiresMs int64
}

const ticketVersion = "q1"

// macLen is the signature length kept (128 bits of HMAC-SHA256).
const macLen = 16

// Encode signs t with key: q1.<sale>.<buyer>.<seq>.<expires_ms>.<mac>.
// Ids never contain dots (flashsale.ValidID), so the fields split cleanly.
func (t Ticket) Encode(key []byte) string {
	body := t.body()
	return body + "." + base64.RawURLEncoding.EncodeToString(mac(key, body))
}

func (t Ticket) body() string {
	return ticketVersion + "." + t.Sale + "." + t.Buyer + "." + strconv.FormatInt(t.Seq, 10) + "." + strconv.FormatInt(t.ExpiresMs, 10)
}

func mac(key []byte, body string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(body))
	return h.Sum(nil)[:macLen]
}

// Errors of ticket checks; api maps their codes to statuses.
var (
	ErrNoTicket    = flashsale.Errorf(flashsale.EUNAUTHORIZED, "this sale has a waiting room: join it with POST /v1/sales/{id}/queue and send the ticket in X-Queue-Ticket")
	ErrBadTicket   = flashsale.Errorf(flashsale.EUNAUTHORIZED, "queue ticket is not valid for this buyer and sale")
	ErrExpired     = flashsale.Errorf(flashsale.EEXPIRED, "queue ticket has expired; join again")
	ErrNotAdmitted = flashsale.Errorf(flashsale.ENOTADMITTED, "your turn in the waiting room has not come yet")
	// ErrUsed is answered by the buy script, which alone knows whether a
	// ticket has bought (see Permit).
	ErrUsed = order.ErrTicketUsed
)

// ParseTicket checks s's signature with key and that it was issued for
// sale and buyer, and returns it. Expiry is the caller's check (it needs a
// clock). Every failure is ErrBadTicket: a forger learns nothing about which
// part was wrong.
func ParseTicket(key []byte, s, sale, buyer string) (Ticket, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 || len(s) > 256 {
		return Ticket{}, ErrBadTicket
	}
	body, sig := s[:i], s[i+1:]
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(key, body)) {
		return Ticket{}, ErrBadTicket
	}
	parts := strings.Split(body, ".")
	if len(parts) != 5 || parts[0] != ticketVersion || parts[1] != sale || parts[2] != buyer {
		return Ticket{}, ErrBadTicket
	}
	seq, err1 := strconv.ParseInt(parts[3], 10, 64)
	exp, err2 := strconv.ParseInt(parts[4], 10, 64)
	if err1 != nil || err2 != nil || seq < 1 {
		return Ticket{}, ErrBadTicket
	}
	return Ticket{Sale: sale, Buyer: buyer, Seq: seq, ExpiresMs: exp}, nil
}
