package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale/auth"
)

// QueueConfig is one waiting-room run (`flashsale bench --scenario queue`):
// Buyers join the sale's room (before the opening when the sale starts
// later: the pre-queue), poll with backoff, and buy once admitted.
type QueueConfig struct {
	Target string
	Sale   string
	Buyers int    // one goroutine each: the client side of a crowd, bounded by this flag
	Prefix string // user ids Prefix0 .. Prefix(Buyers-1)
	// AuthSecret is the nodes' auth.secret: each buyer's requests carry a
	// bearer token for its user id, which the ticket is bound to.
	AuthSecret []byte
	Timeout    time.Duration
	// MaxRun bounds the whole run.
	MaxRun time.Duration
}

// QueueReport is what a waiting-room run measured.
type QueueReport struct {
	Buyers, Sold        int
	Requests            int64   // every request sent: joins, polls, buys
	WastedPerSold       float64 // (requests - units sold) / units sold
	FirstAdmit, SoldOut time.Time
	TimeToSellOut       time.Duration // first admission to the last unit sold
	WaitP50, WaitP99    time.Duration // buyers who bought: join (or opening) to admission
	WaitMax             time.Duration
	// KendallTau is the rank correlation of queue rank and purchase order,
	// over the buyers who bought: purchase order is the order number the
	// sale gave each of them (Redis numbers orders in the order it sold
	// them), so what is ranked is the system's order, not the noise of each
	// reply's way back to the client. KendallTauByReply ranks by when each
	// 201 arrived instead, for comparison.
	KendallTau         float64
	KendallTauByReply  float64
	CloseP50, CloseMax time.Duration
	Closed             int   // buyers told sold_out
	BoughtUnadmitted   int64 // 201s to buyers whose last poll was not "admitted": must be 0
	Errors             int64 // transport errors and unexpected answers
	// Statuses counts answers by "method status" and, for errors,
	// "method status code" (e.g. "get 409 sold_out"), so a refusal's kind
	// is never a guess.
	Statuses map[string]int64
}

type queueBuyer struct {
	rank       int64
	joined     time.Time
	admittedAt time.Time
	boughtAt   time.Time
	order      int64 // the sale's order number of the buy (0: not known)
	closedAt   time.Time
}

// RunQueue runs the crowd until every buyer has bought or been told the
// room is closed (sold_out / ended), or MaxRun passes.
func RunQueue(ctx context.Context, cfg QueueConfig) (QueueReport, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxRun <= 0 {
		cfg.MaxRun = 5 * time.Minute
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "q"
	}
	if len(cfg.AuthSecret) < auth.MinSecretLen {
		return QueueReport{}, fmt.Errorf("queue needs the nodes' auth secret of at least %d bytes (--auth-secret or $FLASHSALE_AUTH_SECRET)", auth.MinSecretLen)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxRun)
	defer cancel()
	client := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024}}
	base := strings.TrimRight(cfg.Target, "/") + "/v1/sales/" + url.PathEscape(cfg.Sale)
	var requests, errs, unadmitted atomic.Int64
	var mu sync.Mutex
	statuses := map[string]int64{}
	do := func(method, u, bearer, ticket string) (int, map[string]any) {
		requests.Add(1)
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			errs.Add(1)
			return 0, nil
		}
		req.Header.Set("Authorization", bearer)
		if ticket != "" {
			req.Header.Set("X-Queue-Ticket", ticket)
		}
		resp, err := client.Do(req)
		if err != nil {
			errs.Add(1)
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		key := fmt.Sprintf("%s %d", strings.ToLower(method), resp.StatusCode)
		if c := code(m); c != "" {
			key += " " + c
		}
		mu.Lock()
		statuses[key]++
		mu.Unlock()
		return resp.StatusCode, m
	}
	buyers := make([]queueBuyer, cfg.Buyers)
	var wg sync.WaitGroup
	for i := range buyers {
		wg.Add(1)
		go func(b *queueBuyer, user string) {
			defer wg.Done()
			// One token per buyer for the whole run: the buyer is its sub.
			tok, err := auth.Mint(cfg.AuthSecret, user, cfg.MaxRun+time.Hour)
			if err != nil {
				errs.Add(1)
				return
			}
			bearer := "Bearer " + tok
			b.joined = time.Now()
			st, m := do(http.MethodPost, base+"/queue", bearer, "")
			// A join refused by load (503 overloaded/unavailable) is tried
			// again after a pause, as a browser would; the run's deadline
			// bounds it.
			for st == http.StatusServiceUnavailable && ctx.Err() == nil {
				sleepCtx(ctx, 200*time.Millisecond)
				st, m = do(http.MethodPost, base+"/queue", bearer, "")
			}
			if st != http.StatusCreated {
				if code(m) == "sold_out" {
					b.closedAt = time.Now()
				} else {
					errs.Add(1)
				}
				return
			}
			ticket, _ := m["ticket"].(string)
			// One Idempotency-Key per buyer: a buy retried after a lost or
			// timed-out answer gets the first order back, never a second.
			buyURL := base + "/buy?idempotency_key=" + url.QueryEscape(user+"-buy")
			for ctx.Err() == nil {
				state, _ := m["state"].(string)
				if r, ok := m["rank"].(float64); ok && r > 0 {
					b.rank = int64(r)
				}
				switch state {
				case "admitted":
					if b.admittedAt.IsZero() {
						b.admittedAt = time.Now()
					}
					st, bm := do(http.MethodGet, buyURL, bearer, ticket)
					switch {
					case st == http.StatusCreated:
						b.boughtAt = time.Now()
						id, _ := bm["order_id"].(string)
						b.order = orderNumber(id)
						return
					case code(bm) == "sold_out" || code(bm) == "ended":
						b.closedAt = time.Now()
						return
					case code(bm) == "not_admitted":
						// Refused correctly (a stale poll): poll again.
					case st >= 400 && st < 500:
						// Any other refusal (conflict: the ticket bought
						// already; limit_reached) is final: retrying cannot
						// turn it into a sale, so the buyer stops and it
						// counts as an error of the run.
						errs.Add(1)
						return
					default:
						// overloaded/unavailable: retry after a pause, like a browser would
						sleepCtx(ctx, 200*time.Millisecond)
					}
				case "sold_out", "ended":
					b.closedAt = time.Now()
					return
				default: // waiting, pre_queue
					sleepCtx(ctx, pollWait(m))
				}
				var st int
				st, m = do(http.MethodGet, base+"/queue", bearer, ticket)
				if st != http.StatusOK {
					errs.Add(1)
					sleepCtx(ctx, 200*time.Millisecond)
				}
			}
		}(&buyers[i], fmt.Sprintf("%s%d", cfg.Prefix, i))
	}
	wg.Wait()
	return queueReport(buyers, requests.Load(), errs.Load(), unadmitted.Load(), statuses), ctx.Err()
}

