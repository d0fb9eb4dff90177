package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// asBinaryEnv makes the test binary act as the flashsale binary for the
// launcher: `broker` runs the real dev broker and `node` a stand-in node
// that honours the node contract (env vars, /healthz, /readyz,
// X-Flashsale-Node, membership, graceful SIGTERM). This lets the launcher's
// 3-node tests run before, and independently of, the real node.
const asBinaryEnv = "FLASHSALE_CLUSTER_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(asBinaryEnv) == "1" && len(os.Args) > 1 {
		switch os.Args[1] {
		case "broker":
			cmd := BrokerCommand()
			cmd.SetArgs(os.Args[2:])
			if err := cmd.Execute(); err != nil {
				os.Exit(1)
			}
			os.Exit(0)
		case "node":
			os.Exit(fakeNode())
		}
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// nodeEnv is the node contract's configuration; the launcher must set each
// of these (FLASHSALE_PAY_TIMEOUT only when asked).
var nodeEnv = []string{"FLASHSALE_HTTP_ADDR", "FLASHSALE_NODE_ID", "FLASHSALE_REDIS_ADDRS",
	"FLASHSALE_KAFKA_BROKERS", "FLASHSALE_KAFKA_TOPIC", "FLASHSALE_ADMIN_TOKEN", "FLASHSALE_STATLOG_PATH"}

// fakeNode is the stand-in node. Its membership beats every 100 ms with a
// 300 ms TTL so tests see a crash quickly.
func fakeNode() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	for _, k := range nodeEnv {
		if os.Getenv(k) == "" {
			log.Error("missing env", "key", k)
			return 2
		}
	}
	id := os.Getenv("FLASHSALE_NODE_ID")
	redisAddr := strings.Split(os.Getenv("FLASHSALE_REDIS_ADDRS"), ",")[0]
	brokerAddr := strings.Split(os.Getenv("FLASHSALE_KAFKA_BROKERS"), ",")[0]
	if err := os.WriteFile(os.Getenv("FLASHSALE_STATLOG_PATH"), []byte("started "+id+"\n"), 0o644); err != nil {
		log.Error("stat.log", "err", err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	mem, err := NewMembership(rdb, MembershipConfig{NodeID: id, Beat: 100 * time.Millisecond, TTL: 300 * time.Millisecond, Logger: log})
	if err != nil {
		log.Error("membership", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	memDone := make(chan struct{})
	go func() { defer close(memDone); _ = mem.Run(ctx) }()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"status":"ok","pid":%d}`+"\n", os.Getpid())
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := rdb.Ping(r.Context()).Err(); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		c, err := net.DialTimeout("tcp", brokerAddr, time.Second)
		if err != nil {
			http.Error(w, "kafka: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		c.Close()
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, mem.LiveNodes()) })
	srv := &http.Server{Addr: os.Getenv("FLASHSALE_HTTP_ADDR"), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Flashsale-Node", id)
		mux.ServeHTTP(w, r)
	})}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("fake node listening", "addr", srv.Addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Error("listen", "err", err)
		return 1
	}
	<-memDone
	log.Info("fake node stopped")
	return 0
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// flashsaleBinary builds cmd/flashsale once per test run.
func flashsaleBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "flashsale-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "flashsale")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/flashsale").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// testBinary returns the running test binary, set up to act as flashsale.
func testBinary(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the launcher tests need Linux")
	}
	t.Setenv(asBinaryEnv, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// requireGone fails unless none of the state's processes is alive.
func requireGone(t *testing.T, st State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range st.procs() {
		for pidAlive(p.PID, p.StartTicks) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (pid %d) still running", p.Name, p.PID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
