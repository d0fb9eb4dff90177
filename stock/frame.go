package stock

import (
	"context"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
)

// Publisher makes events durable before anyone hears "you got it";
// kafka.Publisher implements it. Publish sets errs[i] for every message it
// could not make durable and bounds itself in time.
type Publisher interface {
	Publish(ctx context.Context, msgs []kafkago.Message, errs []error)
}

// Product is what one product (tickets, envelopes, shakes) supplies to the
// batch frame: its script call, the mapping of the script's outcomes, its
// events and what follows durability. K identifies an item (a sale, an
// envelope, a campaign: usually the node's state of it); the frame calls
// every method from a flusher goroutine, for one item's requests at a time
// except Settled.
type Product[K comparable, Req, Res any] interface {
	// Item is the item req is for; requests of one item share a script call.
	Item(req Req) K
	// ItemID names item k in Redis, Kafka keys, in-doubt batches and logs.
	ItemID(k K) string
	// Call runs the product's script once for reqs, all of item k, as batch
	// batch, fills res[i] for every reqs[i] (units it did not use go back to
	// the local share here) and returns the indexes of the wins whose events
	// must be published before they are answered. An error means the
	// script's reply was not had: the frame then puts the batch in doubt
	// (unless Redis itself answered) and calls Unavailable.
	Call(ctx context.Context, k K, batch string, reqs []Req, res []Res) (wins []int, err error)
	// Unavailable answers reqs whose script call failed with err: their
	// units back to the local share and res filled with the product's 503.
	Unavailable(k K, reqs []Req, res []Res, err error)
	// AppendEvent appends the event announcing win res (of reqs' item k).
	// A product without events returns no wins from Call and is never asked.
	AppendEvent(b []byte, k K, req Req, res *Res) []byte
	// Undo undoes the wins res[wins[j]] of item k that Kafka refused with
	// errs[j], and answers them; a win that can no longer be undone may
	// stand.
	Undo(ctx context.Context, k K, reqs []Req, res []Res, wins []int, errs []error)
	// Settled sees every answer of the batch once it is final, for the steps
	// that follow durability (wallet credits) and for counting.
	Settled(reqs []Req, res []Res)
}

// FrameConfig tunes a Frame. Zero durations take the defaults of
// configs/default.yaml.
type FrameConfig struct {
	Node           string        // this node's id: batch ids start with it
	Subsystem      string        // metric subsystem: "order", "envelope", "shake"
	RedisTimeout   time.Duration // bound of one script call and of one undo
	PublishTimeout time.Duration // bound of one Publish of a batch's events
	Coalescer      CoalescerConfig
	DoubtQueue     int // in-doubt batches held for resolution; 4096 when 0
}

// Frame is the one batch frame every product runs on. Concurrent requests
// queue in one bounded coalescer; each flush takes a batch, groups it by
// item, calls the product's script once per item under a fresh batch id,
// puts a batch whose reply was lost in doubt (the resolver writes it off or
// undoes it, so a 503 is always true), publishes every win's event in one
// Publish, has the product undo what Kafka refused, and answers. It is safe
// for concurrent use.
type Frame[K comparable, Req, Res any] struct {
	cfg     FrameConfig
	p       Product[K, Req, Res]
	pub     Publisher
	log     *slog.Logger
	co      *Coalescer[Req, Res]
	doubt   *InDoubt
	batches prometheus.Histogram
}

// NewFrame starts a frame for product p. pub may be nil for a product
// without events; resolve settles a batch whose reply was lost.
func NewFrame[K comparable, Req, Res any](cfg FrameConfig, p Product[K, Req, Res], pub Publisher, resolve ResolveFunc, log *slog.Logger) *Frame[K, Req, Res] {
	if log == nil {
		log = slog.Default()
	}
	cfg.RedisTimeout = Or(cfg.RedisTimeout, 500*time.Millisecond)
	cfg.PublishTimeout = Or(cfg.PublishTimeout, 5*time.Second)
	if cfg.DoubtQueue <= 0 {
		cfg.DoubtQueue = 4096
	}
	f := &Frame[K, Req, Res]{cfg: cfg, p: p, pub: pub, log: log,
		doubt: NewInDoubt(cfg.Subsystem, resolve, cfg.RedisTimeout, cfg.DoubtQueue, log),
		batches: metric.Histogram(cfg.Subsystem, "batch_size", "Requests settled by one flush (coalescing at work).",
			nil, prometheus.ExponentialBuckets(1, 2, 10)),
	}
	f.co = NewCoalescer(cfg.Coalescer, f.flush)
	return f
}

