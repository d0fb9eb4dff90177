package envelope_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/envelope"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/stock"
	"github.com/flashsale/flashsale/wallet"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

const topic = "flashsale.envelopes"

var limits = envelope.Limits{MaxCount: 1000, MaxTotalCents: 1_000_000, DefaultExpiry: time.Hour, MinExpiry: time.Second, MaxExpiry: time.Hour}

func newService(t *testing.T, rdb *redis.Client, pub envelope.Publisher) *envelope.Service {
	s := envelope.NewService(envelope.Config{Node: "n1", Limits: limits, BufferUnits: 2, RefreshInterval: 10 * time.Millisecond,
		RedisTimeout: time.Second, PublishTimeout: 3 * time.Second,
		Coalescer: stock.CoalescerConfig{MaxBatch: 32, Flushers: 2, QueueSize: 1024}, MaxEnvelopes: 100, RecentEntries: 10}, rdb, pub, nil, nil)
	t.Cleanup(s.Close)
	return s
}

func kafkaPublisher(t *testing.T, broker string) *order.Publisher {
	p := order.NewPublisher(order.PublisherConfig{Brokers: []string{broker}, Topic: topic,
		WriteTimeout: 5 * time.Second, MaxAttempts: 3})
	t.Cleanup(func() { p.Close() })
	return p
}

func balance(t *testing.T, rdb *redis.Client, user string) int64 {
	t.Helper()
	w, err := wallet.Get(context.Background(), rdb, user, 5)
	if err != nil {
		t.Fatal(err)
	}
	return w.Balance
}

