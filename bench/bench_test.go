package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/holdload"
)

func createSale(t *testing.T, url, id string, stock, limit int64) {
	t.Helper()
	if err := NewAPI(url, "admin").CreateSale(context.Background(), SaleSpec{ID: id, Stock: stock, PerUserLimit: limit, PriceCents: 100}); err != nil {
		t.Fatal(err)
	}
}

// Invariant: with more users than stock, the clients win exactly the stock
// and every other request is told sold_out.
func TestClosedLoopSellsExactlyTheStock(t *testing.T) {
	f, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 50, 1)
	res, err := Run(context.Background(), Config{
		Targets: []string{srv.URL}, AuthSecret: fakeAuthSecret, Scenario: ScenarioBuy, Sale: "s1",
		Users: 200, Connections: 8, Requests: 400,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Report
	if res.Tally.Successes != 50 || len(res.Tally.Wins) != 50 {
		t.Fatalf("successes = %d (wins %d), want 50", res.Tally.Successes, len(res.Tally.Wins))
	}
	if rep.Codes["sold_out"] != 350 || rep.Requests != 400 {
		t.Fatalf("codes = %v, requests %d; want sold_out=350 of 400", rep.Codes, rep.Requests)
	}
	if rep.Status["201"] != 50 || rep.Status["409"] != 350 {
		t.Fatalf("status = %v", rep.Status)
	}
	if rep.Nodes["n1"] != 400 {
		t.Fatalf("nodes = %v, want n1=400", rep.Nodes)
	}
	if rep.Won.Units != 50 || rep.Won.Users != 50 || rep.Won.MaxUser != 1 {
		t.Fatalf("won = %+v", rep.Won)
	}
	if f.requests != 400+1 { // + the create
		t.Fatalf("server saw %d requests, want 401", f.requests)
	}
	var sum int64
	for _, p := range rep.Series {
		sum += p.Requests
	}
	if sum != rep.Requests {
		t.Fatalf("series sums to %d requests, total is %d", sum, rep.Requests)
	}
}

// Invariant: a per-user limit holds — one user hammering gets limit units
// and limit_reached for the rest.
func TestSameUserHitsLimit(t *testing.T) {
	_, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 100, 2)
	res, err := Run(context.Background(), Config{Targets: []string{srv.URL}, AuthSecret: fakeAuthSecret, PaymentSecret: fakePaymentSecret, Sale: "s1", Users: 1, Connections: 4, Requests: 40})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tally.Successes != 2 || res.Report.Codes["limit_reached"] != 38 {
		t.Fatalf("successes %d, codes %v; want 2 and limit_reached=38", res.Tally.Successes, res.Report.Codes)
	}
}

