// Package testenv starts the real dependencies flashsale's tests run against:
// a redis-server process and a Kafka-protocol broker (kfake) listening on TCP.
//
// Nothing here is a mock: Lua runs inside a real redis-server, and Kafka is
// spoken through kafka-go over the network exactly as with a real broker.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/freeport"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// below the kernel's ephemeral range (freeport.Pick), so no outgoing
// connection of the other test packages takes it before the test listens.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freeport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Redis is a redis-server process started for one test.
type Redis struct {
	Addr string
	Port int
	Dir  string
	cmd  *exec.Cmd
	t    testing.TB
	args []string
}

// RedisBinary returns the path of redis-server, skipping the test with a clear
// message when it is not installed (CI installs it, so CI never skips).
func RedisBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not found on PATH; .ci/run must install it (apt-get install -y redis-server)")
		}
		t.Skip("redis-server not installed: run `make deps` (apt-get install -y redis-server)")
	}
	return p
}

// StartRedis starts redis-server on a free loopback port with its data in a
// temporary directory, and stops it when the test ends. With aof true the
// server keeps an append-only file so a restart recovers its data.
func StartRedis(t testing.TB, aof bool) *Redis {
	t.Helper()
	if aof {
		return StartRedisArgs(t, "--appendonly", "yes", "--appendfsync", "always")
	}
	return StartRedisArgs(t, "--appendonly", "no")
}

// StartRedisArgs starts redis-server like StartRedis with extra arguments
// appended to its command line (a later argument wins over an earlier one).
func StartRedisArgs(t testing.TB, extra ...string) *Redis {
	t.Helper()
	bin := RedisBinary(t)
	dir := t.TempDir()
	// A free port can be taken by someone else's connection between
	// FreePort closing it and redis-server binding it (parallel test
	// packages dial a lot): then pick another, a few times.
	for try := 1; ; try++ {
		port := FreePort(t)
		r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, t: t}
		r.args = []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"}
		r.args = append(r.args, extra...)
		if r.tryStart(bin, try < 3) {
			t.Cleanup(r.Stop)
			return r
		}
	}
}

// portTaken reports whether a server's log says it could not bind its port
// because something else had it (redis-server and postgres both log the
// OS's words).
func portTaken(logPath string) bool {
	b, _ := os.ReadFile(logPath)
	return strings.Contains(string(b), "Address already in use")
}

func (r *Redis) start(bin string) {
	r.t.Helper()
	r.tryStart(bin, false)
}

// tryStart starts redis-server and waits until it answers. It returns
// false (the process gone) only when retryBusy is set and the server could
// not bind its port; any other failure ends the test.
func (r *Redis) tryStart(bin string, retryBusy bool) bool {
	r.t.Helper()
	cmd := exec.Command(bin, r.args...)
	logPath := filepath.Join(r.Dir, fmt.Sprintf("redis-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(logPath)
	if err != nil {
		r.t.Fatalf("redis log: %v", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return true
		}
		if retryBusy {
			if portTaken(logPath) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				return false
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s not ready: %v", r.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (r *Redis) Kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Restart starts the server again on the same port and directory, so with
// AOF on it comes back with its data.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Kill()
	r.start(RedisBinary(r.t))
}

// Stop ends the server; it is safe to call more than once. A paused server
// is resumed first so that it can die.
func (r *Redis) Stop() { r.Kill() }

// Pause stops the process with SIGSTOP: it holds its connections but
// answers nothing and replicates nothing, like a machine that froze.
func (r *Redis) Pause() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Resume undoes Pause (SIGCONT).
func (r *Redis) Resume() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Alive reports whether the process runs (Kill was not called).
func (r *Redis) Alive() bool { return r.cmd != nil }

// Client returns a go-redis client for the server, closed with the test.
func (r *Redis) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kafka is an in-process Kafka-protocol broker listening on a loopback port.
type Kafka struct {
	Addr    string
	Port    int
	Topics  []string
	cluster *kfake.Cluster
	t       testing.TB
}

// StartKafka starts a kfake broker on a free port with the given topics
// (3 partitions each) and closes it when the test ends.
func StartKafka(t testing.TB, topics ...string) *Kafka {
	t.Helper()
	k := &Kafka{Port: FreePort(t), Topics: topics, t: t}
	k.Addr = "127.0.0.1:" + strconv.Itoa(k.Port)
	k.start()
	t.Cleanup(k.Stop)
	return k
}

func (k *Kafka) start() {
	k.t.Helper()
	var err error
	for i := 0; i < 50; i++ {
		k.cluster, err = kfake.NewCluster(
			kfake.Ports(k.Port),
			kfake.NumBrokers(1),
			kfake.SeedTopics(3, k.Topics...),
			kfake.AllowAutoTopicCreation(),
		)
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // the port may still be held by the previous broker
	}
	k.t.Fatalf("start kfake on %d: %v", k.Port, err)
}

// Stop closes the broker; its data is gone, as with a lost broker.
func (k *Kafka) Stop() {
	if k.cluster != nil {
		k.cluster.Close()
		k.cluster = nil
	}
}

// Restart brings a fresh, empty broker back on the same port.
func (k *Kafka) Restart() {
	k.Stop()
	k.start()
}
