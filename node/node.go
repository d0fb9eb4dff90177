// Package node wires one flashsale HTTP node from its configuration: Redis,
// the Kafka producers and consumers (order expiry, envelope refund), the
// seller, the envelope and shake services, stat.log and the HTTP server. `flashsale node` and the end-to-end tests run exactly this wiring.
package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/flashsale/flashsale/admit"
	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/envelope"
	"github.com/flashsale/flashsale/httpserve"
	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/limit"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/membership"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/shake"
	"github.com/flashsale/flashsale/statlog"
	"github.com/flashsale/flashsale/stock"
	"github.com/flashsale/flashsale/store"
	"github.com/flashsale/flashsale/waitroom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
)

// admissionConfig maps the admission keys to the controller's config: the
// line takes at most half of the request deadline, so an admitted buy keeps
// the other half for its batch.
func admissionConfig(cfg *configs.Config) admit.Config {
	shed, _ := admit.ParseShed(cfg.Admission.Shed) // Validate checked it
	return admit.Config{Slots: cfg.HTTP.MaxInflight, MaxWaiting: cfg.Admission.MaxWaiting,
		Target: cfg.Admission.Target, Interval: cfg.Admission.Interval, MaxWait: cfg.RequestDeadline() / 2,
		Shed: shed, LIFO: cfg.Admission.LIFO}
}

// Node is one running flashsale node. Open it, Run it, and it closes itself
// when Run returns.
type Node struct {
	Config *configs.Config
	Log    *slog.Logger

	Redis     redis.UniversalClient
	Publisher *kafka.Publisher
	Seller    *order.Seller
	Orders    *order.Service
	Outbox    *order.Outbox // order.* transition events (issue 15)
	Expirer   *order.Expirer
	Sweeper   *order.Sweeper
	StatLog   *statlog.Writer

	// Red envelopes and shake campaigns (issue 6): their own publisher (the
	// envelope topic), service, refund consumer and sweeper.
	EnvelopePublisher *kafka.Publisher
	Envelopes         *envelope.Service
	Refunder          *kafka.DelayConsumer[string]
	EnvelopeSweeper   *stock.Sweeper
	Shakes            *shake.Service
	API               *api.Server
	// Rooms serves the sales' waiting rooms (package waitroom).
	Rooms    *waitroom.Service
	Registry *prometheus.Registry

	// Membership registers this node in Redis and counts the live ones, so
	// the stock is shared among them.
	Membership *membership.Members

	// Store is the order store's consumer and archiver (issue 15); nil when
	// store.dsn is empty.
	Store *store.Runner

	listener net.Listener
	server   *httpserve.Server // http.engine: net/http or nbio
	conns    *connCap
	// The admin listener (http.admin_addr): /metrics, pprof, detailed /readyz.
	adminListener net.Listener
	adminServer   *http.Server

	closeOnce sync.Once // Close's work; Run does the same steps in its own order
	closeErr  error
}

// redisLogger routes go-redis's internal log lines (dial retries while Redis
// is down, which come once per attempt) to slog at debug level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// NewLogger returns the slog logger the config asks for.
func NewLogger(cfg *configs.Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	return slog.New(h).With("node", cfg.Node.ID)
}

