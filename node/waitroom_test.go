package node_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/waitroom"
)

const roomSecret = "test-room-secret"

func roomNode(t *testing.T) (*e2e.Env, *e2e.Node) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) {
		c.WaitingRoom.Secret = roomSecret
		c.WaitingRoom.Tick = 20 * time.Millisecond
		c.WaitingRoom.Lease = 200 * time.Millisecond
	})
	return e, n
}

func join(t *testing.T, url, sale, user string) e2e.Reply {
	t.Helper()
	return e2e.Do(t, "POST", fmt.Sprintf("%s/v1/sales/%s/queue", url, sale), "", e2e.As(t, user)...)
}

func poll(t *testing.T, url, sale, user, ticket string) e2e.Reply {
	t.Helper()
	return e2e.Do(t, "GET", fmt.Sprintf("%s/v1/sales/%s/queue", url, sale), "", append(e2e.As(t, user), api.QueueTicketHeader, ticket)...)
}

func buyWith(t *testing.T, url, sale, user, ticket string) e2e.Reply {
	t.Helper()
	return e2e.Do(t, "GET", fmt.Sprintf("%s/v1/sales/%s/buy", url, sale), "", append(e2e.As(t, user), api.QueueTicketHeader, ticket)...)
}

// The waiting room's promises: tickets that are forged, expired, someone
// else's or already used buy nothing and change nothing; nobody buys before
// their turn; a sell-out closes the room for everyone at the next poll.
func TestWaitingRoomRefusesAndAdmitsInTurn(t *testing.T) {
	_, n := roomNode(t)
	e2e.CreateSale(t, n.URL, `{"id":"wr","stock":3,"waiting_room":{"enabled":true,"admit_per_sec":4}}`)
	const buyers = 12
	tickets := make([]string, buyers)
	for i := range tickets {
		r := join(t, n.URL, "wr", fmt.Sprintf("u%d", i))
		if r.Status != 201 {
			t.Fatalf("join: %d %s", r.Status, r.Raw)
		}
		tickets[i], _ = r.Body["ticket"].(string)
		if again := join(t, n.URL, "wr", fmt.Sprintf("u%d", i)); again.Body["ticket"] != nil && again.Body["rank"] != r.Body["rank"] && r.Body["rank"] != float64(0) {
			t.Fatalf("joining again moved the buyer: %v -> %v", r.Body["rank"], again.Body["rank"])
		}
	}
	before := e2e.GetBooks(t, n.URL, "wr")

	// Refusals that must leave the books as they are.
	expired := waitroom.Ticket{Sale: "wr", Buyer: "u0", Seq: 1, ExpiresMs: time.Now().Add(-time.Second).UnixMilli()}.Encode([]byte(roomSecret))
	forged := waitroom.Ticket{Sale: "wr", Buyer: "u11", Seq: 1, ExpiresMs: time.Now().Add(time.Hour).UnixMilli()}.Encode([]byte("not the secret"))
	edited := strings.Replace(tickets[11], ".u11.12.", ".u11.1.", 1)
	for name, c := range map[string]struct {
		user, ticket, code string
		status             int
	}{
		"no ticket":         {"u0", "", "unauthorized", 401},
		"forged":            {"u11", forged, "unauthorized", 401},
		"edited place":      {"u11", edited, "unauthorized", 401},
		"other user's":      {"u5", tickets[0], "unauthorized", 401},
		"expired":           {"u0", expired, "expired", 410},
		"not admitted yet":  {"u11", tickets[11], "not_admitted", 403},
		"not a sale ticket": {"u0", "garbage", "unauthorized", 401},
	} {
		if r := buyWith(t, n.URL, "wr", c.user, c.ticket); r.Status != c.status || r.Code() != c.code {
			t.Errorf("%s: %d %s, want %d %s", name, r.Status, r.Raw, c.status, c.code)
		}
	}
	if after := e2e.GetBooks(t, n.URL, "wr"); after != before {
		t.Fatalf("refused tickets changed the books: %+v -> %+v", before, after)
	}

	// Everyone polls and buys the moment they are admitted; every buy
	// attempt before that is refused. Ranks say the order.
	sold := map[int]bool{}
	var soldOutAt time.Time
	closedSeen := map[int]time.Time{}
	deadline := time.Now().Add(20 * time.Second)
	for len(closedSeen) < buyers-3 && time.Now().Before(deadline) {
		for i := 0; i < buyers; i++ {
			user := fmt.Sprintf("u%d", i)
			if sold[i] || !closedSeen[i].IsZero() {
				continue
			}
			p := poll(t, n.URL, "wr", user, tickets[i])
			switch p.Body["state"] {
			case "admitted":
				r := buyWith(t, n.URL, "wr", user, tickets[i])
				if r.Status == 201 {
					sold[i] = true
					if len(sold) == 3 {
						soldOutAt = time.Now()
					}
					if again := buyWith(t, n.URL, "wr", user, tickets[i]); again.Status != 409 {
						t.Errorf("reused ticket: %d %s, want 409", again.Status, again.Raw)
					}
				} else if r.Code() != "sold_out" {
					t.Errorf("admitted buyer %s: %d %s", user, r.Status, r.Raw)
				}
			case "waiting", "pre_queue":
				// The room may admit this ticket between the poll and the
				// buy (a tick every 20 ms): a 201 is a defect only if the
				// room still holds the ticket back after it — admission
				// never moves backwards.
				if r := buyWith(t, n.URL, "wr", user, tickets[i]); r.Status == 201 {
					if after := poll(t, n.URL, "wr", user, tickets[i]); after.Body["state"] == "waiting" || after.Body["state"] == "pre_queue" {
						t.Errorf("buyer %s bought while %v (still %v after)", user, p.Body["state"], after.Body["state"])
					}
					sold[i] = true
					if len(sold) == 3 {
						soldOutAt = time.Now()
					}
				}
			case "sold_out":
				closedSeen[i] = time.Now()
			default:
				t.Fatalf("poll: %d %s", p.Status, p.Raw)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(sold) != 3 || len(closedSeen) != buyers-3 {
		t.Fatalf("sold %d, closed for %d of %d", len(sold), len(closedSeen), buyers-3)
	}
	var latest time.Duration
	for _, at := range closedSeen {
		latest = max(latest, at.Sub(soldOutAt))
	}
	b := e2e.GetBooks(t, n.URL, "wr")
	if b.Pending != 3 || b.Remaining != 0 || b.Pending+b.Remaining+b.Paid != 3 {
		t.Fatalf("books %+v", b)
	}
	t.Logf("sold to %v; the room closed for the rest within %v of the sell-out (one poll round)", sold, latest)
}

// admitted polls until buyer's ticket is admitted (the room must admit fast).
func admitted(t *testing.T, url, sale, user, ticket string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if p := poll(t, url, sale, user, ticket); p.Body["state"] == "admitted" {
			return
		}
	}
	t.Fatalf("%s was not admitted to %s within 5 s", user, sale)
}

// myOrders is how many orders of sale the buyer holds, as they see them.
func myOrders(t *testing.T, url, user, sale string) int {
	t.Helper()
	r := e2e.Do(t, "GET", url+"/v1/users/me/orders?sale="+sale, "", e2e.As(t, user)...)
	if r.Status != 200 {
		t.Fatalf("my orders: %d %s", r.Status, r.Raw)
	}
	list, _ := r.Body["orders"].([]any)
	return len(list)
}

// Invariant: an admitted ticket buys one order, once — reused one after
// the other, reused concurrently, used on another sale, or reused after
// its order was cancelled, it is refused with a JSON error and the books,
// the buyer's orders and limit stay exactly as they were; a retry with the
// buy's Idempotency-Key gets the first order back (not a refusal).
func TestWaitingRoomTicketBuysOnce(t *testing.T) {
	_, n := roomNode(t)
	e2e.CreateSale(t, n.URL, `{"id":"wa","stock":6,"per_user_limit":3,"waiting_room":{"enabled":true,"admit_per_sec":1000}}`)
	e2e.CreateSale(t, n.URL, `{"id":"wb","stock":6,"per_user_limit":3,"waiting_room":{"enabled":true,"admit_per_sec":1000}}`)
	tickets := map[string]string{}
	for _, u := range []string{"u0", "u1", "u2"} {
		for _, sale := range []string{"wa", "wb"} {
			r := join(t, n.URL, sale, u)
			if r.Status != 201 {
				t.Fatalf("join %s: %d %s", sale, r.Status, r.Raw)
			}
			tickets[sale+u], _ = r.Body["ticket"].(string)
			admitted(t, n.URL, sale, u, tickets[sale+u])
		}
	}
	want := func(sale string, b e2e.Books) {
		t.Helper()
		if got := e2e.GetBooks(t, n.URL, sale); got != b {
			t.Fatalf("books of %s %+v, want %+v", sale, got, b)
		}
	}
	fresh := e2e.Books{Stock: 6, Remaining: 6}
	refused := func(name string, r e2e.Reply, status int, code string) {
		t.Helper()
		if r.Status != status || r.Code() != code {
			t.Fatalf("%s: %d %s, want %d %s", name, r.Status, r.Raw, status, code)
		}
		if msg, _ := r.Body["error"].(map[string]any)["message"].(string); msg == "" {
			t.Fatalf("%s: no message in %s", name, r.Raw)
		}
	}

	// Another sale's ticket (valid, admitted, unused there) buys nothing here.
	refused("wa's ticket on wb", buyWith(t, n.URL, "wb", "u0", tickets["wau0"]), 401, "unauthorized")
	want("wa", fresh)
	want("wb", fresh)

	// Used, then reused one after the other: the second is a conflict.
	if r := buyWith(t, n.URL, "wa", "u0", tickets["wau0"]); r.Status != 201 {
		t.Fatalf("first buy: %d %s", r.Status, r.Raw)
	}
	one := e2e.Books{Stock: 6, Remaining: 5, Pending: 1}
	for i := 0; i < 3; i++ {
		refused("reused", buyWith(t, n.URL, "wa", "u0", tickets["wau0"]), 409, "conflict")
	}
	want("wa", one)
	if got := myOrders(t, n.URL, "u0", "wa"); got != 1 {
		t.Fatalf("u0 holds %d orders of wa after reusing its ticket, want 1", got)
	}
	// The ticket of wb is still good (single use is per sale and ticket).
	if r := buyWith(t, n.URL, "wb", "u0", tickets["wbu0"]); r.Status != 201 {
		t.Fatalf("buy on wb: %d %s", r.Status, r.Raw)
	}

	// Reused concurrently: one of eight buys sells, seven are conflicts
	// (they may share one batch: the script refuses the repeats in it).
	var wg sync.WaitGroup
	replies := make([]e2e.Reply, 8)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = buyWith(t, n.URL, "wa", "u1", tickets["wau1"])
		}()
	}
	wg.Wait()
	if c := e2e.Count(replies); c["ok"] != 1 || c["conflict"] != 7 {
		t.Fatalf("concurrent reuse: %v", c)
	}
	for _, r := range replies {
		if r.Status == 409 && r.Code() != "conflict" {
			t.Fatalf("concurrent reuse: %s", r.Raw)
		}
	}
	two := e2e.Books{Stock: 6, Remaining: 4, Pending: 2}
	want("wa", two)

	// A retry with the same Idempotency-Key is the first order, not a "no".
	keyed := func() e2e.Reply {
		return e2e.Do(t, "GET", n.URL+"/v1/sales/wa/buy?idempotency_key=k-u2", "", append(e2e.As(t, "u2"), api.QueueTicketHeader, tickets["wau2"])...)
	}
	first, again := keyed(), keyed()
	if first.Status != 201 || again.Status != 201 || first.Body["order_id"] != again.Body["order_id"] {
		t.Fatalf("keyed retry: %d %s then %d %s", first.Status, first.Raw, again.Status, again.Raw)
	}
	three := e2e.Books{Stock: 6, Remaining: 3, Pending: 3}
	want("wa", three)

	// Cancelling the order does not give the ticket back: the unit goes to
	// the line, not to a second buy by the same ticket.
	id, _ := first.Body["order_id"].(string)
	if r := e2e.Do(t, "POST", n.URL+"/v1/orders/"+id+"/cancel", "", e2e.As(t, "u2")...); r.Status != 200 {
		t.Fatalf("cancel: %d %s", r.Status, r.Raw)
	}
	cancelled := e2e.Books{Stock: 6, Remaining: 4, Pending: 2, Cancelled: 1}
	want("wa", cancelled)
	refused("reused after cancel", buyWith(t, n.URL, "wa", "u2", tickets["wau2"]), 409, "conflict")
	want("wa", cancelled)
}