// Or returns d, or def when d is not positive: the one default helper for
// durations.
func Or(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Do queues req and waits for its batch's answer. It reports false at once,
// without settling req, when the queue is full or the frame is closed: the
// caller gives its unit back and answers "overloaded".
func (f *Frame[K, Req, Res]) Do(req Req) (Res, bool) { return f.co.Do(req) }

// Close settles what is queued, stops the flushers and tries once more to
// resolve the batches in doubt.
func (f *Frame[K, Req, Res]) Close() {
	f.co.Close()
	f.doubt.Close()
}

// group is one item's part of a batch. When the whole batch is one item
// (tickets always; envelopes and shakes mostly) it is the batch itself and
// nothing is copied.
type group[K comparable, Req, Res any] struct {
	k    K
	idx  []int // positions in the batch; nil: the whole batch
	reqs []Req
	res  []Res
	wins []int
}

func (f *Frame[K, Req, Res]) flush(reqs []Req, res []Res) {
	f.batches.Observe(float64(len(reqs)))
	groups := f.group(reqs, res)
	nwins := 0
	for gi := range groups {
		g := &groups[gi]
		id := f.p.ItemID(g.k)
		batch := NewBatchID(f.cfg.Node)
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.RedisTimeout)
		wins, err := f.p.Call(ctx, g.k, batch, g.reqs, g.res)
		cancel()
		if err != nil {
			f.log.Warn("script failed", "subsystem", f.cfg.Subsystem, "item", id, "batch", len(g.reqs), "err", err)
			if !Definite(err) {
				// The script may still run, or may have run: settle that
				// later so the 503 these requests get stays true.
				f.doubt.Add(id, batch)
			}
			f.p.Unavailable(g.k, g.reqs, g.res, err)
			continue
		}
		g.wins = wins
		nwins += len(wins)
	}
	if nwins > 0 && f.pub != nil {
		f.publish(groups, nwins)
	}
	for _, g := range groups {
		for j, i := range g.idx {
			res[i] = g.res[j]
		}
	}
	f.p.Settled(reqs, res)
}

// group splits a batch by item, in order of first arrival.
func (f *Frame[K, Req, Res]) group(reqs []Req, res []Res) []group[K, Req, Res] {
	first := f.p.Item(reqs[0])
	one := true
	for _, r := range reqs[1:] {
		if f.p.Item(r) != first {
			one = false
			break
		}
	}
	if one {
		return []group[K, Req, Res]{{k: first, reqs: reqs, res: res}}
	}
	var groups []group[K, Req, Res]
	at := map[K]int{}
	for i, r := range reqs {
		k := f.p.Item(r)
		gi, ok := at[k]
		if !ok {
			gi = len(groups)
			at[k] = gi
			groups = append(groups, group[K, Req, Res]{k: k})
		}
		groups[gi].idx = append(groups[gi].idx, i)
		groups[gi].reqs = append(groups[gi].reqs, r)
	}
	for gi := range groups {
		groups[gi].res = make([]Res, len(groups[gi].reqs))
	}
	return groups
}

// publish makes every win of the batch durable with one Publish, then has
// the product undo, item by item, the wins Kafka did not take.
func (f *Frame[K, Req, Res]) publish(groups []group[K, Req, Res], nwins int) {
	msgs := make([]kafkago.Message, 0, nwins)
	buf := make([]byte, 0, 192*nwins) // one buffer for the whole batch
	for _, g := range groups {
		if len(g.wins) == 0 {
			continue
		}
		key := []byte(f.p.ItemID(g.k)) // one item: one key, so its events keep their order
		for _, i := range g.wins {
			start := len(buf)
			buf = f.p.AppendEvent(buf, g.k, g.reqs[i], &g.res[i])
			msgs = append(msgs, kafkago.Message{Key: key, Value: buf[start:len(buf):len(buf)]})
		}
	}
	errs := make([]error, len(msgs))
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.PublishTimeout)
	f.pub.Publish(ctx, msgs, errs)
	cancel()
	m := 0
	for _, g := range groups {
		var failed []int
		var ferrs []error
		for _, i := range g.wins {
			if errs[m] != nil {
				failed = append(failed, i)
				ferrs = append(ferrs, errs[m])
			}
			m++
		}
		if len(failed) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), f.cfg.RedisTimeout)
			f.p.Undo(ctx, g.k, g.reqs, g.res, failed, ferrs)
			cancel()
		}
	}
}

// Describe implements prometheus.Collector.
func (f *Frame[K, Req, Res]) Describe(ch chan<- *prometheus.Desc) {
	f.batches.Describe(ch)
	f.doubt.Describe(ch)
}

// Collect implements prometheus.Collector.
func (f *Frame[K, Req, Res]) Collect(ch chan<- prometheus.Metric) {
	f.batches.Collect(ch)
	f.doubt.Collect(ch)
}
