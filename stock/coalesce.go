package stock

import (
	"sync"
	"time"
)

// Coalescer settles concurrent requests in batches: callers enqueue into one
// bounded queue and a fixed set of flusher goroutines each take whatever has
// queued up (at most MaxBatch, waiting at most Linger for more) and settle it
// with one call of the flush function, then fan the results back out.
//
// Under light load a batch is one request and adds no delay; under heavy load
// batches grow by themselves while earlier ones are in flight, so one Redis
// round trip serves many buyers. The queue and the flushers are bounded; a
// full queue is reported to the caller at once, never waited on.
type Coalescer[Req, Res any] struct {
	queue   chan *call[Req, Res]
	stop    chan struct{}
	stopped chan struct{}
	flush   func(reqs []Req, res []Res)
	max     int
	linger  time.Duration
	pool    sync.Pool
	wg      sync.WaitGroup
	once    sync.Once
}

type call[Req, Res any] struct {
	req  Req
	res  Res
	done chan struct{} // capacity 1, reused across calls
}

// CoalescerConfig bounds a Coalescer.
type CoalescerConfig struct {
	MaxBatch  int           // most requests one flush settles
	Flushers  int           // flushes that may be in flight at once
	QueueSize int           // requests that may wait; more are refused
	Linger    time.Duration // how long a flusher waits to fill a batch; 0: take what is there
}

// NewCoalescer starts cfg.Flushers goroutines that call flush with batches.
// flush must fill res[i] for every reqs[i]; it must not keep either slice.
func NewCoalescer[Req, Res any](cfg CoalescerConfig, flush func(reqs []Req, res []Res)) *Coalescer[Req, Res] {
	cfg.MaxBatch = max(cfg.MaxBatch, 1)
	cfg.Flushers = max(cfg.Flushers, 1)
	cfg.QueueSize = max(cfg.QueueSize, 1)
	c := &Coalescer[Req, Res]{
		queue:   make(chan *call[Req, Res], cfg.QueueSize),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		flush:   flush,
		max:     cfg.MaxBatch,
		linger:  cfg.Linger,
	}
	c.pool.New = func() any { return &call[Req, Res]{done: make(chan struct{}, 1)} }
	c.wg.Add(cfg.Flushers)
	for i := 0; i < cfg.Flushers; i++ {
		go c.run()
	}
	return c
}

// Do enqueues req and waits for its batch to be settled. It reports false at
// once, without settling req, when the queue is full or the coalescer is
// closed. Do does not take a context on purpose: once a request is in a batch
// its outcome is decided by the flush (which bounds itself), and the caller
// must learn it — abandoning the wait could hide a real sale.
func (c *Coalescer[Req, Res]) Do(req Req) (res Res, ok bool) {
	cl := c.pool.Get().(*call[Req, Res])
	cl.req = req
	select {
	case c.queue <- cl:
	default:
		c.put(cl)
		return res, false
	}
	select {
	case <-cl.done:
	case <-c.stopped:
		// Flushers signal every call they took before they exit, so a call
		// not yet done here was never taken and never will be.
		select {
		case <-cl.done:
		default:
			return res, false
		}
	}
	res = cl.res
	c.put(cl)
	return res, true
}

func (c *Coalescer[Req, Res]) put(cl *call[Req, Res]) {
	var zeroReq Req
	var zeroRes Res
	cl.req, cl.res = zeroReq, zeroRes
	c.pool.Put(cl)
}

func (c *Coalescer[Req, Res]) run() {
	defer c.wg.Done()
	batch := make([]*call[Req, Res], 0, c.max)
	reqs := make([]Req, 0, c.max)
	res := make([]Res, c.max)
	var timer *time.Timer
	for {
		var first *call[Req, Res]
		select {
		case first = <-c.queue:
		case <-c.stop:
			// Settle what is still queued, then exit.
			select {
			case first = <-c.queue:
			default:
				return
			}
		}
		batch = append(batch[:0], first)
		c.fill(&batch, &timer)
		reqs = reqs[:0]
		for _, cl := range batch {
			reqs = append(reqs, cl.req)
		}
		out := res[:len(batch)]
		clear(out)
		c.flush(reqs, out)
		for i, cl := range batch {
			cl.res = out[i]
			cl.done <- struct{}{}
			batch[i] = nil
		}
	}
}

// fill adds queued calls to batch until it is full, the queue is empty and
// the linger window (one window for the whole batch) has passed.
func (c *Coalescer[Req, Res]) fill(batch *[]*call[Req, Res], timer **time.Timer) {
	armed := false
	for len(*batch) < c.max {
		select {
		case cl := <-c.queue:
			*batch = append(*batch, cl)
			continue
		default:
		}
		if c.linger <= 0 {
			return
		}
		if !armed {
			if *timer == nil {
				*timer = time.NewTimer(c.linger)
			} else {
				(*timer).Reset(c.linger)
			}
			armed = true
		}
		select {
		case cl := <-c.queue:
			*batch = append(*batch, cl)
		case <-(*timer).C:
			return
		}
	}
	if armed {
		(*timer).Stop()
	}
}

// Close settles every queued request, stops the flushers and waits for them.
// Do calls after Close report false.
func (c *Coalescer[Req, Res]) Close() {
	c.once.Do(func() {
		close(c.stop)
		c.wg.Wait()
		close(c.stopped)
	})
}