// Open connects the dependencies and binds the listen address. A Redis or
// Kafka that is down does not stop the node from starting: /readyz says so
// and buys answer 503 until they come back. If Open fails part-way, it
// closes whatever it had started. A Node that is opened but never Run must
// be closed with Close.
func Open(cfg *configs.Config, log *slog.Logger) (_ *Node, err error) {
	if log == nil {
		log = NewLogger(cfg)
	}
	if _, set := os.LookupEnv("GOGC"); !set && cfg.Runtime.GCPercent > 0 {
		debug.SetGCPercent(cfg.Runtime.GCPercent)
	}
	ident, err := NewIdentity(cfg)
	if err != nil {
		return nil, err
	}
	n := &Node{Config: cfg, Log: log, Registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			if cerr := n.Close(); cerr != nil {
				log.Warn("closing a node that failed to open", "err", cerr)
			}
		}
	}()
	redis.SetLogger(redisLogger{log})
	n.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Every book-changing script waits for its replicas in the same round
	// trip (lua.Replicated); reads and the rest go to the master unchanged.
	n.Redis = lua.WithReplicas(NewRedisClient(cfg), cfg.ReplicasAcked(), cfg.Redis.WaitTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := lua.Load(ctx, n.Redis); err != nil {
		log.Warn("could not preload Lua scripts; they load on first use", "err", err)
	}
	cancel()

	n.Membership, err = membership.New(n.Redis, membership.Config{NodeID: cfg.Node.ID,
		Beat: cfg.Cluster.Heartbeat, TTL: cfg.Cluster.TTL})
	if err != nil {
		return nil, err
	}
	n.Publisher = kafka.NewPublisher(kafka.PublisherConfig{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.Topic,
		WriteTimeout: cfg.Kafka.WriteTimeout, MaxAttempts: cfg.Kafka.MaxAttempts,
	})
	redisTimeout := cfg.Redis.ReadTimeout + cfg.Redis.WriteTimeout
	// One coalescer shape for every product: each gets its own queue and
	// flushers of this size.
	coalescer := stock.CoalescerConfig{MaxBatch: cfg.Stock.BatchMax, Flushers: cfg.Stock.Flushers,
		QueueSize: cfg.Stock.QueueSize, Linger: cfg.Stock.Linger}
	n.Seller = order.NewSeller(order.SellerConfig{
		Node: cfg.Node.ID, BufferUnits: cfg.Stock.BufferUnits, BufferPercent: cfg.Stock.BufferPercent,
		RefreshInterval: cfg.Stock.RefreshInterval, RedisTimeout: redisTimeout, ConfirmTimeout: cfg.Kafka.WriteTimeout,
		MaxSales: cfg.Stock.MaxSales, Coalescer: coalescer,
	}, n.Redis, n.Publisher, n.Membership, log)
	n.Membership.OnChange(func(live int) {
		// A node joined or died: recompute shares so the survivors can sell
		// what the dead node held back (it is still in Redis).
		log.Info("cluster membership changed; resharing", "live_nodes", live)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n.Seller.Reshare(ctx)
	})
	n.Outbox = order.NewOutbox(n.Redis, n.Publisher, redisTimeout, time.Second, log)
	n.Orders = order.NewService(n.Redis, redisTimeout)
	n.Orders.PublishTo(n.Outbox)
	n.Seller.PublishTo(n.Outbox)
	n.Expirer = order.NewExpirer(order.ExpirerConfig{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.Topic, Group: cfg.Kafka.Group,
		Workers: cfg.Expiry.Workers, QueueSize: cfg.Expiry.QueueSize, MaxHeld: cfg.Expiry.MaxHeld,
		BatchMax: cfg.Expiry.BatchMax, RedisTimeout: redisTimeout, RetryDelay: cfg.Expiry.RetryDelay,
		Events: n.Outbox,
	}, n.Redis, log)
	n.Sweeper = order.NewSweeper(n.Redis, cfg.Expiry.SweepInterval, cfg.Expiry.Grace, cfg.Expiry.BatchMax, redisTimeout, log)
	n.Sweeper.PublishTo(n.Outbox)

	envLimits := envelope.Limits{MaxCount: cfg.Envelope.MaxCount, MaxTotalCents: cfg.Envelope.MaxTotalCents,
		DefaultExpiry: cfg.Envelope.DefaultExpiry, MinExpiry: cfg.Envelope.MinExpiry, MaxExpiry: cfg.Envelope.MaxExpiry}
	shakeLimits := shake.Limits{MaxEnvelopes: cfg.Shake.MaxEnvelopes, MaxRatePerSec: cfg.Shake.MaxRatePerSec,
		MaxBudgetCents: cfg.Shake.MaxBudgetCents, MaxAmountCents: cfg.Shake.MaxAmountCents}
	n.EnvelopePublisher = kafka.NewPublisher(kafka.PublisherConfig{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Envelope.Topic,
		WriteTimeout: cfg.Kafka.WriteTimeout, MaxAttempts: cfg.Kafka.MaxAttempts,
	})
	n.Envelopes = envelope.NewService(envelope.Config{
		Node: cfg.Node.ID, Limits: envLimits, BufferUnits: cfg.Stock.BufferUnits, BufferPercent: cfg.Stock.BufferPercent,
		RefreshInterval: cfg.Stock.RefreshInterval, RedisTimeout: redisTimeout, PublishTimeout: cfg.Kafka.WriteTimeout,
		Coalescer: coalescer, MaxEnvelopes: cfg.Envelope.MaxEnvelopes, RecentEntries: cfg.Wallet.RecentEntries,
	}, n.Redis, n.EnvelopePublisher, n.Membership, log)
	n.Refunder = n.Envelopes.NewRefunder(envelope.RefundConfig{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Envelope.Topic, Group: cfg.Envelope.Group, Workers: cfg.Envelope.RefundWorkers,
		QueueSize: cfg.Envelope.RefundQueueSize, MaxHeld: cfg.Envelope.RefundMaxHeld, RetryDelay: cfg.Expiry.RetryDelay,
	})
	n.EnvelopeSweeper = n.Envelopes.NewSweeper(cfg.Envelope.SweepInterval, cfg.Envelope.Grace, cfg.Expiry.BatchMax)
	n.Shakes = shake.NewService(shake.Config{
		Node: cfg.Node.ID, Limits: shakeLimits, Buckets: cfg.Shake.Buckets, BufferPercent: cfg.Shake.BufferPercent,
		Burst: cfg.Shake.Burst, Tick: cfg.Shake.Tick, RedisTimeout: redisTimeout, Coalescer: coalescer,
		MaxCampaigns: cfg.Shake.MaxCampaigns, RecentEntries: cfg.Wallet.RecentEntries,
	}, n.Redis, n.Membership, log)

	if n.StatLog, err = statlog.OpenWith(cfg.StatLog.Path, statlog.Options{BufferBytes: cfg.StatLog.BufferBytes,
		Interval: cfg.StatLog.FlushInterval, Node: cfg.Node.ID, Log: log}); err != nil {
		return nil, err
	}
	n.Registry.MustRegister(n.Seller, n.Publisher, n.Outbox, n.Expirer, n.Sweeper, statLogCollector{n.StatLog},
		n.EnvelopePublisher, n.Envelopes, n.Refunder, n.EnvelopeSweeper, n.Shakes)

	var history api.OrderHistory
	if cfg.Store.DSN != "" {
		n.Store = NewStoreRunner(cfg, n.Redis, log)
		n.Registry.MustRegister(n.Store)
		history = n.Store
	}

	n.Rooms = waitroom.New(waitroom.Config{Node: cfg.Node.ID, Secret: []byte(cfg.WaitingRoom.Secret),
		TicketTTL: cfg.WaitingRoom.TicketTTL, Tick: cfg.WaitingRoom.Tick, Lease: cfg.WaitingRoom.Lease,
		RedisTimeout: redisTimeout, MaxRooms: cfg.WaitingRoom.MaxRooms}, n.Redis, log.With("component", "waitroom"))
	n.API = api.New(api.Config{
		NodeID: cfg.Node.ID, AdminToken: cfg.Admin.Token, MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
		Admission: admissionConfig(cfg), DefaultPayTimeout: cfg.PayTimeout, RedisTimeout: redisTimeout,
		Envelope: envLimits, Shake: shakeLimits, WalletRecent: cfg.Wallet.RecentEntries, Identity: ident,
		RequestDeadline: cfg.HTTP.RequestDeadline, RequestStartHeader: cfg.HTTP.RequestStartHeader,
	}, api.Deps{Redis: n.Redis, Seller: n.Seller, Orders: n.Orders, StatLog: n.StatLog, Registry: n.Registry, Log: log,
		Envelopes: n.Envelopes, Shakes: n.Shakes, History: history, Rooms: n.Rooms,
		Ready: map[string]func(context.Context) error{
			"redis": func(ctx context.Context) error { return n.Redis.Ping(ctx).Err() },
			"kafka": func(ctx context.Context) error { return pingKafka(ctx, cfg.Kafka.Brokers) },
		},
		Degraded: map[string]func() error{"statlog": n.StatLog.Health}})
	maxConns := capConns(cfg.HTTP.MaxConns, cfg.HTTP.ConnReserve)
	if maxConns < cfg.HTTP.MaxConns {
		log.Warn("http.max_conns lowered to fit the open-files limit", "max_conns", maxConns, "configured", cfg.HTTP.MaxConns)
	}
	// nbio says "idle" just before it writes the response out: a
	// connection idle for less than 5 ms is left alone (see connCap).
	var settle time.Duration
	if cfg.HTTP.Engine == httpserve.NBIO {
		settle = 5 * time.Millisecond
	}
	n.conns = newConnCap(nil, maxConns, settle)
	if n.server, err = httpserve.New(httpserve.Config{
		Engine:            cfg.HTTP.Engine,
		Handler:           n.API.Handler(),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		// nbio reads the whole body before the handler runs: let bodies a
		// little over the API's limit through so they get its 413, and
		// drop the connection only past four times the limit.
		MaxBodyBytes: int(4 * cfg.HTTP.MaxBodyBytes),
		// connCap enforces the cap; nbio's own is a backstop with room for
		// the victims connCap has closed but nbio has not yet forgotten
		// (nbio handles a close on its poller, later): at maxConns+1 a busy
		// box made nbio refuse the very client a victim was closed for.
		// Those victims' descriptors come out of conn_reserve meanwhile.
		MaxConns: maxConns + max(cfg.HTTP.ConnReserve/8, 1),
		// Every request the API lets wait (work slots plus its admission
		// line) has a handler goroutine, so the API's admission, not nbio's
		// queue, decides who waits and who is refused.
		Workers:   cfg.HTTP.MaxInflight + cfg.Admission.MaxWaiting + 64,
		ConnState: n.conns.ConnState,
		Log:       log,
	}); err != nil {
		return nil, err
	}
	ln, err := httpserve.Listen(cfg.HTTP.Addr, cfg.HTTP.ReusePort)
	if err != nil {
		return nil, err
	}
	n.conns.Listener = ln
	n.listener = n.conns // Close closes it if the rest fails
	n.Registry.MustRegister(connCollector{n.conns})
	if addr := cfg.HTTP.AdminAddr; addr != "" {
		if n.adminListener, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("listen on http.admin_addr %s: %w", addr, err)
		}
		n.adminServer = &http.Server{Handler: n.API.AdminHandler(), ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
			IdleTimeout: cfg.HTTP.IdleTimeout}
	}
	return n, nil
}

