package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/flashsale/flashsale/auth"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
)

// realNodeBinary returns the flashsale binary when it has the node command,
// and skips otherwise (the node lands separately from the launcher).
func realNodeBinary(t *testing.T) string {
	t.Helper()
	testenv.RedisBinary(t)
	bin := flashsaleBinary(t)
	if err := exec.Command(bin, "node", "--help").Run(); err != nil {
		t.Skip("this build has no `flashsale node` yet")
	}
	return bin
}

func call(t *testing.T, method, url, token string, body any) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestUpRealNodes: three real nodes behind nginx; up → sell → kill a node →
// keep selling through nginx → restart it → down, leaving no process.
func TestUpRealNodes(t *testing.T) {
	bin := realNodeBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var log bytes.Buffer
	start := time.Now()
	c, err := Up(ctx, Config{Nodes: 3, Dir: t.TempDir(), Binary: bin, Log: &log, Dashboard: true})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Cleanup(func() { _ = c.Down() })
	t.Logf("up with 3 real nodes took %v", time.Since(start))
	st := c.State()

	base := c.LBURL()
	if base == "" {
		base = c.NodeURLs()[0]
	}
	for i, u := range c.NodeURLs() {
		code, body, h := call(t, "GET", u+"/readyz", "", nil)
		if code != 200 || h.Get("X-Flashsale-Node") != fmt.Sprintf("node%d", i+1) {
			t.Fatalf("node%d /readyz: %d %q node=%q", i+1, code, body, h.Get("X-Flashsale-Node"))
		}
	}

	const stock = 30
	code, body, _ := call(t, "POST", base+"/v1/sales", c.AdminToken(), map[string]any{
		"id": "launcher-test", "name": "launcher test", "stock": stock, "price_cents": 100, "per_user_limit": 1})
	if code != http.StatusCreated {
		t.Fatalf("create sale: %d %s", code, body)
	}
	buy := func(user int) (int, string) {
		tok, err := auth.Mint([]byte(c.AuthSecret()), fmt.Sprintf("u%d", user), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		code, body, _ := call(t, "POST", fmt.Sprintf("%s/v1/sales/launcher-test/buy", base), tok, nil)
		return code, body
	}
	sold := 0
	for u := range 10 {
		if code, body := buy(u); code == http.StatusCreated {
			sold++
		} else {
			t.Fatalf("buy %d before the kill: %d %s", u, code, body)
		}
	}

	if err := c.Kill("node2"); err != nil {
		t.Fatal(err)
	}
	// Invariant: through nginx, a killed node costs clients nothing: every
	// buy is sold or sold out, never an error; and nothing is oversold.
	for u := 10; u < 60; u++ {
		switch code, body := buy(u); code {
		case http.StatusCreated:
			sold++
		case http.StatusConflict:
			if !strings.Contains(body, "sold_out") {
				t.Fatalf("buy %d: 409 %s", u, body)
			}
		default:
			if c.LBURL() != "" {
				t.Fatalf("buy %d after the kill: %d %s", u, code, body)
			}
		}
	}
	if sold > stock {
		t.Fatalf("oversold: %d > %d", sold, stock)
	}
	t.Logf("sold %d of %d with node2 killed after 10", sold, stock)
	// The books in Redis match what the clients were told.
	code, body, _ = call(t, "GET", base+"/v1/sales/launcher-test", "", nil)
	var books struct{ Stock, Remaining, Pending, Paid int64 }
	if err := json.Unmarshal([]byte(body), &books); code != 200 || err != nil {
		t.Fatalf("get sale: %d %s %v", code, body, err)
	}
	if books.Pending != int64(sold) || books.Remaining+books.Pending+books.Paid != stock {
		t.Fatalf("books %+v after %d successes", books, sold)
	}

	// The cluster's dashboard reads every node and the sale's books.
	requireDashboard(t, c, "launcher-test", stock-int64(sold))

	if err := c.Restart("node2"); err != nil {
		t.Fatal(err)
	}
	// Restart returned once the new node2 answered its own probe. A GET on
	// a fresh connection (no pooled one from before the kill), retried on a
	// transport error as nginx retries a GET: once in a CI run on nbio, this
	// GET read EOF; the retries are logged, so a pattern would show.
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for try := 1; ; try++ {
		resp, err := fresh.Get(c.NodeURLs()[1] + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("node2 after restart: %d %s", resp.StatusCode, b)
			}
			break
		}
		if try == 3 {
			t.Fatalf("node2 after restart: %v (try %d)", err, try)
		}
		t.Logf("node2 after restart, try %d: %v", try, err)
		time.Sleep(100 * time.Millisecond)
	}
	t0 := time.Now()
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	// Known node issue (reported to the lead): after a SIGKILLed node comes
	// back, the expiry consumers' kafka-go group Close waits for a rebalance
	// that waits for the dead member's session timeout (30 s), so a prompt
	// down SIGKILLs nodes after the grace. Logged, not failed, until fixed.
	if strings.Contains(log.String(), "ignored SIGTERM") {
		t.Logf("down took %v; nodes needed SIGKILL:\n%s", time.Since(t0), log.String())
	}
	requireGone(t, st)
	requireGone(t, c.State())
}

// requireDashboard waits until the cluster's dashboard has sampled the
// sale with the given remaining count and seen node2 go.
func requireDashboard(t *testing.T, c *Cluster, sale string, remaining int64) {
	t.Helper()
	u := c.DashboardURL()
	if u == "" {
		t.Fatal("Up with Dashboard started no dashboard")
	}
	var b strings.Builder
	c.PrintSummary(&b)
	if !strings.Contains(b.String(), u+"/") {
		t.Errorf("the summary does not show the dashboard URL %s:\n%s", u, b.String())
	}
	want := fmt.Sprintf(`"id":%q,"books":{"stock":30,"remaining":%d`, sale, remaining)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body, _ := call(t, "GET", u+"/api/history", "", nil)
		if strings.Contains(body, want) && strings.Contains(body, "node2 metrics unreachable") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard never showed %s and node2's loss; last history: %.2000s", want, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
