// Package statlog writes and reads stat.log: one JSON line per outcome a node
// answered (a buy, an envelope open, a shake), the evidence reconcile checks
// the books against.
//
// Writing never blocks a request: lines go into an in-memory buffer of
// bounded size that a background goroutine writes to the file. When the
// buffer is full the line is counted as dropped, never waited for. Close
// flushes what is buffered, so a graceful stop loses nothing; a SIGKILL loses
// at most the last flush interval, which reconcile reports as such.
//
// The file only ever holds whole lines: when a write fails part-way (a full
// disk), the file is cut back to the last whole line written, the rest of
// the flush is counted as dropped, and writing resumes on that boundary once
// space is back. The first line written after any loss is a "gap" record
// (Kind KindGap, Lost = lines lost since the last one), so reconcile can tell
// lines lost on a full disk from orders nobody answered.
package statlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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
	Lost      int64     `json:"lost,omitempty"`   // a KindGap record: lines this node could not write before it
	LatencyUs int64     `json:"latency_us"`
}

// KindGap is the Kind of the record a Writer appends after lines were lost
// (buffer full, or the disk refused them): Lost says how many.
const KindGap = "gap"

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

	// Owned by the flushing goroutine (and Close after it stopped).
	size     int64  // bytes of whole lines in the file: where the next write starts
	gapped   uint64 // drops already reported by a gap record
	torn     bool   // a cut-back failed: the file may end in a partial line
	node     string // Node of gap records
	log      *slog.Logger
	lastLog  time.Time
	unlogged uint64 // drops not yet logged
	lastErr  atomic.Pointer[string]
	badUntil atomic.Int64 // unix nanos: degraded until then (a recent loss)
}

// Options are the optional settings of OpenWith.
type Options struct {
	BufferBytes int           // bound of the in-memory buffer; default 4 MiB
	Interval    time.Duration // how often the buffer is written out; default 100 ms
	Node        string        // node id written on gap records
	Log         *slog.Logger  // where losses are reported, at most once a second; default slog.Default()
}

// Open opens (appending) or creates the file at path. bufferBytes bounds the
// in-memory buffer; interval is how often it is written out.
func Open(path string, bufferBytes int, interval time.Duration) (*Writer, error) {
	return OpenWith(path, Options{BufferBytes: bufferBytes, Interval: interval})
}

// OpenWith is Open with every option.
func OpenWith(path string, o Options) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open stat.log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat stat.log: %w", err)
	}
	if o.BufferBytes <= 0 {
		o.BufferBytes = 4 << 20
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	w := &Writer{buf: make([]byte, 0, 64<<10), spare: make([]byte, 0, 64<<10), limit: o.BufferBytes, f: f,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		size: st.Size(), node: o.Node, log: o.Log}
	// A file left torn by an earlier run (killed mid-write, or a disk that
	// filled) gets its partial line terminated, so the next one starts clean.
	w.torn = st.Size() > 0 && !endsInNewline(f, st.Size())
	go w.loop(o.Interval)
	return w, nil
}

func endsInNewline(f *os.File, size int64) bool {
	var b [1]byte
	r, err := os.Open(f.Name())
	if err != nil {
		return true
	}
	defer r.Close()
	if _, err := r.ReadAt(b[:], size-1); err != nil {
		return true
	}
	return b[0] == '\n'
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
		w.badUntil.Store(time.Now().Add(degradedFor).UnixNano())
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
	if r.Lost != 0 {
		b = jsonw.IntField(b, "lost", r.Lost)
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

// degradedFor is how long Health reports a loss after the last one.
const degradedFor = 5 * time.Second

func (w *Writer) flush() {
	w.mu.Lock()
	out := w.buf
	w.buf, w.spare = w.spare[:0], nil
	w.mu.Unlock()
	if len(out) > 0 || w.dropped.Load() > w.gapped {
		w.writeOut(out)
	}
	w.mu.Lock()
	w.spare = out[:0]
	w.mu.Unlock()
}

// writeOut writes out (whole lines) after a gap record when lines were lost,
// keeping the file on a line boundary whatever the disk does.
func (w *Writer) writeOut(out []byte) {
	var head []byte
	if w.torn {
		head = append(head, '\n') // ends a partial line: it reads as one malformed line
	}
	lost := w.dropped.Load()
	if lost > w.gapped {
		head = AppendRecord(head, &Record{Time: time.Now(), Node: w.node, Kind: KindGap, Result: "lost",
			Lost: int64(lost - w.gapped)})
	}
	var err error
	var n int
	if len(head) > 0 {
		if n, err = w.f.Write(head); err == nil {
			w.size += int64(n)
			w.torn, w.gapped = false, lost
		} else {
			w.cutBack(n) // and nothing of out is tried: all of it is lost below
		}
	}
	if err == nil && len(out) > 0 {
		if n, err = w.f.Write(out); err == nil {
			w.size += int64(n)
			w.written.Add(uint64(n))
		} else {
			// Keep the whole lines that made it; cut the torn rest.
			keep := bytes.LastIndexByte(out[:n], '\n') + 1
			w.size += int64(keep)
			w.written.Add(uint64(keep))
			w.cutBack(n - keep)
			out = out[keep:]
		}
	}
	if err == nil {
		return
	}
	lines := uint64(bytes.Count(out, []byte{'\n'}))
	w.errs.Add(1)
	w.dropped.Add(lines)
	msg := err.Error()
	w.lastErr.Store(&msg)
	now := time.Now()
	w.badUntil.Store(now.Add(degradedFor).UnixNano())
	w.unlogged += lines
	if now.Sub(w.lastLog) >= time.Second {
		w.log.Warn("stat.log write failed; lines dropped (counted in flashsale_statlog_dropped_total)",
			"lines", w.unlogged, "dropped_total", w.dropped.Load(), "err", err)
		w.lastLog, w.unlogged = now, 0
	}
}

// cutBack removes the partial bytes a failed write left after the last
// whole line. If the file cannot be cut, the next write starts with a
// newline instead, so the fragment stays one malformed line and never
// glues onto the next record.
func (w *Writer) cutBack(partial int) {
	if partial <= 0 {
		return
	}
	if err := w.f.Truncate(w.size); err != nil {
		w.torn = true
	}
}

// Dropped returns how many lines were not written: the buffer was full, or
// the file refused them (a full disk).
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Health is nil while stat.log keeps every line, and says what went wrong
// for a few seconds after any line was lost (for /readyz: degraded).
func (w *Writer) Health() error {
	if time.Now().UnixNano() >= w.badUntil.Load() {
		return nil
	}
	why := "buffer full"
	if e := w.lastErr.Load(); e != nil {
		why = *e
	}
	return fmt.Errorf("degraded: %d stat.log lines dropped so far (last: %s)", w.dropped.Load(), why)
}

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