// Close releases everything Open started, for a node that is not running
// (Open's failure path, or a node opened and never Run): the listeners, the
// admission gate, the waiting rooms, the flushers and resolvers of every
// product, both Kafka publishers, stat.log and Redis. Consumers are started only by Run, which closes the node
// itself when it returns; Close after Run does nothing more. Safe to call
// more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.listener != nil {
			if err := n.listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("close listener: %w", err))
			}
		}
		if n.adminListener != nil {
			if err := n.adminListener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("close admin listener: %w", err))
			}
		}
		errs = append(errs, n.closeProducers(), n.closeClients())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// closeProducers stops admission and the waiting rooms, settles every
// queued buy, open and shake, flushes the order publisher and makes stat.log
// durable: after it, every outcome is decided and written.
func (n *Node) closeProducers() error {
	var errs []error
	if n.API != nil {
		n.API.Close()
	}
	if n.Rooms != nil {
		n.Rooms.Close()
	}
	if n.Seller != nil {
		n.Seller.Close()
	}
	if n.Envelopes != nil {
		n.Envelopes.Close()
	}
	if n.Shakes != nil {
		n.Shakes.Close()
	}
	if n.Publisher != nil {
		errs = append(errs, n.Publisher.Close())
	}
	if n.StatLog != nil {
		errs = append(errs, n.StatLog.Close())
		if d := n.StatLog.Dropped(); d > 0 {
			n.Log.Warn("stat.log lines dropped (buffer full or disk refused them); a gap record states them", "lines", d)
		}
	}
	return errors.Join(errs...)
}

