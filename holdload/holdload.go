// Package holdload opens and holds many keep-alive HTTP/1.1 connections
// from one process and sends requests over them at a scheduled rate, with
// one epoll loop and no goroutine per connection: what a million-client
// load generator needs to fit on the box it loads.
//
// Why not net.Conn: a Go net.Conn costs a goroutine (≥ 2 KiB stack, more
// once it has run) plus buffers per connection, and 1,000,000 of them would
// not fit beside the server they load. Here a connection is a file
// descriptor and a few dozen bytes of state in a slice indexed by that
// descriptor; the kernel's socket is the rest.
//
// One Engine is single-threaded: Ramp and Drive run the epoll loop on the
// calling goroutine, and only the counters (Stats) may be read from other
// goroutines. One process may hold at most its open-files limit of
// descriptors, so the bench runs one Engine per worker process.
package holdload

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h), absent from
// package syscall: bind(src:0) then leaves the port to connect, which may
// reuse it towards another destination, so a source address is not limited
// to one ephemeral range over all destinations.
const ipBindAddressNoPort = 24

// Config is one engine's connections.
type Config struct {
	// Addrs are the servers; connection i goes to Addrs[i % len(Addrs)].
	Addrs []netip.AddrPort
	// Sources are the local addresses to bind; empty: the kernel picks.
	// With PortsPerSource 0, connection i is from
	// Sources[(i / len(Addrs)) % len(Sources)] and the kernel picks its port
	// at connect: each (source, destination) pair has one ephemeral range
	// (net.ipv4.ip_local_port_range, ≈ 28,000 ports here), so C connections
	// to one server need ⌈C / 28,000⌉ sources at least — and the kernel's
	// search for a free port slows down sharply as a range fills (measured:
	// from 19,000 connects/s to 700/s at 85% full).
	Sources []netip.Addr
	// PortsPerSource > 0 picks ports here instead: connection i (number
	// Base+i over all engines of a run) is bound to
	// Sources[(Base+i) / PortsPerSource] port FirstPort + (Base+i) %
	// PortsPerSource, one bind with a known-free port, no search. Engines of
	// one run get disjoint Base ranges, so they never collide; a port some
	// other socket holds (EADDRINUSE) falls back to a kernel-picked one.
	PortsPerSource, FirstPort, Base int
	// Conns is how many connections to open.
	Conns int
	// Rate is connects started per second (0: 10,000).
	Rate float64
	// MaxPending bounds connects in flight, so a slow accept queue sees
	// bounded SYN bursts rather than retransmits (0: 512).
	MaxPending int
	// ConnectTimeout fails a connect not done by then (0: 10 s).
	ConnectTimeout time.Duration
	// Timeout is a request's deadline from its intended send time; past it
	// the request counts as timed out and its connection is closed (0: 10 s).
	// A request still unsent then is not sent at all (ErrGaveUp).
	Timeout time.Duration
	// Reconnect makes Drive open a new connection for each one lost (timed
	// out, closed by the server), as clients that gave up and came back
	// would, so the pool stays at Conns; without it a lost connection lowers
	// Held for good. Not with PortsPerSource (the new ones take kernel ports).
	Reconnect bool
}

// Stats are an engine's counters, safe to read from any goroutine.
type Stats struct {
	Established atomic.Int64 // connects that succeeded
	Failed      atomic.Int64 // connects that failed or timed out
	Closed      atomic.Int64 // established connections lost since (server closed, error, timeout)
	Pending     atomic.Int64 // connects in flight
}

// Held is the number of connections open now.
func (s *Stats) Held() int64 { return s.Established.Load() - s.Closed.Load() }

// Request is one scheduled request: its intended send time (unix ns) and
// the user it is for. Latency is measured from At, not from when the
// engine got to it, so a backlog shows (no coordinated omission).
type Request struct {
	At   int64
	User int
}

// Source yields the requests to send, in non-decreasing At order. Peek must
// return the same request until Pop is called.
type Source interface {
	Peek() (Request, bool)
	Pop()
}

// Reply is what came back for one request. Body and Node alias the
// engine's read buffer and are valid only during the Handler call.
type Reply struct {
	Status  int
	Body    []byte
	Node    []byte        // the X-Flashsale-Node header, if any
	Latency time.Duration // from the intended send time
	Err     error         // non-nil: no (complete) reply; Status is 0
	Timeout bool          // Err is a timeout
}

