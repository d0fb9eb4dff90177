package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/membership"
)

// run runs the flashsale binary and returns its stdout, failing on error.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("flashsale %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func statusJSON(t *testing.T, bin, dir string) map[string]ProcStatus {
	t.Helper()
	var ss []ProcStatus
	if err := json.Unmarshal([]byte(run(t, bin, "cluster", "status", "--json", "--dir", dir)), &ss); err != nil {
		t.Fatal(err)
	}
	out := map[string]ProcStatus{}
	for _, s := range ss {
		out[s.Name] = s
	}
	return out
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestCLIUpNoNodes drives the real binary as a user would, from "another
// shell": up exits, the processes stay, status/kill/restart/down find them
// through the state file, and down leaves no process behind.
func TestCLIUpNoNodes(t *testing.T) {
	testenv.RedisBinary(t)
	bin := flashsaleBinary(t)
	dir := t.TempDir()
	t.Cleanup(func() { // a failed test must not leave processes behind
		if c, err := Open(dir); err == nil {
			_ = c.Down()
		}
	})

	start := time.Now()
	out := run(t, bin, "cluster", "up", "--nodes", "0", "--dir", dir, "--nginx-port", "0", "--no-postgres")
	t.Logf("up --nodes 0 took %v:\n%s", time.Since(start), out)
	st, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(dir, StateFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", info.Mode(), err)
	}
	// Secrets are never printed, only where they are (issue 11).
	if !strings.Contains(out, st.Redis.Addr) || !strings.Contains(out, st.Broker.Addr) || !strings.Contains(out, StateFile) ||
		strings.Contains(out, st.AdminToken) || strings.Contains(out, st.AuthSecret) || strings.Contains(out, st.PaymentSecret) {
		t.Errorf("summary lacks addresses or the secrets' place, or prints a secret:\n%s", out)
	}
	want := []string{"redis", "broker"}
	if _, err := exec.LookPath("nginx"); err == nil {
		want = append(want, "nginx")
		resp, _ := get(t, st.Nginx.URL+"/lb-healthz")
		if resp.StatusCode != 200 {
			t.Fatalf("nginx /lb-healthz: %s", resp.Status)
		}
		if resp, _ := get(t, st.Nginx.URL+"/v1/sales/x"); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("no nodes behind nginx: got %s, want 502", resp.Status)
		}
	}
	ss := statusJSON(t, bin, dir)
	for _, name := range want {
		if !ss[name].Ready {
			t.Errorf("%s not ready: %+v", name, ss[name])
		}
	}

	// A second up on the same directory is refused while the first runs.
	if err := exec.Command(bin, "cluster", "up", "--nodes", "0", "--dir", dir, "--nginx-port", "0", "--no-postgres").Run(); err == nil {
		t.Fatal("second up on a running directory succeeded")
	}

	// kill is a crash; restart brings Redis back from its AOF.
	rdb := redis.NewClient(&redis.Options{Addr: st.Redis.Addr, MaxRetries: -1})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "fs:test", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}
	run(t, bin, "cluster", "kill", "redis", "--dir", dir)
	if s := statusJSON(t, bin, dir)["redis"]; s.Alive {
		t.Fatalf("redis alive after kill: %+v", s)
	}
	run(t, bin, "cluster", "restart", "redis", "--dir", dir)
	if v, err := rdb.Get(ctx, "fs:test").Result(); err != nil || v != "kept" {
		t.Fatalf("after kill + restart Redis has %q, %v; want the AOF to keep it", v, err)
	}
	st2, _ := readState(dir)
	if st2.Redis.PID == st.Redis.PID {
		t.Error("state file still has the old Redis pid")
	}

	run(t, bin, "cluster", "down", "--dir", dir)
	requireGone(t, *st)
	requireGone(t, *st2)
	if _, err := os.Stat(filepath.Join(dir, StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file left after down: %v", err)
	}
	if err := exec.Command(bin, "cluster", "status", "--dir", dir).Run(); err == nil {
		t.Error("status succeeded with no cluster")
	}
}

// TestCLIUpForeground: with --foreground, SIGTERM to up brings all down.
func TestCLIUpForeground(t *testing.T) {
	testenv.RedisBinary(t)
	bin := flashsaleBinary(t)
	dir := t.TempDir()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "cluster", "up", "--foreground", "--nodes", "0", "--no-nginx", "--no-postgres", "--dir", dir)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var st *State
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if st, err = readState(dir); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("no state file: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("up --foreground after SIGTERM: %v\n%s", err, stderr.String())
	}
	requireGone(t, *st)
}