// pollWait is how long a waiting buyer sleeps before the next poll. Far
// from its turn it polls at half the estimate (at least every 2 s, with a
// tenth of jitter so a crowd does not poll in step); within a second of it,
// it sleeps to just past the estimated moment, so it learns of its
// admission within a few milliseconds of it. A fixed floor of 50 ms (the
// old backoff) let buyers admitted up to two turns apart learn of it in
// either order — at 40 admissions a second that alone cost fairness.
func pollWait(m map[string]any) time.Duration {
	eta, _ := m["eta_seconds"].(float64)
	d := time.Duration(eta * float64(time.Second))
	if d <= time.Second {
		return max(d+5*time.Millisecond, 10*time.Millisecond)
	}
	d = min(d/2, 2*time.Second)
	return d + time.Duration(rand.Int64N(int64(d/10)+1))
}

// orderNumber reads the sale's order number out of a public order id,
// "<sale>.<number>.<tag>"; 0 if it is not one.
func orderNumber(id string) int64 {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return 0
	}
	j := strings.LastIndexByte(id[:i], '.')
	n, err := strconv.ParseInt(id[j+1:i], 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

func code(m map[string]any) string {
	if e, ok := m["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func queueReport(bs []queueBuyer, requests, errs, unadmitted int64, statuses map[string]int64) QueueReport {
	r := QueueReport{Buyers: len(bs), Requests: requests, Errors: errs, BoughtUnadmitted: unadmitted, Statuses: statuses}
	var bought []queueBuyer
	var waits, closes []time.Duration
	for _, b := range bs {
		if !b.boughtAt.IsZero() {
			bought = append(bought, b)
			if b.admittedAt.IsZero() {
				r.BoughtUnadmitted++
			}
			waits = append(waits, b.admittedAt.Sub(b.joined))
			if r.FirstAdmit.IsZero() || b.admittedAt.Before(r.FirstAdmit) {
				r.FirstAdmit = b.admittedAt
			}
			if b.boughtAt.After(r.SoldOut) {
				r.SoldOut = b.boughtAt
			}
		}
	}
	for _, b := range bs {
		if !b.closedAt.IsZero() {
			r.Closed++
			if !r.SoldOut.IsZero() {
				closes = append(closes, max(b.closedAt.Sub(r.SoldOut), 0))
			}
		}
	}
	r.Sold = len(bought)
	if r.Sold > 0 {
		r.WastedPerSold = float64(requests-int64(r.Sold)) / float64(r.Sold)
		r.TimeToSellOut = r.SoldOut.Sub(r.FirstAdmit)
	}
	r.WaitP50, r.WaitP99, r.WaitMax = pct(waits, 0.5), pct(waits, 0.99), pct(waits, 1)
	r.CloseP50, r.CloseMax = pct(closes, 0.5), pct(closes, 1)
	ranks := func() []int64 {
		out := make([]int64, len(bought))
		for i, b := range bought {
			out[i] = b.rank
		}
		return out
	}
	sort.Slice(bought, func(i, j int) bool { return bought[i].boughtAt.Before(bought[j].boughtAt) })
	r.KendallTauByReply = KendallTau(ranks())
	byOrder := true
	for _, b := range bought {
		byOrder = byOrder && b.order > 0
	}
	if byOrder {
		sort.Slice(bought, func(i, j int) bool { return bought[i].order < bought[j].order })
	}
	r.KendallTau = KendallTau(ranks())
	return r
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

// KendallTau is the rank correlation between the order of xs (purchase
// order) and their values (queue rank): 1 when every buyer bought in queue
// order, -1 when exactly reversed. Ties count as neither (tau-a).
func KendallTau(xs []int64) float64 {
	n := len(xs)
	if n < 2 {
		return 1
	}
	var conc, disc int64
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			switch {
			case xs[i] < xs[j]:
				conc++
			case xs[i] > xs[j]:
				disc++
			}
		}
	}
	return float64(conc-disc) / float64(int64(n)*int64(n-1)/2)
}

// Summary prints r.
func (r QueueReport) Summary(w io.Writer) {
	fmt.Fprintf(w, "waiting room: %d buyers, %d sold, %d told sold_out\n", r.Buyers, r.Sold, r.Closed)
	fmt.Fprintf(w, "  time to sell out (first admission -> last unit): %v\n", r.TimeToSellOut.Round(time.Millisecond))
	fmt.Fprintf(w, "  requests %d, wasted per unit sold %.2f, errors %d, buys by un-admitted tickets %d\n",
		r.Requests, r.WastedPerSold, r.Errors, r.BoughtUnadmitted)
	fmt.Fprintf(w, "  wait join->admitted: p50 %v p99 %v max %v\n", r.WaitP50.Round(time.Millisecond),
		r.WaitP99.Round(time.Millisecond), r.WaitMax.Round(time.Millisecond))
	fmt.Fprintf(w, "  fairness: Kendall tau (queue rank vs purchase order) %.4f (by order number; by reply time %.4f)\n",
		r.KendallTau, r.KendallTauByReply)
	fmt.Fprintf(w, "  queue closed after sell-out: p50 %v max %v\n", r.CloseP50.Round(time.Millisecond), r.CloseMax.Round(time.Millisecond))
	keys := make([]string, 0, len(r.Statuses))
	for k := range r.Statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %d\n", k, r.Statuses[k])
	}
}

