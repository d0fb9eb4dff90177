package cluster

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/client"
)

// holdEnv keeps held idle connections open on the nodes for the whole run:
// the defaults close a connection that sends nothing for 5 s (header
// timeout) or idles 30 s, which is right for a public node and wrong for a
// crowd that connects first and shakes later.
var holdEnv = []string{
	"FLASHSALE_HTTP_IDLE_TIMEOUT=10m",
	"FLASHSALE_HTTP_READ_HEADER_TIMEOUT=10m",
	"FLASHSALE_HTTP_READ_TIMEOUT=10m",
	"FLASHSALE_LOG_LEVEL=error",
}

// Invariant: 20,000 connections held over two node processes all stay
// held through 5,000 shakes a second, every shake is answered, and the
// envelopes and cents the clients won equal exactly what the campaign's
// books say the server issued.
func TestHoldShakeNodeGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis, a broker, two nodes and two hold workers")
	}
	bin := realNodeBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log bytes.Buffer
	c, err := Up(ctx, holdClusterConfig(t, bin, &log))
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Cleanup(func() { _ = c.Down() })
	targets := holdTargets(c)

	api := client.New(c.NodeURLs()[0], c.AdminToken())
	// 200 envelopes a second for 4 s can hand out at most 800 of the 5,000:
	// the campaign does not run dry, so what is won is decided by the rate.
	if _, err := api.CreateShake(ctx, client.CreateShake{ID: "hold-rain", TotalEnvelopes: 5000,
		BudgetCents: 500_000, RatePerSec: 200}); err != nil {
		t.Fatal(err)
	}
	run, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer rcancel()
	cmd := exec.CommandContext(run, bin, "bench", "--target", targets, "--scenario", "shake", "--campaign", "hold-rain",
		"--users", "100000", "--slot-groups", "10", "--steps", "5000:4s",
		"--hold", "20000", "--hold-per-proc", "10000", "--hold-rate", "8000", "--hold-settle", "1s",
		"--timeout", "20s", "--check", "--auth-secret", c.AuthSecret(), "--admin-token", c.AdminToken())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench --hold: %v\n%s\nnode logs:\n%s", err, out.String(), log.String())
	}
	s := out.String()
	t.Logf("bench --hold:\n%s", s)
	for _, want := range []string{
		"20000 connections held of 20000 tried (0 failed, 0 lost)",
		"20000 still held after the shakes",
		"(0 requests unanswered)",
		"nodes     2 answered",
		"check     ok:",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	m := regexp.MustCompile(`won\s+(\d+) envelopes, (\d+) cents`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no won line in:\n%s", s)
	}
	won, _ := strconv.ParseInt(m[1], 10, 64)
	cents, _ := strconv.ParseInt(m[2], 10, 64)
	books, err := api.Campaign(ctx, "hold-rain")
	if err != nil {
		t.Fatal(err)
	}
	if books.Taken != won || books.PaidCents != cents {
		t.Fatalf("clients won %d envelopes / %d cents, the server's books say %d / %d", won, cents, books.Taken, books.PaidCents)
	}
	if won == 0 {
		t.Fatal("nothing won in 20,000 shakes: the run proves nothing")
	}
	if m := regexp.MustCompile(`(?m)^1\s+5000\s+4\s+(\d+)`).FindStringSubmatch(s); m == nil || m[1] != "20000" {
		t.Fatalf("step 1 did not send its 20,000 shakes: %v", m)
	}
}
