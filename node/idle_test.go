package node_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/internal/testenv"
)

// TestIdleConnectionMemory holds N idle keep-alive connections (each has
// made one request) to a node process and reports the node's resident
// memory per connection, and the kernel's TCP memory per connection pair,
// for the engine FLASHSALE_HTTP_ENGINE names (make test-nbio runs it on
// nbio). The node runs as its own process so its RSS is its own and each
// side stays under the per-process descriptor limit. N is
// FLASHSALE_IDLE_CONNS (default 10,000). Bound: ≤ 3 KB per connection on
// nbio (issue 17's target), ≤ 40 KB on net/http (measured ≈ 20 KB).
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node process and holds many connections")
	}
	conns := 10000
	if v := os.Getenv("FLASHSALE_IDLE_CONNS"); v != "" {
		var err error
		if conns, err = strconv.Atoi(v); err != nil || conns < 100 {
			t.Fatalf("FLASHSALE_IDLE_CONNS=%q: want a count >= 100", v)
		}
	}
	engine := os.Getenv("FLASHSALE_HTTP_ENGINE")
	if engine == "" {
		engine = "nethttp"
	}
	bin := filepath.Join(t.TempDir(), "flashsale")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/flashsale").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e := e2e.NewEnv(t)
	port, admin := testenv.FreePort(t), testenv.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var logBuf bytes.Buffer
	cmd := exec.Command(bin, "node")
	cmd.Env = append(os.Environ(), "FLASHSALE_HTTP_ADDR="+addr, "FLASHSALE_HTTP_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(admin),
		"FLASHSALE_NODE_ID=idle", "FLASHSALE_REDIS_ADDRS="+e.Redis.Addr, "FLASHSALE_KAFKA_BROKERS="+e.Kafka.Addr,
		"FLASHSALE_AUTH_SECRET="+e2e.AuthSecret, "FLASHSALE_STATLOG_PATH="+filepath.Join(t.TempDir(), "stat.log"),
		"FLASHSALE_HTTP_ENGINE="+engine, "FLASHSALE_HTTP_IDLE_TIMEOUT=5m", "FLASHSALE_LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	ready := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			ready = resp.StatusCode == 200
			if ready {
				break
			}
		}
	}
	if !ready {
		t.Fatalf("node not serving on %s:\n%s", addr, logBuf.String())
	}

	req := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	// Each from its own loopback source address (127.77.a.b): the box's
	// ephemeral ports towards 127.0.0.1 may be taken by TIME_WAITs of
	// other runs.
	var dialed int
	open := func(n int) []net.Conn {
		out := make([]net.Conn, 0, n)
		for i := range n {
			k := dialed
			dialed++
			d := net.Dialer{Timeout: 5 * time.Second,
				LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 77, byte(k/250%250), byte(k%250+2))}}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			out = append(out, c)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(req); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			resp, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
			if err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("connection %d: %s", i, resp.Status)
			}
			_ = c.SetDeadline(time.Time{})
		}
		return out
	}
	// Warm up (pools, first allocations), then the baseline.
	for _, c := range open(200) {
		c.Close()
	}
	time.Sleep(500 * time.Millisecond)
	rss0, tcp0 := rssBytes(t, cmd.Process.Pid), tcpMemBytes(t)
	start := time.Now()
	held := open(conns)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	took := time.Since(start)
	time.Sleep(time.Second) // let the node settle (GC, goroutines parked)
	rss1, tcp1 := rssBytes(t, cmd.Process.Pid), tcpMemBytes(t)
	// Still served: every held connection is alive and the node answers.
	if resp, err := http.Get("http://" + addr + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("node after %d idle connections: %v", conns, err)
	}
	per := float64(rss1-rss0) / float64(conns)
	kernel := float64(tcp1-tcp0) / float64(conns)
	t.Logf("engine %s: %d idle keep-alives held (opened in %v): node RSS %.1f MB -> %.1f MB = %.2f KB per connection; kernel TCP memory %.2f KB per connection pair (both ends, buffers only)",
		engine, conns, took.Round(time.Millisecond), float64(rss0)/1e6, float64(rss1)/1e6, per/1024, kernel/1024)
	limit := 40.0 * 1024
	if engine == "nbio" {
		limit = 3 * 1024
	}
	if per > limit {
		t.Fatalf("engine %s: %.2f KB of node RSS per idle connection, want <= %.1f KB", engine, per/1024, limit/1024)
	}
}

// rssBytes is VmRSS of pid.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// tcpMemBytes is the kernel's TCP buffer memory (/proc/net/sockstat "TCP:
// ... mem N", pages) for the whole box; other processes move it too, so it
// is reported, not asserted.
func tcpMemBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "TCP:" {
			for i := 1; i+1 < len(f); i++ {
				if f[i] == "mem" {
					pages, _ := strconv.ParseInt(f[i+1], 10, 64)
					return pages * int64(os.Getpagesize())
				}
			}
		}
	}
	return 0
}
