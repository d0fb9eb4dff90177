package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nginxBinary returns nginx's path, skipping the test when it is missing
// (CI installs it, so CI never skips).
func nginxBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx not found on PATH; .ci/run must install it (apt-get install -y nginx)")
		}
		t.Skip("nginx not installed (apt-get install -y nginx): skipping the nginx -t check")
	}
	return p
}

// nginxTest runs `nginx -t` on conf with everything under prefix.
func nginxTest(t *testing.T, prefix, conf string) {
	t.Helper()
	out, err := exec.Command(nginxBinary(t), "-t", "-q", "-p", prefix, "-c", conf,
		"-e", filepath.Join(prefix, "error.log")).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t %s: %v\n%s", conf, err, out)
	}
}

func TestGeneratedNginxConfPassesNginxT(t *testing.T) {
	for _, tc := range []struct {
		name    string
		servers []NginxUpstream
		access  bool
	}{
		{"three weighted nodes", []NginxUpstream{{"127.0.0.1:8081", 1}, {"127.0.0.1:8082", 2}, {"127.0.0.1:8083", 3}}, false},
		{"no nodes", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := t.TempDir()
			conf, err := RenderNginxConf(NginxConfig{Prefix: prefix, Listen: "127.0.0.1:18080", Servers: tc.servers, AccessLog: tc.access})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.servers {
				want := fmt.Sprintf("server %s weight=%d ", s.Addr, s.Weight)
				if !strings.Contains(string(conf), want) {
					t.Errorf("config lacks %q", want)
				}
			}
			for _, want := range abuseSettings {
				if !strings.Contains(string(conf), want) {
					t.Errorf("config lacks %q", want)
				}
			}
			if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(prefix, "nginx.conf")
			if err := os.WriteFile(path, conf, 0o644); err != nil {
				t.Fatal(err)
			}
			nginxTest(t, prefix, path)
		})
	}
	if _, err := RenderNginxConf(NginxConfig{Prefix: "/x", Listen: ":1", Servers: []NginxUpstream{{"a:1", 0}}}); err == nil {
		t.Error("weight 0 accepted")
	}
}

// abuseSettings are issue 11's limits on slow and greedy clients, in both
// nginx configs: short header/body timeouts, resets of timed-out
// connections, a per-IP connection cap, upstream failure counting that one
// slow connect does not trip, and JSON bodies for nginx's own errors.
var abuseSettings = []string{"client_header_timeout 5s;", "client_body_timeout 5s;", "reset_timedout_connection on;",
	"limit_conn flashsale_perip", "limit_conn_status 429;", "max_fails=3", "error_page 429 = @rate_limited;",
	"error_page 502 = @bad_gateway;", "error_page 504 = @gateway_timeout;", "error_page 503 = @unavailable;", `'{"error":{"code":"rate_limited"`}

// TestComposeNginxConfPassesNginxT checks cluster/nginx/nginx.conf, the one
// docker-compose mounts. Its upstreams name compose services (node1..3),
// which only resolve inside the compose network, and nginx -t resolves
// upstream hosts; so the test points those names at 127.0.0.1 first.
func TestComposeNginxConfPassesNginxT(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("nginx", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for _, want := range append([]string{"server node1:8080", "server node2:8080", "server node3:8080", "keepalive 256", "listen 8080",
		"proxy_http_version 1.1", "location = /lb-healthz"}, abuseSettings...) {
		if !strings.Contains(conf, want) {
			t.Errorf("cluster/nginx/nginx.conf lacks %q", want)
		}
	}
	for _, n := range []string{"node1", "node2", "node3"} {
		conf = strings.ReplaceAll(conf, "server "+n+":", "server 127.0.0.1:")
	}
	prefix := t.TempDir()
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	nginxTest(t, prefix, path)
}