func runRefunder(t *testing.T, s *envelope.Service, broker, group string) (stop func()) {
	r := s.NewRefunder(envelope.RefundConfig{Brokers: []string{broker}, Topic: topic, Group: group,
		Workers: 2, QueueSize: 4, MaxHeld: 8, RetryDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// Invariant: every envelope's unopened rest is refunded exactly once at its
// deadline — even when its consumer dies holding it and the group gets it
// again, and when a second group reads every event too — and the ledger of
// each envelope sums to 0.
func TestRefundExactlyOnceUnderRedelivery(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	k := testenv.StartKafka(t, topic)
	s := newService(t, rdb, kafkaPublisher(t, k.Addr))
	ctx := context.Background()
	// 20 envelopes, more than MaxHeld (8): fetching must pause and resume.
	var ids []string
	var opened int64
	fund(t, rdb, "boss", 100_000)
	for i := 0; i < 20; i++ {
		e, err := s.Create(ctx, envelope.Request{SenderID: "boss", TotalCents: 1000 + int64(i), Count: 5, ExpiresIn: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
		for u := 0; u < i%6; u++ { // 0..5 opens: some untouched, some emptied
			o, err := s.Open(ctx, e.ID, fmt.Sprint("u", u))
			if err != nil {
				t.Fatalf("open %d of %s: %v", u, e.ID, err)
			}
			opened += o.AmountCents
		}
	}
	var total int64
	for i := 0; i < 20; i++ {
		total += 1000 + int64(i)
	}
	if b := balance(t, rdb, "boss"); b != 100_000-total {
		t.Fatalf("sender balance %d after sending, want %d", b, -total)
	}

	stopA := runRefunder(t, s, k.Addr, "g1")
	time.Sleep(700 * time.Millisecond) // A holds envelopes, none due
	for _, id := range ids {
		if b, _ := envelope.Books(ctx, rdb, id); b.State != "open" {
			t.Fatalf("%s refunded before its deadline", id)
		}
	}
	stopA() // "crash": nothing committed for unsettled envelopes
	runRefunder(t, s, k.Addr, "g1")
	runRefunder(t, s, k.Addr, "g2") // a whole second copy of every event

	deadline := time.Now().Add(15 * time.Second)
	for {
		n := 0
		for _, id := range ids {
			if b, _ := envelope.Books(ctx, rdb, id); b.State == "refunded" && len(b.Ledger.Missing) == 0 {
				n++
			}
		}
		if n == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d envelopes refunded", n, len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the duplicate copy finish too
	for _, id := range ids {
		b, err := envelope.Books(ctx, rdb, id)
		if err != nil || !b.OK() || b.Ledger.SumCents != 0 {
			t.Fatalf("books of %s: %+v %v", id, b, err)
		}
		// Settling again is a repeat and moves no money.
		if r, err := s.Settle(ctx, id, lua.RefundExpire); err != nil || r.Code != lua.RefundRepeat {
			t.Fatalf("settle again: %+v %v", r, err)
		}
	}
	if b := balance(t, rdb, "boss"); b != 100_000-opened {
		t.Fatalf("sender balance %d, want -%d (only what was opened left the sender)", b, opened)
	}
	if n, _ := rdb.ZCard(ctx, envelope.DueKey).Result(); n != 0 {
		t.Fatalf("%d envelopes still due", n)
	}
	// Kafka: one created and one refunded event per envelope.
	counts := readEvents(t, k.Addr, 20*2+int(opened/1_000_000))
	for _, id := range ids {
		if counts[id+" "+envelope.TypeCreated] != 1 || counts[id+" "+envelope.TypeRefunded] != 1 {
			t.Fatalf("events of %s: created %d, refunded %d", id, counts[id+" "+envelope.TypeCreated], counts[id+" "+envelope.TypeRefunded])
		}
	}
}

func readEvents(t *testing.T, broker string, atLeast int) map[string]int {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{broker}, Topic: topic,
		GroupID: fmt.Sprintf("read-%d", time.Now().UnixNano()), StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out := map[string]int{}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return out
		}
		ev, err := envelope.ParseEvent(m.Value)
		if err != nil {
			t.Fatalf("bad event %s: %v", m.Value, err)
		}
		out[ev.EnvelopeID+" "+ev.Type]++
	}
}

// refusing publishes nothing for the events whose type it refuses.
type refusing struct {
	refuse atomic.Value // string: event type to refuse
	seen   atomic.Int64
}

func (p *refusing) Publish(_ context.Context, msgs []kafka.Message, errs []error) {
	typ, _ := p.refuse.Load().(string)
	for i, m := range msgs {
		p.seen.Add(1)
		if ev, _ := envelope.ParseEvent(m.Value); ev.Type == typ {
			errs[i] = errors.New("broker said no")
		}
	}
}

// An envelope Kafka will not announce is refunded at once: the sender hears
// 503 and the ledger nets to zero. Opens Kafka will not announce are undone:
// the openers hear 503 and the shares are back.
func TestUnannouncedIsUndone(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	pub := &refusing{}
	s := newService(t, rdb, pub)
	ctx := context.Background()

	pub.refuse.Store(envelope.TypeCreated)
	fund(t, rdb, "s1", 500)
	fund(t, rdb, "s2", 300)
	e, err := s.Create(ctx, envelope.Request{SenderID: "s1", TotalCents: 500, Count: 5, ExpiresIn: time.Minute})
	if flashsale.ErrorCode(err) != flashsale.EUNAVAILABLE || e.ID == "" {
		t.Fatalf("create with Kafka refusing: %v", err)
	}
	b, _ := envelope.Books(ctx, rdb, e.ID)
	if !b.OK() || b.State != "refunded" || b.RefundedCents != 500 || b.Ledger.SumCents != 0 || balance(t, rdb, "s1") != 500 {
		t.Fatalf("aborted envelope: %+v, balance %d", b, balance(t, rdb, "s1"))
	}
	if _, err := s.Open(ctx, e.ID, "u"); flashsale.ErrorCode(err) != flashsale.EEXPIRED {
		t.Fatalf("open an aborted envelope: %v", err)
	}

	pub.refuse.Store("")
	e, err = s.Create(ctx, envelope.Request{SenderID: "s2", TotalCents: 300, Count: 3, ExpiresIn: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	pub.refuse.Store(envelope.TypeOpened)
	for i := 0; i < 5; i++ {
		if _, err := s.Open(ctx, e.ID, fmt.Sprint("u", i)); flashsale.ErrorCode(err) != flashsale.EUNAVAILABLE {
			t.Fatalf("open with Kafka refusing: %v", err)
		}
	}
	if b, _ := envelope.Books(ctx, rdb, e.ID); !b.OK() || b.Opened != 0 || b.Left != 3 || b.LeftCents != 300 || b.Undone != 5 {
		t.Fatalf("after undone opens: %+v", b)
	}
	pub.refuse.Store("")
	var got int64
	for i := 0; i < 5; i++ {
		o, err := s.Open(ctx, e.ID, fmt.Sprint("u", i))
		if i < 3 && err != nil || i >= 3 && flashsale.ErrorCode(err) != flashsale.EEMPTY {
			t.Fatalf("open %d after Kafka came back: %v", i, err)
		}
		got += o.AmountCents
		if i < 3 && balance(t, rdb, fmt.Sprint("u", i)) != o.AmountCents {
			t.Fatalf("opener %d not credited", i)
		}
	}
	if got != 300 {
		t.Fatalf("opened %d of 300", got)
	}
	if _, err := s.Open(ctx, e.ID, "u0"); flashsale.ErrorCode(err) != flashsale.EEMPTY {
		t.Fatalf("reopen of an empty envelope from memory: %v", err)
	}
}

// fund credits cents to user's wallet: a send is paid from its balance.
func fund(t *testing.T, rdb *redis.Client, user string, cents int64) {
	t.Helper()
	if _, _, err := wallet.AddFunds(context.Background(), rdb, user, "test-"+user, cents, 20); err != nil {
		t.Fatal(err)
	}
}

// A credit lost between the open and the wallet is repaired by Settle, once.
func TestLedgerRepair(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	s := newService(t, rdb, &refusing{})
	ctx := context.Background()
	fund(t, rdb, "s", 100)
	e, _ := s.Create(ctx, envelope.Request{SenderID: "s", TotalCents: 100, Count: 2, ExpiresIn: time.Second})
	o, err := s.Open(ctx, e.ID, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Lose the credit, as if the node died between the two steps.
	k := lua.WalletKeysFor("a")
	rdb.HDel(ctx, k.Entries, wallet.OpenID(e.ID))
	rdb.HIncrBy(ctx, k.Meta, "balance", -o.AmountCents)
	if b, _ := envelope.Books(ctx, rdb, e.ID); len(b.Ledger.Missing) != 1 {
		t.Fatalf("missing credit not reported: %+v", b.Ledger)
	}
	time.Sleep(1100 * time.Millisecond)
	sw := s.NewSweeper(time.Hour, 0, 10)
	if n, err := sw.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	b, _ := envelope.Books(ctx, rdb, e.ID)
	if !b.OK() || b.Ledger.SumCents != 0 || balance(t, rdb, "a") != o.AmountCents || balance(t, rdb, "s") != 100-o.AmountCents {
		t.Fatalf("after repair: %+v a=%d s=%d", b, balance(t, rdb, "a"), balance(t, rdb, "s"))
	}
	if n, _ := s.SettleLedger(ctx, e.ID); n != 0 {
		t.Fatalf("second repair applied %d entries", n)
	}
}
