package statlog

import (
	"bytes"
	"fmt"
	"os"
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
