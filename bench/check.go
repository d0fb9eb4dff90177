package bench

import (
	"context"
	"errors"
	"fmt"
)

// Tally is what the clients of one run saw. It is plain data so a caller can
// also build one by hand (tests) or from another generator's log.
type Tally struct {
	Scenario   string
	Requests   int64
	Successes  int64 // replies that won something
	Unanswered int64 // requests with no reply (transport errors, timeouts): their outcome is unknown to the client
	Cents      int64 // sum of Wins[i].Cents
	Wins       []Win
}

// Books is the server's side of the same run, as read from the API (or, later,
// from reconcile: Redis, Kafka and stat.log). Counts that are about the run
// itself (Created, IssuedCount, IssuedCents) are deltas over the run, so a
// sale or envelope that existed before still balances.
type Books struct {
	// Ticket sale.
	Stock        int64
	PerUserLimit int64 // 0: not checked
	Remaining    int64
	Pending      int64
	Paid         int64
	Created      int64 // orders the server created during the run (any status but aborted)
	Released     int64 // orders of the run's sale expired or cancelled during the run: their units could be sold again
	Settled      bool  // no operation in flight: remaining+pending+paid must equal Stock

	// Envelope (open) or shake campaign.
	TotalCents  int64 // the envelope's or campaign's total; 0: not checked
	Count       int64 // its number of shares; 0: not checked
	IssuedCount int64 // shares opened/won during the run
	IssuedCents int64 // their amount

	// Orders (buy) or envelopes (send) the server was asked about, by id.
	// An id the server did not know is present with Found == false. When
	// AllOrders is set, Orders is the server's complete set for the run and
	// a client win missing from it is unknown too.
	Orders    map[string]BookOrder
	AllOrders bool
}

// BookOrder is the server's view of one order (or envelope, for send).
type BookOrder struct {
	Found  bool
	User   string // the buyer (or sender)
	Status string // pending, paid, expired, cancelled, aborted
}

// maxReported bounds how many mismatches of one kind Check lists; a broken
// run would otherwise print one line per request.
const maxReported = 5

// Check compares the client tally with the server's books and returns every
// mismatch joined into one error, or nil when they agree. The rules are the
// mission's books as a client can see them:
//
//   - every success is real: each won order id is distinct and known to the
//     server with the same user, and an order the client paid is paid;
//   - no oversell: successes ≤ stock + units released during the run (an
//     expired or cancelled order's unit is sold again), wins still active
//     ≤ stock, remaining+pending+paid ≤ stock (= once settled), and per
//     user at most the limit of active orders;
//   - nothing else: if every request got a reply, the server created exactly
//     as many orders as clients were told about (a request with no reply may
//     have created one, so then only client ≤ server is required);
//   - envelopes and shakes: each share ≥ 1 cent, shares ≤ count, amounts ≤
//     total, one open per user, and the client's count and cents equal what
//     the server issued.
//
// ctx is accepted so a future Books source that needs I/O per comparison can
// be cancelled; Check itself does none.
func Check(ctx context.Context, t Tally, b Books) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if t.Scenario != ScenarioGet && int64(len(t.Wins)) != t.Successes {
		add("tally lists %d wins but counts %d successes", len(t.Wins), t.Successes)
	}
	switch t.Scenario {
	case ScenarioBuy, ScenarioSend:
		checkIDs(t, b, add)
		if t.Scenario == ScenarioSend {
			break
		}
		if t.Successes > b.Stock+b.Released {
			add("oversell: clients won %d units of a stock of %d (%d released and sold again)", t.Successes, b.Stock, b.Released)
		}
		var active int64
		for _, w := range t.Wins {
			if o, ok := b.Orders[w.ID]; ok && (o.Status == "pending" || o.Status == "paid") {
				active++
			}
		}
		if active > b.Stock {
			add("oversell: clients hold %d active orders of a stock of %d", active, b.Stock)
		}
		if held := b.Remaining + b.Pending + b.Paid; held > b.Stock || (b.Settled && held != b.Stock) {
			add("books do not balance: remaining %d + pending %d + paid %d = %d, stock %d", b.Remaining, b.Pending, b.Paid, held, b.Stock)
		}
		if b.Remaining < 0 {
			add("remaining is negative: %d", b.Remaining)
		}
		if t.Successes > b.Created {
			add("clients were told of %d orders but the server created %d during the run", t.Successes, b.Created)
		} else if t.Unanswered == 0 && t.Successes < b.Created {
			add("the server created %d orders during the run but clients, who got every reply, were told of %d", b.Created, t.Successes)
		}
		if b.PerUserLimit > 0 {
			active := map[string]int64{}
			for _, w := range t.Wins {
				if o, ok := b.Orders[w.ID]; ok && (o.Status == "pending" || o.Status == "paid") {
					active[w.User]++
				}
			}
			n := 0
			for u, k := range active {
				if k > b.PerUserLimit && n < maxReported {
					add("user %s holds %d active orders, limit %d", u, k, b.PerUserLimit)
					n++
				}
			}
		}
	case ScenarioOpen, ScenarioShake:
		opened := map[string]bool{}
		n := 0
		for _, w := range t.Wins {
			if w.Cents < 1 && n < maxReported {
				add("user %s got a share of %d cents", w.User, w.Cents)
				n++
			}
			if t.Scenario == ScenarioOpen {
				if opened[w.User] && n < maxReported {
					add("user %s opened the envelope twice", w.User)
					n++
				}
				opened[w.User] = true
			}
		}
		if b.TotalCents > 0 && t.Cents > b.TotalCents {
			add("clients won %d cents of a total of %d", t.Cents, b.TotalCents)
		}
		if b.Count > 0 && t.Successes > b.Count {
			add("clients won %d shares of %d", t.Successes, b.Count)
		}
		if t.Successes > b.IssuedCount || t.Cents > b.IssuedCents {
			add("clients won %d shares / %d cents but the server issued %d / %d", t.Successes, t.Cents, b.IssuedCount, b.IssuedCents)
		} else if t.Unanswered == 0 && (t.Successes != b.IssuedCount || t.Cents != b.IssuedCents) {
			add("the server issued %d shares / %d cents but clients, who got every reply, won %d / %d", b.IssuedCount, b.IssuedCents, t.Successes, t.Cents)
		}
	}
	return errors.Join(errs...)
}

// checkIDs checks that won ids are distinct and that the server knows each
// one it was asked about, with the same user.
func checkIDs(t Tally, b Books, add func(string, ...any)) {
	seen := make(map[string]bool, len(t.Wins))
	var dup, unknown, wrongUser, notPaid int
	for _, w := range t.Wins {
		if w.ID == "" {
			if dup < maxReported {
				add("a win by %s has no id", w.User)
			}
			dup++
			continue
		}
		if seen[w.ID] {
			if dup < maxReported {
				add("id %s was won twice", w.ID)
			}
			dup++
		}
		seen[w.ID] = true
		o, asked := b.Orders[w.ID]
		if !asked && !b.AllOrders {
			continue
		}
		switch {
		case !o.Found:
			if unknown < maxReported {
				add("%s won %s, which the server does not know", w.User, w.ID)
			}
			unknown++
		case o.User != w.User:
			if wrongUser < maxReported {
				add("%s won %s, which the server gives to %s", w.User, w.ID, o.User)
			}
			wrongUser++
		case w.Paid && o.Status != "paid":
			if notPaid < maxReported {
				add("%s paid %s but the server says %s", w.User, w.ID, o.Status)
			}
			notPaid++
		}
	}
	if n := unknown - maxReported; n > 0 {
		add("... and %d more unknown ids", n)
	}
}
