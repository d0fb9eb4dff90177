package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/admit"
	"github.com/flashsale/flashsale/envelope"
	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/shake"
	"github.com/flashsale/flashsale/statlog"
	"github.com/flashsale/flashsale/waitroom"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Config is what the HTTP layer needs to know.
type Config struct {
	NodeID       string
	AdminToken   string
	MaxBodyBytes int64
	// Admission bounds the requests worked on at once (Slots) and how long
	// the rest wait in line; see package admit.
	Admission         admit.Config
	DefaultPayTimeout time.Duration
	RedisTimeout      time.Duration   // bound of the archived-sale check before an order store lookup
	Envelope          envelope.Limits // send-envelope validation
	Shake             shake.Limits    // campaign validation
	WalletRecent      int             // entries GET /v1/users/{id}/wallet shows
	// RequestDeadline bounds a buy, pay or cancel from the moment it is
	// read (http.request_deadline); 0 means 2 s.
	RequestDeadline time.Duration
	// RequestStartHeader names the proxy's header saying when it sent the
	// request (http.request_start_header); "" ignores any.
	RequestStartHeader string
	Identity           Identity // buyer tokens, order ids, payment key, abuse limits
}

// Deps are the services behind the routes. Ready lists the dependency
// checks /readyz runs.
type Deps struct {
	Redis  redis.UniversalClient
	Seller *order.Seller
	Orders *order.Service
	// Envelopes and Shakes are optional: without them their routes are absent.
	Envelopes *envelope.Service
	Shakes    *shake.Service
	// Rooms is optional: without it the queue routes are absent and no
	// sale's buys are checked against a waiting room.
	Rooms *waitroom.Service
	// History adds finished orders to GET /v1/users/me/orders (and
	// answers for orders of archived sales) from the order store; nil when
	// no store is configured.
	History  OrderHistory
	StatLog  *statlog.Writer
	Registry *prometheus.Registry
	Ready    map[string]func(context.Context) error
	// Degraded lists checks /readyz shows without failing on: the node
	// still sells, but something an operator must see is wrong (stat.log
	// losing lines on a full disk).
	Degraded map[string]func() error
	Log      *slog.Logger
}

// Server routes HTTP requests to the services. Create it with New.
type Server struct {
	cfg Config
	Deps
	log      *slog.Logger
	engine   *gin.Engine
	gate     *admit.Controller
	metrics  *httpMetrics
	nodeHdr  []string     // X-Flashsale-Node value, shared by every response
	perSale  *saleMetrics // buy outcomes and latency per sale, for the dashboard
	id       Identity
	payments *paymentMetrics
}

func init() {
	gin.SetMode(gin.ReleaseMode)
	PreRender(order.Sentinels()...)
	PreRender(errAtCapacity)
}

// New returns a Server with every route registered.
func New(cfg Config, d Deps) *Server {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if cfg.RequestDeadline <= 0 {
		cfg.RequestDeadline = 2 * time.Second
	}
	s := &Server{cfg: cfg, Deps: d, log: d.Log, engine: gin.New(),
		gate: admit.New(cfg.Admission), nodeHdr: []string{cfg.NodeID},
		id: cfg.Identity, payments: newPaymentMetrics(), perSale: newSaleMetrics()}
	s.metrics = newHTTPMetrics(s.gate)
	d.Registry.MustRegister(s.metrics, s.perSale, nodeInfo(cfg.NodeID), s.payments.results, s.payments.doubleCharge)
	e := s.engine
	e.HandleMethodNotAllowed = true
	e.NoRoute(func(c *gin.Context) { s.errorf(c, flashsale.ENOTFOUND, "no such route") })
	e.NoMethod(func(c *gin.Context) { s.errorf(c, flashsale.EINVALID, "method not allowed on this route") })
	e.Use(s.recover, s.nodeHeader)
	// The public /readyz says ready or not; which dependency failed, and
	// its address, is on the admin listener (AdminHandler) only.
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyzPublic)

	v1 := e.Group("/v1", s.admit, s.capBody)
	v1.POST("/sales", s.observe("create_sale"), s.admin, s.createSale)
	v1.GET("/sales/:id", s.observe("get_sale"), s.getSale)
	// Per-person routes: the person is the bearer token's subject. Buy,
	// open and shake are rate-limited per client IP (first, so a flood of
	// bad tokens is throttled too) and per person; a buy of a sale the node
	// knows is sold out is answered before all of that. The buy handler's
	// deadline (issue 13) runs from when it is read, after the limits.
	buyMetrics := s.metrics.route("buy")
	buy := []gin.HandlerFunc{s.soldOut(buyMetrics), s.observeRoute(buyMetrics), s.limitIP, s.identify, s.limitUser, s.buy}
	v1.POST("/sales/:id/buy", buy...)
	v1.GET("/sales/:id/buy", buy...)
	v1.GET("/orders/:id", s.observe("get_order"), s.identify, s.getOrder)
	v1.POST("/orders/:id/cancel", s.observe("cancel"), s.identify, s.cancel)
	v1.POST("/payments/callback", s.observe("payment_callback"), s.paymentCallback)
	v1.GET("/users/me/orders", s.observe("my_orders"), s.identify, s.myOrders)
	s.registerEnvelopes(v1)
	if d.Rooms != nil {
		// A ticket is the token's subject's: joining is limited like a buy;
		// status polls are answered from memory, so only per IP.
		v1.POST("/sales/:id/queue", s.observe("queue_join"), s.limitIP, s.identify, s.limitUser, s.joinQueue)
		v1.GET("/sales/:id/queue", s.observe("queue_status"), s.limitIP, s.identify, s.queueStatus)
	}
	return s
}

