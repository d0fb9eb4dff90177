// Package waitroom is a sale's fair waiting room: buyers join before or
// while demand exceeds what the sale can admit and get a signed ticket;
// everyone who joined before the opening is shuffled once at the opening,
// later joiners keep their order; one "now serving" number per sale, kept
// in Redis and advanced admit_per_sec a second by whichever node holds a
// short lease, says who may buy. Nodes read that number once per tick, so
// polling a ticket's position costs no Redis at all, and a buy checks its
// ticket against the number the node already knows; the buy script makes
// the ticket single-use in the same Redis call that sells (order.Seller.
// BuyTicketed), so a buy through the room costs no extra round trip. When the sale sells out the room closes:
// the next poll answers sold_out; if units come back it reopens.
package waitroom

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/stock"
	"github.com/redis/go-redis/v9"
)

// Config tunes a Service.
type Config struct {
	Node         string        // this node's id (the lease holder's name)
	Secret       []byte        // HMAC key of tickets; every node of a cluster must share it
	TicketTTL    time.Duration // how long a ticket stays valid (never past the sale's end)
	Tick         time.Duration // how often a node reads (and, holding the lease, advances) each room
	Lease        time.Duration // how long the advancing node's lease lasts without renewal
	RedisTimeout time.Duration
	MaxRooms     int // sales a node keeps room state for
}

// Service serves the waiting rooms of every sale a node sees. It is safe
// for concurrent use; Close stops its ticker.
type Service struct {
	cfg   Config
	rdb   redis.UniversalClient
	log   *slog.Logger
	rooms *stock.Cache[*room]
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// room is a node's view of one sale's waiting room. A sale without one is
// cached too (enabled false), so the buy path of ordinary sales pays one
// map lookup.
type room struct {
	id               string
	enabled          bool
	rate             int64
	startsMs, endsMs int64
	opensMs          int64 // joining opens: starts_at - pre_queue
	state            atomic.Pointer[lua.RoomState]
	lastErr          atomic.Int64 // unix ms of the last failed tick, for rate-limited logs
}

// State is what a buyer sees of their ticket.
type State string

// Ticket states.
const (
	Waiting  State = "waiting"   // in line; Position and ETA say how far
	PreQueue State = "pre_queue" // joined before the opening; the shuffle at the opening decides the place
	Admitted State = "admitted"  // may buy now, once
	SoldOut  State = "sold_out"  // the sale has no unit left: the room is closed
	Ended    State = "ended"     // the sale is over
)

// View is a ticket's state as the API shows it.
type View struct {
	Ticket    string    `json:"ticket,omitempty"`
	SaleID    string    `json:"sale_id"`
	UserID    string    `json:"user_id"`
	State     State     `json:"state"`
	Position  int64     `json:"position"`    // buyers ahead of this one plus one; 0 when admitted or unknown yet
	Rank      int64     `json:"rank"`        // place in line (1 = first); 0 before the opening's shuffle
	ETASecs   float64   `json:"eta_seconds"` // estimated wait until admitted
	ExpiresAt time.Time `json:"expires_at"`
}

// Permit is a buy permission taken from an admitted ticket: the ticket's
// number, which the buy script marks used when (and only when) it sells.
// The zero Permit is "no room".
type Permit struct {
	seq int64
}

// Ticket is the ticket number the buy must carry to the buy script
// (order.Seller.BuyTicketed); 0 for a sale without a waiting room.
func (p Permit) Ticket() int64 { return p.seq }

// ErrNoRoom answers a join of a sale without a waiting room.
var ErrNoRoom = flashsale.Errorf(flashsale.ECONFLICT, "this sale has no waiting room: buy directly")

// ErrTooEarly answers a join before the room opens (starts_at - pre_queue).
var ErrTooEarly = flashsale.Errorf(flashsale.ENOTSTARTED, "the waiting room of this sale is not open yet")

// New returns a Service and starts its ticker.
func New(cfg Config, rdb redis.UniversalClient, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.Lease <= 0 {
		cfg.Lease = time.Second
	}
	if cfg.TicketTTL <= 0 {
		cfg.TicketTTL = time.Hour
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = 500 * time.Millisecond
	}
	if cfg.MaxRooms <= 0 {
		cfg.MaxRooms = 1024
	}
	if len(cfg.Secret) == 0 {
		cfg.Secret = make([]byte, 32)
		_, _ = rand.Read(cfg.Secret)
		log.Warn("waiting_room.secret is empty: this node signs queue tickets with a random key no other node knows")
	}
	s := &Service{cfg: cfg, rdb: rdb, log: log, rooms: stock.NewCache[*room](cfg.MaxRooms),
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

// Close stops the ticker.
func (s *Service) Close() {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
	})
}

func (s *Service) run() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, r := range s.rooms.Values() {
				if r.enabled {
					s.tick(r)
				}
			}
		case <-s.stop:
			return
		}
	}
}

