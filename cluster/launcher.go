// Package cluster is the dev and ops launcher: the Kafka-protocol dev
// broker, and the local cluster that starts redis-server, the broker, N
// nodes and nginx on this machine. No production code imports it (see
// node's dependency test); node membership is package membership.
package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flashsale/flashsale/internal/freeport"
)

// StateFile is the name of the state file inside the run directory.
const StateFile = "cluster.json"

// Config describes a local cluster. The zero value of a field takes the
// default documented on it.
type Config struct {
	// Nodes is how many nodes to start; 0 starts only Redis, the broker
	// and nginx.
	Nodes int
	// ProcsPerNode is how many processes each node runs on its one port
	// (issue 17; 1 when 0). With more than one, node i's processes are
	// nodei-p1..nodei-pK: each a full cluster member with its own id, admin
	// port, log and stat.log, all listening on node i's port with
	// SO_REUSEPORT (the kernel spreads connections over them); only p1 runs
	// the expiry, refund and store consumers and sweepers
	// (node.consumers=false on the others). nginx gets one upstream entry
	// per port.
	ProcsPerNode int
	// Dir holds the state file, every log, stat.log and data file; "run"
	// when empty. It is created if needed.
	Dir string
	// Weights are nginx's weighted-round-robin weights, one per node; all 1
	// when empty.
	Weights []int
	// BasePort is node1's port, node i listens on BasePort+i-1; free ports
	// when 0.
	BasePort int
	// NginxPort is the load balancer's port; a free port when 0.
	NginxPort int
	// NoNginx skips the load balancer. Without nginx installed the cluster
	// starts without it too, and says so.
	NoNginx bool
	// NginxAccessLog turns on nginx's (buffered) access log.
	NginxAccessLog bool
	// NginxWorkers is nginx's worker_processes; 1 when 0.
	NginxWorkers int
	// RedisPort and BrokerPort are free ports when 0.
	RedisPort  int
	BrokerPort int
	// Redis is the Redis deployment: RedisSingle (the default), RedisSentinel
	// (a master, 2 replicas, 3 sentinels) or RedisCluster (3 masters and 3
	// replicas); see redisha.go.
	Redis string
	// RedisFsync is Redis's appendfsync: "always" (the default: a SIGKILLed
	// Redis loses no acknowledged sale) or "everysec".
	RedisFsync string
	// BrokerSync makes the broker fsync every batch.
	BrokerSync bool
	// Topic is the orders topic, DefaultTopic when empty, with Partitions
	// partitions (3 when 0).
	Topic      string
	Partitions int
	// AdminToken is the nodes' admin bearer token; random when empty.
	AdminToken string
	// AuthSecret (auth.secret: buyer tokens) and PaymentSecret
	// (payment.secret: signed payment callbacks) are random when empty.
	// All three secrets are kept in the state file (owner-only), never
	// printed.
	AuthSecret, PaymentSecret string
	// NoRateLimits turns the per-user and per-IP limits off on every node:
	// for the project's own load runs from loopback (bench, demo, chaos),
	// where one IP and a few users are the whole crowd.
	NoRateLimits bool
	// PayTimeout is passed to the nodes when set; the node's default
	// otherwise.
	PayTimeout time.Duration
	// Env is extra KEY=VALUE pairs for every node (and it inherits the
	// launcher's environment, so FLASHSALE_* set there reach the nodes).
	Env []string
	// Binary is the flashsale executable for the broker and the nodes; the
	// running executable when empty.
	Binary string
	// ReadyTimeout bounds the wait for each piece to become ready; 30 s
	// when zero.
	ReadyTimeout time.Duration
	// Log receives progress lines; discarded when nil.
	Log io.Writer
	// NoPostgres starts no PostgreSQL order store (issue 15). Without it,
	// and with PostgreSQL installed, the cluster runs one and the nodes
	// write their events into it (FLASHSALE_POSTGRES_DSN).
	NoPostgres bool
	// PostgresPort is a free port when 0.
	PostgresPort int
	// Dashboard starts `flashsale dashboard` on the nodes' metrics and Redis
	// too (when there are nodes), on DashboardPort (a free port when 0).
	Dashboard     bool
	DashboardPort int
	// Fresh deletes the data and logs of an earlier cluster in Dir (Redis's
	// AOF, the broker's log, stat.logs) before starting. Without it they are
	// kept and reused: Redis comes back with the old sales and stat.logs are
	// appended to.
	Fresh bool
}