// mainQueue is `flashsale bench --scenario queue`: optionally create a sale
// with a waiting room opening OpensIn from now, run the crowd, print the
// report (and write it as JSON with --json).
func mainQueue(ctx context.Context, o Options, api *API, out io.Writer) error {
	if o.CreateSale {
		if o.Sale == "" {
			o.Sale = fmt.Sprintf("queue-%d", time.Now().Unix())
		}
		spec := SaleSpec{ID: o.Sale, Name: "bench " + o.Sale, Stock: o.Stock, PriceCents: o.PriceCents,
			PerUserLimit: o.Limit, PayTimeout: o.PayTimeout,
			WaitingRoom: &Room{Enabled: true, AdmitPerSec: o.AdmitPerSec}}
		if o.OpensIn > 0 {
			starts := time.Now().Add(o.OpensIn).UTC()
			spec.StartsAt = &starts
			spec.WaitingRoom.PreQueue = (o.OpensIn + time.Minute).String()
		}
		if err := api.CreateSale(ctx, spec); err != nil {
			return err
		}
		fmt.Fprintf(o.Progress, "created sale %s: stock %d, waiting room %d/s, opens in %v\n", o.Sale, o.Stock, o.AdmitPerSec, o.OpensIn)
	}
	if o.Sale == "" {
		return fmt.Errorf("--scenario queue needs --sale or --create-sale")
	}
	r, err := RunQueue(ctx, QueueConfig{Target: api.Base(), Sale: o.Sale, Buyers: o.Users, Prefix: o.UserPrefix + "q",
		AuthSecret: o.AuthSecret, Timeout: o.Timeout, MaxRun: max(o.Duration, time.Minute)})
	r.Summary(out)
	if o.JSON != "" {
		b, jerr := json.MarshalIndent(r, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(o.JSON, b, 0o644)
		}
		err = errors.Join(err, jerr)
	}
	if err == nil && r.BoughtUnadmitted > 0 {
		err = fmt.Errorf("%d buys by tickets that were never admitted", r.BoughtUnadmitted)
	}
	return err
}
