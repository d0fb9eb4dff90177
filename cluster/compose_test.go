package cluster

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/flashsale/flashsale/configs"
	"go.yaml.in/yaml/v3"
)

// knownNodeEnv returns the env keys a node understands: every key of
// configs/default.yaml as the node's viper maps it.
func knownNodeEnv(t *testing.T) (keys []string, source string) {
	t.Helper()
	for _, k := range configs.Keys() {
		keys = append(keys, configs.EnvName(k))
		keys = append(keys, configs.EnvAliases(k)...)
	}
	if len(keys) == 0 {
		t.Fatal("configs.Keys() is empty")
	}
	return keys, "configs/default.yaml"
}

func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join("..", "docker-compose.yml")},
		cli.WithWorkingDirectory(".."),
		// A fixed environment: the test must not depend on the caller's.
		cli.WithEnv(env),
		cli.WithProfiles(profiles(env)),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

func requireHealthCheck(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 || s.HealthCheck.Disable {
		t.Errorf("%s has no health check", s.Name)
	}
}

func requireDependsOn(t *testing.T, s types.ServiceConfig, dep, condition string) {
	t.Helper()
	d, ok := s.DependsOn[dep]
	if !ok || d.Condition != condition {
		t.Errorf("%s: depends_on %s = %+v, want condition %s", s.Name, dep, d, condition)
	}
}