// State is the content of the state file.
type State struct {
	Dir        string `json:"dir"`
	Binary     string `json:"binary"`
	Topic      string `json:"topic"`
	AdminToken string `json:"admin_token"`
	// AuthSecret and PaymentSecret are the nodes' auth.secret and
	// payment.secret (`flashsale token --dir` mints tokens with the first).
	AuthSecret    string    `json:"auth_secret"`
	PaymentSecret string    `json:"payment_secret"`
	StartedAt     time.Time `json:"started_at"`
	Redis         *Proc     `json:"redis"`
	Broker        *Proc     `json:"broker"`
	Nginx         *Proc     `json:"nginx,omitempty"`
	Postgres      *Proc     `json:"postgres,omitempty"`
	Dashboard     *Proc     `json:"dashboard,omitempty"`
	Nodes         []*Proc   `json:"nodes"`
	// Redis HA (redisha.go): the deployment, the data servers after Redis,
	// the sentinels and the monitored master's name.
	RedisMode    string  `json:"redis_mode,omitempty"`
	RedisServers []*Proc `json:"redis_servers,omitempty"`
	Sentinels    []*Proc `json:"sentinels,omitempty"`
	MasterName   string  `json:"master_name,omitempty"`
}

// Cluster is a running local cluster: either started by Up in this process
// or found through its state file by Open.
//
// Its methods are safe for concurrent use; they run one at a time. Processes
// started through this value are reaped by it; processes it found through
// the state file are watched by PID.
type Cluster struct {
	mu    sync.Mutex
	st    State
	owned map[string]*ownedProc
	log   io.Writer
	ready time.Duration

	nginxConf     []byte // Up only: the config startAll writes for nginx
	nginxConfPath string
}

