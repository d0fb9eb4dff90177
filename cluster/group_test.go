package cluster

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/membership"
	"github.com/redis/go-redis/v9"
)

// TestUpProcsPerNode: `cluster up --procs-per-node 2` starts node1-p1 and
// node1-p2 on one port (SO_REUSEPORT), each its own cluster member and
// process; the kernel spreads new connections over both; only p1 runs the
// consumers; nginx has one upstream entry for the port; a group process
// restarts onto the shared port; down leaves no process.
func TestUpProcsPerNode(t *testing.T) {
	bin := realNodeBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var log bytes.Buffer
	c, err := Up(ctx, Config{Nodes: 1, ProcsPerNode: 2, Dir: t.TempDir(), Binary: bin, Log: &log, NoPostgres: true})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Cleanup(func() { _ = c.Down() })
	st := c.State()
	if names := c.NodeNames(); !slices.Equal(names, []string{"node1-p1", "node1-p2"}) {
		t.Fatalf("node processes %v, want node1-p1, node1-p2", names)
	}
	p1, p2 := st.Nodes[0], st.Nodes[1]
	if p1.Addr != p2.Addr || p1.PID == p2.PID || p1.AdminURL == p2.AdminURL || p1.StatLog == p2.StatLog {
		t.Fatalf("group processes: %+v and %+v; want one addr, own pid, admin port, stat.log", p1, p2)
	}
	if !slices.Contains(p2.Env, "FLASHSALE_NODE_CONSUMERS=false") || slices.Contains(p1.Env, "FLASHSALE_NODE_CONSUMERS=false") {
		t.Fatalf("only p2 should have node.consumers off: p1 %v p2 %v", p1.Env, p2.Env)
	}

	// Both answer on the shared port: fresh connections land on each.
	seen := map[string]int{}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 3 * time.Second}
	for range 64 {
		resp, err := client.Get(p1.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen[resp.Header.Get("X-Flashsale-Node")]++
	}
	if len(seen) != 2 || seen["node1-p1"] == 0 || seen["node1-p2"] == 0 {
		t.Fatalf("64 connections to %s answered by %v, want both node1-p1 and node1-p2", p1.Addr, seen)
	}

	// Both are members.
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr()})
	defer rdb.Close()
	members := func() []string {
		m, err := rdb.ZRange(ctx, membership.DefaultMembersKey, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(m)
		return m
	}
	if m := members(); !slices.Equal(m, []string{"node1-p1", "node1-p2"}) {
		t.Fatalf("members %v, want node1-p1 and node1-p2", m)
	}

	// nginx: one upstream entry for the group's port.
	if st.Nginx != nil {
		conf, err := os.ReadFile(c.nginxConfPath)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(conf), "server "+p1.Addr+" "); n != 1 {
			t.Fatalf("nginx.conf has %d entries for %s, want 1:\n%s", n, p1.Addr, conf)
		}
		code, body, _ := call(t, "GET", c.LBURL()+"/readyz", "", nil)
		if code != 200 {
			t.Fatalf("through nginx: %d %s", code, body)
		}
	}

	// A group process restarts onto the shared port while the other serves.
	if err := c.Kill("node1-p2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart("node1-p2"); err != nil {
		t.Fatalf("restart node1-p2: %v\n%s", err, log.String())
	}
	if code, _, _ := call(t, "GET", c.State().Nodes[1].AdminURL+"/healthz", "", nil); code != 200 {
		t.Fatalf("node1-p2 after restart: %d", code)
	}
	var b strings.Builder
	c.PrintSummary(&b)
	if !strings.Contains(b.String(), "node1-p2") {
		t.Errorf("summary lacks node1-p2:\n%s", b.String())
	}
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, st)
	requireGone(t, c.State())
}