func TestDockerCompose(t *testing.T) {
	p := loadCompose(t)
	known, source := knownNodeEnv(t)
	t.Logf("node env keys checked against %s", source)

	want := []string{"dashboard", "grafana", "kafka", "kafka-init", "nginx", "node1", "node2", "node3", "postgres", "prometheus", "redis"}
	if got := p.ServiceNames(); !slices.Equal(got, want) {
		t.Fatalf("services = %v, want %v", got, want)
	}

	redis := service(t, p, "redis")
	if !strings.HasPrefix(redis.Image, "redis:7") {
		t.Errorf("redis image %q, want redis:7*", redis.Image)
	}
	if cmd := strings.Join(redis.Command, " "); !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis without AOF: %q", cmd)
	}
	requireHealthCheck(t, redis)

	pg := service(t, p, "postgres")
	if pg.Image != "postgres:16" {
		t.Errorf("postgres image %q, want postgres:16", pg.Image)
	}
	requireHealthCheck(t, pg)
	if hc := strings.Join(pg.HealthCheck.Test, " "); !strings.Contains(hc, "pg_isready") {
		t.Errorf("postgres health check %q does not ask pg_isready", hc)
	}

	kafka := service(t, p, "kafka")
	if !strings.HasPrefix(kafka.Image, "apache/kafka:") {
		t.Errorf("kafka image %q, want the official apache/kafka", kafka.Image)
	}
	env := kafka.Environment
	if roles := env["KAFKA_PROCESS_ROLES"]; roles == nil || !strings.Contains(*roles, "controller") || !strings.Contains(*roles, "broker") {
		t.Errorf("kafka is not a KRaft broker+controller: KAFKA_PROCESS_ROLES=%v", roles)
	}
	if v := env["KAFKA_CONTROLLER_QUORUM_VOTERS"]; v == nil || *v != "1@kafka:9093" {
		t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS = %v", v)
	}
	requireHealthCheck(t, kafka)
	initCmd := strings.Join(service(t, p, "kafka-init").Command, " ")
	for _, topic := range []string{DefaultTopic, EnvelopeTopic} {
		if !strings.Contains(initCmd, "--create") || !strings.Contains(initCmd, "--topic "+topic) {
			t.Errorf("kafka-init does not create %s: %q", topic, initCmd)
		}
	}
	requireDependsOn(t, service(t, p, "kafka-init"), "kafka", types.ServiceConditionHealthy)

	nginxConf, err := os.ReadFile(filepath.Join("nginx", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, name := range []string{"node1", "node2", "node3"} {
		n := service(t, p, name)
		if n.Build == nil || filepath.Base(n.Build.Dockerfile) != "Dockerfile" {
			t.Errorf("%s is not built from the Dockerfile: %+v", name, n.Build)
		}
		if !slices.Equal(n.Command, []string{"node"}) {
			t.Errorf("%s command %v, want [node]", name, n.Command)
		}
		requireDependsOn(t, n, "redis", types.ServiceConditionHealthy)
		requireDependsOn(t, n, "kafka", types.ServiceConditionHealthy)
		requireDependsOn(t, n, "kafka-init", types.ServiceConditionCompletedSuccessfully)
		requireHealthCheck(t, n)

		// Every FLASHSALE_* key is one the node understands; nothing else
		// configures it.
		for k := range n.Environment {
			if !strings.HasPrefix(k, "FLASHSALE_") {
				t.Errorf("%s: env %s is not a FLASHSALE_* key", name, k)
			} else if !slices.Contains(known, k) {
				t.Errorf("%s: env %s is not a key the node understands (%s)", name, k, source)
			}
		}
		get := func(k string) string {
			if v := n.Environment[k]; v != nil {
				return *v
			}
			t.Errorf("%s: %s not set", name, k)
			return ""
		}
		if id := get("FLASHSALE_NODE_ID"); ids[id] {
			t.Errorf("%s: node id %q used twice", name, id)
		} else {
			ids[id] = true
		}
		if v := get("FLASHSALE_REDIS_ADDRS"); v != "redis:6379" {
			t.Errorf("%s: FLASHSALE_REDIS_ADDRS=%q", name, v)
		}
		if v := get("FLASHSALE_KAFKA_BROKERS"); v != "kafka:9092" {
			t.Errorf("%s: FLASHSALE_KAFKA_BROKERS=%q", name, v)
		}
		if v := get("FLASHSALE_POSTGRES_DSN"); !strings.Contains(v, "@postgres:5432/") {
			t.Errorf("%s: FLASHSALE_POSTGRES_DSN=%q does not name the postgres service", name, v)
		}
		requireDependsOn(t, n, "postgres", types.ServiceConditionHealthy)
		if v := get("FLASHSALE_ADMIN_TOKEN"); v == "" {
			t.Errorf("%s: empty admin token", name)
		}
		// A node refuses to start without a 32-byte auth secret.
		if v := get("FLASHSALE_AUTH_SECRET"); len(v) < 32 || get("FLASHSALE_PAYMENT_SECRET") == "" {
			t.Errorf("%s: auth secret %d bytes (want >= 32) or no payment secret", name, len(v))
		}
		// nginx's upstream reaches the node on the port it listens on.
		addr := get("FLASHSALE_HTTP_ADDR")
		port := addr[strings.LastIndexByte(addr, ':')+1:]
		if !regexp.MustCompile(`server ` + name + `:` + port + ` weight=\d+`).Match(nginxConf) {
			t.Errorf("nginx.conf has no weighted upstream server %s:%s", name, port)
		}
		// stat.logs land in the shared volume, one file per node.
		statlog := get("FLASHSALE_STATLOG_PATH")
		inVolume := false
		for _, v := range n.Volumes {
			if v.Type == types.VolumeTypeVolume && v.Source == "statlogs" && strings.HasPrefix(statlog, v.Target+"/") {
				inVolume = true
			}
		}
		if !inVolume || !strings.Contains(statlog, name) {
			t.Errorf("%s: stat.log %q is not its own file in the statlogs volume", name, statlog)
		}
	}

	lb := service(t, p, "nginx")
	published := false
	for _, port := range lb.Ports {
		if port.Target == 8080 && port.Published == "8080" {
			published = true
		}
	}
	if !published {
		t.Errorf("nginx does not publish 8080: %+v", lb.Ports)
	}
	mounted := false
	for _, v := range lb.Volumes {
		if v.Type == types.VolumeTypeBind && strings.HasSuffix(v.Source, filepath.Join("cluster", "nginx", "nginx.conf")) && v.Target == "/etc/nginx/nginx.conf" {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("nginx does not mount cluster/nginx/nginx.conf: %+v", lb.Volumes)
	}
	for _, name := range []string{"node1", "node2", "node3"} {
		requireDependsOn(t, lb, name, types.ServiceConditionHealthy)
	}
	requireHealthCheck(t, lb)
	checkWatching(t, p, known)
	for _, v := range []string{"redis-data", "kafka-data", "statlogs", "postgres-data", "prometheus-data", "grafana-data"} {
		if _, ok := p.Volumes[v]; !ok {
			t.Errorf("volume %s not declared", v)
		}
	}
}

// TestDockerfile checks what a test without a Docker engine can: two
// stages, a static binary of cmd/flashsale, a non-root user.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms, users []string
	build := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, line)
		case "USER":
			users = append(users, f[1])
		case "RUN":
			if strings.Contains(line, "go build") {
				build = line
			}
		}
	}
	if len(froms) < 2 {
		t.Errorf("not a multi-stage build: %v", froms)
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./cmd/flashsale") {
		t.Errorf("the build is not a static build of ./cmd/flashsale: %q", build)
	}
	if len(users) == 0 {
		t.Fatal("no USER: the image runs as root")
	}
	if u := strings.Split(users[len(users)-1], ":")[0]; u == "root" || u == "0" {
		t.Errorf("final USER %q is root", u)
	}
}

// profiles is COMPOSE_PROFILES of env, as docker compose reads it.
func profiles(env []string) []string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "COMPOSE_PROFILES="); ok {
			return strings.Split(v, ",")
		}
	}
	return nil
}