// Handler builds requests and consumes replies.
type Handler interface {
	// Build appends the bytes of req to buf.
	Build(buf []byte, req Request) []byte
	// Done is called once per request taken from the Source, with its
	// reply or why there was none.
	Done(req Request, r *Reply)
}

// Errors a Reply can carry.
var (
	ErrClosed    = errors.New("holdload: connection closed before the reply")
	ErrTimeout   = errors.New("holdload: request timed out")
	ErrMalformed = errors.New("holdload: malformed or unsupported reply")
	ErrWrite     = errors.New("holdload: request not written at once")
	// ErrGaveUp: no connection was free before the request's Timeout
	// passed, so it was never sent (its client gave up waiting).
	ErrGaveUp = errors.New("holdload: no free connection before the timeout; not sent")
)

// Connection states.
const (
	stFree uint8 = iota
	stConnecting
	stIdle
	stBusy
)

// conn is the whole per-connection state, indexed by descriptor: 48 bytes.
type conn struct {
	since int64  // connecting: when the connect started; busy: the request's intended time (ns)
	buf   []byte // a reply split over reads (rare); nil otherwise
	user  int32  // busy: the request's user
	gen   uint32 // bumped on close, so a stale idle-list entry is recognised
	state uint8
}

// Engine is one epoll loop and its connections. Not safe for concurrent
// use except for Stats.
type Engine struct {
	cfg     Config
	Stats   Stats
	epfd    int
	conns   []conn   // by descriptor
	idle    []uint64 // fd<<32 | gen of idle connections, a FIFO from idleAt
	idleAt  int
	events  []syscall.EpollEvent
	scratch []byte
	req     []byte
	started int   // connects begun
	busy    int   // requests in flight
	lastTO  int64 // last timeout scan (ns)
	maxFD   int
}

// New returns an engine for cfg; it opens the epoll descriptor only.
func New(cfg Config) (*Engine, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("holdload: no server address")
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10_000
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 512
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("holdload: open-files limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	// Keep 64 descriptors for the process itself (epoll, pipes, /proc).
	if int64(cfg.Conns) > int64(lim.Cur)-64 {
		return nil, fmt.Errorf("holdload: %d connections exceed this process's open-files limit %d (less 64)", cfg.Conns, lim.Cur)
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("holdload: epoll_create1: %w", err)
	}
	return &Engine{
		cfg:     cfg,
		epfd:    epfd,
		conns:   make([]conn, lim.Cur),
		events:  make([]syscall.EpollEvent, 1024),
		scratch: make([]byte, 16<<10),
		req:     make([]byte, 0, 1024),
	}, nil
}

// Close closes every connection and the epoll descriptor.
func (e *Engine) Close() {
	for fd := 0; fd <= e.maxFD && fd < len(e.conns); fd++ {
		if e.conns[fd].state != stFree {
			e.drop(fd, false)
		}
	}
	_ = syscall.Close(e.epfd)
}

func nowNS() int64 { return time.Now().UnixNano() }

// Ramp opens connections at the configured rate until Conns have been tried
// and none is in flight, or stop is closed (connects in flight are then
// still waited for). It returns the connections held.
func (e *Engine) Ramp(stop <-chan struct{}) int64 {
	t0 := nowNS()
	stopped := false
	for {
		if !stopped {
			select {
			case <-stop:
				stopped = true
			default:
			}
		}
		now := nowNS()
		if !stopped {
			due := int(float64(now-t0) / 1e9 * e.cfg.Rate)
			for e.started < e.cfg.Conns && e.started < due && int(e.Stats.Pending.Load()) < e.cfg.MaxPending {
				e.connect()
			}
		}
		if (stopped || e.started >= e.cfg.Conns) && e.Stats.Pending.Load() == 0 {
			return e.Stats.Held()
		}
		e.poll(5, now, nil)
	}
}

// connect starts connection number e.started.
func (e *Engine) connect() {
	i := e.started
	e.started++
	dst := e.cfg.Addrs[i%len(e.cfg.Addrs)]
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		e.Stats.Failed.Add(1)
		return
	}
	if n := len(e.cfg.Sources); n > 0 {
		var err error
		if pps := e.cfg.PortsPerSource; pps > 0 {
			g := e.cfg.Base + i
			src := e.cfg.Sources[(g/pps)%n]
			_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: src.As4(), Port: e.cfg.FirstPort + g%pps})
			if err == syscall.EADDRINUSE {
				_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
				err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: src.As4()})
			}
		} else {
			src := e.cfg.Sources[(i/len(e.cfg.Addrs))%n]
			_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: src.As4()})
		}
		if err != nil {
			_ = syscall.Close(fd)
			e.Stats.Failed.Add(1)
			return
		}
	}
	err = syscall.Connect(fd, &syscall.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())})
	if err != nil && err != syscall.EINPROGRESS {
		_ = syscall.Close(fd)
		e.Stats.Failed.Add(1)
		return
	}
	if fd >= len(e.conns) {
		_ = syscall.Close(fd)
		e.Stats.Failed.Add(1)
		return
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(e.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		_ = syscall.Close(fd)
		e.Stats.Failed.Add(1)
		return
	}
	c := &e.conns[fd]
	c.state, c.since, c.buf = stConnecting, nowNS(), nil
	e.maxFD = max(e.maxFD, fd)
	e.Stats.Pending.Add(1)
}