// Up starts Redis, the broker, cfg.Nodes nodes and nginx, waits until each is
// ready and writes the state file. ctx bounds the start-up only: the
// processes run until Down (or `flashsale cluster down`), even after this
// process exits. If any piece fails to become ready, everything started so
// far is stopped and the error carries the tail of that piece's log.
func Up(ctx context.Context, cfg Config) (*Cluster, error) {
	c, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	unlock, err := lockDir(c.st.Dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if old, err := readState(c.st.Dir); err == nil && old.anyAlive() {
		return nil, fmt.Errorf("a cluster is already running in %s: `flashsale cluster down --dir %s` first", c.st.Dir, c.st.Dir)
	}
	if err := c.clearOld(cfg.Fresh); err != nil {
		return nil, err
	}
	// On failure, stop exactly what this call started: the state file on
	// disk (if any) describes an older, dead cluster.
	if err := c.startAll(ctx); err != nil {
		_ = c.stopAll()
		return nil, err
	}
	if err := c.save(); err != nil {
		_ = c.stopAll()
		return nil, err
	}
	return c, nil
}

// prepare resolves cfg into a State with every port, path and argv fixed.
func prepare(cfg Config) (*Cluster, error) {
	if cfg.Nodes < 0 {
		return nil, fmt.Errorf("--nodes %d: must be >= 0", cfg.Nodes)
	}
	if len(cfg.Weights) == 0 {
		for range cfg.Nodes {
			cfg.Weights = append(cfg.Weights, 1)
		}
	}
	if len(cfg.Weights) != cfg.Nodes {
		return nil, fmt.Errorf("%d weights for %d nodes", len(cfg.Weights), cfg.Nodes)
	}
	if cfg.ProcsPerNode == 0 {
		cfg.ProcsPerNode = 1
	}
	if cfg.ProcsPerNode < 1 {
		return nil, fmt.Errorf("--procs-per-node %d: must be >= 1", cfg.ProcsPerNode)
	}
	for _, w := range cfg.Weights {
		if w < 1 {
			return nil, fmt.Errorf("weight %d: must be >= 1", w)
		}
	}
	if cfg.Dir == "" {
		cfg.Dir = "run"
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	switch cfg.RedisFsync {
	case "":
		cfg.RedisFsync = "always"
	case "always", "everysec":
	default:
		return nil, fmt.Errorf("redis fsync %q: want always or everysec", cfg.RedisFsync)
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the flashsale binary: %w", err)
		}
	}
	random := func(s *string, n int) {
		if *s == "" {
			b := make([]byte, n)
			_, _ = rand.Read(b)
			*s = hex.EncodeToString(b)
		}
	}
	random(&cfg.AdminToken, 16)
	random(&cfg.AuthSecret, 32)
	random(&cfg.PaymentSecret, 32)
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found: apt-get install -y redis-server (or `make deps`)")
	}

	// A fixed port already in use would only show up later as a node that
	// exits; say so now, with the way out.
	// A free port is one the kernel handed out and this Up has not given
	// to another process already: the kernel may hand the same one out
	// twice once its probe listener is closed (two nodes on one port).
	taken := map[int]bool{}
	port := func(fixed int) (int, error) {
		if fixed <= 0 {
			for range 32 {
				p, err := freePort()
				if err != nil || !taken[p] {
					taken[p] = true
					return p, err
				}
			}
			return 0, fmt.Errorf("no free port not already given to this cluster")
		}
		taken[fixed] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(fixed))
		if err != nil {
			return 0, fmt.Errorf("port %d is in use (another cluster? pick other ports, or 0 for free ones): %w", fixed, err)
		}
		l.Close()
		return fixed, nil
	}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	c := &Cluster{owned: map[string]*ownedProc{}, log: cfg.Log, ready: cfg.ReadyTimeout}
	c.st = State{Dir: dir, Binary: cfg.Binary, Topic: cfg.Topic, AdminToken: cfg.AdminToken,
		AuthSecret: cfg.AuthSecret, PaymentSecret: cfg.PaymentSecret, StartedAt: time.Now().UTC()}

	rp, err := port(cfg.RedisPort)
	if err != nil {
		return nil, err
	}
	redisArgv := func(p int, dir string) []string {
		return []string{redisBin, "--port", strconv.Itoa(p), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--appendfsync", cfg.RedisFsync, "--save", "", "--daemonize", "no",
			"--logfile", "", "--loglevel", "notice"}
	}
	rdir := filepath.Join(dir, "redis")
	if cfg.Redis != "" && cfg.Redis != RedisSingle {
		rdir = filepath.Join(dir, "redis1")
	}
	c.st.Redis = &Proc{Name: "redis", Kind: "redis", Addr: addr(rp), Dir: rdir, Log: filepath.Join(rdir, "redis.log"),
		Argv: redisArgv(rp, rdir)}
	if cfg.Redis != "" && cfg.Redis != RedisSingle {
		if err := c.prepareRedisHA(cfg.Redis, port, redisBin, redisArgv); err != nil {
			return nil, err
		}
	}

	bp, err := port(cfg.BrokerPort)
	if err != nil {
		return nil, err
	}
	bdir := filepath.Join(dir, "broker")
	// The envelope topic too: consumer groups reading both (the order
	// store's) see only topics that exist when they join.
	bargv := []string{cfg.Binary, "broker", "--addr", addr(bp), "--topics", cfg.Topic + "," + EnvelopeTopic,
		"--partitions", strconv.Itoa(cfg.Partitions), "--data-dir", filepath.Join(bdir, "data")}
	if cfg.BrokerSync {
		bargv = append(bargv, "--sync")
	}
	c.st.Broker = &Proc{Name: "broker", Kind: "broker", Addr: addr(bp), Dir: bdir, Log: filepath.Join(bdir, "broker.log"), Argv: bargv}

	if bin := PostgresBinDir(); !cfg.NoPostgres && bin != "" {
		pp, err := port(cfg.PostgresPort)
		if err != nil {
			return nil, err
		}
		if c.st.Postgres, err = postgresProc(bin, dir, pp); err != nil {
			return nil, err
		}
	} else if !cfg.NoPostgres {
		fmt.Fprintln(cfg.Log, "PostgreSQL not installed (apt-get install -y postgresql, or `make deps`): starting without the order store")
	}

	rs := make([]byte, 32)
	_, _ = rand.Read(rs)
	roomSecret := hex.EncodeToString(rs)
	for i := 1; i <= cfg.Nodes; i++ {
		np := 0
		if cfg.BasePort > 0 {
			np = cfg.BasePort + i - 1
		}
		if np, err = port(np); err != nil {
			return nil, err
		}
		group := "node" + strconv.Itoa(i)
		for k := 1; k <= cfg.ProcsPerNode; k++ {
			ap, err := port(0)
			if err != nil {
				return nil, err
			}
			name := group
			if cfg.ProcsPerNode > 1 {
				name = group + "-p" + strconv.Itoa(k)
			}
			ndir := filepath.Join(dir, name)
			n := &Proc{Name: name, Kind: "node", Addr: addr(np), URL: "http://" + addr(np), AdminURL: "http://" + addr(ap), Weight: cfg.Weights[i-1],
				Dir: ndir, Log: filepath.Join(ndir, "node.log"), StatLog: filepath.Join(ndir, "stat.log"),
				Argv: []string{cfg.Binary, "node"}}
			n.Env = []string{
				"FLASHSALE_HTTP_ADDR=" + n.Addr,
				"FLASHSALE_NODE_ID=" + name,
				"FLASHSALE_KAFKA_BROKERS=" + c.st.Broker.Addr,
				"FLASHSALE_KAFKA_TOPIC=" + cfg.Topic,
				"FLASHSALE_ADMIN_TOKEN=" + cfg.AdminToken,
				"FLASHSALE_AUTH_SECRET=" + cfg.AuthSecret,
				"FLASHSALE_PAYMENT_SECRET=" + cfg.PaymentSecret,
				"FLASHSALE_HTTP_ADMIN_ADDR=" + addr(ap),
				"FLASHSALE_STATLOG_PATH=" + n.StatLog,
				// One queue-ticket key for all nodes, so a ticket from one is good on all.
				"FLASHSALE_WAITING_ROOM_SECRET=" + roomSecret,
			}
			if cfg.NoRateLimits {
				n.Env = append(n.Env, "FLASHSALE_RATE_PER_USER=0", "FLASHSALE_RATE_PER_IP=0")
			}
			n.Env = append(n.Env, c.st.redisEnv()...)
			if cfg.PayTimeout > 0 {
				n.Env = append(n.Env, "FLASHSALE_PAY_TIMEOUT="+cfg.PayTimeout.String())
			}
			if c.st.Postgres != nil {
				n.Env = append(n.Env, "FLASHSALE_POSTGRES_DSN="+PostgresDSN(c.st.Postgres.Addr))
			}
			n.Env = append(n.Env, cfg.Env...)
			if cfg.ProcsPerNode > 1 {
				// After cfg.Env: a group cannot work without them.
				n.Group = group
				n.Env = append(n.Env, "FLASHSALE_HTTP_REUSEPORT=true")
				if k > 1 {
					n.Env = append(n.Env, "FLASHSALE_NODE_CONSUMERS=false")
				}
			}
			c.st.Nodes = append(c.st.Nodes, n)
		}
	}

	// A dashboard needs nodes to read; with none there is nothing to chart.
	if cfg.Dashboard && cfg.Nodes > 0 {
		dp, err := port(cfg.DashboardPort)
		if err != nil {
			return nil, err
		}
		var metrics []string
		for _, n := range c.st.Nodes {
			metrics = append(metrics, n.AdminURL+"/metrics") // the nodes serve /metrics on their admin listener only
		}
		ddir := filepath.Join(dir, "dashboard")
		c.st.Dashboard = &Proc{Name: "dashboard", Kind: "dashboard", Addr: addr(dp), URL: "http://" + addr(dp), Dir: ddir,
			Log: filepath.Join(ddir, "dashboard.log"),
			Argv: []string{cfg.Binary, "dashboard", "--addr", addr(dp), "--redis", strings.Join(c.st.redisAddrs(), ","),
				"--nodes", strings.Join(metrics, ",")}, Env: c.st.redisEnv()}
	}

	if cfg.NoNginx {
		return c, nil
	}
	nginxBin, err := exec.LookPath("nginx")
	if err != nil {
		fmt.Fprintln(cfg.Log, "nginx not installed (apt-get install -y nginx, or `make deps`): starting without a load balancer; use the node URLs directly")
		return c, nil
	}
	lp, err := port(cfg.NginxPort)
	if err != nil {
		return nil, err
	}
	ndir := filepath.Join(dir, "nginx")
	// One entry per port: a node group's processes share theirs.
	var ups []NginxUpstream
	seen := map[string]bool{}
	for _, n := range c.st.Nodes {
		if !seen[n.Addr] {
			seen[n.Addr] = true
			ups = append(ups, NginxUpstream{Addr: n.Addr, Weight: n.Weight})
		}
	}
	// nginx's timeouts follow the nodes' request deadline, and a failed node
	// stays out about as long as its heartbeat takes to lapse.
	conf, err := RenderNginxConf(NginxConfig{Prefix: ndir, Listen: addr(lp), Servers: ups, AccessLog: cfg.NginxAccessLog,
		Workers: cfg.NginxWorkers, RequestDeadline: envDuration(cfg.Env, "FLASHSALE_HTTP_REQUEST_DEADLINE", "FLASHSALE_REQUEST_DEADLINE"),
		FailTimeout: envDuration(cfg.Env, "FLASHSALE_CLUSTER_TTL")})
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(ndir, "nginx.conf")
	c.nginxConf, c.nginxConfPath = conf, confPath // written by startAll, after clearOld
	c.st.Nginx = &Proc{Name: "nginx", Kind: "nginx", Addr: addr(lp), URL: "http://" + addr(lp), Dir: ndir,
		Log:  filepath.Join(ndir, "error.log"),
		Argv: []string{nginxBin, "-p", ndir, "-c", confPath, "-e", filepath.Join(ndir, "error.log"), "-g", "daemon off;"}}
	return c, nil
}

