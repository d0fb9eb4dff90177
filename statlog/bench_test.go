package statlog

import (
	"path/filepath"
	"testing"
	"time"
)

// One outcome line, as every buy writes it.
func BenchmarkWrite(b *testing.B) {
	w, err := Open(filepath.Join(b.TempDir(), "stat.log"), 64<<20, 10*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r := &Record{Time: time.Now(), Node: "node-1", Kind: "buy", Sale: "s1", User: "u123456", Result: "sold_out", LatencyUs: 42}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Write(r)
		}
	})
}
