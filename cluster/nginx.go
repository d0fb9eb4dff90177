package cluster

import (
	"bytes"
	_ "embed"
	"fmt"
	"text/template"
	"time"
)

//go:embed nginx.conf.tmpl
var nginxTemplateText string

var nginxTemplate = template.Must(template.New("nginx.conf").Parse(nginxTemplateText))

// NginxUpstream is one node behind nginx.
type NginxUpstream struct {
	Addr   string // host:port of the node
	Weight int    // weighted round robin weight, >= 1
}

// NginxConfig is what the generated nginx.conf depends on.
type NginxConfig struct {
	// Prefix is an absolute directory for nginx's pid, logs and temp files.
	Prefix string
	// Listen is the host:port clients connect to.
	Listen string
	// Servers are the nodes; empty yields a valid config with no live node.
	Servers []NginxUpstream
	// Workers is worker_processes; 1 when zero (the nodes need the cores).
	Workers int
	// AccessLog writes a buffered access log to Prefix/access.log.
	AccessLog bool
	// RequestDeadline is the nodes' http.request_deadline (2 s when 0):
	// nginx waits that plus a margin for an answer before it gives up.
	RequestDeadline time.Duration
	// FailTimeout is how long a node that failed once stays out of the
	// upstream; the membership TTL (3 s) when 0.
	FailTimeout time.Duration

	// Rendered from the above.
	ConnectTimeout, ReadTimeout, RetryWindow, FailTimeoutText string
}

// nginxDuration renders d in milliseconds, which nginx accepts everywhere.
func nginxDuration(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

// NginxTimeouts returns the connect and read timeouts nginx uses for nodes
// whose request deadline is deadline: connect 200 ms (a live node accepts at
// once; a frozen one still does, so read is what catches it), read
// deadline + 1 s, so nginx never gives up on an answer the node may still
// give.
func NginxTimeouts(deadline time.Duration) (connect, read time.Duration) {
	if deadline <= 0 {
		deadline = 2 * time.Second
	}
	return 200 * time.Millisecond, deadline + time.Second
}

// RenderNginxConf returns the nginx.conf for cfg.
func RenderNginxConf(cfg NginxConfig) ([]byte, error) {
	if cfg.Prefix == "" || cfg.Listen == "" {
		return nil, fmt.Errorf("nginx config: prefix and listen are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	for _, s := range cfg.Servers {
		if s.Weight < 1 {
			return nil, fmt.Errorf("nginx config: weight of %s is %d, must be >= 1", s.Addr, s.Weight)
		}
	}
	connect, read := NginxTimeouts(cfg.RequestDeadline)
	if cfg.FailTimeout <= 0 {
		cfg.FailTimeout = 3 * time.Second
	}
	cfg.ConnectTimeout, cfg.ReadTimeout, cfg.FailTimeoutText = nginxDuration(connect), nginxDuration(read), fmt.Sprintf("%ds", int64((cfg.FailTimeout+time.Second-1)/time.Second)) // seconds only here
	// A replay (keyed buys, GETs) must have time for one more full answer.
	cfg.RetryWindow = nginxDuration(2 * read)
	var b bytes.Buffer
	if err := nginxTemplate.Execute(&b, cfg); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	return b.Bytes(), nil
}
