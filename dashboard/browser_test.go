package dashboard_test

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/dashboard"
	"github.com/flashsale/flashsale/internal/e2e"
)

// chromium finds the browser: $FLASHSALE_CHROMIUM, /usr/bin/chromium
// (Debian's chromium package) or chromium on PATH.
func chromium(t *testing.T) string {
	if p := os.Getenv("FLASHSALE_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skip("chromium not installed (apt-get install -y chromium chromium-driver, or `make deps`): the browser test needs it")
	return ""
}

// TestBrowserShowsLiveSale: a real node sells 60 of 100 units (and refuses
// repeat buyers) while headless Chromium has the page open; the page must
// show remaining 40 and a sales/s chart with a non-zero point, from the
// event stream alone.
func TestBrowserShowsLiveSale(t *testing.T) {
	exe := chromium(t)
	env := e2e.NewEnv(t)
	n := env.StartNode(t, "node1", nil)
	rdb := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	t.Cleanup(func() { rdb.Close() })

	d, err := dashboard.New(dashboard.Config{Redis: rdb, Nodes: []string{n.AdminURL}, Interval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	runCtx, stopRun := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(runCtx) })
	t.Cleanup(func() { stopRun(); wg.Wait(); srv.Close() })

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	// The first call starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("status").textContent === "live"`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the page never connected to the event stream: %v", err)
	}

	// The sale, while the page watches: 60 buyers in three waves a second
	// apart (so the rate chart gets points), then 10 repeat buyers who hit
	// the per-user limit.
	e2e.CreateSale(t, n.URL, `{"id":"live","name":"live","stock":100,"price_cents":100,"pay_timeout":"5m"}`)
	var users []string
	for w := range 3 {
		wave := make([]string, 20)
		for i := range wave {
			wave[i] = "u" + strconv.Itoa(w*20+i)
		}
		rs := e2e.Hammer(t, []string{n.URL}, "live", wave, 8)
		if c := e2e.Count(rs); c["ok"] != 20 {
			t.Fatalf("wave %d: %v, want 20 ok", w, c)
		}
		users = append(users, wave...)
		time.Sleep(time.Second)
	}
	if c := e2e.Count(e2e.Hammer(t, []string{n.URL}, "live", users[:10], 4)); c["limit_reached"] != 10 {
		t.Fatalf("repeat buyers: %v, want 10 limit_reached", c)
	}
	if b := e2e.GetBooks(t, n.URL, "live"); b.Remaining != 40 || b.Pending != 60 {
		t.Fatalf("books %+v, want remaining 40, pending 60", b)
	}

	wait := func(what, js string) {
		t.Helper()
		pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
		defer pcancel()
		if _, err := chromedp.Run(pctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage text:\n%s", what, err, body)
		}
	}
	wait("remaining shows 40", `document.getElementById("remaining").textContent === "40"`)
	wait("pending shows 60", `document.getElementById("pending").textContent === "60"`)
	wait("the sales/s chart has non-zero points",
		`(() => { const s = document.getElementById("chart-sales"); return +s.dataset.points > 2 && +s.dataset.max > 0; })()`)
	wait("the refusals chart names limit_reached", `document.getElementById("legend-refusals").textContent.includes("limit_reached")`)
	wait("the cluster panel lists node1 as up", `document.querySelector("#cluster tbody").textContent.includes("node1up")`)

	points, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("chart-sales").dataset.points + " points, max " + document.getElementById("chart-sales").dataset.max`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sales/s chart: %s", points)

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	// FLASHSALE_DASHBOARD_PNG=path keeps a copy (docs/dashboard.png is made so).
	if p := os.Getenv("FLASHSALE_DASHBOARD_PNG"); p != "" {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(png) < 10_000 {
		t.Errorf("screenshot is only %d bytes", len(png))
	}
}