// drop closes fd; established says whether it counted as held.
func (e *Engine) drop(fd int, established bool) {
	c := &e.conns[fd]
	if c.state == stConnecting {
		e.Stats.Pending.Add(-1)
	} else if established {
		e.Stats.Closed.Add(1)
	}
	if c.state == stBusy {
		e.busy--
	}
	c.state, c.buf = stFree, nil
	c.gen++
	_ = syscall.Close(fd) // also removes it from the epoll set
}

// poll waits up to ms milliseconds for events and handles them; h receives
// replies (nil during the ramp, when no request is in flight).
func (e *Engine) poll(ms int, now int64, h Handler) {
	n, err := syscall.EpollWait(e.epfd, e.events, ms)
	if err != nil && err != syscall.EINTR {
		panic(fmt.Sprintf("holdload: epoll_wait: %v", err)) // only a bad epfd gets here
	}
	for i := 0; i < n; i++ {
		ev := e.events[i]
		fd := int(ev.Fd)
		c := &e.conns[fd]
		switch c.state {
		case stConnecting:
			soerr, gerr := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
			if gerr != nil || soerr != 0 || ev.Events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
				e.drop(fd, false)
				e.Stats.Failed.Add(1)
				continue
			}
			mod := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
			if err := syscall.EpollCtl(e.epfd, syscall.EPOLL_CTL_MOD, fd, &mod); err != nil {
				e.drop(fd, false)
				e.Stats.Failed.Add(1)
				continue
			}
			e.Stats.Pending.Add(-1)
			e.Stats.Established.Add(1)
			c.state = stIdle
			e.idle = append(e.idle, uint64(fd)<<32|uint64(c.gen))
		case stIdle:
			// An idle connection is readable only when the server closed
			// it (idle timeout, eviction, stop) or sent something unasked.
			e.drop(fd, true)
		case stBusy:
			e.readReply(fd, c, h)
		}
	}
	// The deadline scan walks every descriptor: ten times a second while
	// requests are in flight, once a second during the ramp (a connect
	// deadline is 10 s; fifty workers scanning 18,000 slots ten times a
	// second would be CPU the server under test does not get).
	every := int64(100 * time.Millisecond)
	if h == nil {
		every = int64(time.Second)
	}
	if now-e.lastTO > every {
		e.lastTO = now
		e.expire(now, h)
	}
}

// expire fails connects and requests past their deadlines.
func (e *Engine) expire(now int64, h Handler) {
	ct, rt := int64(e.cfg.ConnectTimeout), int64(e.cfg.Timeout)
	for fd := 0; fd <= e.maxFD; fd++ {
		c := &e.conns[fd]
		switch {
		case c.state == stConnecting && now-c.since > ct:
			e.drop(fd, false)
			e.Stats.Failed.Add(1)
		case c.state == stBusy && now-c.since > rt:
			req := Request{At: c.since, User: int(c.user)}
			e.drop(fd, true)
			if h != nil {
				h.Done(req, &Reply{Err: ErrTimeout, Timeout: true, Latency: time.Duration(now - req.At)})
			}
		}
	}
}

