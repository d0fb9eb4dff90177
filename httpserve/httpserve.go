// Package httpserve serves one http.Handler on a listener with either of two
// connection engines, chosen by name:
//
//   - "nethttp": the standard library's http.Server — a goroutine and two
//     4 KB bufio buffers per connection, idle or not (≈ 20 KB each measured).
//   - "nbio": github.com/lesismal/nbio's nbhttp engine — connections live in
//     epoll pollers; a goroutine (from a bounded pool) exists only while a
//     request is being handled, and read buffers belong to the pollers, not
//     to the connections, so an idle keep-alive costs a few hundred bytes of
//     Go memory plus the kernel's socket.
//
// The handler is the same http.Handler on both (gin runs unchanged). What
// differs on nbio is written on Config and in the README's engine section:
// the request context is not cancelled when the client hangs up; a request
// (header and body) must arrive within IdleTimeout of the previous response
// rather than within ReadHeaderTimeout of its first byte; a body over
// MaxBodyBytes closes the connection instead of reaching the handler; and
// ConnState reports StateActive on every read and StateIdle when the
// handler returns (before the response is written out).
//
// Listen opens the listener, with SO_REUSEPORT when asked, so several
// processes can share one port and the kernel spreads connections over them.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/taskpool"
	"golang.org/x/sys/unix"
)

// Engine names, as in the http.engine config key.
const (
	NetHTTP = "nethttp"
	NBIO    = "nbio"
)

// Engines lists the valid engine names.
var Engines = []string{NetHTTP, NBIO}

// Valid reports whether name is an engine this package serves with.
func Valid(name string) bool { return name == NetHTTP || name == NBIO }

// Config describes a Server. Zero durations and sizes take the documented
// defaults.
type Config struct {
	// Engine is NetHTTP or NBIO; "" means NetHTTP.
	Engine string
	// Handler serves every request.
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's header from its first
	// byte (net/http). nbio has no separate header deadline: there a whole
	// request must arrive within IdleTimeout of the previous response (or of
	// the accept), which bounds a slow client all the same, more loosely.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request (net/http only; see
	// ReadHeaderTimeout for nbio).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response (both engines).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next request
	// for this long (both engines; on nbio also the deadline of a fresh
	// connection's first request).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header; 16 KB when 0.
	MaxHeaderBytes int
	// MaxBodyBytes is the engine's hard cap on a request body. net/http
	// leaves bodies to the handler (which answers 413 past its own limit);
	// nbio reads a whole body before the handler runs, so past this cap it
	// closes the connection without an answer. Set it above the handler's
	// limit so that ordinary oversized bodies still get the handler's 413.
	// 64 KB when 0.
	MaxBodyBytes int
	// MaxConns is the most connections nbio keeps (it closes new ones
	// beyond); 0 leaves nbio's default (1M). net/http has no such cap: use
	// a listener that enforces one.
	MaxConns int
	// Workers is the most handlers nbio runs at once (up to 32 resident
	// goroutines, then nbio's goroutine pool; requests beyond wait in its
	// queue, and a full queue stalls reading).
	// Size it to what the handler itself lets wait (in-flight slots plus
	// an admission line), so the handler's own admission decides; 1024 when
	// 0. net/http runs a goroutine per connection instead.
	Workers int
	// Pollers is nbio's epoll loops; GOMAXPROCS when 0.
	Pollers int
	// ConnState, when set, hears connection events. net/http: exactly
	// http.Server.ConnState. nbio: StateNew on accept, StateActive on every
	// read from the connection, StateIdle when a handler returns (just
	// before nbio writes its response out: a caller that closes idle
	// connections should leave very young ones alone), StateClosed on
	// close. Called from the engine's goroutines; it must be quick and safe
	// for concurrent use.
	ConnState func(net.Conn, http.ConnState)
	// Log receives the engine's own log lines (nbio); discarded when nil.
	Log *slog.Logger
}

// Server serves Config.Handler with the configured engine. Serve it once;
// Shutdown (graceful) or Close (abrupt) stops it. Its methods are safe for
// concurrent use.
type Server struct {
	cfg Config

	std *http.Server // NetHTTP

	// NBIO: the engine, the in-flight handler count (Shutdown waits for it
	// to reach zero) and whether a drain has begun (responses then carry
	// Connection: close).
	nb       *nbhttp.Engine
	byAddr   sync.Map // remote address → *nbio.Conn, for StateIdle (ConnState set)
	inflight atomic.Int64
	draining atomic.Bool
	mu       sync.Mutex
	ln       net.Listener
	done     chan struct{} // closed when the nbio engine has stopped
	stopOnce sync.Once
	exec     *executor // runs nbio's handlers
}

