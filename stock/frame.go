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
	// Answer settles item k's part of the batch once its wins' events were
	// published: errs[j] is what Kafka said of wins[j] (nil: durable). The
	// product undoes and answers the wins Kafka refused, and takes back any
	// answer that went stale meanwhile (a buyer nobody waits for any more);
	// a win that can no longer be undone may stand. It is called for every
	// item whose Call succeeded, with or without wins.
	Answer(ctx context.Context, k K, reqs []Req, res []Res, wins []int, errs []error)
	// Deadline is the time after which nobody hears req's answer; zero:
	// none. The Publish of a batch's events is bounded by the latest
	// deadline of its wins, since waiting longer cannot save an answer.
	Deadline(req Req) time.Time
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
// Publish, has the product undo what Kafka refused or what came too late,
// and answers. It is safe
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

// Retry puts a product's own follow-up of item itemID in the in-doubt
// resolver's queue, as if it were a batch whose reply was lost: the
// resolve function gets job as the batch and is retried until it succeeds
// (bounded, like every batch in doubt). The seller uses it for an abort
// Redis did not answer, so a buyer told 503 is not left holding an order
// until its pay deadline. The resolve function must tell jobs from batch
// ids (NewBatchID's start with the node id).
func (f *Frame[K, Req, Res]) Retry(itemID, job string) { f.doubt.Add(itemID, job) }

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
	ok   bool // Call had the script's reply
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
		g.wins, g.ok = wins, true
		nwins += len(wins)
	}
	var errs []error
	if nwins > 0 && f.pub != nil {
		errs = f.publish(groups, nwins)
	}
	f.answer(groups, errs)
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

// publish makes every win of the batch durable with one Publish and
// returns what Kafka said of each, in the order of the groups' wins.
func (f *Frame[K, Req, Res]) publish(groups []group[K, Req, Res], nwins int) []error {
	msgs := make([]kafkago.Message, 0, nwins)
	buf := make([]byte, 0, 192*nwins) // one buffer for the whole batch
	var latest time.Time              // the latest deadline of a win; zero: some win has none
	bounded := true
	for _, g := range groups {
		if len(g.wins) == 0 {
			continue
		}
		key := []byte(f.p.ItemID(g.k)) // one item: one key, so its events keep their order
		for _, i := range g.wins {
			start := len(buf)
			buf = f.p.AppendEvent(buf, g.k, g.reqs[i], &g.res[i])
			msgs = append(msgs, kafkago.Message{Key: key, Value: buf[start:len(buf):len(buf)]})
			if d := f.p.Deadline(g.reqs[i]); d.IsZero() {
				bounded = false
			} else if d.After(latest) {
				latest = d
			}
		}
	}
	errs := make([]error, len(msgs))
	until := time.Now().Add(f.cfg.PublishTimeout)
	if bounded && latest.Before(until) {
		until = latest
	}
	ctx, cancel := context.WithDeadline(context.Background(), until)
	f.pub.Publish(ctx, msgs, errs)
	cancel()
	return errs
}

// answer hands every group whose Call succeeded to the product's Answer
// with its share of errs (nil errs: nothing was published).
func (f *Frame[K, Req, Res]) answer(groups []group[K, Req, Res], errs []error) {
	m := 0
	for gi := range groups {
		g := &groups[gi]
		if !g.ok {
			continue
		}
		var gerrs []error
		if errs != nil {
			gerrs = errs[m : m+len(g.wins) : m+len(g.wins)]
			m += len(g.wins)
		} else {
			gerrs = make([]error, len(g.wins))
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.RedisTimeout)
		f.p.Answer(ctx, g.k, g.reqs, g.res, g.wins, gerrs)
		cancel()
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
