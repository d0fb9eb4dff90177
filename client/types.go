package client

import "time"

// CreateSale is the body of POST /v1/sales (admin). Zero PerUserLimit and
// an empty PayTimeout take the server's defaults (1 and its pay_timeout).
type CreateSale struct {
	ID           string     `json:"id"`
	Name         string     `json:"name,omitempty"`
	Stock        int64      `json:"stock"`
	PriceCents   int64      `json:"price_cents"`
	PerUserLimit int64      `json:"per_user_limit,omitempty"`
	PayTimeout   string     `json:"pay_timeout,omitempty"` // a Go duration, e.g. "5m"
	StartsAt     *time.Time `json:"starts_at,omitempty"`
	EndsAt       *time.Time `json:"ends_at,omitempty"`
	WaitingRoom  *Room      `json:"waiting_room,omitempty"`
}

// Room is a sale's waiting-room settings: AdmitPerSec buyers let through a
// second, the queue opening PreQueue (a Go duration) before starts_at.
type Room struct {
	Enabled     bool   `json:"enabled"`
	AdmitPerSec int64  `json:"admit_per_sec"`
	PreQueue    string `json:"pre_queue,omitempty"`
}

// Sale is GET /v1/sales/{id} (and the 201 of POST /v1/sales): a sale's
// settings and books.
type Sale struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Stock        int64      `json:"stock"`
	PriceCents   int64      `json:"price_cents"`
	PerUserLimit int64      `json:"per_user_limit"`
	PayTimeout   string     `json:"pay_timeout"`
	StartsAt     *time.Time `json:"starts_at,omitempty"`
	EndsAt       *time.Time `json:"ends_at,omitempty"`
	Remaining    int64      `json:"remaining"`
	Pending      int64      `json:"pending"`
	Paid         int64      `json:"paid"`
	Expired      int64      `json:"expired"`
	Cancelled    int64      `json:"cancelled"`
	Aborted      int64      `json:"aborted"`
	WaitingRoom  *Room      `json:"waiting_room,omitempty"`
}

// Created is the number of orders the sale ever created that stood: in any
// status but aborted. An aborted order was undone before its buyer heard of
// it (the buy was answered with an error), so no client counts it as a win.
func (s Sale) Created() int64 { return s.Pending + s.Paid + s.Expired + s.Cancelled }

// Released is the number of orders whose unit went back to stock (expired
// or cancelled), so it could be sold again.
func (s Sale) Released() int64 { return s.Expired + s.Cancelled }

