package bench

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		status     int
		body, node string
		close      bool
		err        bool
	}{
		{"content-length", "HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\nX-Flashsale-Node: n2\r\n\r\nhello", 409, "hello", "n2", false, false},
		{"chunked", "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n", 201, "abcde", "", false, false},
		{"close", "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n", 200, "", "", true, false},
		{"http/1.0 to eof", "HTTP/1.0 200 OK\r\n\r\nrest of it", 200, "rest of it", "", true, false},
		{"204 ignores length", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 204, "", "", false, false},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, "", "", false, true},
		{"garbage", "SSH-2.0-OpenSSH\r\n", 0, "", "", false, true},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", 0, "", "", false, true},
		{"bad header", "HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", 0, "", "", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp response
			_, err := readResponse(bufio.NewReader(strings.NewReader(tc.in)), &resp, nil)
			if tc.err {
				if err == nil {
					t.Fatalf("parsed %q", tc.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.status != tc.status || string(resp.body) != tc.body || string(resp.node) != tc.node || resp.close != tc.close {
				t.Fatalf("got status %d body %q node %q close %v", resp.status, resp.body, resp.node, resp.close)
			}
		})
	}
}

func TestJSONField(t *testing.T) {
	body := []byte(`{"error": {"code" : "sold_out","message":"no \"units\" left"}, "n": -42, "won":true}`)
	for key, want := range map[string]string{"code": "sold_out", "message": `no \"units\" left`, "n": "-42", "won": "true"} {
		if v, ok := jsonField(body, key); !ok || string(v) != want {
			t.Errorf("%s = %q %v, want %q", key, v, ok, want)
		}
	}
	if _, ok := jsonField(body, "missing"); ok {
		t.Error("found a missing key")
	}
	if n, ok := jsonInt(body, "n"); !ok || n != -42 {
		t.Errorf("jsonInt = %d %v", n, ok)
	}
}

// FuzzReadResponse feeds arbitrary bytes to the response parser: it must
// return an error or a response whose body fits the cap, never panic or loop.
func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\nX-Flashsale-Node: n2\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\nx"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(in), 64)
		for range 3 { // several responses on one connection
			var resp response
			buf, err := readResponse(r, &resp, nil)
			if err != nil {
				return
			}
			if len(resp.body) > maxBody || len(buf) > maxBody+64 {
				t.Fatalf("body of %d bytes past the cap", len(resp.body))
			}
			_, _ = jsonField(resp.body, "code")
			_, _ = jsonInt(resp.body, "amount_cents")
		}
	})
}

// FuzzJSONField: the field scanner must not panic on any body.
func FuzzJSONField(f *testing.F) {
	f.Add([]byte(`{"error":{"code":"sold_out"}}`), "code")
	f.Add([]byte(`{"order_id":"s1.42","x":1}`), "order_id")
	f.Add([]byte(`{"a":"\`), "a")
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		if v, ok := jsonField(body, key); ok && len(v) > len(body) {
			t.Fatal("value longer than body")
		}
		_, _ = jsonInt(body, key)
	})
}

// cannedServer answers each read on a connection with the same sold_out
// reply. It allocates nothing per request, so AllocsPerRun (which counts
// every goroutine in the process) sees only the client's allocations; an
// httptest server would drown them in its own. It relies on each small
// request arriving in one read, which holds on loopback.
func cannedServer(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	body := `{"error":{"code":"sold_out","message":"no unit left"}}`
	reply := []byte("HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nX-Flashsale-Node: n1\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write(reply); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestSoldOutPathDoesNotAllocate pins the hot loop's promise: building a
// request, the round trip, classifying a sold_out reply and recording it
// cost the generator no heap allocation.
func TestSoldOutPathDoesNotAllocate(t *testing.T) {
	url := cannedServer(t)
	cfg := Config{Targets: []string{url}, Scenario: ScenarioBuy, Sale: "s1", Users: 1000, Connections: 1, Requests: 1, AuthSecret: fakeAuthSecret}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	tg, _ := parseTarget(url)
	r := &runner{cfg: cfg, targets: []target{tg}, shards: []*shard{{hist: newHist()}}}
	w := r.newWorker(0)
	var resp response
	user := 0
	step := func() {
		w.buf = w.build(&w.tmpl[0], w.buf[:0], user)
		user = (user + 1) % 1000
		start := time.Now()
		if err := w.conns[0].roundTrip(w.buf, &resp); err != nil {
			t.Fatal(err)
		}
		code, cents := w.classify(&resp, user)
		if code != codeSoldOut {
			t.Fatalf("code %d", code)
		}
		w.shard.record(time.Since(start), resp.status, code, cents, resp.node)
	}
	step() // dial and first node-name key
	if n := testing.AllocsPerRun(200, step); n != 0 {
		t.Fatalf("sold-out path allocates %.1f times per request", n)
	}
}

// BenchmarkClientRaw and BenchmarkClientNetHTTP compare the generator's raw
// client with net/http's on the same canned sold-out server (which costs
// almost nothing and allocates nothing, so ns/op and allocs/op are the
// client's), same body, same parallelism. On 2 shared cores the cheaper
// client shows up as lower ns/op.
func BenchmarkClientRaw(b *testing.B) {
	url := cannedServer(b)
	tg, _ := parseTarget(url)
	cfg := Config{Targets: []string{url}, Scenario: ScenarioBuy, Sale: "s1", Users: 1000, AuthSecret: fakeAuthSecret}
	_ = cfg.setDefaults()
	r := &runner{cfg: cfg, targets: []target{tg}, shards: []*shard{{hist: newHist()}}}
	var id atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		w := r.newWorker(int(id.Add(1)) % 1)
		defer w.closeConns()
		var resp response
		u := 0
		for pb.Next() {
			w.buf = w.build(&w.tmpl[0], w.buf[:0], u)
			u++
			if err := w.conns[0].roundTrip(w.buf, &resp); err != nil {
				b.Error(err)
				return
			}
			if code, _ := w.classify(&resp, u); code != codeSoldOut {
				b.Errorf("code %d", code)
				return
			}
		}
	})
}

func BenchmarkClientNetHTTP(b *testing.B) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := cannedServer(b) + "/v1/sales/s1/buy"
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		body := make([]byte, 0, 64)
		buf := make([]byte, 4096)
		u := 0
		rd := bytes.NewReader(nil)
		for pb.Next() {
			body = append(append(append(body[:0], `{"user_id":"u`...), itoa(u)...), `"}`...)
			u++
			rd.Reset(body)
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, rd)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.ReadFull(resp.Body, buf[:min(len(buf), int(resp.ContentLength))])
			resp.Body.Close()
			if v, _ := jsonField(buf[:n], "code"); string(v) != "sold_out" || resp.Header.Get("X-Flashsale-Node") != "n1" {
				b.Errorf("reply %q", buf[:n])
				return
			}
		}
	})
}

func itoa(n int) []byte {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return b[i:]
		}
	}
}