// Invariant: once the last unit is sold the room is closed — a join answers
// sold_out at once (checked in the join's own Redis step), a waiting
// ticket's poll within one tick, a buy changes nothing — and when units
// come back (here: an unpaid order expires) admission resumes for the
// tickets already issued and joining opens again.
func TestWaitingRoomClosesOnSellOutAndReopens(t *testing.T) {
	_, n := roomNode(t)
	e2e.CreateSale(t, n.URL, `{"id":"wc","stock":1,"pay_timeout":"1s","waiting_room":{"enabled":true,"admit_per_sec":1000}}`)
	tk := map[string]string{}
	for _, u := range []string{"u0", "u1"} {
		r := join(t, n.URL, "wc", u)
		if r.Status != 201 {
			t.Fatalf("join: %d %s", r.Status, r.Raw)
		}
		tk[u], _ = r.Body["ticket"].(string)
	}
	admitted(t, n.URL, "wc", "u0", tk["u0"])
	if r := buyWith(t, n.URL, "wc", "u0", tk["u0"]); r.Status != 201 {
		t.Fatalf("buy: %d %s", r.Status, r.Raw)
	}
	// No tick has to pass: the join's own script sees remaining 0.
	if r := join(t, n.URL, "wc", "u2"); r.Status != 409 || r.Code() != "sold_out" {
		t.Fatalf("join after sell-out: %d %s, want 409 sold_out", r.Status, r.Raw)
	}
	soldAt := time.Now()
	for poll(t, n.URL, "wc", "u1", tk["u1"]).Body["state"] != "sold_out" {
		if time.Since(soldAt) > time.Second {
			t.Fatal("a waiting ticket's poll did not answer sold_out within 1 s of the sell-out")
		}
		time.Sleep(5 * time.Millisecond)
	}
	closed := time.Since(soldAt)
	held := e2e.Books{Stock: 1, Pending: 1}
	if r := buyWith(t, n.URL, "wc", "u1", tk["u1"]); r.Status != 409 || r.Code() != "sold_out" {
		t.Fatalf("buy in a closed room: %d %s", r.Status, r.Raw)
	}
	if b := e2e.GetBooks(t, n.URL, "wc"); b != held {
		t.Fatalf("books %+v, want %+v", b, held)
	}

	// u0 never pays: the unit comes back and the room reopens.
	var reopened time.Duration
	for {
		p := poll(t, n.URL, "wc", "u1", tk["u1"])
		if p.Body["state"] == "admitted" {
			reopened = time.Since(soldAt)
			break
		}
		if time.Since(soldAt) > 10*time.Second {
			t.Fatalf("the room did not reopen after the order expired: %s, books %+v", p.Raw, e2e.GetBooks(t, n.URL, "wc"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := join(t, n.URL, "wc", "u2"); r.Status != 201 {
		t.Fatalf("join after units came back: %d %s", r.Status, r.Raw)
	}
	// The sold_out buy above did not use u1's ticket.
	if r := buyWith(t, n.URL, "wc", "u1", tk["u1"]); r.Status != 201 {
		t.Fatalf("buy after the room reopened: %d %s", r.Status, r.Raw)
	}
	if b, w := e2e.GetBooks(t, n.URL, "wc"), (e2e.Books{Stock: 1, Pending: 1, Expired: 1}); b != w {
		t.Fatalf("books %+v, want %+v", b, w)
	}
	t.Logf("closed for a waiting ticket %v after the sell-out; reopened %v after it (pay timeout 1 s)", closed, reopened)
}
