// Package configs loads flashsale's configuration: the documented defaults in
// default.yaml (embedded), then an optional file, FLASHSALE_* environment
// variables and command-line flags, each overriding the one before.
package configs

import (
	"bytes"
	_ "embed"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// DefaultYAML is configs/default.yaml: every key with its default.
//
//go:embed default.yaml
var DefaultYAML []byte

// Config is the node's configuration.
type Config struct {
	Node struct {
		ID string `mapstructure:"id"`
		// Consumers runs the expiry and refund consumers and the sweepers
		// (issue 17: the second and later processes of a node group serve
		// requests only).
		Consumers bool `mapstructure:"consumers"`
	} `mapstructure:"node"`
	HTTP struct {
		Addr string `mapstructure:"addr"`
		// Engine is the connection engine (httpserve.NetHTTP or NBIO) and
		// ReusePort sets SO_REUSEPORT on the listener (issue 17).
		Engine            string        `mapstructure:"engine"`
		ReusePort         bool          `mapstructure:"reuseport"`
		MaxBodyBytes      int64         `mapstructure:"max_body_bytes"`
		MaxInflight       int           `mapstructure:"max_inflight"`
		ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
		ReadTimeout       time.Duration `mapstructure:"read_timeout"`
		WriteTimeout      time.Duration `mapstructure:"write_timeout"`
		IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
		ShutdownTimeout   time.Duration `mapstructure:"shutdown_timeout"`
		MaxConns          int           `mapstructure:"max_conns"`
		ConnReserve       int           `mapstructure:"conn_reserve"`
		AdminAddr         string        `mapstructure:"admin_addr"`
		TrustedProxies    []string      `mapstructure:"trusted_proxies"`
		// Issue 13 (a buyer's answer is the truth): how long a buy, pay or
		// cancel may take before the node stops trying (env also
		// FLASHSALE_REQUEST_DEADLINE); issue 16's admission line takes half
		// of it at most (read it through Config.RequestDeadline).
		RequestDeadline    time.Duration `mapstructure:"request_deadline"`
		RequestStartHeader string        `mapstructure:"request_start_header"`
	} `mapstructure:"http"`
	// Admission is the controlled-delay admission in front of the routes.
	Admission struct {
		MaxWaiting int           `mapstructure:"max_waiting"`
		Target     time.Duration `mapstructure:"target"`
		Interval   time.Duration `mapstructure:"interval"`
		Shed       string        `mapstructure:"shed"`
		LIFO       bool          `mapstructure:"lifo"`
	} `mapstructure:"admission"`
	// WaitingRoom configures the per-sale waiting rooms (package waitroom).
	WaitingRoom struct {
		Secret    string        `mapstructure:"secret"`
		TicketTTL time.Duration `mapstructure:"ticket_ttl"`
		Tick      time.Duration `mapstructure:"tick"`
		Lease     time.Duration `mapstructure:"lease"`
		MaxRooms  int           `mapstructure:"max_rooms"`
	} `mapstructure:"waiting_room"`
	Redis struct {
		Addrs        []string      `mapstructure:"addrs"`
		Password     string        `mapstructure:"password"`
		DialTimeout  time.Duration `mapstructure:"dial_timeout"`
		ReadTimeout  time.Duration `mapstructure:"read_timeout"`
		WriteTimeout time.Duration `mapstructure:"write_timeout"`
		PoolSize     int           `mapstructure:"pool_size"`
		// Redis HA (issue 14): Sentinel, Redis Cluster, WAIT after book changes.
		MasterName       string        `mapstructure:"master_name"`
		Cluster          bool          `mapstructure:"cluster"`
		MinReplicasAcked int           `mapstructure:"min_replicas_acked"`
		WaitTimeout      time.Duration `mapstructure:"wait_timeout"`
	} `mapstructure:"redis"`
	Kafka struct {
		Brokers      []string      `mapstructure:"brokers"`
		Topic        string        `mapstructure:"topic"`
		Group        string        `mapstructure:"group"`
		WriteTimeout time.Duration `mapstructure:"write_timeout"`
		MaxAttempts  int           `mapstructure:"max_attempts"`
	} `mapstructure:"kafka"`
	Admin struct {
		Token string `mapstructure:"token"`
	} `mapstructure:"admin"`
	// Auth, Payment and Rate are issue 11's: buyer tokens, the payment
	// provider's signature key and the abuse limits.
	Auth struct {
		Secret        string `mapstructure:"secret"`
		PublicKeyFile string `mapstructure:"public_key_file"`
	} `mapstructure:"auth"`
	Payment struct {
		Secret string `mapstructure:"secret"`
	} `mapstructure:"payment"`
	Rate struct {
		PerUser               float64 `mapstructure:"per_user"`
		PerUserBurst          int     `mapstructure:"per_user_burst"`
		PerIP                 float64 `mapstructure:"per_ip"`
		PerIPBurst            int     `mapstructure:"per_ip_burst"`
		CallbackFailuresPerIP float64 `mapstructure:"callback_failures_per_ip"`
		CallbackFailuresBurst int     `mapstructure:"callback_failures_burst"`
		MaxKeys               int     `mapstructure:"max_keys"`
	} `mapstructure:"rate"`
	StatLog struct {
		Path          string        `mapstructure:"path"`
		BufferBytes   int           `mapstructure:"buffer_bytes"`
		FlushInterval time.Duration `mapstructure:"flush_interval"`
	} `mapstructure:"statlog"`
	PayTimeout time.Duration `mapstructure:"pay_timeout"`
	Stock      struct {
		BufferUnits     int64         `mapstructure:"buffer_units"`
		BufferPercent   float64       `mapstructure:"buffer_percent"`
		RefreshInterval time.Duration `mapstructure:"refresh_interval"`
		BatchMax        int           `mapstructure:"batch_max"`
		Flushers        int           `mapstructure:"flushers"`
		QueueSize       int           `mapstructure:"queue_size"`
		Linger          time.Duration `mapstructure:"linger"`
		MaxSales        int           `mapstructure:"max_sales"`
	} `mapstructure:"stock"`
	Expiry struct {
		Workers       int           `mapstructure:"workers"`
		QueueSize     int           `mapstructure:"queue_size"`
		MaxHeld       int           `mapstructure:"max_held"`
		BatchMax      int           `mapstructure:"batch_max"`
		RetryDelay    time.Duration `mapstructure:"retry_delay"`
		SweepInterval time.Duration `mapstructure:"sweep_interval"`
		Grace         time.Duration `mapstructure:"grace"`
	} `mapstructure:"expiry"`
	Envelope struct {
		Topic           string        `mapstructure:"topic"`
		Group           string        `mapstructure:"group"`
		MaxCount        int           `mapstructure:"max_count"`
		MaxTotalCents   int64         `mapstructure:"max_total_cents"`
		DefaultExpiry   time.Duration `mapstructure:"default_expiry"`
		MinExpiry       time.Duration `mapstructure:"min_expiry"`
		MaxExpiry       time.Duration `mapstructure:"max_expiry"`
		MaxEnvelopes    int           `mapstructure:"max_envelopes"`
		RefundWorkers   int           `mapstructure:"refund_workers"`
		RefundQueueSize int           `mapstructure:"refund_queue_size"`
		RefundMaxHeld   int           `mapstructure:"refund_max_held"`
		SweepInterval   time.Duration `mapstructure:"sweep_interval"`
		Grace           time.Duration `mapstructure:"grace"`
	} `mapstructure:"envelope"`
	Shake struct {
		Buckets        int           `mapstructure:"buckets"`
		BufferPercent  float64       `mapstructure:"buffer_percent"`
		Burst          time.Duration `mapstructure:"burst"`
		Tick           time.Duration `mapstructure:"tick"`
		MaxEnvelopes   int64         `mapstructure:"max_envelopes"`
		MaxRatePerSec  int64         `mapstructure:"max_rate_per_sec"`
		MaxBudgetCents int64         `mapstructure:"max_budget_cents"`
		MaxAmountCents int64         `mapstructure:"max_amount_cents"`
		MaxCampaigns   int           `mapstructure:"max_campaigns"`
	} `mapstructure:"shake"`
	Wallet struct {
		RecentEntries int `mapstructure:"recent_entries"`
	} `mapstructure:"wallet"`
	// Store is the PostgreSQL order store (issue 15).
	Store struct {
		DSN             string        `mapstructure:"dsn"`
		Group           string        `mapstructure:"group"`
		BatchMax        int           `mapstructure:"batch_max"`
		Linger          time.Duration `mapstructure:"linger"`
		MaxConns        int32         `mapstructure:"max_conns"`
		Timeout         time.Duration `mapstructure:"timeout"`
		ArchiveInterval time.Duration `mapstructure:"archive_interval"`
		ArchiveQuiet    time.Duration `mapstructure:"archive_quiet"`
	} `mapstructure:"store"`
	Cluster struct {
		Heartbeat time.Duration `mapstructure:"heartbeat"`
		TTL       time.Duration `mapstructure:"ttl"`
	} `mapstructure:"cluster"`
	Log struct {
		Level  string `mapstructure:"level"`
		Format string `mapstructure:"format"`
	} `mapstructure:"log"`
	Runtime struct {
		GCPercent int `mapstructure:"gc_percent"`
	} `mapstructure:"runtime"`
	// Dashboard configures `flashsale dashboard` (issue 18), not the node.
	Dashboard struct {
		Addr             string        `mapstructure:"addr"`
		Nodes            []string      `mapstructure:"nodes"`
		Interval         time.Duration `mapstructure:"interval"`
		ScrapeTimeout    time.Duration `mapstructure:"scrape_timeout"`
		RedisTimeout     time.Duration `mapstructure:"redis_timeout"`
		History          int           `mapstructure:"history"`
		MaxSubscribers   int           `mapstructure:"max_subscribers"`
		SubscriberBuffer int           `mapstructure:"subscriber_buffer"`
		MaxSales         int           `mapstructure:"max_sales"`
	} `mapstructure:"dashboard"`

	settings map[string]any // the effective key/value tree, for YAML
}

// Keys returns every configuration key of default.yaml, sorted, in dotted form.
func Keys() []string {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(DefaultYAML)); err != nil {
		panic(fmt.Sprintf("embedded default.yaml: %v", err))
	}
	keys := v.AllKeys()
	sort.Strings(keys)
	return keys
}