// readReply reads what fd has; a complete reply goes to h and frees the
// connection for the next request.
func (e *Engine) readReply(fd int, c *conn, h Handler) {
	buf := e.scratch
	off := 0
	if c.buf != nil {
		off = copy(buf, c.buf)
	}
	n, err := syscall.Read(fd, buf[off:])
	if err == syscall.EAGAIN {
		return
	}
	req := Request{At: c.since, User: int(c.user)}
	since := req.At
	if err != nil || n == 0 {
		e.drop(fd, true)
		h.Done(req, &Reply{Err: ErrClosed, Latency: time.Duration(nowNS() - since)})
		return
	}
	data := buf[:off+n]
	r := Reply{}
	total, keep, perr := parse(data, &r)
	switch {
	case perr != nil || (total > 0 && total != len(data)):
		e.drop(fd, true)
		h.Done(req, &Reply{Err: ErrMalformed, Latency: time.Duration(nowNS() - since)})
	case total == 0:
		if len(data) >= len(buf) {
			e.drop(fd, true)
			h.Done(req, &Reply{Err: ErrMalformed, Latency: time.Duration(nowNS() - since)})
			return
		}
		c.buf = append(c.buf[:0], data...)
	default:
		r.Latency = time.Duration(nowNS() - since)
		c.buf = nil
		if keep {
			c.state = stIdle
			e.busy--
			e.idle = append(e.idle, uint64(fd)<<32|uint64(c.gen))
		} else {
			e.drop(fd, true)
		}
		h.Done(req, &r)
	}
}

// popIdle returns the longest-idle connection, skipping entries of closed
// ones. First in, first out, so the requests go round all the held
// connections (as a million separate clients would) rather than reusing
// the few most recently answered, and a connection the server dropped
// while idle is found out.
func (e *Engine) popIdle() (int, bool) {
	for e.idleAt < len(e.idle) {
		v := e.idle[e.idleAt]
		e.idleAt++
		if e.idleAt == len(e.idle) {
			e.idle, e.idleAt = e.idle[:0], 0
		} else if e.idleAt >= 4096 && e.idleAt*2 >= len(e.idle) {
			n := copy(e.idle, e.idle[e.idleAt:])
			e.idle, e.idleAt = e.idle[:n], 0
		}
		fd, gen := int(v>>32), uint32(v)
		if c := &e.conns[fd]; c.state == stIdle && c.gen == gen {
			return fd, true
		}
	}
	return 0, false
}

// Drive sends src's requests over the held connections, each at its
// intended time (or as soon after as a connection is free), until src is
// empty and every request is answered or timed out, or stop is closed.
// Connections are not reopened: a lost one lowers Held.
func (e *Engine) Drive(src Source, h Handler, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		now := nowNS()
		wait := 10 * time.Millisecond
		empty := false
		if e.cfg.Reconnect && e.cfg.PortsPerSource == 0 {
			for k := 0; k < e.cfg.MaxPending && e.Stats.Held()+e.Stats.Pending.Load() < int64(e.cfg.Conns) &&
				e.Stats.Pending.Load() < int64(e.cfg.MaxPending); k++ {
				e.connect()
			}
		}
		for {
			r, ok := src.Peek()
			if !ok {
				empty = true
				break
			}
			if r.At > now {
				wait = min(wait, time.Duration(r.At-now))
				break
			}
			if now-r.At > int64(e.cfg.Timeout) {
				src.Pop()
				h.Done(r, &Reply{Err: ErrGaveUp, Timeout: true, Latency: time.Duration(now - r.At)})
				continue
			}
			fd, ok := e.popIdle()
			if !ok {
				if e.Stats.Held() == 0 && e.Stats.Pending.Load() == 0 {
					// Nothing left to send over: every remaining request fails.
					src.Pop()
					h.Done(r, &Reply{Err: ErrClosed, Latency: time.Duration(now - r.At)})
					continue
				}
				break
			}
			src.Pop()
			e.send(fd, r, h)
		}
		if empty && e.busy == 0 {
			return
		}
		ms := int((wait + time.Millisecond - 1) / time.Millisecond)
		e.poll(ms, now, h)
	}
}

func (e *Engine) send(fd int, r Request, h Handler) {
	e.req = h.Build(e.req[:0], r)
	c := &e.conns[fd]
	c.state, c.since, c.user = stBusy, r.At, int32(r.User)
	e.busy++
	n, err := syscall.Write(fd, e.req)
	if err != nil || n != len(e.req) {
		// A fresh request on an idle socket fits its send buffer; anything
		// else is a broken connection.
		e.drop(fd, true)
		h.Done(r, &Reply{Err: ErrWrite, Latency: time.Duration(nowNS() - r.At)})
	}
}

// Busy is the number of requests in flight.
func (e *Engine) Busy() int { return e.busy }
