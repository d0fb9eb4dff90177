package reconcile

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/flashsale/flashsale/envelope"
	"github.com/flashsale/flashsale/shake"
	"github.com/flashsale/flashsale/statlog"
	"github.com/redis/go-redis/v9"
)

// PoolInput says where the evidence of red envelopes and shake campaigns is.
type PoolInput struct {
	Redis     redis.UniversalClient
	StatLogs  []string
	Killed    []string // nodes SIGKILLed: their last stat.log lines may be missing
	Envelopes []string // envelope ids; "all" checks every envelope
	Shakes    []string // campaign ids; "all" checks every campaign
}

// PoolItem is one envelope's or campaign's verdict.
type PoolItem struct {
	Kind        string   `json:"kind"` // "envelope" or "shake"
	ID          string   `json:"id"`
	OK          bool     `json:"ok"`
	Summary     string   `json:"summary"`
	Problems    []string `json:"problems,omitempty"`
	ClientLines int      `json:"statlog_wins"`
	ClientCents int64    `json:"statlog_cents"`
}

// PoolReport is the outcome of reconciling envelopes and shakes.
type PoolReport struct {
	Items []PoolItem `json:"items"`
	OK    bool       `json:"ok"`
}

type tally struct {
	wins  int
	cents int64
	users map[string]int
}

// Pools checks every requested envelope and campaign: their own books (sum to
// the cent, one open per user, refund once, ledger sums to zero, taken ≤
// released ≤ total, paid-out = sum of wins — see envelope.Book and
// shake.Book) and that what the nodes answered in stat.log equals what
// Redis issued: wins and cents, to the cent.
func Pools(ctx context.Context, in PoolInput) (*PoolReport, error) {
	opens, shakes, killedLost, err := readPoolLines(in.StatLogs, in.Killed)
	if err != nil {
		return nil, err
	}
	envIDs, err := expand(ctx, in.Envelopes, func() ([]string, error) {
		return envelope.List(ctx, in.Redis, zeroTime, zeroTime)
	})
	if err != nil {
		return nil, err
	}
	shakeIDs, err := expand(ctx, in.Shakes, func() ([]string, error) { return shake.List(ctx, in.Redis) })
	if err != nil {
		return nil, err
	}
	rep := &PoolReport{OK: true}
	for _, id := range envIDs {
		b, err := envelope.Books(ctx, in.Redis, id)
		if err != nil {
			return nil, fmt.Errorf("envelope %s: %w", id, err)
		}
		t := opens[id]
		it := PoolItem{Kind: "envelope", ID: id, Problems: append([]string(nil), b.Problems...), ClientLines: t.wins, ClientCents: t.cents,
			Summary: fmt.Sprintf("%s: %d of %d opened, %d¢ of %d¢, refunded %d¢, undone %d", b.State, b.Opened, b.Count,
				b.OpenedCents, b.TotalCents, b.RefundedCents, b.Undone)}
		it.Problems = append(it.Problems, compare("opens", t, b.Opened, b.OpenedCents, killedLost)...)
		for u, n := range t.users {
			if n > 1 {
				it.Problems = append(it.Problems, fmt.Sprintf("user %s was answered ok %d times", u, n))
			}
		}
		it.OK = len(it.Problems) == 0
		rep.OK = rep.OK && it.OK
		rep.Items = append(rep.Items, it)
	}
	for _, id := range shakeIDs {
		b, err := shake.Books(ctx, in.Redis, id)
		if err != nil {
			return nil, fmt.Errorf("shake %s: %w", id, err)
		}
		t := shakes[id]
		it := PoolItem{Kind: "shake", ID: id, Problems: append([]string(nil), b.Problems...), ClientLines: t.wins, ClientCents: t.cents,
			Summary: fmt.Sprintf("taken %d ≤ released %d ≤ total %d; paid %d¢ = wins %d¢", b.Taken, b.Released, b.Total, b.PaidCents, b.WinsCents)}
		it.Problems = append(it.Problems, compare("wins", t, b.Wins, b.WinsCents, killedLost)...)
		it.OK = len(it.Problems) == 0
		rep.OK = rep.OK && it.OK
		rep.Items = append(rep.Items, it)
	}
	return rep, nil
}

// compare checks the stat.log tally against Redis. With a killed node, lines
// may be missing (never extra): then only "no more than Redis" holds.
func compare(what string, t tally, n, cents int64, killed bool) []string {
	switch {
	case int64(t.wins) == n && t.cents == cents:
		return nil
	case killed && int64(t.wins) <= n && t.cents <= cents:
		return nil
	}
	return []string{fmt.Sprintf("stat.log says %d %s for %d¢, Redis says %d for %d¢", t.wins, what, t.cents, n, cents)}
}

func readPoolLines(paths, killed []string) (opens, shakes map[string]tally, killedLost bool, err error) {
	opens, shakes = map[string]tally{}, map[string]tally{}
	dead := map[string]bool{}
	for _, k := range killed {
		dead[k] = true
	}
	add := func(m map[string]tally, r statlog.Record) {
		t := m[r.Sale]
		if t.users == nil {
			t.users = map[string]int{}
		}
		t.wins++
		t.cents += r.Amount
		t.users[r.User]++
		m[r.Sale] = t
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, false, fmt.Errorf("stat.log: %w", err)
		}
		_, err = statlog.Read(f, func(r statlog.Record) error {
			if dead[r.Node] {
				killedLost = true
			}
			switch {
			case r.Kind == "open" && r.Result == "ok":
				add(opens, r)
			case r.Kind == "shake" && r.Result == "ok":
				add(shakes, r)
			}
			return nil
		})
		f.Close()
		if err != nil && err != io.EOF {
			return nil, nil, false, fmt.Errorf("read %s: %w", p, err)
		}
	}
	return opens, shakes, killedLost, nil
}

func expand(ctx context.Context, ids []string, all func() ([]string, error)) ([]string, error) {
	if len(ids) == 1 && ids[0] == "all" {
		out, err := all()
		sort.Strings(out)
		return out, err
	}
	return ids, nil
}

// WriteText prints the pool report for people.
func (r *PoolReport) WriteText(w io.Writer) {
	for _, it := range r.Items {
		mark := "PASS"
		if !it.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-8s %-24s %s; stat.log %d wins, %d¢\n", mark, it.Kind, it.ID, it.Summary, it.ClientLines, it.ClientCents)
		for _, p := range it.Problems {
			fmt.Fprintf(w, "        %s\n", p)
		}
	}
	if r.OK {
		fmt.Fprintln(w, "\nRESULT: envelope and shake books balance.")
	} else {
		fmt.Fprintln(w, "\nRESULT: envelope or shake books DO NOT balance.")
	}
}

// zeroTime asks envelope.List for every envelope, whenever created.
var zeroTime time.Time