// EnvName returns the environment variable that overrides key.
func EnvName(key string) string {
	return "FLASHSALE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// envAliases are the operator's short names for keys, beside the generated
// FLASHSALE_<KEY> (which wins when both are set): FLASHSALE_POSTGRES_DSN
// sets store.dsn (issue 15), FLASHSALE_REQUEST_DEADLINE
// http.request_deadline (issue 13).
var envAliases = map[string][]string{
	"store.dsn":             {"FLASHSALE_POSTGRES_DSN"},
	"http.request_deadline": {"FLASHSALE_REQUEST_DEADLINE"},
}

// EnvAliases returns the other environment variables that override key.
func EnvAliases(key string) []string { return envAliases[key] }

// FlagName returns the flag that overrides key.
func FlagName(key string) string { return strings.NewReplacer(".", "-", "_", "-").Replace(key) }

// RegisterFlags adds one string flag per key to fs (values are converted
// like env values) plus --config.
func RegisterFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML file overriding configs/default.yaml")
	for _, k := range Keys() {
		fs.String(FlagName(k), "", "overrides "+k+" (env "+EnvName(k)+"; default in configs/default.yaml)")
	}
}

// Load builds the effective configuration. fs may be nil; only flags the
// user set override anything.
func Load(fs *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(DefaultYAML)); err != nil {
		return nil, fmt.Errorf("read default config: %w", err)
	}
	if fs != nil {
		if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
			v.SetConfigFile(f.Value.String())
			if err := v.MergeInConfig(); err != nil {
				return nil, fmt.Errorf("read config %s: %w", f.Value.String(), err)
			}
		}
	}
	v.SetEnvPrefix("FLASHSALE")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for k, names := range envAliases {
		_ = v.BindEnv(append([]string{k, EnvName(k)}, names...)...)
	}
	if fs != nil {
		for _, k := range Keys() {
			if f := fs.Lookup(FlagName(k)); f != nil && f.Changed {
				v.Set(k, f.Value.String())
			}
		}
	}
	var c Config
	err := v.Unmarshal(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		commaList,
	)), func(dc *mapstructure.DecoderConfig) { dc.ErrorUnused = false; dc.WeaklyTypedInput = true })
	if err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.settings = v.AllSettings()
	return &c, nil
}