// New returns a Server for cfg. It fails on an unknown engine or a nil
// handler.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == "" {
		cfg.Engine = NetHTTP
	}
	if !Valid(cfg.Engine) {
		return nil, fmt.Errorf("http engine %q: want %s or %s", cfg.Engine, NetHTTP, NBIO)
	}
	if cfg.Handler == nil {
		return nil, errors.New("httpserve: nil handler")
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 16 << 10
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1024
	}
	s := &Server{cfg: cfg, done: make(chan struct{})}
	if cfg.Engine == NetHTTP {
		s.std = &http.Server{
			Handler:           cfg.Handler,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			ReadTimeout:       cfg.ReadTimeout,
			WriteTimeout:      cfg.WriteTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    cfg.MaxHeaderBytes,
			ConnState:         cfg.ConnState,
		}
	}
	return s, nil
}

// Engine returns the engine's name.
func (s *Server) Engine() string { return s.cfg.Engine }

// Serve serves connections accepted from ln until Shutdown or Close, and
// then returns http.ErrServerClosed; any other error means it could not
// serve. ln is closed when Serve returns.
func (s *Server) Serve(ln net.Listener) error {
	if s.std != nil {
		return s.std.Serve(ln)
	}
	s.mu.Lock()
	if s.nb != nil || s.draining.Load() {
		s.mu.Unlock()
		ln.Close()
		if s.draining.Load() {
			return http.ErrServerClosed
		}
		return errors.New("httpserve: Serve called twice")
	}
	s.ln = ln
	s.nb = s.newNBIO(ln)
	nb := s.nb
	s.mu.Unlock()
	if err := nb.Start(); err != nil {
		ln.Close()
		s.stopOnce.Do(func() { close(s.done) })
		return fmt.Errorf("start nbio: %w", err)
	}
	<-s.done
	return http.ErrServerClosed
}

// newNBIO builds the nbio engine around ln: it accepts from ln (whatever
// the listener enforces, such as a connection cap, applies), and it
// counts in-flight handlers for Shutdown.
func (s *Server) newNBIO(ln net.Listener) *nbhttp.Engine {
	setNBIOLog(s.cfg.Log)
	c := s.cfg
	s.exec = newExecutor(c.Workers)
	pollers := c.Pollers
	if pollers <= 0 {
		pollers = runtime.GOMAXPROCS(0)
	}
	e := nbhttp.NewEngine(nbhttp.Config{
		Name:    "flashsale",
		Network: "tcp",
		Addrs:   []string{ln.Addr().String()},
		// The engine "listens" by taking the listener it was given.
		Listen:          func(string, string) (net.Listener, error) { return ln, nil },
		NPoller:         pollers,
		MaxLoad:         c.MaxConns,
		ReadLimit:       c.MaxHeaderBytes + c.MaxBodyBytes,
		MaxHTTPBodySize: c.MaxBodyBytes,
		ServerExecutor:  s.exec.run,
		KeepaliveTime:   c.IdleTimeout,
		WriteTimeout:    c.WriteTimeout,
		// Only the server side: no client goroutine pool.
		SupportServerOnly: true,
		Handler:           http.HandlerFunc(s.serveNBIO),
	})
	if c.ConnState != nil {
		hook := c.ConnState
		// A handler sees only the request, whose RemoteAddr names its
		// connection uniquely among the open ones: that is how StateIdle
		// finds it.
		e.OnOpen(func(nc net.Conn) {
			s.byAddr.Store(nc.RemoteAddr().String(), nc)
			hook(nc, http.StateNew)
		})
		e.OnClose(func(nc net.Conn, _ error) {
			s.byAddr.Delete(nc.RemoteAddr().String())
			hook(nc, http.StateClosed)
		})
		// Every read: the connection is in use now. Wraps the engine's
		// own data path (each connection's parser).
		e.Engine.OnData(func(nc *nbio.Conn, data []byte) {
			hook(nc, http.StateActive)
			nc.DataHandler()(nc, data)
		})
	}
	return e
}

// serveNBIO runs the handler for nbio, counting it in flight; during a
// drain the response asks the client to close the connection, as net/http
// does for requests it finishes while shutting down.
func (s *Server) serveNBIO(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if s.draining.Load() {
		w.Header().Set("Connection", "close")
		r.Close = true
	}
	s.cfg.Handler.ServeHTTP(w, r)
	if hook := s.cfg.ConnState; hook != nil {
		if c, ok := s.byAddr.Load(r.RemoteAddr); ok {
			hook(c.(net.Conn), http.StateIdle)
		}
	}
}

