package membership

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
)

// member is one node's membership running in the test, with its own Redis
// client so the test can cut it off the way a crash would.
type member struct {
	m      *Members
	rdb    *redis.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changes []int
}

func startMember(t *testing.T, addr, id string, beat, ttl time.Duration) *member {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	m, err := New(rdb, Config{NodeID: id, Beat: beat, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	mb := &member{m: m, rdb: rdb, done: make(chan struct{})}
	m.OnChange(func(live int) {
		mb.mu.Lock()
		mb.changes = append(mb.changes, live)
		mb.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	mb.cancel = cancel
	go func() { defer close(mb.done); _ = m.Run(ctx) }()
	t.Cleanup(mb.stop)
	return mb
}

// stop ends Run cleanly: the node deregisters.
func (mb *member) stop() {
	mb.cancel()
	<-mb.done
	_ = mb.rdb.Close()
}

// crash ends Run without deregistering, as SIGKILL would: the connection is
// gone first, so the goodbye never reaches Redis.
func (mb *member) crash() {
	_ = mb.rdb.Close()
	mb.cancel()
	<-mb.done
}

func (mb *member) lastChange() int {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if len(mb.changes) == 0 {
		return 0
	}
	return mb.changes[len(mb.changes)-1]
}

// waitLive waits until every member sees want live nodes and returns how
// long that took.
func waitLive(t *testing.T, want int, limit time.Duration, ms ...*member) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok := true
		for _, mb := range ms {
			if mb.m.LiveNodes() != want || len(mb.m.Nodes()) != want || mb.lastChange() != want {
				ok = false
			}
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			for _, mb := range ms {
				t.Logf("%s sees %d %v (changes %v)", mb.m.NodeID(), mb.m.LiveNodes(), mb.m.Nodes(), mb.changes)
			}
			t.Fatalf("members did not see %d live nodes within %v", want, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMembershipSeesCrashAndCleanStop(t *testing.T) {
	r := testenv.StartRedis(t, false)
	const beat, ttl = 200 * time.Millisecond, 600 * time.Millisecond
	const slack = 100 * time.Millisecond // scheduling on 2 shared cores under -race

	var ms []*member
	for i := 1; i <= 3; i++ {
		ms = append(ms, startMember(t, r.Addr, fmt.Sprintf("node%d", i), beat, ttl))
	}
	// Everyone sees everyone within one beat of the last one starting.
	waitLive(t, 3, beat+slack, ms...)
	if got := ms[0].m.Nodes(); fmt.Sprint(got) != "[node1 node2 node3]" {
		t.Fatalf("nodes = %v", got)
	}

	// Invariant: a node that dies without a goodbye is gone from every
	// survivor's view within TTL + one beat.
	ms[2].crash()
	took := waitLive(t, 2, ttl+beat+slack, ms[0], ms[1])
	t.Logf("crash seen after %v (TTL %v, beat %v)", took, ttl, beat)

	// A clean stop deregisters: seen at the survivor's next beat.
	ms[1].stop()
	took = waitLive(t, 1, beat+slack, ms[0])
	t.Logf("clean stop seen after %v", took)

	// A node coming back is seen again.
	back := startMember(t, r.Addr, "node2", beat, ttl)
	waitLive(t, 2, beat+slack, ms[0], back)
}

func TestMembershipKeepsViewWhileRedisIsDown(t *testing.T) {
	r := testenv.StartRedis(t, false)
	const beat, ttl = 50 * time.Millisecond, 150 * time.Millisecond
	a := startMember(t, r.Addr, "a", beat, ttl)
	b := startMember(t, r.Addr, "b", beat, ttl)
	waitLive(t, 2, 2*beat, a, b)

	r.Kill()
	time.Sleep(3 * ttl)
	if a.m.LiveNodes() != 2 || b.m.LiveNodes() != 2 {
		t.Fatalf("view changed while Redis was down: a=%d b=%d", a.m.LiveNodes(), b.m.LiveNodes())
	}
	// Redis comes back empty (no AOF): both register again at their next beat.
	r.Restart()
	waitLive(t, 2, time.Second, a, b)
}

func TestMembershipDefaults(t *testing.T) {
	if _, err := New(nil, Config{}); err == nil {
		t.Fatal("no node id accepted")
	}
	if _, err := New(nil, Config{NodeID: "x", Beat: time.Second, TTL: time.Millisecond}); err == nil {
		t.Fatal("ttl shorter than beat accepted")
	}
	m, err := New(nil, Config{NodeID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if m.LiveNodes() != 1 || fmt.Sprint(m.Nodes()) != "[x]" {
		t.Fatalf("before the first beat: %d %v", m.LiveNodes(), m.Nodes())
	}
}

func BenchmarkLiveNodes(b *testing.B) {
	m, _ := New(nil, Config{NodeID: "x"})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if m.LiveNodes() < 1 {
				b.Fatal("zero")
			}
		}
	})
}
