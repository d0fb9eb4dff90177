package cluster

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestMeasureNginxHop measures what the nginx hop costs: wrk on one stand-in
// node directly, then on nginx in front of three. It is a measurement, not a
// check, and loads the machine, so it runs only with
// FLASHSALE_MEASURE=1 (go test -run MeasureNginxHop -v ./cluster);
// FLASHSALE_MEASURE_NGINX_WORKERS sets nginx's worker_processes.
func TestMeasureNginxHop(t *testing.T) {
	if os.Getenv("FLASHSALE_MEASURE") == "" {
		t.Skip("set FLASHSALE_MEASURE=1 to measure the nginx hop with wrk")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed")
	}
	exe := testBinary(t)
	workers, _ := strconv.Atoi(os.Getenv("FLASHSALE_MEASURE_NGINX_WORKERS"))
	c, err := Up(context.Background(), Config{Nodes: 3, Dir: t.TempDir(), Binary: exe, NginxWorkers: workers})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Down()
	if c.LBURL() == "" {
		t.Skip("nginx not installed")
	}
	rps := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	lat := regexp.MustCompile(`Latency\s+(\S+)`)
	for _, target := range []struct{ name, url string }{
		{"node1 direct", c.NodeURLs()[0] + "/healthz"},
		{"nginx -> 3 nodes", c.LBURL() + "/healthz"},
	} {
		out, err := exec.Command(wrk, "-t1", "-c64", "-d3s", "--latency", target.url).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		r, l := rps.FindSubmatch(out), lat.FindSubmatch(out)
		if r == nil || l == nil {
			t.Fatalf("wrk output:\n%s", out)
		}
		t.Logf("%-18s %8s req/s  mean latency %s", target.name, r[1], l[1])
		time.Sleep(500 * time.Millisecond)
	}
}
