package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL server started for one test: its own
// data directory (initdb) in a temporary directory, a free loopback port and
// its unix socket in that directory. Stop and Start take it down and bring
// it back with its data, as an outage would.
type Postgres struct {
	DSN  string // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	Port int
	Dir  string // the data directory is Dir/data; the log is Dir/postgres.log

	bin  string
	cred *syscall.Credential // the postgres user's, when running as root
	cmd  *exec.Cmd
	t    testing.TB
	args []string
}

// PostgresBinDir returns the directory of Debian's PostgreSQL binaries
// (initdb, postgres), the newest version installed. The test is skipped with
// a clear message when they are missing (CI installs them, so CI never skips).
func PostgresBinDir(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; .ci/run must install them (apt-get install -y postgresql)")
	}
	t.Skip("PostgreSQL not installed: run `make deps` (apt-get install -y postgresql)")
	return ""
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// PostgresOptions tunes StartPostgres.
type PostgresOptions struct {
	// Durable keeps fsync on, as in production; off (the default for
	// tests), a commit costs no disk flush.
	Durable bool
}

// StartPostgres initializes and starts a PostgreSQL server for the test and
// removes it when the test ends. initdb refuses to run as root, so as root
// both initdb and postgres run as the "postgres" system user (Debian's
// package creates it) with the temporary directory owned by that user.
func StartPostgres(t testing.TB, opt PostgresOptions) *Postgres {
	t.Helper()
	binDir := PostgresBinDir(t)
	dir, err := os.MkdirTemp("", "flashsale-pg-")
	if err != nil {
		t.Fatalf("postgres temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	p := &Postgres{Port: FreePort(t), Dir: dir, bin: filepath.Join(binDir, "postgres"), t: t}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL needs the postgres user (apt-get install -y postgresql): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("chown %s: %v", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(binDir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// The free port can be taken by another test package between FreePort
	// and postgres binding it (parallel packages dial a lot): then the first
	// start is tried again on another port, up to 3 times. Restarts keep
	// their port (clients hold the DSN).
	for try := 1; ; try++ {
		p.setPort(data, dir, opt)
		if p.start(try < 3) {
			break
		}
		p.Port = FreePort(t)
	}
	t.Cleanup(p.Stop)
	return p
}

func (p *Postgres) setPort(data, dir string, opt PostgresOptions) {
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
	p.args = []string{"-D", data, "-p", strconv.Itoa(p.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=50", "-c", "shared_buffers=32MB",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning"}
	if !opt.Durable {
		// fsync off only: a commit still writes its WAL before it returns, so
		// Stop (a crash to the clients) loses nothing the OS has; only a
		// machine crash would. synchronous_commit stays on for that reason.
		p.args = append(p.args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
}

// Start starts the server (again) on its port and data directory and waits
// until it accepts connections.
func (p *Postgres) Start() {
	p.t.Helper()
	p.start(false)
}

// start is Start; with retryBusy, a server that exits because its port is
// taken is reported (false) instead of failing the test.
func (p *Postgres) start(retryBusy bool) bool {
	p.t.Helper()
	if p.cmd != nil {
		return true
	}
	logf, err := os.OpenFile(filepath.Join(p.Dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatalf("postgres log: %v", err)
	}
	defer logf.Close()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start postgres: %v", err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, p.DSN)
		if err == nil {
			_ = conn.Close(ctx)
			cancel()
			return true
		}
		cancel()
		if retryBusy {
			if portTaken(filepath.Join(p.Dir, "postgres.log")) {
				p.Stop()
				// The next start appends to postgres.log: move this one aside so
				// its bind error is not read as the next attempt's.
				_ = os.Rename(filepath.Join(p.Dir, "postgres.log"), filepath.Join(p.Dir, fmt.Sprintf("postgres-busy-%d.log", p.Port)))
				return false
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(p.Dir, "postgres.log"))
			p.t.Fatalf("postgres on port %d not ready: %v\n%s", p.Port, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts the server down at once (SIGQUIT: immediate shutdown, like a
// crash to its clients; the data survives) and waits for it. Safe to repeat.
func (p *Postgres) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}
