package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/cluster"
)

// wrkOut is wrk --latency output with tally.lua's mix, as buy.lua prints it.
const wrkOut = `Running 2s test @ http://127.0.0.1:41234
  1 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.01ms    1.20ms  31.52ms   88.12%
    Req/Sec    42.51k     1.90k   45.02k    80.00%
  Latency Distribution
     50%    5.87ms
     75%    6.40ms
     90%    7.10ms
     99%   10.24ms
  84612 requests in 2.00s, 11.21MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 2
Requests/sec:  42227.53
Transfer/sec:      5.59MB
-- flashsale status mix --
status   201=84610  409=2
codes    ok=84610  limit_reached=2
nodes    node1=84612
latency  p50 5.87ms  p99 10.24ms  max 31.52ms
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 84612 || r.Non2xx != 2 || r.SocketErrors != 10 {
		t.Errorf("requests %d non-2xx %d socket errors %d", r.Requests, r.Non2xx, r.SocketErrors)
	}
	if r.P50 != 5870*time.Microsecond || r.P99 != 10240*time.Microsecond {
		t.Errorf("p50 %v p99 %v", r.P50, r.P99)
	}
	// The run time comes from requests / Requests/sec, finer than "2.00s".
	if got := r.rps(); got < 42227.5 || got > 42227.6 {
		t.Errorf("rps %v, want 42227.53", got)
	}
	if r.Elapsed < 2003*time.Millisecond || r.Elapsed > 2004*time.Millisecond {
		t.Errorf("elapsed %v, want ≈ 2.0037s", r.Elapsed)
	}
	if r.Statuses["201"] != 84610 || r.Statuses["409"] != 2 || len(r.Statuses) != 2 {
		t.Errorf("statuses %v", r.Statuses)
	}

	// No Requests/sec: the printed run time stands; an empty status mix
	// must not read the codes line.
	r, err = parseWrk("  10 requests in 1.50s, 1KB read\nstatus   \ncodes    ok=10\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.Elapsed != 1500*time.Millisecond || len(r.Statuses) != 0 {
		t.Errorf("elapsed %v statuses %v", r.Elapsed, r.Statuses)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("no error for output without a request count")
	}
}

// TestSliceSum checks how slices merge: requests and time summed (not rates
// averaged), status mixes summed per status, p50 the median, p99 the worst.
func TestSliceSum(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	var s sliceSum
	for _, m := range []measurement{
		{wrk: wrkResult{Requests: 100_000, Elapsed: ms(2000), P50: ms(5), P99: ms(20), Non2xx: 1,
			Statuses: map[string]int64{"201": 99_999, "409": 1}, CPU: ms(500)},
			redis: rstats{commands: 300_000, evals: 1000, cpu: int64(ms(400))}, server: ms(1000), broker: ms(100), store: ms(200)},
		{wrk: wrkResult{Requests: 50_000, Elapsed: ms(2000), P50: ms(9), P99: ms(11), Non2xx: 2,
			Statuses: map[string]int64{"201": 49_997, "409": 2, "503": 1}, CPU: ms(250)},
			redis: rstats{commands: 150_000, evals: 500, cpu: int64(ms(200))}, server: ms(500), broker: ms(50), store: ms(100)},
		{wrk: wrkResult{Requests: 150_000, Elapsed: ms(2000), P50: ms(7), P99: ms(15),
			Statuses: map[string]int64{"201": 150_000}, CPU: ms(750)},
			redis: rstats{commands: 450_000, evals: 1500, cpu: int64(ms(600))}, server: ms(1500), broker: ms(150), store: ms(300)},
	} {
		s.add(m)
	}
	r := s.row("node selling path", 2, true)
	if r.Slices != 3 || r.Requests != 300_000 || r.RPS != 50_000 || r.Non2xx != 3 {
		t.Errorf("slices %d requests %d rps %v non-2xx %d", r.Slices, r.Requests, r.RPS, r.Non2xx)
	}
	if r.SliceRPSMin != 25_000 || r.SliceRPSMax != 75_000 {
		t.Errorf("slice spread %v..%v", r.SliceRPSMin, r.SliceRPSMax)
	}
	if r.P50 != ms(7) || r.P99 != ms(20) {
		t.Errorf("p50 %v (want the median 7ms) p99 %v (want the worst 20ms)", r.P50, r.P99)
	}
	if want := "201=299996  409=3  503=1"; r.Statuses != want {
		t.Errorf("statuses %q, want %q", r.Statuses, want)
	}
	if r.RedisCmdPerRq != 3 || r.EvalPerRq != 0.01 || r.RedisCPUPerRq != 4*time.Microsecond {
		t.Errorf("redis cmds %v evals %v cpu %v", r.RedisCmdPerRq, r.EvalPerRq, r.RedisCPUPerRq)
	}
	if r.ServerCPUPerRq != 10*time.Microsecond || r.BrokerCPUPerRq != time.Microsecond || r.WrkCPUPerRq != 5*time.Microsecond {
		t.Errorf("server %v broker %v wrk %v", r.ServerCPUPerRq, r.BrokerCPUPerRq, r.WrkCPUPerRq)
	}
	if r.StoreCPUPerRq != 2*time.Microsecond {
		t.Errorf("store %v, want 2µs", r.StoreCPUPerRq)
	}
	// The hello row has no backend: Redis, broker and store stay zero.
	if h := s.row("hello", 2, false); h.RedisCmdPerRq != 0 || h.RedisCPUPerRq != 0 || h.BrokerCPUPerRq != 0 || h.StoreCPUPerRq != 0 || h.ServerCPUPerRq == 0 {
		t.Errorf("hello row %+v", h)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{5}, 5},
		{[]time.Duration{9, 1, 5}, 5},
		{[]time.Duration{9, 1, 5, 3}, 4},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseProcStatCPU(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want time.Duration
		ok   bool
	}{
		// utime 150, stime 25 ticks: 1.75 s.
		{"4242 (flashsale) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 9 0 98765 123456789 4567 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n", 1750 * time.Millisecond, true},
		// A command name with spaces and a ')' in it.
		{"7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0\n", 70 * time.Millisecond, true},
		{"7 (x) R 1 2 3", 0, false},
		{"garbage", 0, false},
	} {
		got, err := cluster.ParseProcCPU(tc.stat)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseProcCPU(%q) = %v, %v; want %v, ok %v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
}

func TestPromValue(t *testing.T) {
	const text = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 4137
go_goroutines_max 1
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2345678e+08
flashsale_http_requests_total{route="buy"} 12
`
	for _, tc := range []struct {
		name string
		want float64
		ok   bool
	}{
		{"go_goroutines", 4137, true},
		{"process_resident_memory_bytes", 123456780, true},
		{"flashsale_http_requests_total", 0, false}, // labelled only
		{"go_threads", 0, false},
	} {
		got, ok := promValue(text, tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("promValue(%s) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOverloadRowAndTable(t *testing.T) {
	w := wrkResult{Requests: 80_000, Elapsed: 4 * time.Second, P50: time.Millisecond, P99: 30 * time.Millisecond,
		Non2xx: 60_000, Statuses: map[string]int64{"201": 20_000, "503": 60_000}}
	o := overloadRow("node overload (c4000)", 1, 4000, w)
	o.Goroutines, o.RSS = 4100, 64<<20
	if o.RPS != 20_000 || o.GoodRPS != 5000 || o.Share503 != 0.75 {
		t.Errorf("rps %v good %v 503 share %v", o.RPS, o.GoodRPS, o.Share503)
	}
	var b bytes.Buffer
	WriteTable(&b, SuiteResult{Rows: []SuiteRow{{Scenario: "hello (net/http)", Round: 1, Slices: 5, RPS: 40000, Ratio: 1}}, Overload: []OverloadRow{o}})
	for _, want := range []string{"wrk CPU/req", "median of the slices' p50s", "503 share", "node overload (c4000)", "0.750", "64 MiB", "4100"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
