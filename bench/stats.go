package bench

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/flashsale/flashsale"
)

// Outcome codes. The server's error codes come from the root package so a
// renamed code breaks the build here rather than silently counting as
// "other"; the last few are the generator's own.
var codeNames = [...]string{
	flashsale.ESOLDOUT,
	flashsale.ELIMITREACHED,
	flashsale.ENOTSTARTED,
	flashsale.EENDED,
	flashsale.ENOTFOUND,
	flashsale.EINVALID,
	flashsale.ETOOLARGE,
	flashsale.EUNAUTHORIZED,
	flashsale.ECONFLICT,
	flashsale.EEXPIRED,
	flashsale.EUNAVAILABLE,
	flashsale.EOVERLOADED,
	flashsale.EINTERNAL,
	flashsale.EEMPTY,
	flashsale.EALREADYOPENED,
	"ok",        // a 2xx that won something (unit, share, envelope)
	"no_win",    // a 2xx shake that won nothing
	"other",     // a non-2xx reply without a known code
	"transport", // no reply at all: dial, write, read, malformed reply
	"timeout",   // no reply within --timeout
}

const (
	codeSoldOut   = 0
	codeLimit     = 1
	codeEmpty     = 13
	codeOK        = 15
	codeNoWin     = 16
	codeOther     = 17
	codeTransport = 18
	codeTimeout   = 19
	numCodes      = len(codeNames)
)

// codeIndex maps a code read from a response body to its counter slot
// without allocating.
func codeIndex(b []byte) int {
	for i := 0; i < codeOK; i++ {
		if string(b) == codeNames[i] {
			return i
		}
	}
	return codeOther
}

// Histogram bounds in microseconds: 1 µs to 1 minute at 3 significant
// digits, so p99 of a 200 µs run and of a 30 s stall are both exact enough.
const (
	histMin = 1
	histMax = 60_000_000
	histSig = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSig) }

// counters are the per-interval numbers one shard accumulates.
type counters struct {
	requests int64
	codes    [numCodes]int64
	status   [600]int64 // by exact status; 0 = no reply (or a nonsense status)
	cents    int64      // amount won (envelopes, shakes) or charged (buy price × units is server-side)
	pays     int64      // pay requests answered 200
	payFails int64      // pay requests that did not end in 200
	nodes    map[string]int64
}

func (c *counters) add(o *counters) {
	c.requests += o.requests
	for i := range c.codes {
		c.codes[i] += o.codes[i]
	}
	for i := range c.status {
		c.status[i] += o.status[i]
	}
	c.cents += o.cents
	c.pays += o.pays
	c.payFails += o.payFails
	for k, v := range o.nodes {
		if c.nodes == nil {
			c.nodes = make(map[string]int64)
		}
		c.nodes[k] += v
	}
}

func (c *counters) reset() {
	nodes := c.nodes
	*c = counters{nodes: nodes}
	for k := range nodes {
		nodes[k] = 0
	}
}

// shard is where a few workers record. Workers hold its mutex only for the
// few nanoseconds of a record call, and the ticker holds it to harvest once
// a second, so the lock is almost never contended; sharding keeps it so at
// hundreds of connections without giving each worker its own 3-digit
// histogram (hundreds of KiB each).
type shard struct {
	mu    sync.Mutex
	hist  *hdrhistogram.Histogram // latencies since the last harvest
	c     counters
	nodes map[string]*int64 // replies per node since the last harvest
}

// record adds one completed request. latency is measured from the intended
// send time in open-loop modes, which is what makes it honest.
func (s *shard) record(latency time.Duration, status int, code int, cents int64, node []byte) {
	us := latency.Microseconds()
	if us < histMin {
		us = histMin
	}
	if us > histMax {
		us = histMax
	}
	s.mu.Lock()
	_ = s.hist.RecordValue(us)
	s.c.requests++
	s.c.codes[code]++
	if status < 100 || status > 599 {
		status = 0
	}
	s.c.status[status]++
	s.c.cents += cents
	if len(node) > 0 {
		// A map lookup indexed by string(node) does not allocate but an
		// m[string(node)]++ does, hence pointer values: only a node seen
		// for the first time costs a key.
		if p, ok := s.nodes[string(node)]; ok {
			*p++
		} else {
			if s.nodes == nil {
				s.nodes = make(map[string]*int64)
			}
			n := int64(1)
			s.nodes[string(node)] = &n
		}
	}
	s.mu.Unlock()
}

func (s *shard) recordPay(ok bool) {
	s.mu.Lock()
	if ok {
		s.c.pays++
	} else {
		s.c.payFails++
	}
	s.mu.Unlock()
}

// harvest moves the shard's interval numbers into h and c and resets them.
func (s *shard) harvest(h *hdrhistogram.Histogram, c *counters) {
	s.mu.Lock()
	h.Merge(s.hist)
	s.hist.Reset()
	c.add(&s.c)
	s.c.reset()
	for k, p := range s.nodes {
		if *p != 0 {
			if c.nodes == nil {
				c.nodes = make(map[string]int64)
			}
			c.nodes[k] += *p
			*p = 0
		}
	}
	s.mu.Unlock()
}
