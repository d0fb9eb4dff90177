// Package reconcile proves a sale's books: it reads every node's stat.log,
// the sale's state in Redis and the order events on Kafka, and checks the
// invariants of MISSION.md — no oversell, conservation, per-user limit, every
// success real (one order in Redis, one order.created on Kafka, and nothing
// else), expiry exactly once and, when asked, no undersell.
//
// Run does it in two steps that never mix: collect reads all the evidence
// (evidence.go), then each check — one small named function (checks.go) —
// judges it, so a check can be tested on evidence built by hand.
package reconcile

import (
	"context"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/store"
	"github.com/redis/go-redis/v9"
)

// Input says where the evidence is.
type Input struct {
	Sale          string
	Redis         redis.UniversalClient
	Brokers       []string
	Topic         string
	StatLogs      []string // every node's stat.log
	Killed        []string // nodes known to have been killed (their unflushed lines may be missing)
	ExpectSellout bool     // demand exceeded supply: every unit must be paid or pending
	// RedisCrashed says Redis was killed mid-sale. A buy script it ran but
	// never answered leaves an order nobody was told of: no ok line, no
	// order.created event (the node answered 503 without an order id).
	// Such orders pass, counted, while unpaid: expiry returns their units.
	RedisCrashed bool
	// Store, when set, adds the third record: every order in Redis (or,
	// for an archived sale, the store's own) and every order.* event match
	// one row in PostgreSQL with the same final status. StoreWait bounds
	// how long the check waits for the store's consumer to catch up.
	Store     *store.Store
	StoreWait time.Duration
	// Client is what clients were told (a client log, see ReadClientLog);
	// when given, the client view is checked too. ClientInDoubt widens the
	// window after a failed answer in which an order of that buyer still
	// counts against it.
	Client        []ClientAnswer
	ClientInDoubt time.Duration
}

// Check is one invariant's verdict.
type Check struct {
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Detail string   `json:"detail"`
	Sample []string `json:"sample,omitempty"` // a few offending ids
}

// NodeSummary is what one node's stat.log says it answered.
type NodeSummary struct {
	Node      string         `json:"node"`
	Files     []string       `json:"files"`
	Lines     int            `json:"lines"`
	OK        int            `json:"ok"`
	SoldOut   int            `json:"sold_out"`
	Results   map[string]int `json:"results"`
	Malformed int            `json:"malformed"`
	Truncated bool           `json:"truncated"`
	Killed    bool           `json:"killed"`
	// Lost is the lines the node said (in gap records) it could not write:
	// its buffer was full or the disk refused them.
	Lost int64 `json:"lost_lines"`
}

// Note is a named finding that is not a failure: evidence known to be
// missing or damaged, with counts, so it is not mistaken for a discrepancy.
type Note struct {
	Name   string `json:"name"`
	Count  int64  `json:"count"`
	Detail string `json:"detail"`
}

// Report is the outcome of a reconciliation.
type Report struct {
	Sale       string          `json:"sale"`
	Books      flashsale.Books `json:"books"`
	Orders     map[string]int  `json:"orders_by_status"`
	Nodes      []*NodeSummary  `json:"nodes"`
	Events     int             `json:"order_created_events"`
	Checks     []Check         `json:"checks"`
	Warnings   []string        `json:"warnings,omitempty"`
	Notes      []Note          `json:"notes,omitempty"`
	OK         bool            `json:"ok"`
	UnloggedBy map[string]int  `json:"orders_without_statlog_line_by_node,omitempty"`
	PerUserMax int64           `json:"per_user_max_active"`
	Archived   bool            `json:"archived"` // the sale's records left Redis: orders are the store's
	SaleLimit  int64           `json:"per_user_limit"`
}

// Run gathers the evidence and checks the books.
func Run(ctx context.Context, in Input) (*Report, error) {
	ev, err := collect(ctx, in)
	if err != nil {
		return nil, err
	}
	return judge(ev), nil
}
