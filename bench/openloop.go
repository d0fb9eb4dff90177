package bench

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/holdload"
)

// The open-loop row's generator. Run's goroutine-per-connection client cost
// about 86 µs of CPU a request at 9,000 a second here (measured with top
// beside the node), so on two cores it could not offer three times the
// selling rate and the row measured the generator. This one is a single
// holdload engine (one epoll loop on one goroutine, raw HTTP/1.1, a token
// minted per request as the hold workers do), whose cost per request is
// what wrk's is.

// openLoopSpec is one open-loop run.
type openLoopSpec struct {
	Node     string // the node's base URL
	Sale     string
	Secret   []byte // the nodes' auth secret: each request carries its user's token
	Users    int    // requests cycle over users ol0..ol<Users-1>
	Rate     float64
	Duration time.Duration
	Conns    int
	Timeout  time.Duration // a request not answered this long after its intended send is lost
}

// openLoopTally is what an open-loop run saw.
type openLoopTally struct {
	Offered  int64 // arrivals scheduled
	Sent     int64 // arrivals sent (the rest: the generator never got to them)
	GaveUp   int64 // of the unsent: no connection was free before their timeout
	Statuses map[int]int64
	Lost     int64 // sent, no reply: closed, timed out, malformed
	Elapsed  time.Duration
	All, OK  *hdrhistogram.Histogram // µs from the intended send time; OK: the 201s
	Held     int64                   // connections open when the arrivals began
}

// rateSource yields n arrivals spaced 1/rate apart from start.
type rateSource struct {
	start    int64
	interval float64 // ns
	i, n     int64
	users    int
}

func (s *rateSource) Peek() (holdload.Request, bool) {
	if s.i >= s.n {
		return holdload.Request{}, false
	}
	return holdload.Request{At: s.start + int64(float64(s.i)*s.interval), User: int(s.i % int64(s.users))}, true
}

func (s *rateSource) Pop() { s.i++ }

// buyHandler builds GET /v1/sales/{sale}/buy for a user and tallies replies.
type buyHandler struct {
	head, tail []byte
	sub        []byte
	minter     *auth.Minter
	exp        int64
	t          *openLoopTally
}

// Build writes the buy for req.User with a fresh token and, as the nginx of
// a deployment does (cluster/nginx.conf.tmpl), X-Request-Start: the moment
// it is written, so the node can tell how long it sat in its socket.
func (h *buyHandler) Build(buf []byte, req holdload.Request) []byte {
	buf = append(buf, h.head...)
	h.sub = strconv.AppendInt(append(h.sub[:0], "ol"...), int64(req.User), 10)
	buf = h.minter.AppendBytes(buf, h.sub, h.exp)
	us := time.Now().UnixMicro()
	buf = append(buf, "\r\nX-Request-Start: t="...)
	buf = strconv.AppendInt(buf, us/1e6, 10)
	buf = append(buf, '.')
	frac := us % 1e6
	for d := int64(100_000); d > 0; d /= 10 {
		buf = append(buf, byte('0'+frac/d%10))
	}
	return append(buf, h.tail...)
}

func (h *buyHandler) Done(_ holdload.Request, r *holdload.Reply) {
	us := max(histMin, min(r.Latency.Microseconds(), histMax))
	_ = h.t.All.RecordValue(us)
	if r.Err == holdload.ErrGaveUp {
		h.t.GaveUp++
		return
	}
	if r.Err != nil {
		h.t.Lost++
		return
	}
	h.t.Statuses[r.Status]++
	if r.Status == 201 {
		_ = h.t.OK.RecordValue(us)
	}
}

// epollOpenLoop opens spec.Conns connections to the node, then offers
// spec.Rate buys a second for spec.Duration, each at its intended time or as
// soon after as a connection is free (latency counts from the intended
// time), and waits up to spec.Timeout for the last replies.
func epollOpenLoop(ctx context.Context, spec openLoopSpec) (openLoopTally, error) {
	u, err := url.Parse(spec.Node)
	if err != nil {
		return openLoopTally{}, fmt.Errorf("open loop: node url: %w", err)
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		return openLoopTally{}, fmt.Errorf("open loop: node address %q (want ip:port): %w", u.Host, err)
	}
	e, err := holdload.New(holdload.Config{Addrs: []netip.AddrPort{ap}, Conns: spec.Conns, Rate: 20_000, Timeout: spec.Timeout,
		Reconnect: true})
	if err != nil {
		return openLoopTally{}, fmt.Errorf("open loop: %w", err)
	}
	defer e.Close()
	stop := make(chan struct{})
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	defer context.AfterFunc(ctx, halt)()
	t := openLoopTally{Statuses: map[int]int64{}, All: newHist(), OK: newHist()}
	if t.Held = e.Ramp(stop); t.Held == 0 {
		return t, fmt.Errorf("open loop: no connection to %s", ap)
	}
	n := int64(spec.Rate * spec.Duration.Seconds())
	src := &rateSource{start: time.Now().UnixNano(), interval: float64(time.Second) / spec.Rate, n: n, users: max(spec.Users, 1)}
	h := &buyHandler{head: []byte("GET /v1/sales/" + escapePath(spec.Sale) + "/buy HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: Bearer "),
		tail: []byte("\r\n\r\n"), minter: auth.NewMinter(spec.Secret), exp: time.Now().Add(time.Hour).Unix(), t: &t}
	// Arrivals still unsent when the schedule is over by more than the
	// timeout are never sent: a generator that far behind measures itself.
	end := time.AfterFunc(spec.Duration+spec.Timeout, halt)
	defer end.Stop()
	began := time.Now()
	e.Drive(src, h, stop)
	t.Elapsed = time.Since(began)
	t.Offered, t.Sent = n, src.i-t.GaveUp
	answered := t.Lost
	for _, k := range t.Statuses {
		answered += k
	}
	t.Lost += t.Sent - answered // still in flight when the run was stopped
	if ctx.Err() != nil {
		return t, ctx.Err()
	}
	return t, nil
}