// Shutdown stops accepting, lets in-flight requests finish and then closes
// every connection, or gives up when ctx ends (closing them anyway). On
// nbio a request already read but not yet handed to a handler when the
// in-flight count reaches zero (a window of microseconds) is dropped with
// its connection, as net/http drops one whose bytes it had not read.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.std != nil {
		return s.std.Shutdown(ctx)
	}
	s.mu.Lock()
	s.draining.Store(true)
	nb, ln := s.nb, s.ln
	s.mu.Unlock()
	if nb == nil {
		return nil
	}
	_ = ln.Close() // the engine's accept loop ends on the error
	var err error
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for zero := 0; zero < 3; {
		if s.inflight.Load() == 0 {
			zero++ // zero three ticks running: nothing was about to start
		} else {
			zero = 0
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
			zero = 3
		case <-tick.C:
		}
	}
	s.stop(nb)
	return err
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	if s.std != nil {
		return s.std.Close()
	}
	s.mu.Lock()
	s.draining.Store(true)
	nb, ln := s.nb, s.ln
	s.mu.Unlock()
	if nb == nil {
		return nil
	}
	_ = ln.Close()
	s.stop(nb)
	return nil
}

// stop stops the nbio engine once: its pollers, timers and every
// connection, then releases Serve.
func (s *Server) stop(nb *nbhttp.Engine) {
	s.stopOnce.Do(func() {
		nb.Stop()
		s.exec.stop()
		close(s.done)
	})
}

// residentWorkers is how many of nbio's handler goroutines stay alive
// between requests. nbio's own pool starts a goroutine for a request and
// lets it exit when its queue is empty, so at a few thousand requests a
// second per process nearly every request paid for a new goroutine and
// for growing its stack through gin's middleware chain (12% of a node's
// CPU in the profile of a 100k-held shake run). Resident ones keep their
// grown stacks; 32 parked goroutines cost well under a megabyte.
const residentWorkers = 32

// executor runs nbio's handlers: on a resident goroutine that is waiting
// for work when there is one, else on a new resident one while fewer than
// residentWorkers exist, else on a bounded overflow pool (nbio's own), so
// at most Workers handlers run at once, as before.
type executor struct {
	jobs     chan func() // unbuffered: a send succeeds only into a waiting worker
	resident atomic.Int32
	max      int32
	overflow *taskpool.TaskPool
	done     chan struct{}
	once     sync.Once
}

func newExecutor(workers int) *executor {
	res := min(workers, residentWorkers)
	e := &executor{jobs: make(chan func()), max: int32(res), done: make(chan struct{})}
	if workers > res {
		// nbio's default pool, sized to the rest: at most workers-res
		// goroutines, its queue (64k) behind them as nbio has it.
		e.overflow = taskpool.New(workers-res, 1024*64)
	}
	return e
}

// run is nbio's ServerExecutor.
func (e *executor) run(f func()) {
	select {
	case e.jobs <- f:
		return
	default:
	}
	if e.resident.Add(1) <= e.max {
		go e.work(f)
		return
	}
	e.resident.Add(-1)
	if e.overflow == nil {
		// Every resident worker is busy and there is no overflow pool
		// (Workers ≤ residentWorkers): wait for a worker, as nbio's full
		// pool waits.
		select {
		case e.jobs <- f:
		case <-e.done:
		}
		return
	}
	e.overflow.Go(f)
}

func (e *executor) work(f func()) {
	e.call(f)
	for {
		select {
		case f := <-e.jobs:
			e.call(f)
		case <-e.done:
			return
		}
	}
}

// call runs one handler; a panic that got past the handler's own recovery
// (http.ErrAbortHandler) is logged and ends only that request, as in
// nbio's pool, not the process.
func (e *executor) call(f func()) {
	defer func() {
		if r := recover(); r != nil && r != http.ErrAbortHandler {
			logging.Error("handler panic: %v", r)
		}
	}()
	f()
}

func (e *executor) stop() {
	e.once.Do(func() {
		close(e.done)
		if e.overflow != nil {
			e.overflow.Stop()
		}
	})
}

// Listen opens a TCP listener on addr; with reuseport, SO_REUSEPORT is set
// first, so other processes (or listeners) that set it too can bind the
// same address and the kernel spreads new connections over all of them.
func Listen(addr string, reuseport bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reuseport {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("set SO_REUSEPORT: %w", serr)
			}
			return nil
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// nbio logs through one package-level logger; the last Server built with a
// Log sets it. Its start and stop lines are debug detail for us.
var nbioLog struct {
	sync.Mutex
	set bool
}

func setNBIOLog(l *slog.Logger) {
	nbioLog.Lock()
	defer nbioLog.Unlock()
	if l == nil {
		if !nbioLog.set {
			logging.SetLevel(logging.LevelNone)
		}
		return
	}
	nbioLog.set = true
	logging.SetLogger(slogAdapter{l.With("component", "nbio")})
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debug(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Info(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Warn(f string, v ...any)  { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Error(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	if strings.Contains(msg, net.ErrClosed.Error()) {
		a.l.Debug(msg) // the accept loop ending at Shutdown
		return
	}
	a.l.Warn(msg)
}
