package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Point is one second of the run as the progress line and the plot show it.
type Point struct {
	T           float64 `json:"t"`        // seconds since start, at the end of the interval
	Interval    float64 `json:"interval"` // length of the interval in seconds (the last one is short)
	Requests    int64   `json:"requests"`
	Successes   int64   `json:"successes"`
	SoldOut     int64   `json:"sold_out"` // sold_out and, for envelopes, empty
	Limit       int64   `json:"limit_reached"`
	Errors      int64   `json:"errors"` // no reply, 5xx, unreadable reply
	RPS         float64 `json:"rps"`
	SuccessesPS float64 `json:"successes_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`

	totalSuccesses int64
}

// Latency is a latency summary in milliseconds from the HDR histogram.
type Latency struct {
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Count int64   `json:"count"`
}

// Won summarizes what the clients won.
type Won struct {
	Units   int64    `json:"units,omitempty"`  // buy: orders won
	Paid    int64    `json:"paid,omitempty"`   // buy: orders paid by the client
	Cents   int64    `json:"cents,omitempty"`  // open, shake, send: amount
	Users   int64    `json:"users"`            // distinct winners
	Sample  []string `json:"sample,omitempty"` // a few order or envelope ids
	MaxUser int64    `json:"max_per_user"`     // the most one user won
	MinWin  int64    `json:"min_cents,omitempty"`
}

// Report is the JSON report of one run: the configuration, totals and the
// per-second series.
type Report struct {
	Scenario    string   `json:"scenario"`
	Targets     []string `json:"targets"`
	Users       int      `json:"users"`
	Connections int      `json:"connections"`
	Mode        string   `json:"mode"` // closed, rate, slots
	Rate        float64  `json:"rate,omitempty"`
	SlotGroups  int      `json:"slot_groups,omitempty"`
	Steps       []Step   `json:"steps,omitempty"`

	Start    time.Time `json:"start"`
	Seconds  float64   `json:"seconds"`
	Requests int64     `json:"requests"`
	RPS      float64   `json:"rps"`
	Dropped  int64     `json:"dropped,omitempty"` // open loop: scheduled but never sent (generator too slow)

	Latency Latency          `json:"latency"`
	Status  map[string]int64 `json:"status"` // "201", "409", ... and "none" for no reply
	Codes   map[string]int64 `json:"codes"`  // ok, sold_out, limit_reached, transport, ...
	Nodes   map[string]int64 `json:"nodes"`  // replies per X-Flashsale-Node
	Pays    int64            `json:"pays,omitempty"`
	PayFail int64            `json:"pay_failures,omitempty"`
	Won     Won              `json:"won"`
	Errors  []string         `json:"first_errors,omitempty"`
	Notes   []string         `json:"notes,omitempty"`
	Check   string           `json:"check,omitempty"` // "ok" or the mismatch
	Series  []Point          `json:"series"`
}

func (a *aggregate) report(cfg *Config, end time.Time, s *schedule, notes []string) *Report {
	r := &Report{
		Scenario:    cfg.Scenario,
		Targets:     cfg.Targets,
		Users:       cfg.Users,
		Connections: cfg.Connections,
		Mode:        [...]string{"closed", "rate", "slots"}[s.mode],
		Rate:        cfg.Rate,
		SlotGroups:  cfg.SlotGroups,
		Steps:       cfg.Steps,
		Start:       s.start,
		Seconds:     end.Sub(s.start).Seconds(),
		Requests:    a.total.requests,
		Status:      map[string]int64{},
		Codes:       map[string]int64{},
		Nodes:       map[string]int64{},
		Pays:        a.total.pays,
		PayFail:     a.total.payFails,
		Notes:       notes,
		Series:      a.series,
	}
	if s.mode != modeClosed {
		r.Dropped = max(0, s.expected-a.total.requests)
	}
	if r.Seconds > 0 {
		r.RPS = float64(r.Requests) / r.Seconds
	}
	h := a.totalH
	r.Latency = Latency{
		Mean: h.Mean() / 1000, P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()), Count: h.TotalCount(),
	}
	for i, n := range a.total.codes {
		if n > 0 {
			r.Codes[codeNames[i]] = n
		}
	}
	for k, n := range a.total.nodes {
		if n > 0 {
			r.Nodes[k] = n
		}
	}
	for i, n := range a.total.status {
		if n == 0 {
			continue
		}
		if i == 0 {
			r.Status["none"] = n
		} else {
			r.Status[strconv.Itoa(i)] = n
		}
	}
	return r
}