// commaList turns "a,b" (env and flags) into []string{"a", "b"}.
func commaList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeOf([]string{}) {
		return data, nil
	}
	var out []string
	for _, p := range strings.Split(data.(string), ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out, nil
}

// ReplicasAcked is how many replicas must confirm a book-changing script
// before its caller hears "done": redis.min_replicas_acked, or with -1
// (auto) 1 when Redis has replicas (a Sentinel master name or Redis
// Cluster) and 0 for a lone Redis, which has none to wait for.
func (c *Config) ReplicasAcked() int {
	if c.Redis.MinReplicasAcked >= 0 {
		return c.Redis.MinReplicasAcked
	}
	if c.Redis.MasterName != "" || c.Redis.Cluster || len(c.Redis.Addrs) > 1 {
		return 1
	}
	return 0
}

// Validate rejects configurations a node cannot run with.
func (c *Config) Validate() error {
	var bad []string
	if c.Node.ID == "" || len(c.Node.ID) > 64 || strings.ContainsAny(c.Node.ID, "|{}. \t\n\"") {
		bad = append(bad, "node.id must be 1-64 chars of [A-Za-z0-9_-:@]")
	}
	if len(c.Redis.Addrs) == 0 {
		bad = append(bad, "redis.addrs is empty")
	}
	if c.Redis.MinReplicasAcked < -1 {
		bad = append(bad, "redis.min_replicas_acked must be -1 (auto), 0 or more")
	}
	if c.ReplicasAcked() > 0 && (c.Redis.WaitTimeout <= 0 || c.Redis.WaitTimeout >= c.Redis.ReadTimeout) {
		bad = append(bad, "redis.wait_timeout must be positive and below redis.read_timeout (WAIT answers within the same read)")
	}
	if c.Redis.MasterName != "" && c.Redis.Cluster {
		bad = append(bad, "redis.master_name (Sentinel) and redis.cluster cannot both be set")
	}
	if len(c.Kafka.Brokers) == 0 {
		bad = append(bad, "kafka.brokers is empty")
	}
	if c.Kafka.Topic == "" || c.Kafka.Group == "" {
		bad = append(bad, "kafka.topic and kafka.group must be set")
	}
	if c.PayTimeout < time.Second {
		bad = append(bad, "pay_timeout must be at least 1s")
	}
	if c.HTTP.MaxBodyBytes <= 0 || c.HTTP.MaxInflight <= 0 {
		bad = append(bad, "http.max_body_bytes and http.max_inflight must be positive")
	}
	if c.HTTP.RequestDeadline <= 0 || c.Admission.MaxWaiting < 0 || c.Admission.Target <= 0 || c.Admission.Interval <= 0 {
		bad = append(bad, "http.request_deadline, admission.target and admission.interval must be positive, admission.max_waiting >= 0")
	}
	if w := c.WaitingRoom; w.TicketTTL <= 0 || w.Tick <= 0 || w.Lease <= w.Tick || w.MaxRooms < 1 {
		bad = append(bad, "waiting_room: ticket_ttl, tick and max_rooms must be positive and lease longer than tick")
	}
	if c.Admission.Shed != "newest" && c.Admission.Shed != "oldest" {
		bad = append(bad, "admission.shed must be newest or oldest")
	}
	if c.Stock.BatchMax <= 0 || c.Stock.Flushers <= 0 || c.Stock.QueueSize <= 0 {
		bad = append(bad, "stock.batch_max, stock.flushers and stock.queue_size must be positive")
	}
	if c.Expiry.Workers <= 0 || c.Expiry.QueueSize <= 0 || c.Expiry.MaxHeld <= 0 {
		bad = append(bad, "expiry.workers, expiry.queue_size and expiry.max_held must be positive")
	}
	e := c.Envelope
	if e.Topic == "" || e.Group == "" || e.Topic == c.Kafka.Topic {
		bad = append(bad, "envelope.topic and envelope.group must be set, and envelope.topic must differ from kafka.topic")
	}
	if e.MaxCount < 1 || e.MaxTotalCents < int64(e.MaxCount) || e.MinExpiry < time.Second || e.MaxExpiry < e.MinExpiry ||
		e.DefaultExpiry < e.MinExpiry || e.DefaultExpiry > e.MaxExpiry {
		bad = append(bad, "envelope: need max_count >= 1, max_total_cents >= max_count, 1s <= min_expiry <= default_expiry <= max_expiry")
	}
	if e.MaxEnvelopes <= 0 || e.RefundWorkers <= 0 || e.RefundQueueSize <= 0 || e.RefundMaxHeld <= 0 || e.SweepInterval <= 0 {
		bad = append(bad, "envelope.max_envelopes, refund_workers, refund_queue_size, refund_max_held and sweep_interval must be positive")
	}
	sh := c.Shake
	if sh.Buckets < 1 || sh.Tick <= 0 || sh.Burst <= 0 || sh.BufferPercent < 0 || sh.MaxEnvelopes < 1 || sh.MaxRatePerSec < 1 ||
		sh.MaxBudgetCents < 1 || sh.MaxAmountCents < 1 || sh.MaxCampaigns < 1 {
		bad = append(bad, "shake: buckets, tick, burst and every max_* must be positive, buffer_percent >= 0")
	}
	if st := c.Store; st.DSN != "" && (st.Group == "" || st.Group == c.Kafka.Group || st.Group == c.Envelope.Group ||
		st.BatchMax < 1 || st.MaxConns < 2 || st.Timeout <= 0 || st.ArchiveInterval <= 0 || st.ArchiveQuiet < 30*time.Second) {
		bad = append(bad, "store: group must be set and differ from kafka.group and envelope.group; batch_max >= 1, max_conns >= 2, timeout and archive_interval > 0, archive_quiet >= 30s")
	}
	if c.HTTP.Engine != "nethttp" && c.HTTP.Engine != "nbio" {
		bad = append(bad, "http.engine must be nethttp or nbio")
	}
	if c.HTTP.MaxConns < 1 || c.HTTP.ConnReserve < 0 || c.HTTP.IdleTimeout <= 0 {
		bad = append(bad, "http.max_conns and http.idle_timeout must be positive, http.conn_reserve >= 0")
	}
	if r := c.Rate; r.PerUser < 0 || r.PerIP < 0 || r.CallbackFailuresPerIP < 0 || r.MaxKeys < 1 {
		bad = append(bad, "rate: rates must be >= 0 (0 is off) and max_keys positive")
	}
	if c.Wallet.RecentEntries < 1 {
		bad = append(bad, "wallet.recent_entries must be positive")
	}
	if len(bad) > 0 {
		return fmt.Errorf("invalid config: %s", strings.Join(bad, "; "))
	}
	return nil
}

