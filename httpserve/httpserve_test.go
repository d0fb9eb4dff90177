package httpserve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
)

// serve starts a Server with engine and handler on a fresh loopback port
// and stops it (Close) at cleanup.
func serve(t *testing.T, engine string, h http.Handler, tune func(*Config)) (*Server, string, chan error) {
	t.Helper()
	cfg := Config{Engine: engine, Handler: h, ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second,
		WriteTimeout: 2 * time.Second, IdleTimeout: 5 * time.Second, MaxBodyBytes: 1024, Workers: 64}
	if tune != nil {
		tune(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return s, ln.Addr().String(), done
}

// engines runs f on each engine. nbio is not race-clean (its pollers and
// accept loop share fields without locks, marked go:norace), so under
// -race only net/http runs; `make test` runs this package again without
// -race (make test-nbio).
func engines(t *testing.T, f func(t *testing.T, engine string)) {
	for _, e := range Engines {
		t.Run(e, func(t *testing.T) {
			if e == NBIO && testenv.RaceEnabled {
				t.Skip("nbio is not race-clean: make test-nbio runs it without -race")
			}
			f(t, e)
		})
	}
}

func echoBody(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 512))
	if err != nil {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		return
	}
	fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
}

// readResp reads one response from br.
func readResp(t *testing.T, br *bufio.Reader) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// One connection serves several requests in turn (keep-alive), and several
// sent at once are answered in order (pipelining).
func TestKeepAliveAndPipelining(t *testing.T) {
	engines(t, func(t *testing.T, engine string) {
		_, addr, _ := serve(t, engine, http.HandlerFunc(echoBody), nil)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		for i := range 3 {
			fmt.Fprintf(c, "GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			if code, body := readResp(t, br); code != 200 || body != fmt.Sprintf("GET /k%d 0", i) {
				t.Fatalf("request %d on one connection: %d %q", i, code, body)
			}
		}
		var pipe strings.Builder
		for i := range 5 {
			fmt.Fprintf(&pipe, "POST /p%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", i, i, strings.Repeat("x", i))
		}
		if _, err := io.WriteString(c, pipe.String()); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if code, body := readResp(t, br); code != 200 || body != fmt.Sprintf("POST /p%d %d", i, i) {
				t.Fatalf("pipelined request %d: %d %q", i, code, body)
			}
		}
	})
}

// A body over the handler's limit gets the handler's 413 on both engines;
// one over the engine's hard cap (Config.MaxBodyBytes) on nbio closes the
// connection unanswered, and on net/http still reaches the handler.
func TestBodyLimit(t *testing.T) {
	engines(t, func(t *testing.T, engine string) {
		_, addr, _ := serve(t, engine, http.HandlerFunc(echoBody), nil)
		post := func(n int) (int, error) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", n, strings.Repeat("y", n))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return 0, err
			}
			resp.Body.Close()
			return resp.StatusCode, nil
		}
		if code, err := post(512); err != nil || code != 200 {
			t.Fatalf("512-byte body: %d %v", code, err)
		}
		if code, err := post(800); err != nil || code != http.StatusRequestEntityTooLarge {
			t.Fatalf("800-byte body (over the handler's 512): %d %v, want 413", code, err)
		}
		code, err := post(4096)
		switch engine {
		case NBIO:
			if err == nil {
				t.Fatalf("4 KB body over nbio's 1 KB cap: answered %d, want the connection closed", code)
			}
		case NetHTTP:
			if err != nil || code != http.StatusRequestEntityTooLarge {
				t.Fatalf("4 KB body on net/http: %d %v, want the handler's 413", code, err)
			}
		}
	})
}

// Shutdown waits for a request in flight, which is answered in full; new
// connections are refused meanwhile; Serve returns http.ErrServerClosed.
func TestShutdownDrainsInFlight(t *testing.T) {
	engines(t, func(t *testing.T, engine string) {
		started, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				once.Do(func() { close(started) })
				<-release
			}
			io.WriteString(w, "done "+r.URL.Path)
		})
		s, addr, served := serve(t, engine, h, nil)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		<-started
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			shut <- s.Shutdown(ctx)
		}()
		// The listener closes: new connections are refused.
		deadline := time.Now().Add(2 * time.Second)
		for {
			nc, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err != nil {
				break
			}
			nc.Close()
			if time.Now().After(deadline) {
				t.Fatal("still accepting 2 s into Shutdown")
			}
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) with a request in flight", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		if code, body := readResp(t, bufio.NewReader(c)); code != 200 || body != "done /slow" {
			t.Fatalf("in-flight request across Shutdown: %d %q", code, body)
		}
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				t.Fatalf("Serve returned %v, want http.ErrServerClosed", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Serve did not return after Shutdown")
		}
	})
}

// Two listeners on one address with SO_REUSEPORT (as two node processes)
// both get connections; without it the second bind fails.
func TestReusePortSpreads(t *testing.T) {
	engines(t, func(t *testing.T, engine string) {
		ln1, err := Listen("127.0.0.1:0", true)
		if err != nil {
			t.Fatal(err)
		}
		addr := ln1.Addr().String()
		if l, err := Listen(addr, false); err == nil {
			l.Close()
			t.Fatal("a second listener without SO_REUSEPORT bound the same port")
		}
		ln2, err := Listen(addr, true)
		if err != nil {
			t.Fatalf("second SO_REUSEPORT listener: %v", err)
		}
		var hits [2]atomic.Int64
		for i, ln := range []net.Listener{ln1, ln2} {
			s, err := New(Config{Engine: engine, IdleTimeout: time.Second, Workers: 16,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					hits[i].Add(1)
					w.Header().Set("Connection", "close")
					fmt.Fprint(w, i)
				})})
			if err != nil {
				t.Fatal(err)
			}
			go s.Serve(ln)
			t.Cleanup(func() { _ = s.Close() })
		}
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 3 * time.Second}
		for range 64 {
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		a, b := hits[0].Load(), hits[1].Load()
		if a+b != 64 || a == 0 || b == 0 {
			t.Fatalf("64 connections over two SO_REUSEPORT listeners: %d and %d, want both > 0", a, b)
		}
	})
}

// ConnState hears a connection open, be read from and close on both
// engines (nbio: StateActive on every read, StateIdle when the handler returns).
func TestConnState(t *testing.T) {
	engines(t, func(t *testing.T, engine string) {
		var mu sync.Mutex
		seen := map[http.ConnState]int{}
		_, addr, _ := serve(t, engine, http.HandlerFunc(echoBody), func(c *Config) {
			c.ConnState = func(_ net.Conn, s http.ConnState) { mu.Lock(); seen[s]++; mu.Unlock() }
		})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		readResp(t, bufio.NewReader(c))
		c.Close()
		deadline := time.Now().Add(3 * time.Second)
		for {
			mu.Lock()
			n, a, i, cl := seen[http.StateNew], seen[http.StateActive], seen[http.StateIdle], seen[http.StateClosed]
			mu.Unlock()
			if n == 1 && a >= 1 && i == 1 && cl == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("states seen: new %d active %d idle %d closed %d; want 1, >=1, 1, 1", n, a, i, cl)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
