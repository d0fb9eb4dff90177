// Package statlog writes and reads stat.log: one JSON line per outcome a node
// answered (a buy, an envelope open, a shake), the evidence reconcile checks
// the books against.
//
// Writing never blocks a request: lines go into an in-memory buffer of
// bounded size that a background goroutine writes to the file. When the
// buffer is full the line is counted as dropped, never waited for. Close
// flushes what is buffered, so a graceful stop loses nothing; a SIGKILL loses
// at most the last flush interval, which reconcile reports as such.
package statlog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale/internal/jsonw"
)

// Record is one stat.log line.
type Record struct {
	Time      time.Time `json:"ts"`
	Node      string    `json:"node"`
	Kind      string    `json:"kind"`             // "buy", "open", "shake", ...
	Sale      string    `json:"sale"`             // sale, envelope or campaign id
	User      string    `json:"user"`             // user id
	Result    string    `json:"result"`           // "ok", "repeat" (see ResultRepeat) or an error code
	Order     string    `json:"order,omitempty"`  // order id when one was created (also for undone ones)
	Amount    int64     `json:"amount,omitempty"` // cents won, for envelopes and shakes
	LatencyUs int64     `json:"latency_us"`
}

// ResultRepeat is the Result of a buy answered with the order an earlier
// attempt with the same Idempotency-Key made (no unit was sold by it).
const ResultRepeat = "repeat"

// Writer appends records to a file. It is safe for concurrent use.
type Writer struct {
	mu      sync.Mutex
	buf     []byte
	spare   []byte
	limit   int
	f       *os.File
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Uint64
	written atomic.Uint64
	errs    atomic.Uint64
	closed  bool
}

// Open opens (appending) or creates the file at path. bufferBytes bounds the
// in-memory buffer; interval is how often it is written out.
func Open(path string, bufferBytes int, interval time.Duration) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open stat.log: %w", err)
	}
	if bufferBytes <= 0 {
		bufferBytes = 4 << 20
	}
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	w := &Writer{buf: make([]byte, 0, 64<<10), spare: make([]byte, 0, 64<<10), limit: bufferBytes, f: f,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop(interval)
	return w, nil
}

// Write appends r without blocking on I/O. It reports false (and counts the
// line as dropped) when the buffer is full or the writer is closed.
func (w *Writer) Write(r *Record) bool {
	var line [320]byte
	b := AppendRecord(line[:0], r)
	w.mu.Lock()
	if w.closed || len(w.buf)+len(b) > w.limit {
		w.mu.Unlock()
		w.dropped.Add(1)
		return false
	}
	w.buf = append(w.buf, b...)
	big := len(w.buf) > w.limit/2
	w.mu.Unlock()
	if big {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// AppendRecord appends r as one JSON line (with its newline).
func AppendRecord(b []byte, r *Record) []byte {
	b = append(b, `{"ts":"`...)
	b = appendTime(b, r.Time)
	b = append(b, '"')
	b = jsonw.StrField(b, "node", r.Node)
	b = jsonw.StrField(b, "kind", r.Kind)
	b = jsonw.StrField(b, "sale", r.Sale)
	b = jsonw.StrField(b, "user", r.User)
	b = jsonw.StrField(b, "result", r.Result)
	if r.Order != "" {
		b = jsonw.StrField(b, "order", r.Order)
	}
	if r.Amount != 0 {
		b = jsonw.IntField(b, "amount", r.Amount)
	}
	b = jsonw.IntField(b, "latency_us", r.LatencyUs)
	return append(b, '}', '\n')
}

// stamp is a second's "2006-01-02T15:04:05." prefix, formatted once.
type stamp struct {
	sec    int64
	prefix []byte
}

var lastStamp atomic.Pointer[stamp]

// appendTime appends t in UTC as RFC 3339 with microseconds. Lines of one
// second share the formatted date and time, so a line pays only for its
// microseconds.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	sec := t.Unix()
	st := lastStamp.Load()
	if st == nil || st.sec != sec {
		st = &stamp{sec: sec, prefix: t.Truncate(time.Second).AppendFormat(nil, "2006-01-02T15:04:05.")}
		lastStamp.Store(st)
	}
	b = append(b, st.prefix...)
	us := t.Nanosecond() / 1000
	for d := 100000; d > 0; d /= 10 {
		b = append(b, byte('0'+us/d%10))
	}
	return append(b, 'Z')
}

func (w *Writer) loop(interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.kick:
		case <-w.stop:
			w.flush()
			return
		}
		w.flush()
	}
}

func (w *Writer) flush() {
	w.mu.Lock()
	out := w.buf
	w.buf, w.spare = w.spare[:0], nil
	w.mu.Unlock()
	if len(out) > 0 {
		if _, err := w.f.Write(out); err != nil {
			w.errs.Add(1)
		} else {
			w.written.Add(uint64(len(out)))
		}
	}
	w.mu.Lock()
	w.spare = out[:0]
	w.mu.Unlock()
}

// Dropped returns how many lines were dropped because the buffer was full.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// WriteErrors returns how many flushes failed to write.
func (w *Writer) WriteErrors() uint64 { return w.errs.Load() }

// Close writes out everything buffered, syncs and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	<-w.done
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return fmt.Errorf("sync stat.log: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close stat.log: %w", err)
	}
	return nil
}

// ReadStats says what Read found besides good records.
type ReadStats struct {
	Lines     int // records decoded
	Malformed int // lines that are not a record
	Truncated bool
}

// Read calls fn for every record in r. A last line without its newline (a
// node killed mid-write) is reported as Truncated, not as an error.
func Read(r io.Reader, fn func(Record) error) (ReadStats, error) {
	var st ReadStats
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				st.Truncated = true
				return st, nil
			}
			var rec Record
			if jerr := json.Unmarshal(line, &rec); jerr != nil {
				st.Malformed++
			} else {
				st.Lines++
				if ferr := fn(rec); ferr != nil {
					return st, ferr
				}
			}
		}
		if err == io.EOF {
			return st, nil
		} else if err != nil {
			return st, fmt.Errorf("read stat.log: %w", err)
		}
	}
}