// Close stops the admission line's sweeper and refuses whoever still waits
// in it. Call it after the HTTP server has stopped taking requests.
func (s *Server) Close() { s.gate.Close() }

// Admission exposes the admission controller (for tests and metrics).
func (s *Server) Admission() *admit.Controller { return s.gate }

// Handler returns the http.Handler serving every public route.
func (s *Server) Handler() http.Handler { return s.engine }

// AdminHandler returns the handler of the admin listener: /metrics, the
// detailed /readyz, /healthz (with the pid) and /debug/pprof/. Never serve
// it publicly. Each process of a node group sharing one port (SO_REUSEPORT)
// has its own admin port, so a launcher probes a given process here.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(healthzBody)
	})
	mux.Handle("/readyz", s.engineFor(s.readyz))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// engineFor serves one gin handler on its own engine (for the admin mux).
func (s *Server) engineFor(h gin.HandlerFunc) http.Handler {
	e := gin.New()
	e.GET("/*any", h)
	return e
}

func (s *Server) recover(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.log.Error("panic in handler", "path", c.Request.URL.Path, "panic", r)
			s.errorf(c, flashsale.EINTERNAL, "internal error")
		}
	}()
	c.Next()
}

func (s *Server) nodeHeader(c *gin.Context) {
	// net/http copies the header map before writing it, never the value
	// slices, so one shared slice is safe and saves an allocation per request.
	c.Writer.Header()["X-Flashsale-Node"] = s.nodeHdr
	c.Next()
}

// admit lets a request through when a work slot is free or frees in time
// (package admit decides by the time spent waiting, not by how many wait),
// and otherwise answers the pre-rendered 503 overloaded with Retry-After:
// no Redis, no allocation.
//
// A request the proxy says it sent a while ago (http.request_start_header)
// has waited that long already — in this node's socket, or runnable behind
// thousands of others — and the line counts it: one already past the
// line's bound is refused before any work, and the control law sees the
// queue that stands in front of the line, not only the one in it.
func (s *Server) admit(c *gin.Context) {
	var waited time.Duration
	if s.cfg.RequestStartHeader != "" && len(c.Request.Header[s.cfg.RequestStartHeader]) == 1 {
		now := time.Now()
		waited = now.Sub(s.requestStart(c, now))
	}
	if !s.gate.AcquireWaited(c.Request.Context(), waited) {
		s.writeError(c, errAtCapacity)
		return
	}
	defer s.gate.Release()
	c.Next()
}

// capBody rejects bodies over MaxBodyBytes: at once when Content-Length says
// so, and while reading otherwise.
func (s *Server) capBody(c *gin.Context) {
	if c.Request.ContentLength > s.cfg.MaxBodyBytes {
		s.errorf(c, flashsale.ETOOLARGE, "request body over %d bytes", s.cfg.MaxBodyBytes)
		return
	}
	if c.Request.ContentLength != 0 { // -1 (chunked) or a small body
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
	}
	c.Next()
}

func (s *Server) admin(c *gin.Context) {
	const prefix = "Bearer "
	h := c.GetHeader("Authorization")
	if s.cfg.AdminToken == "" || len(h) <= len(prefix) || h[:len(prefix)] != prefix ||
		subtle.ConstantTimeCompare([]byte(h[len(prefix):]), []byte(s.cfg.AdminToken)) != 1 {
		s.errorf(c, flashsale.EUNAUTHORIZED, "admin token missing or wrong")
		return
	}
	c.Next()
}

// healthzBody carries the process id so a launcher can tell its own node
// from another process answering on the same port.
var healthzBody = []byte(`{"status":"ok","pid":` + strconv.Itoa(os.Getpid()) + `}`)

func (s *Server) healthz(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", healthzBody)
}

var (
	readyBody    = []byte(`{"status":"ready"}`)
	notReadyBody = []byte(`{"status":"not_ready"}`)
)

// readyzPublic says whether the node is ready, and nothing about why not.
func (s *Server) readyzPublic(c *gin.Context) {
	ok, _ := s.checkReady(c.Request.Context())
	if !ok {
		writeJSON(c, http.StatusServiceUnavailable, notReadyBody)
		return
	}
	writeJSON(c, http.StatusOK, readyBody)
}

// readyz reports whether Redis and Kafka answer, each within a second, with
// each check's error (admin listener only: errors name addresses).
func (s *Server) readyz(c *gin.Context) {
	ok, body := s.checkReady(c.Request.Context())
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, body)
}