// closeClients closes what the consumers and sweepers still use: the
// envelope publisher (refunds publish) and Redis.
func (n *Node) closeClients() error {
	var errs []error
	if n.EnvelopePublisher != nil {
		errs = append(errs, n.EnvelopePublisher.Close())
	}
	if n.Redis != nil {
		if err := n.Redis.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close redis: %w", err))
		}
	}
	return errors.Join(errs...)
}

// NewStoreRunner returns the order store's runner for cfg (store.dsn must
// be set): `flashsale node` and `flashsale store` run the same one.
func NewStoreRunner(cfg *configs.Config, rdb redis.UniversalClient, log *slog.Logger) *store.Runner {
	return store.NewRunner(store.RunnerConfig{
		Store: store.Config{DSN: cfg.Store.DSN, MaxConns: cfg.Store.MaxConns, Timeout: cfg.Store.Timeout},
		Consumer: store.ConsumerConfig{Brokers: cfg.Kafka.Brokers, OrderTopic: cfg.Kafka.Topic, EnvelopeTopic: cfg.Envelope.Topic,
			Group: cfg.Store.Group, BatchMax: cfg.Store.BatchMax, Linger: cfg.Store.Linger, RetryDelay: cfg.Expiry.RetryDelay / 5},
		ArchiveInterval: cfg.Store.ArchiveInterval,
		// Never below the batch records' life: see lua.BatchTTL.
		ArchiveQuiet: max(cfg.Store.ArchiveQuiet, lua.BatchTTL),
		RedisTimeout: cfg.Redis.ReadTimeout + cfg.Redis.WriteTimeout,
	}, rdb, log)
}