// Bought is the 201 of POST /v1/sales/{id}/buy: a pending order to pay by
// ExpiresAt. OrderID is the opaque public id ("<sale>.<seq>.<tag>").
type Bought struct {
	OrderID   string    `json:"order_id"`
	SaleID    string    `json:"sale_id"`
	UserID    string    `json:"user_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Order is GET /v1/orders/{id} (and the 200 of the payment callback and of
// cancel).
type Order struct {
	OrderID   string    `json:"order_id"`
	SaleID    string    `json:"sale_id"`
	UserID    string    `json:"user_id"`
	Node      string    `json:"node"`
	Status    string    `json:"status"` // pending, paid, expired, cancelled, aborted
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// MyOrders is GET /v1/users/me/orders?sale=: the buyer's live (pending or
// paid) orders of one sale.
type MyOrders struct {
	Orders []Order `json:"orders"`
}

// PaymentCallback is the body of POST /v1/payments/callback, which the
// payment provider signs (header Flashsale-Signature).
type PaymentCallback struct {
	OrderID     string `json:"order_id"`
	PaymentID   string `json:"payment_id"`
	AmountCents int64  `json:"amount_cents"`
}

// SendEnvelope is the body of POST /v1/envelopes.
type SendEnvelope struct {
	SenderID   string `json:"sender_id,omitempty"` // the token's subject when empty; another user is 403
	TotalCents int64  `json:"total_cents"`
	Count      int64  `json:"count"`
	ExpiresIn  string `json:"expires_in,omitempty"` // a Go duration
}

// Sent is the 201 of POST /v1/envelopes.
type Sent struct {
	EnvelopeID string    `json:"envelope_id"`
	SenderID   string    `json:"sender_id"`
	TotalCents int64     `json:"total_cents"`
	Count      int64     `json:"count"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Opened is the 200 of POST /v1/envelopes/{id}/open.
type Opened struct {
	EnvelopeID  string `json:"envelope_id"`
	UserID      string `json:"user_id"`
	AmountCents int64  `json:"amount_cents"`
}

// Envelope is GET /v1/envelopes/{id}: an envelope's books.
type Envelope struct {
	EnvelopeID     string     `json:"envelope_id"`
	SenderID       string     `json:"sender_id"`
	TotalCents     int64      `json:"total_cents"`
	Count          int64      `json:"count"`
	State          string     `json:"state"` // "open" or "refunded"
	CreatedAt      time.Time  `json:"created_at"`
	ExpiresAt      time.Time  `json:"expires_at"`
	Opened         int64      `json:"opened"`
	OpenedCents    int64      `json:"opened_cents"`
	Remaining      int64      `json:"remaining"`
	RemainingCents int64      `json:"remaining_cents"`
	RefundedCents  int64      `json:"refunded_cents"`
	Undone         int64      `json:"undone"`
	Opens          []OpenView `json:"opens"`
	Ledger         Ledger     `json:"ledger"`
	Problems       []string   `json:"problems,omitempty"`
}

// OpenView is one open of an envelope, by open number.
type OpenView struct {
	UserID      string `json:"UserID"`
	AmountCents int64  `json:"AmountCents"`
	OpenedMs    int64  `json:"OpenedMs"`
	Node        string `json:"Node"`
	Seq         int64  `json:"Seq"`
}

// Ledger is how an envelope's or campaign's wallet entries add up.
type Ledger struct {
	SumCents int64    `json:"sum_cents"`
	Entries  int      `json:"entries,omitempty"` // envelopes only
	Missing  []string `json:"missing,omitempty"`
}

// CreateShake is the body of POST /v1/shakes (admin): give BudgetCents
// (split exactly) or MinCents and MaxCents (each envelope in range).
type CreateShake struct {
	ID             string     `json:"id"`
	TotalEnvelopes int64      `json:"total_envelopes"`
	BudgetCents    int64      `json:"budget_cents,omitempty"`
	MinCents       int64      `json:"min_cents,omitempty"`
	MaxCents       int64      `json:"max_cents,omitempty"`
	RatePerSec     int64      `json:"rate_per_sec"`
	StartsAt       *time.Time `json:"starts_at,omitempty"`
	MaxWinsPerUser int64      `json:"max_wins_per_user,omitempty"`
}

// ShakeCreated is the 201 of POST /v1/shakes.
type ShakeCreated struct {
	ID             string    `json:"id"`
	TotalEnvelopes int64     `json:"total_envelopes"`
	RatePerSec     int64     `json:"rate_per_sec"`
	Mode           string    `json:"mode"`
	BudgetCents    int64     `json:"budget_cents"`
	MinCents       int64     `json:"min_cents"`
	MaxCents       int64     `json:"max_cents"`
	MaxWinsPerUser int64     `json:"max_wins_per_user"`
	StartsAt       time.Time `json:"starts_at"`
}

// Shaken is the 200 of POST /v1/shakes/{id}/shake: Won false is the common
// answer.
type Shaken struct {
	Won         bool   `json:"won"`
	AmountCents int64  `json:"amount_cents,omitempty"`
	EnvelopeID  string `json:"envelope_id,omitempty"`
}

// Shake is GET /v1/shakes/{id}: a campaign's books.
type Shake struct {
	ID             string    `json:"id"`
	Mode           string    `json:"mode"`
	TotalEnvelopes int64     `json:"total_envelopes"`
	RatePerSec     int64     `json:"rate_per_sec"`
	StartsAt       time.Time `json:"starts_at"`
	Now            time.Time `json:"now"`
	Released       int64     `json:"released"`
	Taken          int64     `json:"taken"`
	Undone         int64     `json:"undone"`
	PaidCents      int64     `json:"paid_cents"`
	BudgetCents    int64     `json:"budget_cents,omitempty"`
	Wins           int64     `json:"wins"`
	WinsCents      int64     `json:"wins_cents"`
	Winners        int64     `json:"winners"`
	Ledger         Ledger    `json:"ledger"`
	Problems       []string  `json:"problems,omitempty"`
}

// Credit is the body of POST /v1/users/{id}/wallet/credit (admin): money
// entering a wallet, once per Reference.
type Credit struct {
	Cents     int64  `json:"cents"`
	Reference string `json:"reference"`
}

// Credited is the 200 of a credit; Applied is false when the reference was
// credited before (nothing changed).
type Credited struct {
	UserID       string `json:"user_id"`
	Reference    string `json:"reference"`
	Cents        int64  `json:"cents"`
	BalanceCents int64  `json:"balance_cents"`
	Applied      bool   `json:"applied"`
}

// Wallet is GET /v1/users/{id}/wallet (its owner only).
type Wallet struct {
	UserID       string  `json:"user_id"`
	BalanceCents int64   `json:"balance_cents"`
	Entries      int64   `json:"entries"`
	Recent       []Entry `json:"recent"`
}

// Entry is one wallet entry.
type Entry struct {
	ID          string    `json:"id"`
	AmountCents int64     `json:"amount_cents"`
	AppliedAt   time.Time `json:"applied_at"`
}
