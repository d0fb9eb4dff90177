package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/envelope"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/shake"
	"github.com/flashsale/flashsale/statlog"
	"github.com/flashsale/flashsale/stock"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Config is what the HTTP layer needs to know.
type Config struct {
	NodeID            string
	AdminToken        string
	MaxBodyBytes      int64
	MaxInflight       int
	DefaultPayTimeout time.Duration
	RedisTimeout      time.Duration
	Envelope          envelope.Limits // send-envelope validation
	Shake             shake.Limits    // campaign validation
	WalletRecent      int             // entries GET /v1/users/{id}/wallet shows
}

// Deps are the services behind the routes. Ready lists the dependency
// checks /readyz runs.
type Deps struct {
	Redis  redis.UniversalClient
	Seller *stock.Seller
	Orders *order.Service
	// Envelopes and Shakes are optional: without them their routes are absent.
	Envelopes *envelope.Service
	Shakes    *shake.Service
	// History serves GET /v1/users/me/orders from the order store; nil
	// (no store configured) answers 503.
	History  OrderHistory
	StatLog  *statlog.Writer
	Registry *prometheus.Registry
	Ready    map[string]func(context.Context) error
	Log      *slog.Logger
}

// Server routes HTTP requests to the services. Create it with New.
type Server struct {
	cfg Config
	Deps
	log      *slog.Logger
	engine   *gin.Engine
	inflight chan struct{}
	metrics  *httpMetrics
	nodeHdr  []string      // X-Flashsale-Node value, shared by every response
	buyObs   *routeMetrics // the buy route's metrics, recorded by the handler itself
	perSale  *saleMetrics  // buy outcomes and latency per sale, for the dashboard
}

func init() {
	gin.SetMode(gin.ReleaseMode)
	PreRender(stock.Sentinels()...)
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
	s := &Server{cfg: cfg, Deps: d, log: d.Log, engine: gin.New(),
		inflight: make(chan struct{}, max(cfg.MaxInflight, 1)), metrics: newHTTPMetrics(), nodeHdr: []string{cfg.NodeID}}
	s.buyObs = s.metrics.route("buy")
	s.perSale = newSaleMetrics()
	d.Registry.MustRegister(s.metrics, s.perSale, nodeInfo(cfg.NodeID))
	e := s.engine
	e.HandleMethodNotAllowed = true
	e.NoRoute(func(c *gin.Context) { s.errorf(c, flashsale.ENOTFOUND, "no such route") })
	e.NoMethod(func(c *gin.Context) { s.errorf(c, flashsale.EINVALID, "method not allowed on this route") })
	e.Use(s.recover, s.nodeHeader)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(d.Registry, promhttp.HandlerOpts{})))

	v1 := e.Group("/v1", s.limitInflight, s.capBody)
	v1.POST("/sales", s.observe("create_sale"), s.admin, s.createSale)
	v1.GET("/sales/:id", s.observe("get_sale"), s.getSale)
	// The buy handler records its own metrics: it knows its result without
	// a per-request context map.
	v1.POST("/sales/:id/buy", s.buy)
	v1.GET("/sales/:id/buy", s.buy)
	v1.GET("/orders/:id", s.observe("get_order"), s.getOrder)
	v1.POST("/orders/:id/pay", s.observe("pay"), s.pay)
	v1.POST("/orders/:id/cancel", s.observe("cancel"), s.cancel)
	v1.GET("/users/me/orders", s.observe("list_my_orders"), s.listMyOrders)
	s.registerEnvelopes(v1)
	return s
}

// Handler returns the http.Handler serving every route.
func (s *Server) Handler() http.Handler { return s.engine }

// Engine exposes the gin engine so other rooms (envelopes, shakes) can add routes.
func (s *Server) Engine() *gin.Engine { return s.engine }

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

// limitInflight answers 503 at once when MaxInflight requests are already
// being handled: under overload a fast "no" beats a slow timeout.
func (s *Server) limitInflight(c *gin.Context) {
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
		c.Next()
	default:
		s.metrics.shed.Inc()
		s.writeError(c, errAtCapacity)
	}
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

func (s *Server) healthz(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", []byte(`{"status":"ok"}`))
}

// readyz reports whether Redis and Kafka answer, each within a second.
func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), time.Second)
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
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, body)
}

// httpMetrics counts requests by route and result and times them. Children
// are bound once per route/result so the hot path does no label lookups and
// builds no strings.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	shed     prometheus.Counter
}

// routeMetrics are one route's pre-bound metrics.
type routeMetrics struct {
	name    string
	hist    prometheus.Observer
	results sync.Map // result -> prometheus.Counter
	vec     *prometheus.CounterVec
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashsale_http_requests_total",
			Help: "HTTP requests by route and result (ok or an error code)."}, []string{"route", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flashsale_http_request_duration_seconds",
			Help: "HTTP request latency by route.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"route"}),
		shed: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_http_shed_total",
			Help: "Requests answered 503 because max_inflight requests were already in flight."}),
	}
}

func (m *httpMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.duration.Describe(ch)
	m.shed.Describe(ch)
}

func (m *httpMetrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.duration.Collect(ch)
	m.shed.Collect(ch)
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

// observe returns middleware that times and counts a route (the less busy
// routes; buy records its own).
func (s *Server) observe(route string) gin.HandlerFunc {
	m := s.metrics.route(route)
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