// TestUpFailsCleanly: a node that cannot start fails Up with its log, and
// Up stops everything it had started.
func TestUpFailsCleanly(t *testing.T) {
	testenv.RedisBinary(t)
	exe := testBinary(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "flashsale")
	body := "#!/bin/sh\nif [ \"$1\" = broker ]; then exec " + exe + " \"$@\"; fi\necho 'no node in this build' >&2\nexit 3\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	c, err := Up(context.Background(), Config{Nodes: 1, Dir: filepath.Join(dir, "run"), Binary: script, NoNginx: true, NoPostgres: true, ReadyTimeout: 10 * time.Second, Log: &log})
	if err == nil {
		_ = c.Down()
		t.Fatal("Up succeeded with a node that exits")
	}
	if !strings.Contains(err.Error(), "node1") || !strings.Contains(err.Error(), "no node in this build") {
		t.Fatalf("error does not say which piece failed and why: %v", err)
	}
	for _, line := range strings.Split(log.String(), "\n") {
		var name string
		var pid int
		if n, _ := fmt.Sscanf(line, "started %s pid %d", &name, &pid); n == 2 && pidAlive(pid, 0) {
			t.Errorf("%s (pid %d) left running", name, pid)
		}
	}
}

// TestUpThreeNodes runs the full layout with stand-in nodes: weighted
// round robin through nginx, membership through Redis, a SIGKILLed node
// invisible to clients and dropped from membership, restart, down.
func TestUpThreeNodes(t *testing.T) {
	testenv.RedisBinary(t)
	exe := testBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var log bytes.Buffer
	start := time.Now()
	c, err := Up(ctx, Config{Nodes: 3, Dir: t.TempDir(), Binary: exe, Weights: []int{1, 2, 1}, Log: &log, PayTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Cleanup(func() { _ = c.Down() })
	t.Logf("up with 3 nodes took %v", time.Since(start))
	st := c.State()
	if len(c.NodeURLs()) != 3 || len(c.StatLogs()) != 3 || c.RedisAddr() == "" || c.BrokerAddr() == "" {
		t.Fatalf("accessors: %v %v %q %q", c.NodeURLs(), c.StatLogs(), c.RedisAddr(), c.BrokerAddr())
	}
	for _, p := range c.StatLogs() {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("stat.log: %v", err)
		}
	}
	if PostgresBinDir() != "" && (c.PostgresDSN() == "" || !strings.Contains(strings.Join(st.Nodes[0].Env, " "), "FLASHSALE_POSTGRES_DSN=")) {
		t.Errorf("PostgreSQL installed but no order store: dsn %q, node env %v", c.PostgresDSN(), st.Nodes[0].Env)
	}
	if !strings.Contains(strings.Join(st.Nodes[0].Env, " "), "FLASHSALE_PAY_TIMEOUT=2s") {
		t.Errorf("pay timeout not passed: %v", st.Nodes[0].Env)
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr()})
	defer rdb.Close()
	waitMembers := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			n, err := rdb.ZCard(ctx, membership.DefaultMembersKey).Result()
			if err == nil && n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("fs:nodes has %d members (%v), want %d", n, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitMembers(3)

	lb := c.LBURL()
	if lb == "" {
		t.Log("nginx not installed: checking the nodes directly")
	} else {
		// Invariant: weights 1,2,1 split 40 requests 10/20/10.
		seen := map[string]int{}
		for range 40 {
			resp, _ := get(t, lb+"/healthz")
			seen[resp.Header.Get("X-Flashsale-Node")]++
		}
		if seen["node1"] != 10 || seen["node2"] != 20 || seen["node3"] != 10 {
			t.Errorf("weighted round robin 1,2,1 over 40 requests: %v", seen)
		}
	}

	if err := c.Kill("node2"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(c.NodeURLs()[1] + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("node2 answers after kill")
	}
	waitMembers(2) // no goodbye: pruned after its TTL
	if lb != "" {
		// Invariant: clients of the load balancer never see the dead node.
		for range 20 {
			resp, body := get(t, lb+"/healthz")
			if resp.StatusCode != 200 || resp.Header.Get("X-Flashsale-Node") == "node2" {
				t.Fatalf("through nginx after kill: %s %q from %s", resp.Status, body, resp.Header.Get("X-Flashsale-Node"))
			}
		}
	}
	if err := c.Restart("2"); err != nil {
		t.Fatal(err)
	}
	waitMembers(3)
	if resp, _ := get(t, c.NodeURLs()[1]+"/live"); resp.Header.Get("X-Flashsale-Node") != "node2" {
		t.Fatal("restarted node2 has another identity")
	}
	st2 := c.State()
	if st2.Nodes[1].PID == st.Nodes[1].PID {
		t.Error("restart kept the old pid")
	}

	// down is graceful: the nodes deregister before Redis stops.
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, st)
	requireGone(t, st2)
	if !strings.Contains(readFile(t, st.Nodes[0].Log), "fake node stopped") {
		t.Error("node1 was not stopped gracefully")
	}
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUpRefusesBusyPort(t *testing.T) {
	testenv.RedisBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	_, err = Up(context.Background(), Config{Nodes: 1, BasePort: busy, Dir: t.TempDir(), Binary: "/nonexistent", NoNginx: true})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Up on a busy port: %v", err)
	}
}

// TestDownFindsRestartFromAnotherShell: a Cluster from Up stops a node that
// another command restarted (new PID in the state file), not just the one
// it started.
func TestDownFindsRestartFromAnotherShell(t *testing.T) {
	testenv.RedisBinary(t)
	exe := testBinary(t)
	dir := t.TempDir()
	c, err := Up(context.Background(), Config{Nodes: 1, Dir: dir, Binary: exe, NoNginx: true, NoPostgres: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	other, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Restart("node1"); err != nil {
		t.Fatal(err)
	}
	restarted := other.State()
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, restarted)
}

// TestUpFreshAndReuse: a second up in the same directory reuses Redis's AOF
// unless --fresh.
func TestUpFreshAndReuse(t *testing.T) {
	testenv.RedisBinary(t)
	exe := testBinary(t)
	dir := t.TempDir()
	ctx := context.Background()
	value := func(c *Cluster) string {
		rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr()})
		defer rdb.Close()
		v, _ := rdb.Get(ctx, "fs:test").Result()
		return v
	}
	for _, tc := range []struct {
		fresh bool
		want  string
	}{{false, ""}, {false, "kept"}, {true, ""}} {
		c, err := Up(ctx, Config{Dir: dir, Binary: exe, NoNginx: true, NoPostgres: true, Fresh: tc.fresh})
		if err != nil {
			t.Fatal(err)
		}
		got := value(c)
		rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr()})
		rdb.Set(ctx, "fs:test", "kept", 0)
		rdb.Close()
		if err := c.Down(); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Fatalf("fresh=%v: Redis had %q, want %q", tc.fresh, got, tc.want)
		}
	}
}