// AdminAddr returns the admin listener's address, "" when it is off.
func (n *Node) AdminAddr() string {
	if n.adminListener == nil {
		return ""
	}
	return n.adminListener.Addr().String()
}

// NewIdentity builds the API's identity settings from cfg: the token
// verifier (an auth.secret under 32 bytes is an error: the node refuses to
// start), the order id codec, the payment key and the abuse limits.
func NewIdentity(cfg *configs.Config) (api.Identity, error) {
	var pub ed25519.PublicKey
	if f := cfg.Auth.PublicKeyFile; f != "" {
		var err error
		if pub, err = auth.LoadPublicKey(f); err != nil {
			return api.Identity{}, err
		}
	}
	v, err := auth.NewVerifier([]byte(cfg.Auth.Secret), pub)
	if err != nil {
		return api.Identity{}, err
	}
	proxies, err := api.ParseProxies(cfg.HTTP.TrustedProxies)
	if err != nil {
		return api.Identity{}, err
	}
	r := cfg.Rate
	return api.Identity{
		Auth:           v,
		OrderIDs:       auth.NewOrderIDs(auth.DeriveKey([]byte(cfg.Auth.Secret), "order-id")),
		PaymentSecret:  []byte(cfg.Payment.Secret),
		UserLimit:      limit.New(r.PerUser, r.PerUserBurst, r.MaxKeys),
		IPLimit:        limit.New(r.PerIP, r.PerIPBurst, r.MaxKeys),
		CallbackLimit:  limit.New(r.CallbackFailuresPerIP, r.CallbackFailuresBurst, r.MaxKeys),
		TrustedProxies: proxies,
	}, nil
}