// RequestDeadline is how long a request may take from arrival to answer
// (http.request_deadline); the admission line takes half of it at most.
func (c *Config) RequestDeadline() time.Duration { return c.HTTP.RequestDeadline }

// SecretKeys are the keys whose values are never printed.
var SecretKeys = []string{"admin.token", "auth.secret", "payment.secret", "redis.password", "waiting_room.secret"}

// YAML renders c with every key, for `flashsale config`. Secrets are
// replaced by where they come from and whether they are set, never shown.
func (c *Config) YAML() ([]byte, error) {
	out := Redacted(c.settings)
	if st, ok := out["store"].(map[string]any); ok {
		// The DSN may carry a password: print it without.
		if dsn, _ := st["dsn"].(string); dsn != "" {
			redacted := make(map[string]any, len(st))
			for k, v := range st {
				redacted[k] = v
			}
			redacted["dsn"] = RedactDSN(dsn)
			out["store"] = redacted
		}
	}
	return yaml.Marshal(out)
}

var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)

// RedactDSN returns dsn with any password replaced by "xxxxx", for logs and
// `flashsale config`.
func RedactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return dsnPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// Redacted returns a copy of a settings tree with every SecretKeys value
// replaced by a note saying whether it is set and which env variable sets it.
func Redacted(settings map[string]any) map[string]any {
	out := make(map[string]any, len(settings))
	for k, v := range settings {
		out[k] = v
	}
	for _, key := range SecretKeys {
		section, name, _ := strings.Cut(key, ".")
		m, ok := out[section].(map[string]any)
		if !ok {
			continue
		}
		cp := make(map[string]any, len(m))
		for k, v := range m {
			cp[k] = v
		}
		state := "unset"
		if s, _ := cp[name].(string); s != "" {
			state = fmt.Sprintf("set, %d bytes", len(s))
		}
		cp[name] = fmt.Sprintf("<secret %s; from %s or %s in a --config file>", state, EnvName(key), key)
		out[section] = cp
	}
	return out
}