// clearOld deletes an earlier cluster's data when fresh, and otherwise says
// that it is being reused.
func (c *Cluster) clearOld(fresh bool) error {
	var old []string
	for _, p := range c.st.procs() {
		if _, err := os.Stat(p.Dir); err == nil {
			old = append(old, p.Dir)
		}
	}
	if len(old) == 0 {
		return nil
	}
	if !fresh {
		fmt.Fprintf(c.log, "reusing data and logs of an earlier cluster in %s (--fresh starts empty)\n", c.st.Dir)
		return nil
	}
	for _, d := range old {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.log, "removed the data and logs of an earlier cluster in %s\n", c.st.Dir)
	return nil
}

// startAll starts the pieces in dependency order: Redis and the broker, then
// the nodes, then nginx, each stage ready before the next begins.
func (c *Cluster) startAll(ctx context.Context) error {
	first := append(c.st.redisServers(), c.st.Broker)
	if c.st.Postgres != nil {
		if err := initPostgres(c.st.Postgres); err != nil {
			return err
		}
		first = append(first, c.st.Postgres)
	}
	stages := [][]*Proc{first, c.st.Nodes}
	if c.st.Nginx != nil {
		stages = append(stages, []*Proc{c.st.Nginx})
	}
	if c.st.Dashboard != nil {
		stages = append(stages, []*Proc{c.st.Dashboard})
	}
	if c.st.Nginx != nil {
		if err := os.MkdirAll(filepath.Join(c.st.Nginx.Dir, "tmp"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(c.nginxConfPath, c.nginxConf, 0o644); err != nil {
			return err
		}
	}
	for i, stage := range stages {
		for _, p := range stage {
			if err := c.startProc(p); err != nil {
				return err
			}
		}
		errs := make([]error, len(stage))
		var wg sync.WaitGroup
		for i, p := range stage {
			wg.Go(func() { errs[i] = c.waitReady(ctx, p) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if i == 0 {
			// Replicas in sync and sentinels started, or the cluster
			// created, before any node needs a writable master.
			if err := c.startRedisHA(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Cluster) startProc(p *Proc) error {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	op, err := spawn(p)
	if err != nil {
		return err
	}
	c.owned[p.Name] = op
	fmt.Fprintf(c.log, "started %-7s pid %-7d %s\n", p.Name, p.PID, p.Addr)
	return nil
}

// waitReady polls p's readiness probe until it passes, p exits, ctx ends or
// the ready timeout passes.
func (c *Cluster) waitReady(ctx context.Context, p *Proc) error {
	ctx, cancel := context.WithTimeout(ctx, c.ready)
	defer cancel()
	var last error
	for {
		if !c.alive(p) {
			return fmt.Errorf("%s exited during start-up; last lines of %s:\n%s", p.Name, p.Log, tail(p.Log, 15))
		}
		if last = c.probe(ctx, p); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %v; last lines of %s:\n%s", p.Name, c.ready, last, p.Log, tail(p.Log, 15))
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// probe checks once that p serves: Redis answers PING (not LOADING), the
// broker lists the topic's partitions, a node's /readyz and nginx's own
// /lb-healthz answer 200.
func (c *Cluster) probe(ctx context.Context, p *Proc) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	switch p.Kind {
	case "redis", "sentinel":
		return pingRedis(ctx, p.Addr)
	case "broker":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", p.Addr)
		if err != nil {
			return err
		}
		kc := kafka.NewConn(conn, "", 0)
		defer kc.Close()
		_ = kc.SetDeadline(time.Now().Add(time.Second))
		parts, err := kc.ReadPartitions(c.st.Topic)
		if err != nil {
			return err
		}
		if len(parts) == 0 {
			return fmt.Errorf("topic %s has no partitions yet", c.st.Topic)
		}
		return nil
	case "node":
		// The process answering must be the one started: another one on
		// the port (ours died of "address already in use") is not ready.
		// A group's processes share the port, so each is asked on its own
		// admin port, and the shared port must answer too.
		if p.Group != "" {
			if err := nodePID(ctx, p.AdminURL+"/healthz", p.PID); err != nil {
				return err
			}
			if err := httpOK(ctx, p.AdminURL+"/readyz"); err != nil {
				return err
			}
			return httpOK(ctx, p.URL+"/healthz")
		}
		if err := nodePID(ctx, p.URL+"/healthz", p.PID); err != nil {
			return err
		}
		return httpOK(ctx, p.URL+"/readyz")
	case "nginx":
		return httpOK(ctx, p.URL+"/lb-healthz")
	case "postgres":
		return pingPostgres(ctx, p.Addr)
	case "dashboard":
		return httpOK(ctx, p.URL+"/healthz")
	}
	return fmt.Errorf("unknown kind %q", p.Kind)
}

func pingRedis(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("redis answered %q", strings.TrimSpace(line))
	}
	return nil
}

// nodePID checks that the node answering url reports pid in its /healthz
// body ({"status":"ok","pid":N}).
func nodePID(ctx context.Context, url string, pid int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h struct {
		PID int `json:"pid"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&h); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if h.PID != pid {
		return fmt.Errorf("%s is answered by pid %d, not by the node started (pid %d)", url, h.PID, pid)
	}
	return nil
}

var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// Open finds the cluster whose state file is in dir, for `flashsale cluster
// status|kill|restart|down` from another shell.
func Open(dir string) (*Cluster, error) {
	if dir == "" {
		dir = "run"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := readState(abs)
	if err != nil {
		return nil, err
	}
	return &Cluster{st: *st, owned: map[string]*ownedProc{}, log: io.Discard, ready: 30 * time.Second}, nil
}

// SetLog sets where progress lines go (discarded by default after Open).
func (c *Cluster) SetLog(w io.Writer) {
	c.mu.Lock()
	c.log = w
	c.mu.Unlock()
}

// ReadState reads the state file of the cluster in dir.
func ReadState(dir string) (*State, error) { return readState(dir) }

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no cluster in %s (no %s): start one with `flashsale cluster up --dir %s`", dir, StateFile, dir)
	} else if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	if st.Redis == nil || st.Broker == nil {
		return nil, fmt.Errorf("%s: incomplete state", filepath.Join(dir, StateFile))
	}
	return &st, nil
}

// save writes the state file atomically; it holds the secrets, so it is
// readable by its owner only.
func (c *Cluster) save() error {
	b, err := json.MarshalIndent(&c.st, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(c.st.Dir, StateFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// lockDir takes an exclusive lock on dir/cluster.lock, so two launcher
// commands never edit the same state file at once.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "cluster.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func (st *State) procs() []*Proc {
	ps := append([]*Proc{}, st.Nodes...)
	if st.Dashboard != nil {
		ps = append(ps, st.Dashboard)
	}
	if st.Nginx != nil {
		ps = append(ps, st.Nginx)
	}
	ps = append(ps, st.Broker)
	ps = append(ps, st.Sentinels...)
	ps = append(ps, st.redisServers()...)
	if st.Postgres != nil {
		ps = append(ps, st.Postgres)
	}
	return ps
}

func (st *State) anyAlive() bool {
	for _, p := range st.procs() {
		if pidAlive(p.PID, p.StartTicks) {
			return true
		}
	}
	return false
}

func (c *Cluster) alive(p *Proc) bool {
	if op, ok := c.owned[p.Name]; ok && op.cmd.Process.Pid == p.PID {
		select {
		case <-op.done:
			return false
		default:
			return true
		}
	}
	return pidAlive(p.PID, p.StartTicks)
}

// reload picks up the state file's view, which another `flashsale cluster`
// command may have changed (a restart records a new PID), so that Down from
// a foreground `up` still stops a node restarted from another shell.
func (c *Cluster) reload() {
	if st, err := readState(c.st.Dir); err == nil {
		c.st = *st
	}
}

// find returns the process called name: "node2" (or just "2"), "redis",
// "broker" or "nginx".
func (c *Cluster) find(name string) (*Proc, error) {
	c.reload()
	if _, err := strconv.Atoi(name); err == nil {
		name = "node" + name
	}
	if name == RedisMaster {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return c.masterProc(ctx, "")
	}
	for _, p := range c.st.procs() {
		if p.Name == name {
			return p, nil
		}
	}
	var names []string
	for _, p := range c.st.procs() {
		names = append(names, p.Name)
	}
	return nil, fmt.Errorf("no process %q in this cluster (have %s)", name, strings.Join(names, ", "))
}

// waitGone waits up to d for every p to exit and reports those still alive.
func (c *Cluster) waitGone(d time.Duration, ps ...*Proc) []*Proc {
	deadline := time.Now().Add(d)
	for {
		var left []*Proc
		for _, p := range ps {
			if c.alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// grace is how long a graceful stop may take before SIGKILL: longer than
// the node's own http.shutdown_timeout (15 s by default), so a node draining
// within its budget is never cut short and gets to flush its stat.log.
func grace(ps ...*Proc) time.Duration {
	for _, p := range ps {
		if p.Kind == "node" {
			return 20 * time.Second
		}
	}
	return 10 * time.Second
}

// stop sends SIGTERM to ps, waits up to grace, then SIGKILLs stragglers.
func (c *Cluster) stop(grace time.Duration, ps ...*Proc) error {
	var live []*Proc
	for _, p := range ps {
		if c.alive(p) {
			if err := signalProc(p, syscall.SIGTERM); err != nil {
				return err
			}
			live = append(live, p)
		}
	}
	left := c.waitGone(grace, live...)
	for _, p := range left {
		fmt.Fprintf(c.log, "%s (pid %d) ignored SIGTERM for %v: SIGKILL\n", p.Name, p.PID, grace)
		_ = signalProc(p, syscall.SIGKILL)
	}
	if left = c.waitGone(5*time.Second, left...); len(left) > 0 {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", left[0].Name, left[0].PID)
	}
	return nil
}

// Kill sends SIGKILL to one process — a crash, not a shutdown: a node gets
// no chance to deregister or flush — and waits until it is gone. name is
// "node2" (or "2"), "redis", "broker" or "nginx".
func (c *Cluster) Kill(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, err := c.find(name)
	if err != nil {
		return err
	}
	if !c.alive(p) {
		return fmt.Errorf("%s (pid %d) is not running", p.Name, p.PID)
	}
	if err := signalProc(p, syscall.SIGKILL); err != nil {
		return err
	}
	if left := c.waitGone(5*time.Second, p); len(left) > 0 {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
	}
	fmt.Fprintf(c.log, "killed %s (pid %d)\n", p.Name, p.PID)
	return nil
}

// Stop ends one process gracefully (SIGTERM, then SIGKILL after 20 s for
// a node, 10 s for the others).
func (c *Cluster) Stop(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, err := c.find(name)
	if err != nil {
		return err
	}
	return c.stop(grace(p), p)
}

// Restart starts one process again with the same command line and
// environment — a node keeps its id, port, stat.log and log; Redis comes back
// from its AOF; the broker from its data directory — and waits until it is
// ready. A process still running is stopped gracefully first.
//
// The state file is read, changed and written under the directory's lock,
// so restarts run in parallel (from several shells) lose no update: the
// lock is taken before find re-reads the file, not after.
func (c *Cluster) Restart(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	unlock, err := lockDir(c.st.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	p, err := c.find(name)
	if err != nil {
		return err
	}
	if err := c.stop(grace(p), p); err != nil {
		return err
	}
	if err := c.startProc(p); err != nil {
		return err
	}
	if err := c.save(); err != nil {
		return err
	}
	return c.waitReady(context.Background(), p)
}

// Down stops everything: the nodes first (SIGTERM, so they deregister and
// flush), then nginx, the broker (which writes its log to disk) and Redis.
// A node still alive after 20 s, anything else after 10 s, gets SIGKILL.
// The logs, stat.logs and data stay in the run directory; the state file is
// removed.
func (c *Cluster) Down() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	unlock, err := lockDir(c.st.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	return c.downLocked()
}

func (c *Cluster) downLocked() error {
	c.reload()
	return c.stopAll()
}

// stopAll stops every process in c.st, in Down's order, and removes the
// state file.
func (c *Cluster) stopAll() error {
	var stages [][]*Proc
	if c.st.Dashboard != nil {
		stages = append(stages, []*Proc{c.st.Dashboard})
	}
	stages = append(stages, c.st.Nodes)
	if c.st.Nginx != nil {
		stages = append(stages, []*Proc{c.st.Nginx})
	}
	// Sentinels before the servers they watch, so stopping the master is
	// not taken for a failure to fail over from.
	last := c.st.redisServers()
	if c.st.Postgres != nil {
		last = append(last, c.st.Postgres)
	}
	stages = append(stages, []*Proc{c.st.Broker}, c.st.Sentinels, last)
	var errs []error
	for _, s := range stages {
		errs = append(errs, c.stop(grace(s...), s...))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if pg := c.st.Postgres; pg != nil && !strings.HasPrefix(pg.Dir, c.st.Dir+string(filepath.Separator)) {
		// A temporary data directory (the run directory was out of the
		// postgres user's reach): nothing can reuse it.
		_ = os.RemoveAll(pg.Dir)
	}
	if err := os.Remove(filepath.Join(c.st.Dir, StateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Fprintf(c.log, "cluster in %s is down; logs and data stay there\n", c.st.Dir)
	return nil
}

// ProcStatus is one process's line in Status.
type ProcStatus struct {
	Proc
	Alive bool   `json:"alive"`
	Ready bool   `json:"ready"`
	Err   string `json:"err,omitempty"` // why it is not ready
}

// Status probes every process once.
func (c *Cluster) Status(ctx context.Context) []ProcStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reload()
	var out []ProcStatus
	for _, p := range append(append(append(c.st.redisServers(), c.st.Sentinels...), c.st.Broker, c.st.Postgres), append(c.st.Nodes, c.st.Nginx, c.st.Dashboard)...) {
		if p == nil {
			continue
		}
		s := ProcStatus{Proc: *p, Alive: c.alive(p)}
		if s.Alive {
			if err := c.probe(ctx, p); err != nil {
				s.Err = err.Error()
			} else {
				s.Ready = true
			}
		}
		out = append(out, s)
	}
	return out
}

// PrintStatus writes Status as a table.
func (c *Cluster) PrintStatus(ctx context.Context, w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPID\tSTATE\tADDR\tLOG")
	for _, s := range c.Status(ctx) {
		state := "dead"
		switch {
		case s.Ready:
			state = "ready"
		case s.Alive:
			state = "not ready"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", s.Name, s.PID, state, s.Addr, s.Log)
	}
	tw.Flush()
}

// PrintSummary writes where everything is: URLs, logs, stat.logs, the admin
// token and how to drive the cluster from another shell.
func (c *Cluster) PrintSummary(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &c.st
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "flashsale cluster up in %s: %d node(s)\n", st.Dir, len(st.Nodes))
	if st.Nginx != nil {
		fmt.Fprintf(tw, "  load balancer\t%s\tnginx, weighted round robin\tlog %s\n", st.Nginx.URL, st.Nginx.Log)
	} else {
		fmt.Fprintf(tw, "  load balancer\tnone\tcall the nodes directly\t\n")
	}
	for _, n := range st.Nodes {
		fmt.Fprintf(tw, "  %s\t%s\tweight %d\tlog %s\tstat.log %s\n", n.Name, n.URL, n.Weight, n.Log, n.StatLog)
	}
	for _, r := range st.redisServers() {
		fmt.Fprintf(tw, "  %s\t%s\tAOF in %s\tlog %s\n", r.Name, r.Addr, r.Dir, r.Log)
	}
	for _, r := range st.Sentinels {
		fmt.Fprintf(tw, "  %s\t%s\tmonitors %q\tlog %s\n", r.Name, r.Addr, st.MasterName, r.Log)
	}
	fmt.Fprintf(tw, "  broker\t%s\ttopic %s\tlog %s\n", st.Broker.Addr, st.Topic, st.Broker.Log)
	if st.Postgres != nil {
		fmt.Fprintf(tw, "  postgres\t%s\torder store %s\tlog %s\n", st.Postgres.Addr, PostgresDSN(st.Postgres.Addr), st.Postgres.Log)
	}
	if st.Dashboard != nil {
		fmt.Fprintf(tw, "  dashboard\t%s\tlive page: sales/s, books, nodes\tlog %s\n", st.Dashboard.URL+"/", st.Dashboard.Log)
	}
	tw.Flush()
	fmt.Fprintf(w, "  secrets       admin token, auth and payment secrets in %s (owner-only); a buyer token: flashsale token --dir %s --user U\n",
		filepath.Join(st.Dir, StateFile), st.Dir)
	fmt.Fprintf(w, "state in %s; from another shell: flashsale cluster status|kill NODE|restart NODE|down --dir %s\n",
		filepath.Join(st.Dir, StateFile), st.Dir)
}

// NodeURLs returns each node's base URL, node1 first.
func (c *Cluster) NodeURLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.st.Nodes {
		out = append(out, n.URL)
	}
	return out
}

// NodeNames returns node1..nodeN.
func (c *Cluster) NodeNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.st.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// LBURL returns nginx's base URL, or "" when the cluster has no nginx.
func (c *Cluster) LBURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Nginx == nil {
		return ""
	}
	return c.st.Nginx.URL
}

// PostgresDSN returns the DSN of the cluster's order store, "" without one.
func (c *Cluster) PostgresDSN() string {
	if c.st.Postgres == nil {
		return ""
	}
	return PostgresDSN(c.st.Postgres.Addr)
}

// DashboardURL returns the live dashboard's base URL, or "" when the
// cluster has none.
func (c *Cluster) DashboardURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Dashboard == nil {
		return ""
	}
	return c.st.Dashboard.URL
}

// RedisAddr returns Redis's host:port.
func (c *Cluster) RedisAddr() string { return c.st.Redis.Addr }

// BrokerAddr returns the broker's host:port.
func (c *Cluster) BrokerAddr() string { return c.st.Broker.Addr }

// Topic returns the orders topic.
func (c *Cluster) Topic() string { return c.st.Topic }

// AdminToken returns the nodes' admin bearer token.
func (c *Cluster) AdminToken() string { return c.st.AdminToken }

// AuthSecret returns the nodes' auth.secret (to mint buyer tokens).
func (c *Cluster) AuthSecret() string { return c.st.AuthSecret }

// PaymentSecret returns the nodes' payment.secret (to sign callbacks).
func (c *Cluster) PaymentSecret() string { return c.st.PaymentSecret }

// Dir returns the absolute run directory.
func (c *Cluster) Dir() string { return c.st.Dir }

// StatLogs returns each node's stat.log path, node1 first.
func (c *Cluster) StatLogs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.st.Nodes {
		out = append(out, n.StatLog)
	}
	return out
}

// State returns a copy of the recorded state (PIDs change on Restart).
func (c *Cluster) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, _ := json.Marshal(&c.st)
	var st State
	_ = json.Unmarshal(b, &st)
	return st
}

// freePort picks a port for a process the launcher starts (see
// freeport.Pick: below the kernel's ephemeral range).
func freePort() (int, error) { return freeport.Pick() }

// tail returns the last n lines of the file at path (at most 64 KiB read).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 64<<10 {
		_, _ = f.Seek(st.Size()-64<<10, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// envDuration returns the duration the last of names is set to in env
// (later entries win, as for a process environment), or 0.
func envDuration(env []string, names ...string) time.Duration {
	var d time.Duration
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		for _, n := range names {
			if k == n {
				if x, err := time.ParseDuration(v); err == nil {
					d = x
				}
			}
		}
	}
	return d
}