// Invariant: restarts run in parallel from three "shells" lose no update of
// the state file: afterwards it names each node's live process.
func TestParallelRestartsLoseNothing(t *testing.T) {
	testenv.RedisBinary(t)
	exe := testBinary(t)
	dir := t.TempDir()
	c, err := Up(context.Background(), Config{Nodes: 3, Dir: dir, Binary: exe, NoNginx: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	before := c.State()
	errs := make(chan error, 3)
	for _, name := range []string{"node1", "node2", "node3"} {
		go func() {
			other, err := Open(dir)
			if err == nil {
				err = other.Restart(name)
			}
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	after, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range after.Nodes {
		if n.PID == before.Nodes[i].PID || !pidAlive(n.PID, n.StartTicks) {
			t.Fatalf("%s: state says pid %d (was %d, alive %v): a parallel restart lost this update",
				n.Name, n.PID, before.Nodes[i].PID, pidAlive(n.PID, n.StartTicks))
		}
	}
}

// Invariant: a restarted node counts as started only when the process that
// answers on its port is the one started: here another process holds the
// port, the node dies of "address already in use", and Restart says so.
func TestRestartRefusesAnImpostor(t *testing.T) {
	testenv.RedisBinary(t)
	exe := testBinary(t)
	c, err := Up(context.Background(), Config{Nodes: 1, Dir: t.TempDir(), Binary: exe, NoNginx: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	if err := c.Kill("node1"); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", c.State().Nodes[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"status":"ok","pid":%d}`, os.Getpid()) // healthy and ready, but not node1
	})}
	go srv.Serve(l)
	defer srv.Close()
	err = c.Restart("node1")
	if err == nil {
		t.Fatal("Restart reported ready although another process answers on the node's port")
	}
	t.Logf("restart refused: %v", strings.SplitN(err.Error(), "\n", 2)[0])
}