func wonSummary(scenario string, wins []Win) Won {
	var w Won
	per := map[string]int64{}
	for _, x := range wins {
		per[x.User]++
		w.Cents += x.Cents
		if x.Paid {
			w.Paid++
		}
		if x.Cents > 0 && (w.MinWin == 0 || x.Cents < w.MinWin) {
			w.MinWin = x.Cents
		}
		if len(w.Sample) < 5 && x.ID != "" {
			w.Sample = append(w.Sample, x.ID)
		}
	}
	w.Users = int64(len(per))
	for _, n := range per {
		w.MaxUser = max(w.MaxUser, n)
	}
	if scenario == ScenarioBuy {
		w.Units = int64(len(wins))
	}
	return w
}

// WriteJSON writes the report, indented, to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Summary writes the human summary of the run.
func (r *Report) Summary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	mode := r.modeLabel()
	fmt.Fprintf(tw, "scenario\t%s (%s, %d users, %d connections/target, %d targets)\n",
		r.Scenario, mode, r.Users, r.Connections, len(r.Targets))
	fmt.Fprintf(tw, "requests\t%d in %.2fs = %.0f req/s\n", r.Requests, r.Seconds, r.RPS)
	if r.Dropped > 0 {
		fmt.Fprintf(tw, "dropped\t%d scheduled requests never sent: every connection was busy (server or generator slower than the schedule; raise --connections or lower the rate)\n", r.Dropped)
	}
	l := r.Latency
	fmt.Fprintf(tw, "latency\tmean %.2fms  p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms\n",
		l.Mean, l.P50, l.P90, l.P99, l.P999, l.Max)
	fmt.Fprintf(tw, "status\t%s\n", mapLine(r.Status))
	fmt.Fprintf(tw, "codes\t%s\n", mapLine(r.Codes))
	if len(r.Nodes) > 0 {
		fmt.Fprintf(tw, "nodes\t%s\n", mapLine(r.Nodes))
	}
	switch r.Scenario {
	case ScenarioBuy:
		fmt.Fprintf(tw, "won\t%d units by %d users (max %d per user), %d paid by the client", r.Won.Units, r.Won.Users, r.Won.MaxUser, r.Won.Paid)
		if r.PayFail > 0 {
			fmt.Fprintf(tw, ", %d pay requests failed", r.PayFail)
		}
		fmt.Fprintln(tw)
	case ScenarioOpen, ScenarioShake, ScenarioSend:
		fmt.Fprintf(tw, "won\t%d cents by %d users (smallest share %d cents)\n", r.Won.Cents, r.Won.Users, r.Won.MinWin)
	}
	if len(r.Won.Sample) > 0 {
		fmt.Fprintf(tw, "sample\t%s\n", strings.Join(r.Won.Sample, " "))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(tw, "error\t%s\n", e)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	if r.Check != "" {
		fmt.Fprintf(tw, "check\t%s\n", r.Check)
	}
	_ = tw.Flush()
}

func mapLine(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// modeLabel says how requests were scheduled, for people.
func (r *Report) modeLabel() string {
	switch r.Mode {
	case "rate":
		return fmt.Sprintf("open loop at %.0f/s", r.Rate)
	case "slots":
		return fmt.Sprintf("time-slot clients in %d groups", r.SlotGroups)
	}
	return "closed loop"
}