func (s *Server) checkReady(ctx context.Context) (bool, gin.H) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	out := make(chan result, len(s.Ready))
	for name, check := range s.Ready {
		go func() { out <- result{name, check(ctx)} }()
	}
	body := gin.H{}
	ok := true
	for range s.Ready {
		r := <-out
		if r.err != nil {
			ok = false
			body[r.name] = r.err.Error()
		} else {
			body[r.name] = "ok"
		}
	}
	// Degraded checks are shown but never make the node unready.
	for name, check := range s.Degraded {
		if err := check(); err != nil {
			body[name] = err.Error()
		} else {
			body[name] = "ok"
		}
	}
	return ok, body
}

// httpMetrics counts requests by route and result and times them. Children
// are bound once per route/result so the hot path does no label lookups and
// builds no strings.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	gate     *admit.Controller
	limited  prometheus.Counter
}

// routeMetrics are one route's pre-bound metrics.
type routeMetrics struct {
	name    string
	hist    prometheus.Observer
	results sync.Map // result -> prometheus.Counter
	vec     *prometheus.CounterVec
}

var (
	shedDesc = metric.Desc("http", "shed_total",
		"Requests answered 503 overloaded by admission, by reason: full (admission.max_waiting), codel (the control law), deadline (waited half of http.request_deadline), gone (the client left while waiting).",
		[]string{"reason"})
	waitedDesc = metric.Desc("http", "admitted_after_wait_total",
		"Requests admitted after waiting in the admission line.", nil)
	waitingDesc = metric.Desc("http", "admission_waiting",
		"Requests waiting in the admission line now.", nil)
	droppingDesc = metric.Desc("http", "admission_shedding",
		"1 while the CoDel control law is shedding (the line's sojourn stayed above admission.target for an interval).", nil)
	shedReasons = [...]string{admit.ReasonFull: "full", admit.ReasonCoDel: "codel", admit.ReasonDeadline: "deadline", admit.ReasonGone: "gone"}
)

func newHTTPMetrics(gate *admit.Controller) *httpMetrics {
	return &httpMetrics{gate: gate,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metric.Name("http", "requests_total"),
			Help: "HTTP requests by route and result (ok or an error code)."}, []string{"route", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metric.Name("http", "request_duration_seconds"),
			Help: "HTTP request latency by route.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"route"}),
		limited: metric.Counter("http", "rate_limited_total",
			"Requests answered 429 rate_limited (per user, per IP or failed callbacks per IP).", nil),
	}
}

func (m *httpMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.duration.Describe(ch)
	ch <- shedDesc
	ch <- waitedDesc
	ch <- waitingDesc
	ch <- droppingDesc
	m.limited.Describe(ch)
}

func (m *httpMetrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.duration.Collect(ch)
	st := m.gate.Stats()
	for r, name := range shedReasons {
		ch <- prometheus.MustNewConstMetric(shedDesc, prometheus.CounterValue, float64(st.Refused[r]), name)
	}
	ch <- prometheus.MustNewConstMetric(waitedDesc, prometheus.CounterValue, float64(st.Waited))
	ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(st.Waiting))
	dropping := 0.0
	if st.Dropping {
		dropping = 1
	}
	ch <- prometheus.MustNewConstMetric(droppingDesc, prometheus.GaugeValue, dropping)
	m.limited.Collect(ch)
}

func (m *httpMetrics) route(name string) *routeMetrics {
	return &routeMetrics{name: name, hist: m.duration.WithLabelValues(name), vec: m.requests}
}

// record observes one request of the route.
func (r *routeMetrics) record(start time.Time, result string) {
	r.hist.Observe(time.Since(start).Seconds())
	if c, ok := r.results.Load(result); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := r.vec.WithLabelValues(r.name, result)
	r.results.Store(result, c)
	c.Inc()
}

// resultKey is where handlers of observed routes leave their result.
const resultKey = "fs.result"

// boxedResults holds each result code once as an interface value: putting
// a string into gin's key map boxes it, an allocation per request on the
// hot paths otherwise.
var boxedResults sync.Map // string -> any

func setResult(c *gin.Context, result string) {
	v, ok := boxedResults.Load(result)
	if !ok {
		v, _ = boxedResults.LoadOrStore(result, any(result))
	}
	c.Set(resultKey, v)
}

// observe returns middleware that times and counts a route.
func (s *Server) observe(route string) gin.HandlerFunc { return s.observeRoute(s.metrics.route(route)) }

// observeRoute is observe with the route's metrics already bound.
func (s *Server) observeRoute(m *routeMetrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		result := "ok"
		if v, ok := c.Get(resultKey); ok {
			result = v.(string)
		} else if st := c.Writer.Status(); st >= 400 {
			result = strconv.Itoa(st)
		}
		m.record(start, result)
	}
}

var errTooLarge = flashsale.Errorf(flashsale.ETOOLARGE, "request body too large")

// bodyError turns a body read error into the right application error.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errTooLarge
	}
	return flashsale.Errorf(flashsale.EINVALID, "could not read the request body")
}