// NewRedisClient returns the node's Redis client for cfg (see RedisOptions),
// before the WAIT wrapper Open puts around it.
func NewRedisClient(cfg *configs.Config) redis.UniversalClient {
	return redis.NewUniversalClient(RedisOptions(RedisTarget{Addrs: cfg.Redis.Addrs, Password: cfg.Redis.Password,
		MasterName: cfg.Redis.MasterName, Cluster: cfg.Redis.Cluster}, &redis.UniversalOptions{
		DialTimeout:  cfg.Redis.DialTimeout,
		ReadTimeout:  cfg.Redis.ReadTimeout,
		WriteTimeout: cfg.Redis.WriteTimeout,
		PoolSize:     cfg.Redis.PoolSize,
		PoolTimeout:  cfg.Redis.ReadTimeout + cfg.Redis.WriteTimeout,
	}))
}

// RedisTarget says which Redis deployment to talk to: one server, a
// Sentinel-monitored master (Addrs are the sentinels), or a Redis Cluster
// (Addrs are seeds; several addresses without a master name mean a cluster
// too).
type RedisTarget struct {
	Addrs      []string
	Password   string
	MasterName string
	Cluster    bool
}

// RedisOptions fills o (timeouts and pool as the caller wants them) with t
// and the settings every flashsale client needs, and returns it for
// redis.NewUniversalClient. The node, reconcile and the chaos runs all build
// their clients here, so each reads from the current master: the Sentinel
// client asks the sentinels for it and follows +switch-master, the cluster
// client follows MOVED.
//
// The client never retries a command: go-redis would resend a command whose
// reply was lost (EOF, reset, read timeout) although Redis may have run it,
// and a buy or settle script run twice is two sales or a unit released
// twice. A failed call is answered 503 and the buyer decides whether to try
// again. (On Redis Cluster, scripts go through lua.Replicated, which sends
// them to the slot's master itself, outside the cluster client's redirect
// loop.) It dials once per attempt: go-redis's default of 5 dials 100 ms
// apart turns a Redis that refuses connections into ~1 s hangs per buy (and
// a queue behind them) instead of an immediate 503.
func RedisOptions(t RedisTarget, o *redis.UniversalOptions) *redis.UniversalOptions {
	o.Addrs, o.Password, o.MasterName = t.Addrs, t.Password, t.MasterName
	o.IsClusterMode = t.Cluster
	o.MaxRetries = -1
	o.DialerRetries = 1
	if t.MasterName != "" {
		// Sentinels share the data servers' password unless told otherwise.
		o.SentinelPassword = t.Password
	}
	return o
}

// Addr returns the address the node listens on.
func (n *Node) Addr() string { return n.listener.Addr().String() }

