package cluster

import (
	"bytes"
	_ "embed"
	"fmt"
	"text/template"
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
	var b bytes.Buffer
	if err := nginxTemplate.Execute(&b, cfg); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	return b.Bytes(), nil
}
