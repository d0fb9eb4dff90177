package node

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// connCap keeps the node's connections under a cap below its open-files
// limit, so accept never fails with EMFILE (which stops the node answering
// anyone, its health checks included). At the cap, admitting a new client
// closes the connection that has been idle longest — a keep-alive waiting
// for a next request that may never come — or, with none idle, the oldest
// that has not finished its first request; a crowd of idle connections can
// thus never lock new clients out. Connections busy with a request are never
// closed; if all are busy, the new one is refused (closed at once).
//
// It hooks http.Server.ConnState (which net/http calls before it reads from
// a new connection and on every idle/active change) and wraps the listener
// so the check runs in Accept. It is safe for concurrent use.
//
// On the nbio engine (httpserve) StateIdle comes when the handler returns,
// just before nbio writes the response out; so with a settle time, an idle
// connection younger than that is not closed to make room (its answer may
// still be on its way out) and the oldest fresh one, if any, is chosen
// instead.
type connCap struct {
	net.Listener
	max    int
	settle time.Duration // nbio: idle younger than this is not yet evictable; 0 on net/http

	mu     sync.Mutex
	conns  map[net.Conn]*tracked // every open connection
	idle   list.List             // idle keep-alives, oldest first (*tracked)
	fresh  list.List             // not yet through a first request, oldest first
	closed int64                 // connections closed to make room (metric)
	refuse int64                 // new connections refused: every one busy
}

type tracked struct {
	c    net.Conn
	at   int64         // with a settle time: when it went idle, nanoseconds since start
	in   *list.List    // the list it is on (idle, fresh), or nil
	elem *list.Element // its element there
}

// newConnCap caps l's connections at max; settle is nbio's (0 on
// net/http). l may be set later, before Accept.
func newConnCap(l net.Listener, max int, settle time.Duration) *connCap {
	return &connCap{Listener: l, max: max, settle: settle, conns: make(map[net.Conn]*tracked)}
}

// start is the clock of tracked.at (monotonic).
var start = time.Now()

// Accept returns the next connection, first making room for it.
func (cc *connCap) Accept() (net.Conn, error) {
	for {
		c, err := cc.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if cc.admit() {
			return c, nil
		}
		c.Close()
	}
}

// admit makes room for one more connection and reports whether there is.
func (cc *connCap) admit() bool {
	cc.mu.Lock()
	if len(cc.conns) < cc.max {
		cc.mu.Unlock()
		return true
	}
	var victim net.Conn
	for _, l := range []*list.List{&cc.idle, &cc.fresh} {
		if e := l.Front(); e != nil {
			t := e.Value.(*tracked)
			if l == &cc.idle && cc.settle > 0 && time.Duration(int64(time.Since(start))-t.at) < cc.settle {
				continue // the longest idle has only just been answered: so have the rest
			}
			victim = t.c
			cc.unlist(t)
			cc.closed++
			break
		}
	}
	if victim == nil {
		cc.refuse++
	}
	cc.mu.Unlock()
	if victim == nil {
		return false
	}
	// Closing makes its server goroutine's read fail; it then reports
	// StateClosed, which forgets it. It is no longer on any list, so it is
	// not chosen twice meanwhile; counting it until then keeps us under max.
	victim.Close()
	return true
}

func (cc *connCap) unlist(t *tracked) {
	if t.in != nil {
		t.in.Remove(t.elem)
		t.in, t.elem = nil, nil
	}
}

// ConnState is the http.Server hook.
func (cc *connCap) ConnState(c net.Conn, s http.ConnState) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	switch s {
	case http.StateNew:
		t := &tracked{c: c}
		cc.conns[c] = t
		cc.move(t, &cc.fresh)
	case http.StateActive:
		if t, ok := cc.conns[c]; ok {
			cc.move(t, nil)
		}
	case http.StateIdle:
		if t, ok := cc.conns[c]; ok {
			if cc.settle > 0 {
				t.at = int64(time.Since(start))
			}
			cc.move(t, &cc.idle) // to the back: the newest idle
		}
	case http.StateHijacked, http.StateClosed:
		if t, ok := cc.conns[c]; ok {
			cc.move(t, nil)
			delete(cc.conns, c)
		}
	}
}

func (cc *connCap) move(t *tracked, to *list.List) {
	cc.unlist(t)
	if to != nil {
		t.in, t.elem = to, to.PushBack(t)
	}
}

// Stats returns the open connections, those closed to make room, and the
// new ones refused because every connection was busy.
func (cc *connCap) Stats() (open int, closed, refused int64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.conns), cc.closed, cc.refuse
}

// capConns returns the connection cap: want, lowered to the process's
// open-files limit less reserve (descriptors for Redis, Kafka, files).
func capConns(want, reserve int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		if room := int(lim.Cur) - reserve; room < want {
			want = max(room, 1)
		}
	}
	return want
}
