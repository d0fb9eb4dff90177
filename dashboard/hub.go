package dashboard

import "sync"

// ring keeps the last len(buf) values pushed. It is not safe for concurrent
// use on its own; the Dashboard guards it.
type ring[T any] struct {
	buf  []T
	next int
	full bool
}

func newRing[T any](n int) *ring[T] { return &ring[T]{buf: make([]T, max(n, 1))} }

func (r *ring[T]) push(v T) {
	r.buf[r.next] = v
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
}

// items returns a copy of the values, oldest first.
func (r *ring[T]) items() []T {
	if !r.full {
		return append([]T(nil), r.buf[:r.next]...)
	}
	out := make([]T, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// last returns the newest value.
func (r *ring[T]) last() (T, bool) {
	var zero T
	if !r.full && r.next == 0 {
		return zero, false
	}
	i := r.next - 1
	if i < 0 {
		i = len(r.buf) - 1
	}
	return r.buf[i], true
}

// hub fans each encoded sample out to the live pages. It holds at most max
// subscribers, each with a channel of buf messages. publish never blocks: a
// subscriber whose channel is full (a slow or stalled browser) is dropped
// and its channel closed, so its handler ends and the browser reconnects.
type hub struct {
	mu   sync.Mutex
	subs map[*sub]struct{}
	max  int
	buf  int
	// dropped counts subscribers dropped for being slow, for the tests
	// and the dashboard's own metrics.
	dropped int64
	closed  bool
}

type sub struct{ ch chan []byte }

func newHub(max, buf int) *hub {
	return &hub{subs: map[*sub]struct{}{}, max: max, buf: max1(buf)}
}

func max1(n int) int { return max(n, 1) }

// subscribe adds a subscriber, or reports false when the hub is full or
// closed.
func (h *hub) subscribe() (*sub, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.subs) >= h.max {
		return nil, false
	}
	s := &sub{ch: make(chan []byte, h.buf)}
	h.subs[s] = struct{}{}
	return s, true
}

// unsubscribe removes s (a handler whose client went away).
func (h *hub) unsubscribe(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
	}
}

// publish offers msg to every subscriber without waiting.
func (h *hub) publish(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- msg:
		default:
			delete(h.subs, s)
			close(s.ch)
			h.dropped++
		}
	}
}

// stats returns the subscriber count and how many were dropped.
func (h *hub) stats() (n int, dropped int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs), h.dropped
}

// close ends every subscription and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.ch)
	}
}
