package cluster

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

	"github.com/jackc/pgx/v5"
)

// postgresUser is the system user PostgreSQL runs as when the launcher is
// root (initdb and postgres refuse to run as root); Debian's package
// creates it.
const postgresUser = "postgres"

// PostgresBinDir returns the directory of the newest installed PostgreSQL's
// binaries (Debian: /usr/lib/postgresql/N/bin), or "" when none is.
func PostgresBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	ver := func(d string) int { v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d))); return v }
	sort.Slice(dirs, func(i, j int) bool { return ver(dirs[i]) > ver(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

// postgresProc describes the cluster's order store: a PostgreSQL on port
// with its data under dir (or, when the launcher is root and the postgres
// user cannot reach dir, under a temporary directory).
func postgresProc(binDir, dir string, port int) (*Proc, error) {
	pdir := filepath.Join(dir, "postgres")
	p := &Proc{Name: "postgres", Kind: "postgres", Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: pdir,
		Log: filepath.Join(pdir, "postgres.log")}
	if os.Geteuid() == 0 {
		p.User = postgresUser
		if !othersCanEnter(dir) {
			tmp, err := os.MkdirTemp("", "flashsale-cluster-pg-")
			if err != nil {
				return nil, err
			}
			p.Dir, p.Log = tmp, filepath.Join(tmp, "postgres.log")
		}
	}
	p.Argv = []string{filepath.Join(binDir, "postgres"), "-D", filepath.Join(p.Dir, "data"), "-p", strconv.Itoa(port),
		"-k", p.Dir, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100", "-c", "shared_buffers=64MB",
		"-c", "logging_collector=off"}
	return p, nil
}

// othersCanEnter reports whether every directory from / down to dir (or
// what of it exists) lets another user through.
func othersCanEnter(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// PostgresDSN is the DSN of a launcher's PostgreSQL at addr.
func PostgresDSN(addr string) string {
	return "postgres://postgres@" + addr + "/postgres?sslmode=disable"
}

// credential returns the uid/gid to run p as, or nil for the launcher's own.
func credential(p *Proc) (*syscall.Credential, error) {
	if p.User == "" || os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(p.User)
	if err != nil {
		return nil, fmt.Errorf("%s runs as user %s: %w (apt-get install -y postgresql creates it)", p.Name, p.User, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// initPostgres creates p's data directory with initdb unless it exists
// (a cluster started again reuses its data, as Redis does its AOF).
func initPostgres(p *Proc) error {
	data := filepath.Join(p.Dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err == nil {
		return nil
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	cred, err := credential(p)
	if err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(p.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	cmd := exec.Command(filepath.Join(filepath.Dir(p.Argv[0]), "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--locale=C")
	cmd.Dir = p.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", data, err, out)
	}
	return nil
}

func pingPostgres(ctx context.Context, addr string) error {
	conn, err := pgx.Connect(ctx, PostgresDSN(addr))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