// Invariant: in rate mode exactly rate × duration requests are sent, and
// none before its intended time (so the first second holds at most rate of
// them, whatever the connections could do).
func TestRateModeHitsTheRate(t *testing.T) {
	f, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 1_000_000, 0)
	const rate = 300
	res, err := Run(context.Background(), Config{
		Targets: []string{srv.URL}, AuthSecret: fakeAuthSecret, Sale: "s1", Users: 1000, Connections: 16,
		Rate: rate, Duration: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Report
	if rep.Requests+rep.Dropped != 2*rate {
		t.Fatalf("requests %d + dropped %d, want %d", rep.Requests, rep.Dropped, 2*rate)
	}
	// Count tolerance, not timing: on a loaded 2-core box a few may be
	// dropped, but not more than 5 %.
	if rep.Requests < 2*rate*95/100 {
		t.Fatalf("requests = %d, want ≥ 95%% of %d", rep.Requests, 2*rate)
	}
	var early int
	f.mu.Lock()
	for _, ts := range f.hits {
		for _, at := range ts {
			if at.Before(rep.Start.Add(time.Second)) {
				early++
			}
		}
	}
	f.mu.Unlock()
	if early > rate+1 {
		t.Fatalf("%d requests arrived in the first second, want ≤ %d: the schedule ran ahead", early, rate+1)
	}
}

// Invariant: a time-slot user sends at most once per wall-clock second, and
// only in seconds s with s%G == uid%G.
func TestTimeSlotClientsSendOncePerSlot(t *testing.T) {
	f, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 1_000_000, 0)
	const groups = 2
	res, err := Run(context.Background(), Config{
		Targets: []string{srv.URL}, AuthSecret: fakeAuthSecret, Sale: "s1", Users: 40, Connections: 8,
		SlotGroups: groups, Steps: []Step{{QPS: 10, Duration: 2 * time.Second}, {QPS: 20, Duration: time.Second}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Report.Requests + res.Report.Dropped; got != 40 {
		t.Fatalf("requests+dropped = %d, want 10+10+20", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for user, ts := range f.hits {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
		for i := 1; i < len(ts); i++ {
			// The next eligible slot is G seconds later; allow a second
			// of scheduling slack without flaking.
			if gap := ts[i].Sub(ts[i-1]); gap < time.Second {
				t.Errorf("user %s sent twice %v apart", user, gap)
			}
		}
	}
}

func TestSlotUserRule(t *testing.T) {
	for _, tc := range []struct{ users, groups int }{{40, 2}, {41, 3}, {1000, 7}, {5, 5}} {
		for unix := int64(1_700_000_000); unix < 1_700_000_050; unix++ {
			r := int(unix % int64(tc.groups))
			gs := groupSize(tc.users, tc.groups, r)
			seen := map[int]bool{}
			for k := range gs {
				u := slotUser(tc.users, tc.groups, unix, k, gs)
				if u%tc.groups != r || u >= tc.users || seen[u] {
					t.Fatalf("users %d groups %d second %d: k=%d picked %d (dup %v)", tc.users, tc.groups, unix, k, u, seen[u])
				}
				seen[u] = true
			}
		}
	}
}

func TestPayFraction(t *testing.T) {
	f, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 20, 1)
	res, err := Run(context.Background(), Config{Targets: []string{srv.URL}, AuthSecret: fakeAuthSecret, PaymentSecret: fakePaymentSecret, Sale: "s1", Users: 40, Connections: 4, Requests: 40, PayFraction: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Report.Won.Paid != 10 || res.Report.Pays != 10 {
		t.Fatalf("paid %d (pays %d), want 10", res.Report.Won.Paid, res.Report.Pays)
	}
	if got := f.sales["s1"].paid; got != 10 {
		t.Fatalf("server paid = %d, want 10", got)
	}
}

func TestCheckFlag(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(f *fakeNode)
		wantErr string
	}{
		{"books agree", nil, ""},
		{"server forgot an order", func(f *fakeNode) { f.forget = "s1.7" }, "does not know"},
		{"server has one order fewer", func(f *fakeNode) { f.hideOne = true }, "server created 19"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFakeNode(t)
			o := quietOptions(srv.URL)
			o.CreateSale, o.Sale, o.Stock, o.Limit = true, "s1", 20, 1
			o.Users, o.Connections, o.Requests, o.Check = 60, 4, 60, true
			if tc.corrupt != nil {
				tc.corrupt(f)
			}
			var out bytes.Buffer
			err := Main(context.Background(), o, &out)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("check failed on honest books: %v\n%s", err, out.String())
				}
				if !strings.Contains(out.String(), "check") {
					t.Fatalf("summary has no check line:\n%s", out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q\n%s", err, tc.wantErr, out.String())
			}
		})
	}
}

func TestCheck(t *testing.T) {
	wins := func(n int) []Win {
		var w []Win
		for i := range n {
			w = append(w, Win{ID: "s1." + strconv.Itoa(i), User: "u" + strconv.Itoa(i)})
		}
		return w
	}
	orders := func(n int) map[string]BookOrder {
		m := map[string]BookOrder{}
		for i := range n {
			m["s1."+strconv.Itoa(i)] = BookOrder{Found: true, User: "u" + strconv.Itoa(i), Status: "pending"}
		}
		return m
	}
	good := func() (Tally, Books) {
		return Tally{Scenario: ScenarioBuy, Successes: 3, Wins: wins(3)},
			Books{Stock: 3, PerUserLimit: 1, Pending: 3, Created: 3, Settled: true, Orders: orders(3)}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*Tally, *Books)
		wantErr string
	}{
		{"agree", func(*Tally, *Books) {}, ""},
		{"one success more than the server knows", func(t *Tally, b *Books) { b.Created = 2 }, "server created 2"},
		{"unknown order id", func(t *Tally, b *Books) { b.Orders["s1.1"] = BookOrder{} }, "does not know"},
		{"unknown id in a complete book", func(t *Tally, b *Books) { delete(b.Orders, "s1.2"); b.AllOrders = true }, "does not know"},
		{"wrong user", func(t *Tally, b *Books) { b.Orders["s1.0"] = BookOrder{Found: true, User: "u9"} }, "gives to u9"},
		{"duplicate id", func(t *Tally, b *Books) { t.Wins[2].ID = "s1.0" }, "won twice"},
		{"oversell", func(t *Tally, b *Books) { b.Stock = 2 }, "oversell"},
		{"released units sold again are no oversell", func(t *Tally, b *Books) {
			b.Stock, b.Pending, b.Released = 2, 2, 1
			b.Orders["s1.0"] = BookOrder{Found: true, User: "u0", Status: "expired"}
		}, ""},
		{"more active wins than stock", func(t *Tally, b *Books) { b.Stock, b.Released = 2, 1 }, "hold 3 active orders"},
		{"unbalanced", func(t *Tally, b *Books) { b.Remaining = 1 }, "do not balance"},
		{"server made orders nobody heard of", func(t *Tally, b *Books) { b.Created = 4; b.Stock = 4; b.Pending = 4 }, "were told of 3"},
		{"lost replies excuse extra server orders", func(t *Tally, b *Books) { b.Created = 4; b.Stock = 4; b.Pending = 4; t.Unanswered = 1 }, ""},
		{"paid but not paid", func(t *Tally, b *Books) { t.Wins[0].Paid = true }, "server says pending"},
		{"limit", func(t *Tally, b *Books) {
			t.Wins[1].User = "u0"
			b.Orders["s1.1"] = BookOrder{Found: true, User: "u0", Status: "paid"}
		}, "holds 2 active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tally, books := good()
			tc.mutate(&tally, &books)
			err := Check(context.Background(), tally, books)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected mismatch: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}

	envelope := Tally{Scenario: ScenarioOpen, Successes: 2, Cents: 10, Wins: []Win{{User: "a", Cents: 4}, {User: "b", Cents: 6}}}
	if err := Check(context.Background(), envelope, Books{TotalCents: 10, Count: 2, IssuedCount: 2, IssuedCents: 10}); err != nil {
		t.Fatalf("honest envelope: %v", err)
	}
	if err := Check(context.Background(), envelope, Books{TotalCents: 10, Count: 2, IssuedCount: 2, IssuedCents: 9}); err == nil {
		t.Fatal("a cent the server never issued passed the check")
	}
}

func TestOpenAndShakeScenarios(t *testing.T) {
	f, srv := newFakeNode(t)
	f.addEnvelope("e1", 1000, 10)
	o := quietOptions(srv.URL)
	o.Scenario, o.Envelope, o.Users, o.Connections, o.Requests, o.Check = ScenarioOpen, "e1", 30, 4, 30, true
	var out bytes.Buffer
	if err := Main(context.Background(), o, &out); err != nil {
		t.Fatalf("open: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "won       1000 cents by 10 users") {
		t.Fatalf("open summary:\n%s", out.String())
	}

	o = quietOptions(srv.URL)
	o.Scenario, o.Campaign, o.Users, o.Connections, o.Requests, o.Check = ScenarioShake, "c1", 50, 4, 90, true
	out.Reset()
	if err := Main(context.Background(), o, &out); err != nil {
		t.Fatalf("shake: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "no_win=70") || !strings.Contains(out.String(), "won       140 cents") {
		t.Fatalf("shake summary:\n%s", out.String())
	}
}

func TestSendScenario(t *testing.T) {
	_, srv := newFakeNode(t)
	o := quietOptions(srv.URL)
	o.Scenario, o.EnvelopeCents, o.EnvelopeShares = ScenarioSend, 500, 5
	o.Users, o.Connections, o.Requests, o.Check = 10, 2, 10, true
	var out bytes.Buffer
	if err := Main(context.Background(), o, &out); err != nil {
		t.Fatalf("send: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "won       5000 cents") {
		t.Fatalf("send summary:\n%s", out.String())
	}
}

func TestReportJSONAndPlot(t *testing.T) {
	_, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 100, 1)
	dir := t.TempDir()
	o := quietOptions(srv.URL)
	o.Sale, o.Users, o.Connections, o.Rate, o.Duration = "s1", 500, 4, 200, 2*time.Second
	o.JSON = filepath.Join(dir, "r.json")
	o.Plot = filepath.Join(dir, "r.png")
	if err := Main(context.Background(), o, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(o.JSON)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report does not parse: %v", err)
	}
	if rep.Requests == 0 || len(rep.Series) < 2 || rep.Mode != "rate" || rep.Won.Units != 100 {
		t.Fatalf("report = requests %d, %d points, mode %s, units %d", rep.Requests, len(rep.Series), rep.Mode, rep.Won.Units)
	}
	png, err := os.ReadFile(o.Plot)
	if err != nil || len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("plot: %d bytes, err %v", len(png), err)
	}
	svgPath := filepath.Join(dir, "r.svg")
	if err := rep.WritePlot(svgPath); err != nil {
		t.Fatal(err)
	}
	if svg, _ := os.ReadFile(svgPath); !bytes.Contains(svg, []byte("<svg")) {
		t.Fatal("svg plot has no <svg")
	}
}

func TestDeadTargetCountsTransportErrors(t *testing.T) {
	res, err := Run(context.Background(), Config{Targets: []string{"http://127.0.0.1:1"}, Scenario: ScenarioGet, Connections: 2, Requests: 6})
	if err != nil {
		t.Fatal(err)
	}
	if res.Report.Codes["transport"] != 6 || res.Report.Status["none"] != 6 {
		t.Fatalf("codes %v status %v", res.Report.Codes, res.Report.Status)
	}
}

func TestParseSteps(t *testing.T) {
	s, err := ParseSteps("30000:10s, 60000:10s")
	if err != nil || len(s) != 2 || s[1].QPS != 60000 || s[1].Duration != 10*time.Second {
		t.Fatalf("%v %v", s, err)
	}
	for _, bad := range []string{"", "x:1s", "10", "10:100ms", "-1:1s"} {
		if _, err := ParseSteps(bad); err == nil {
			t.Errorf("ParseSteps(%q) accepted", bad)
		}
	}
}

// Invariant: the epoll open loop sends every scheduled arrival, none ahead
// of its time, each with a valid token of its user, and tallies every reply.
func TestEpollOpenLoopKeepsTheSchedule(t *testing.T) {
	f, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 1_000_000, 1_000_000)
	const rate = 400
	tl, err := epollOpenLoop(context.Background(), openLoopSpec{Node: srv.URL, Sale: "s1", Secret: fakeAuthSecret, Users: 50,
		Rate: rate, Duration: 2 * time.Second, Conns: 16, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if tl.Offered != 2*rate || tl.Sent != tl.Offered || tl.Lost != 0 || tl.Statuses[201] != tl.Offered {
		t.Fatalf("offered %d sent %d lost %d statuses %v: want %d sent and answered 201", tl.Offered, tl.Sent, tl.Lost, tl.Statuses, 2*rate)
	}
	if tl.OK.TotalCount() != tl.Offered || tl.All.TotalCount() != tl.Offered {
		t.Fatalf("histograms hold %d and %d latencies, want %d", tl.OK.TotalCount(), tl.All.TotalCount(), tl.Offered)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var hits int
	var first, last time.Time
	for user, ts := range f.hits {
		if !strings.HasPrefix(user, "ol") {
			t.Fatalf("a buy by %q: the token's subject should be ol<N>", user)
		}
		for _, at := range ts {
			hits++
			if first.IsZero() || at.Before(first) {
				first = at
			}
			if at.After(last) {
				last = at
			}
		}
	}
	if hits != 2*rate || len(f.hits) != 50 {
		t.Fatalf("the node saw %d buys by %d users, want %d by 50", hits, len(f.hits), 2*rate)
	}
	// 800 arrivals 2.5 ms apart span 2 s: sent all at once they would not.
	if span := last.Sub(first); span < 1900*time.Millisecond {
		t.Fatalf("arrivals spanned %v, want about 2 s: the schedule ran ahead", span)
	}
}

// Invariant: the open loop's request says when it was written in the form
// the node parses (nginx's X-Request-Start: t=seconds.micros).
func TestEpollOpenLoopStampsRequestStart(t *testing.T) {
	h := &buyHandler{head: []byte("GET /v1/sales/s1/buy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "), tail: []byte("\r\n\r\n"),
		minter: auth.NewMinter(fakeAuthSecret), exp: time.Now().Add(time.Hour).Unix()}
	req := string(h.Build(nil, holdload.Request{User: 7}))
	_, after, ok := strings.Cut(req, "\r\nX-Request-Start: ")
	v, _, _ := strings.Cut(after, "\r\n")
	at, parsed := api.ParseRequestStart(v)
	if !ok || !parsed || time.Since(at) < 0 || time.Since(at) > time.Second || !strings.HasSuffix(req, "\r\n\r\n") {
		t.Fatalf("request %q: X-Request-Start %q parsed %v at %v", req, v, parsed, at)
	}
}