// Run serves until ctx ends, then stops gracefully: it stops accepting,
// drains in-flight requests, settles queued buyers, flushes Kafka and
// stat.log, stops the consumers and closes Redis.
func (n *Node) Run(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := n.Membership.Run(bg); err != nil && bg.Err() == nil {
			n.Log.Error("membership stopped", "err", err)
		}
	})
	// Shake allowances are per member: every process of a group tops up
	// its own.
	wg.Go(func() { n.Shakes.Run(bg) })
	// node.consumers false (the later processes of a node group): no
	// expiry or refund consumer, no sweeper, no store consumer. The
	// group's first process, and every other node, run them.
	if n.Config.Node.Consumers {
		wg.Go(func() {
			if err := n.Expirer.Run(bg); err != nil {
				n.Log.Error("expiry consumer stopped", "err", err)
			}
		})
		wg.Go(func() { n.Sweeper.Run(bg) })
		wg.Go(func() {
			if err := n.Refunder.Run(bg); err != nil {
				n.Log.Error("envelope refund consumer stopped", "err", err)
			}
		})
		wg.Go(func() { n.EnvelopeSweeper.Run(bg) })
		if n.Store != nil {
			wg.Go(func() {
				if err := n.Store.Run(bg); err != nil {
					n.Log.Error("order store consumer stopped", "err", err)
				}
			})
		}
	}

	if n.adminServer != nil {
		go func() {
			n.Log.Info("admin listener serving /metrics, /readyz and /debug/pprof/", "addr", n.AdminAddr())
			if err := n.adminServer.Serve(n.adminListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.Log.Warn("admin listener stopped", "err", err)
			}
		}()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- n.server.Serve(n.listener) }()
	n.Log.Info("node serving", "addr", n.Addr(), "engine", n.server.Engine(), "reuseport", n.Config.HTTP.ReusePort,
		"consumers", n.Config.Node.Consumers, "redis", n.Config.Redis.Addrs, "kafka", n.Config.Kafka.Brokers,
		"statlog", n.Config.StatLog.Path)

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("http server: %w", err)
	}
	n.Log.Info("node stopping: draining requests")
	sctx, cancel := context.WithTimeout(context.Background(), n.Config.HTTP.ShutdownTimeout)
	defer cancel()
	if serr := n.server.Shutdown(sctx); serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("drain http: %w", serr))
	}
	if n.adminServer != nil {
		_ = n.adminServer.Close()
	}
	// Every buy, open and shake outcome is now decided: make stat.log
	// durable before anything that could be slow (a consumer group leaving
	// may wait on a rebalance) so a SIGKILL that follows a slow stop loses
	// no line.
	err = errors.Join(err, n.closeProducers())
	stopBG()
	bgDone := make(chan struct{})
	go func() { wg.Wait(); close(bgDone) }()
	select {
	case <-bgDone:
	case <-sctx.Done():
		// Held orders are safe: their offsets were never committed, so the
		// group hands them to another consumer.
		n.Log.Warn("consumers did not stop within shutdown_timeout; leaving them")
	}
	// The refunder and the envelope sweeper publish too: close after them.
	err = errors.Join(err, n.closeClients())
	n.closeOnce.Do(func() {}) // closed: a later Close does nothing more
	n.Log.Info("node stopped")
	return err
}

// pingKafka reports whether any broker accepts a connection and answers.
func pingKafka(ctx context.Context, brokers []string) error {
	var errs []string
	for _, b := range brokers {
		conn, err := kafkago.DialContext(ctx, "tcp", b)
		if err == nil {
			_, err = conn.ApiVersions()
			conn.Close()
			if err == nil {
				return nil
			}
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("no kafka broker answered: %s", strings.Join(errs, "; "))
}

// connCollector exports the connection cap's counters.
type connCollector struct{ cc *connCap }

var (
	connOpen    = metric.Desc("http", "connections", "Open client connections.", nil)
	connEvicted = metric.Desc("http", "connections_evicted_total",
		"Idle (or never used) connections closed to admit a new client at http.max_conns.", nil)
	connRefused = metric.Desc("http", "connections_refused_total",
		"New connections closed at http.max_conns because every connection was busy.", nil)
)

func (c connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connOpen
	ch <- connEvicted
	ch <- connRefused
}
func (c connCollector) Collect(ch chan<- prometheus.Metric) {
	open, evicted, refused := c.cc.Stats()
	ch <- prometheus.MustNewConstMetric(connOpen, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(connEvicted, prometheus.CounterValue, float64(evicted))
	ch <- prometheus.MustNewConstMetric(connRefused, prometheus.CounterValue, float64(refused))
}

type statLogCollector struct{ w *statlog.Writer }

var (
	statDropped = metric.Desc("statlog", "dropped_total", "stat.log lines not written: the buffer was full or the disk refused them.", nil)
	statErrors  = metric.Desc("statlog", "write_errors_total", "stat.log flushes that failed.", nil)
)

func (c statLogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- statDropped; ch <- statErrors }
func (c statLogCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(statDropped, prometheus.CounterValue, float64(c.w.Dropped()))
	ch <- prometheus.MustNewConstMetric(statErrors, prometheus.CounterValue, float64(c.w.WriteErrors()))
}