// The sentinel profile with the environment `make up-sentinel` sets: two
// replicas of redis and three sentinels monitoring it, every data server
// refusing writes without a replica, and the nodes pointed at the sentinels.
func TestDockerComposeSentinelProfile(t *testing.T) {
	p := loadCompose(t, "COMPOSE_PROFILES=sentinel", "REDIS_MIN_REPLICAS_TO_WRITE=1",
		"FLASHSALE_REDIS_ADDRS=sentinel1:26379,sentinel2:26379,sentinel3:26379", "FLASHSALE_REDIS_MASTER_NAME=flashsale")
	known, _ := knownNodeEnv(t)
	for _, name := range []string{"redis", "redis-replica1", "redis-replica2"} {
		r := service(t, p, name)
		cmd := strings.Join(r.Command, " ")
		if !strings.Contains(cmd, "--min-replicas-to-write 1") || !strings.Contains(cmd, "--appendonly yes") {
			t.Errorf("%s: %q: want AOF and min-replicas-to-write 1", name, cmd)
		}
		if name != "redis" && !strings.Contains(cmd, "--replicaof redis 6379") {
			t.Errorf("%s does not replicate redis: %q", name, cmd)
		}
		requireHealthCheck(t, r)
	}
	for _, name := range []string{"sentinel1", "sentinel2", "sentinel3"} {
		s := service(t, p, name)
		cmd := strings.Join(s.Command, " ")
		if !strings.Contains(cmd, "sentinel monitor flashsale redis 6379 2") || !strings.Contains(cmd, "--sentinel") {
			t.Errorf("%s: %q: want a sentinel monitoring redis as flashsale with quorum 2", name, cmd)
		}
		requireHealthCheck(t, s)
	}
	for _, name := range []string{"node1", "node2", "node3"} {
		n := service(t, p, name)
		for k := range n.Environment {
			if !slices.Contains(known, k) {
				t.Errorf("%s: env %s is not a key the node understands", name, k)
			}
		}
		if v := n.Environment["FLASHSALE_REDIS_ADDRS"]; v == nil || *v != "sentinel1:26379,sentinel2:26379,sentinel3:26379" {
			t.Errorf("%s: FLASHSALE_REDIS_ADDRS=%v, want the sentinels", name, v)
		}
		if v := n.Environment["FLASHSALE_REDIS_MASTER_NAME"]; v == nil || *v != "flashsale" {
			t.Errorf("%s: FLASHSALE_REDIS_MASTER_NAME=%v", name, v)
		}
	}
}

// checkWatching checks the watching side of the compose file (issue 18):
// the dashboard reads every node, Prometheus scrapes every node's metrics
// port and the dashboard, Grafana gets its datasource and dashboard. The
// files themselves are checked in package dashboard (promtool, PromQL
// names against a real node).
func checkWatching(t *testing.T, p *types.Project, known []string) {
	t.Helper()
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	targets := map[string]bool{}
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				targets[tg] = true
			}
		}
	}
	d := service(t, p, "dashboard")
	env := func(s types.ServiceConfig, k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	for k := range d.Environment {
		if !slices.Contains(known, k) {
			t.Errorf("dashboard: env %s is not a configs/default.yaml key", k)
		}
	}
	nodes := env(d, "FLASHSALE_DASHBOARD_NODES")
	for _, name := range []string{"node1", "node2", "node3"} {
		addr := env(service(t, p, name), "FLASHSALE_HTTP_ADMIN_ADDR") // metrics are on the admin listener
		hostport := name + ":" + addr[strings.LastIndexByte(addr, ':')+1:]
		if !targets[hostport] {
			t.Errorf("prometheus does not scrape %s (targets %v)", hostport, targets)
		}
		if !strings.Contains(nodes, "http://"+hostport+"/metrics") {
			t.Errorf("the dashboard does not read %s: FLASHSALE_DASHBOARD_NODES=%q", hostport, nodes)
		}
	}
	daddr := env(d, "FLASHSALE_DASHBOARD_ADDR")
	if dt := "dashboard:" + daddr[strings.LastIndexByte(daddr, ':')+1:]; !targets[dt] {
		t.Errorf("prometheus does not scrape the dashboard at %s", dt)
	}
	requireHealthCheck(t, d)
	mounts := func(s types.ServiceConfig, src, target string) {
		t.Helper()
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind && strings.HasSuffix(v.Source, filepath.FromSlash(src)) && v.Target == target {
				return
			}
		}
		t.Errorf("%s does not mount %s at %s: %+v", s.Name, src, target, s.Volumes)
	}
	pr := service(t, p, "prometheus")
	mounts(pr, "deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml")
	requireHealthCheck(t, pr)
	g := service(t, p, "grafana")
	mounts(g, "deploy/grafana/provisioning", "/etc/grafana/provisioning")
	mounts(g, "deploy/grafana/dashboards", "/etc/grafana/dashboards")
	requireDependsOn(t, g, "prometheus", types.ServiceConditionHealthy)
	requireHealthCheck(t, g)
	for _, s := range []types.ServiceConfig{d, pr, g} {
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s on %q, want loopback only", s.Name, port.Published, port.HostIP)
			}
		}
	}
}
