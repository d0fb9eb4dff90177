package node_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/node"
	"github.com/flashsale/flashsale/order"
)

// replyDropper is a TCP proxy in front of Redis that passes every command
// on but, for EVALSHA/EVAL, cuts the connection instead of passing the
// reply back: Redis ran the script, the client never learns it — what a
// Redis crash or a network cut between the two looks like to a node.
type replyDropper struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	conns   []net.Conn
}

func newReplyDropper(t *testing.T, backend string) *replyDropper {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{ln: ln, backend: backend}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *replyDropper) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if err != nil {
					b.Close()
					return
				}
				if bytes.Contains(bytes.ToUpper(buf[:n]), []byte("EVAL")) {
					// Cut the client off first so no reply can reach it,
					// then let Redis run the script.
					c.Close()
					_, _ = b.Write(buf[:n])
					time.Sleep(100 * time.Millisecond)
					b.Close()
					return
				}
				if _, err := b.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
		go func() { _, _ = io.Copy(c, b); c.Close() }()
	}
}

// Invariant: a buy script whose reply is lost runs once — the node's Redis
// client must not resend it (go-redis retries on EOF by default), or one
// request could sell twice.
func TestLostScriptReplyIsNotRetried(t *testing.T) {
	r := testenv.StartRedis(t, false)
	direct := r.Client(t)
	ctx := context.Background()
	if err := order.CreateSale(ctx, direct, flashsale.Sale{ID: "r1", Name: "r1", Stock: 10, PerUserLimit: 5, PayTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := lua.Load(ctx, direct); err != nil {
		t.Fatal(err)
	}
	p := newReplyDropper(t, r.Addr)
	cfg, err := configs.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Redis.Addrs = []string{p.ln.Addr().String()}
	rdb := node.NewRedisClient(cfg)
	defer rdb.Close()

	if _, err := lua.Buy(ctx, rdb, "r1", "n1", "batch-1", []string{"u1"}, nil); err == nil {
		t.Fatal("buy through a proxy that drops script replies succeeded")
	}
	// The client hears the cut before the proxy has handed the script to
	// Redis (it closes the client's side first), so wait for the order to
	// appear, then past the proxy's own close (100 ms after the script) so a
	// resent script would have landed too.
	var n int64
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n, err = direct.HLen(ctx, lua.KeysFor("r1").Orders).Result(); err != nil {
			t.Fatal(err)
		}
		if n > 0 || time.Now().After(end) {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n, err = direct.HLen(ctx, lua.KeysFor("r1").Orders).Result(); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("one buy with a lost reply made %d orders, want 1 (the client resent the script)", n)
	}
	// The buyer was told 503, so the order must not stand: resolving the
	// batch finds that it ran and undoes it.
	undone, _, err := lua.ResolveBatch(ctx, direct, "r1", "batch-1")
	if err != nil || len(undone) != 1 {
		t.Fatalf("resolve the lost batch: undone %v, %v", undone, err)
	}
	if _, b, err := order.LoadSale(ctx, direct, "r1"); err != nil || b.Pending != 0 || b.Aborted != 1 || b.Remaining != 10 {
		t.Fatalf("books after resolving: %+v %v", b, err)
	}
}