// tick reads the room's state from Redis (advancing it if this node holds
// the lease). Failures keep the last state: a node that cannot reach Redis
// stops admitting no one it had admitted, and admits no one new.
func (s *Service) tick(r *room) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	defer cancel()
	var b [8]byte
	_, _ = rand.Read(b[:])
	st, err := lua.RoomTick(ctx, s.rdb, r.id, s.cfg.Node, s.cfg.Lease.Milliseconds(), binary.LittleEndian.Uint64(b[:]))
	if err != nil {
		if now := time.Now().UnixMilli(); now-r.lastErr.Swap(now) > 1000 {
			s.log.Warn("waiting room tick failed", "sale", r.id, "err", err)
		}
		return err
	}
	if !st.Exists {
		st.Remaining = 0
	}
	r.state.Store(&st)
	return nil
}

// room returns the node's view of sale id's room, loading the sale on first use.
func (s *Service) room(ctx context.Context, id string) (*room, error) {
	if r, ok := s.rooms.Get(id); ok {
		return r, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	return s.rooms.Load(ctx, id, func(ctx context.Context) (*room, error) {
		sale, _, err := order.LoadSale(ctx, s.rdb, id)
		if err != nil {
			return nil, err
		}
		r := &room{id: id, enabled: sale.WaitingRoom.Enabled, rate: sale.WaitingRoom.AdmitPerSec,
			startsMs: ms(sale.StartsAt), endsMs: ms(sale.EndsAt)}
		r.opensMs = r.startsMs - sale.WaitingRoom.PreQueue.Milliseconds()
		if r.enabled {
			if err := s.tick(r); err != nil {
				return nil, fmt.Errorf("%w: %w", order.ErrRedis, err)
			}
		}
		return r, nil
	}, func(map[string]*room) error { return errTooManyRooms })
}

var errTooManyRooms = flashsale.Errorf(flashsale.EOVERLOADED, "this node serves too many waiting rooms")

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Join gives buyer a ticket for sale id's room (the same place on every
// later join) and its current state.
func (s *Service) Join(ctx context.Context, id, buyer string) (View, error) {
	r, err := s.room(ctx, id)
	if err != nil {
		return View{}, err
	}
	if !r.enabled {
		return View{}, ErrNoRoom
	}
	now := time.Now().UnixMilli()
	switch st := r.state.Load(); {
	case r.opensMs > 0 && now < r.opensMs:
		return View{}, ErrTooEarly
	case r.endsMs > 0 && now >= r.endsMs:
		return View{}, order.ErrEnded
	case st.Remaining <= 0 && st.Pre >= 0:
		return View{}, order.ErrSoldOut
	}
	jctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	seq, err := lua.RoomJoin(jctx, s.rdb, id, buyer)
	if err != nil {
		return View{}, fmt.Errorf("%w: %w", order.ErrRedis, err)
	}
	switch seq {
	case lua.JoinSoldOut:
		return View{}, order.ErrSoldOut
	case lua.JoinEnded:
		return View{}, order.ErrEnded
	case lua.JoinNoSale:
		return View{}, order.ErrNoSale
	}
	exp := now + s.cfg.TicketTTL.Milliseconds()
	if r.endsMs > 0 {
		exp = min(exp, r.endsMs)
	}
	t := Ticket{Sale: id, Buyer: buyer, Seq: seq, ExpiresMs: exp}
	v := r.view(t, now)
	v.Ticket = t.Encode(s.cfg.Secret)
	return v, nil
}

// Status returns the state of buyer's ticket for sale id from what the
// node already knows: no Redis call once the room is loaded.
func (s *Service) Status(ctx context.Context, id, buyer, ticket string) (View, error) {
	r, t, err := s.check(ctx, id, buyer, ticket)
	if err != nil {
		return View{}, err
	}
	return r.view(t, time.Now().UnixMilli()), nil
}

// check loads the room and verifies the ticket's signature, owner and expiry.
func (s *Service) check(ctx context.Context, id, buyer, ticket string) (*room, Ticket, error) {
	r, err := s.room(ctx, id)
	if err != nil {
		return nil, Ticket{}, err
	}
	if !r.enabled {
		return nil, Ticket{}, ErrNoRoom
	}
	if ticket == "" {
		return nil, Ticket{}, ErrNoTicket
	}
	t, err := ParseTicket(s.cfg.Secret, ticket, id, buyer)
	if err != nil {
		return nil, Ticket{}, err
	}
	if time.Now().UnixMilli() >= t.ExpiresMs {
		return nil, Ticket{}, ErrExpired
	}
	return r, t, nil
}

// view is ticket t's state in r at now.
func (r *room) view(t Ticket, now int64) View {
	v := View{SaleID: t.Sale, UserID: t.Buyer, ExpiresAt: time.UnixMilli(t.ExpiresMs).UTC()}
	st := r.state.Load()
	switch {
	case r.endsMs > 0 && now >= r.endsMs:
		v.State = Ended
	case st.Pre < 0:
		v.State = PreQueue
		v.ETASecs = float64(max(r.startsMs-now, 0)) / 1000
	case st.Remaining <= 0:
		v.State = SoldOut
	default:
		v.Rank = Rank(t.Seq, st.Pre, st.Seed)
		if v.Rank <= st.Serving {
			v.State = Admitted
		} else {
			v.State = Waiting
			v.Position = v.Rank - st.Serving
			v.ETASecs = float64(v.Position) / float64(r.rate)
		}
	}
	return v
}

// Admit is the buy path's check. For a sale without a waiting room it
// returns the zero Permit at the cost of one map lookup. Otherwise ticket
// must be buyer's, for this sale, unexpired and admitted (its rank within
// the now-serving number this node knows) — all checked here without
// Redis. Whether the ticket already bought is the buy script's check, in
// the same call that sells (see Permit).
func (s *Service) Admit(ctx context.Context, id, buyer, ticket string) (Permit, error) {
	if r, ok := s.rooms.Get(id); ok && !r.enabled {
		return Permit{}, nil
	}
	r, t, err := s.check(ctx, id, buyer, ticket)
	if errors.Is(err, ErrNoRoom) {
		return Permit{}, nil
	}
	if err != nil {
		return Permit{}, err
	}
	switch v := r.view(t, time.Now().UnixMilli()); v.State {
	case Admitted:
	case SoldOut:
		return Permit{}, order.ErrSoldOut
	case Ended:
		return Permit{}, order.ErrEnded
	default:
		return Permit{}, ErrNotAdmitted
	}
	return Permit{seq: t.Seq}, nil
}

// Forget drops the node's view of sale id's room (e.g. after the sale changed).
func (s *Service) Forget(id string) { s.rooms.Delete(id) }
