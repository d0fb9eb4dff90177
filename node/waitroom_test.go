package node_test

import (
	"fmt"
	"strings"
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
				if r := buyWith(t, n.URL, "wr", user, tickets[i]); r.Status == 201 {
					t.Errorf("buyer %s bought while %v", user, p.Body["state"])
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
