package holdload

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in      string
		total, status int
		keep          bool
		body, node    string
		err           bool
	}{
		{name: "whole", in: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-Flashsale-Node: n1\r\n\r\n{\"won\":false}",
			total: 74, status: 200, keep: true, body: `{"won":false}`, node: "n1"},
		{name: "partial head", in: "HTTP/1.1 200 OK\r\nContent-Len"},
		{name: "partial body", in: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"won\""},
		{name: "close", in: "HTTP/1.1 429 Too Many\r\ncontent-length: 0\r\nConnection: close\r\n\r\n", total: 63, status: 429},
		{name: "http/1.0", in: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", total: 38, status: 200},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Flashsale-Node: p2\r\n\r\nd\r\n{\"won\":false}\r\n0\r\n\r\n",
			total: 92, status: 200, keep: true, body: `{"won":false}`, node: "p2"},
		{name: "two chunks", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"won\":\r\n6\r\nfalse}\r\n0\r\n\r\n",
			total: 75, status: 200, keep: true, body: `{"won":false}`},
		{name: "chunked partial", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"won\":false}\r\n0\r\n"},
		{name: "chunked bad size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", err: true},
		{name: "gzip", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", err: true},
		{name: "no length", in: "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", err: true},
		{name: "garbage", in: "SSH-2.0-OpenSSH\r\n\r\n", err: true},
		{name: "bad status", in: "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Reply
			total, keep, err := parse([]byte(tc.in), &r)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if total != tc.total {
				t.Fatalf("total = %d, want %d", total, tc.total)
			}
			if total == 0 {
				return
			}
			if r.Status != tc.status || keep != tc.keep || string(r.Body) != tc.body || string(r.Node) != tc.node {
				t.Fatalf("got status %d keep %v body %q node %q", r.Status, keep, r.Body, r.Node)
			}
		})
	}
}

// fixed is a Source of n requests, one every gap from t0.
type fixed struct {
	t0, gap int64
	i, n    int
}

func (f *fixed) Peek() (Request, bool) {
	if f.i >= f.n {
		return Request{}, false
	}
	return Request{At: f.t0 + int64(f.i)*f.gap, User: f.i}, true
}
func (f *fixed) Pop() { f.i++ }

type counting struct {
	ok, failed int
	users      map[int]bool
}

func (c *counting) Build(buf []byte, r Request) []byte {
	return append(buf, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n"...)
}

func (c *counting) Done(r Request, rep *Reply) {
	if rep.Err == nil && rep.Status == 200 && string(rep.Body) == "hi" {
		c.ok++
	} else {
		c.failed++
	}
	c.users[r.User] = true
}

// Invariant: every connection asked for is held through the requests, and
// every request gets exactly one Done with its reply.
func TestHoldAndDrive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Flashsale-Node", "t1")
		_, _ = w.Write([]byte("hi"))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	e, err := New(Config{Addrs: []netip.AddrPort{ap}, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")},
		Conns: 300, Rate: 3000, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if held := e.Ramp(nil); held != 300 {
		t.Fatalf("held %d, want 300 (failed %d)", held, e.Stats.Failed.Load())
	}
	c := &counting{users: map[int]bool{}}
	src := &fixed{t0: time.Now().UnixNano(), gap: int64(time.Millisecond) / 2, n: 1000}
	e.Drive(src, c, nil)
	if c.ok != 1000 || c.failed != 0 || len(c.users) != 1000 {
		t.Fatalf("ok %d failed %d users %d, want 1000, 0, 1000", c.ok, c.failed, len(c.users))
	}
	if h := e.Stats.Held(); h != 300 {
		t.Fatalf("held %d after the requests, want 300", h)
	}
	// The server going away is seen as lost connections, not as held ones.
	srv.Close()
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats.Held() > 0 && time.Now().Before(deadline) {
		e.poll(10, time.Now().UnixNano(), c)
	}
	if h := e.Stats.Held(); h != 0 {
		t.Fatalf("held %d after the server closed, want 0", h)
	}
}

func TestTooManyForTheLimit(t *testing.T) {
	_, err := New(Config{Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}, Conns: 10_000_000})
	if err == nil || !strings.Contains(err.Error(), "open-files limit") {
		t.Fatalf("err = %v, want the open-files limit refused", err)
	}
}

// FuzzParse: any bytes a server sends give an error, "not yet", or a reply
// that lies within them; never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"won\":false}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"won\":false}\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"won\":\r\n6\r\nfalse}\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		var r Reply
		total, _, err := parse(in, &r)
		if err != nil || total == 0 {
			return
		}
		if total > len(in) || len(r.Body) > total || r.Status < 100 || r.Status > 599 {
			t.Fatalf("total %d of %d bytes, body %d, status %d", total, len(in), len(r.Body), r.Status)
		}
	})
}
