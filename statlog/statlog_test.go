package statlog

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Invariant: every line written before Close is in the file, once, intact.
func TestWriteCloseRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat.log")
	w, err := Open(path, 1<<20, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				w.Write(&Record{Time: time.Now(), Node: "n1", Kind: "buy", Sale: "s", User: fmt.Sprintf("u%d-%d", g, i),
					Result: "ok", Order: fmt.Sprintf("s.%d", g*1000+i), LatencyUs: 12})
			}
		}(g)
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	seen := map[string]bool{}
	st, err := Read(f, func(r Record) error {
		if seen[r.Order] {
			return fmt.Errorf("order %s twice", r.Order)
		}
		seen[r.Order] = true
		return nil
	})
	if err != nil || st.Lines != 4000 || st.Malformed != 0 || st.Truncated || w.Dropped() != 0 {
		t.Fatalf("read %+v err=%v dropped=%d", st, err, w.Dropped())
	}
}

// A full buffer drops (and counts) instead of blocking.
func TestFullBufferDrops(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "s.log"), 300, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ok := 0
	for i := 0; i < 10; i++ {
		if w.Write(&Record{Time: time.Now(), Node: "n", Kind: "buy", Sale: "s", User: "u", Result: "sold_out"}) {
			ok++
		}
	}
	if ok == 10 || w.Dropped() != uint64(10-ok) {
		t.Fatalf("wrote %d, dropped %d", ok, w.Dropped())
	}
}

func TestReadTruncatedTail(t *testing.T) {
	var b bytes.Buffer
	b.Write(AppendRecord(nil, &Record{Time: time.Now(), Node: "n", Result: "ok"}))
	b.WriteString("garbage\n")
	b.WriteString(`{"ts":"2026-01-01T00:00:00Z","node":"n","res`)
	st, err := Read(&b, func(Record) error { return nil })
	if err != nil || st.Lines != 1 || st.Malformed != 1 || !st.Truncated {
		t.Fatalf("%+v %v", st, err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"ts":"2026-01-01T00:00:00Z","node":"n","result":"ok"}` + "\n"))
	f.Add([]byte("\n\n{}\n{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Read(bytes.NewReader(data), func(Record) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if st.Lines+st.Malformed > strings.Count(string(data), "\n") {
			t.Fatalf("%+v from %d lines", st, strings.Count(string(data), "\n"))
		}
	})
}

func TestAppendTimeMatchesFormat(t *testing.T) {
	for _, ts := range []time.Time{time.Unix(0, 0), time.Unix(1700000000, 123456789), time.Unix(1700000000, 999999999),
		time.Unix(1700000001, 1000), time.Date(2026, 11, 22, 23, 59, 59, 500, time.FixedZone("x", 3600))} {
		want := ts.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
		if got := string(appendTime(nil, ts)); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", ts, got, want)
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes for the test, or skips it with a
// message when mounting is not allowed here (no root, no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a small tmpfs here (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file until the disk is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("x"), 512)
	for {
		if _, err := f.Write(chunk); err != nil {
			return p
		}
	}
}

// Invariant: on a full disk stat.log holds whole lines only; every line not
// written is counted in Dropped and stated by a gap record once space is
// back (so written + lost = every line); the loss is logged at most about
// once a second and Health says degraded.
func TestFullDiskWholeLinesCountedResumes(t *testing.T) {
	dir := mountTmpfs(t, 64<<10)
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))
	w, err := OpenWith(filepath.Join(dir, "stat.log"), Options{BufferBytes: 1 << 20, Interval: 2 * time.Millisecond, Node: "n1", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	write := func(n int) {
		for i := 0; i < n; i++ {
			w.Write(&Record{Time: time.Now(), Node: "n1", Kind: "buy", Sale: "s", User: fmt.Sprint("u", total),
				Result: "ok", Order: fmt.Sprint("s.", total+1), LatencyUs: 7})
			total++
			if i%10 == 0 {
				time.Sleep(time.Millisecond) // several flushes per phase, some of them torn
			}
		}
	}
	write(50)
	time.Sleep(20 * time.Millisecond)
	filler := fill(t, dir)
	write(400)
	time.Sleep(20 * time.Millisecond)
	if w.Health() == nil || w.Dropped() == 0 {
		t.Fatalf("disk full: health %v, dropped %d; want degraded and counted", w.Health(), w.Dropped())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	write(50)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "stat.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ok, lost int64
	seen := map[string]bool{}
	st, err := Read(f, func(r Record) error {
		switch r.Kind {
		case KindGap:
			lost += r.Lost
		default:
			if seen[r.Order] {
				t.Errorf("line %s twice", r.Order)
			}
			seen[r.Order] = true
			ok++
		}
		return nil
	})
	if err != nil || st.Malformed != 0 || st.Truncated {
		t.Fatalf("read: %+v %v: want whole lines only", st, err)
	}
	if ok+lost != int64(total) || uint64(lost) != w.Dropped() || lost == 0 {
		t.Fatalf("%d lines written + %d stated lost != %d sent (dropped counter %d)", ok, lost, total, w.Dropped())
	}
	logMu.Lock()
	warned := strings.Count(logs.String(), "stat.log write failed")
	logMu.Unlock()
	if warned < 1 || warned > 3 {
		t.Fatalf("%d loss warnings for a loss well under a second: want 1 (rate-limited)", warned)
	}
	t.Logf("%d lines written, %d lost on the full disk and stated in gap records", ok, lost)
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Invariant: a file left ending in a partial line (a node killed mid-write)
// is terminated before the next record, so no record is glued onto it.
func TestTornFileIsTerminated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat.log")
	if err := os.WriteFile(path, []byte(`{"ts":"2026-01-01T00:00:00.000000Z","node":"n1","kind":"buy"`), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, 1<<20, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(&Record{Time: time.Now(), Node: "n1", Kind: "buy", Sale: "s", User: "u", Result: "ok", Order: "s.1"})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	st, err := Read(f, func(Record) error { return nil })
	if err != nil || st.Lines != 1 || st.Malformed != 1 || st.Truncated {
		t.Fatalf("read %+v %v: want the torn line malformed and the new one whole", st, err)
	}
}
