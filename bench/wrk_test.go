package bench

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/auth"
)

// TestWrkScripts runs each wrk script for a second against the in-memory
// node and reads the status mix it prints. It is skipped where wrk is not
// installed.
func TestWrkScripts(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not installed")
	}
	f, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 50, 2)
	f.addEnvelope("unused", 1, 1)
	pool := filepath.Join(t.TempDir(), "tokens.txt")
	if err := auth.WriteTokenPool(pool, fakeAuthSecret, "u", 1000, time.Hour); err != nil {
		t.Fatal(err)
	}
	solo, _ := auth.Mint(fakeAuthSecret, "solo", time.Hour)
	for _, tc := range []struct {
		script string
		args   []string
		want   []string
	}{
		{"wrk/buy_same_user.lua", []string{"s1", solo}, []string{"ok=2\n", "limit_reached=", "nodes    n1="}},
		{"wrk/buy.lua", []string{"s1", pool}, []string{"ok=48", "sold_out=", "status   409="}},
		{"wrk/shake.lua", []string{"c1", pool}, []string{"won=20", "no_win=", "won      140 cents"}},
	} {
		t.Run(tc.script, func(t *testing.T) {
			args := append([]string{"-t1", "-c4", "-d1s", "-s", tc.script, srv.URL, "--"}, tc.args...)
			out, err := exec.Command("wrk", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("wrk: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestAbLine runs the README's ab line (shortened) against the in-memory
// node: one user, limit 1, so one 201 and the rest 409 limit_reached, which
// ab reports as Non-2xx and, by body length, as "Failed requests".
func TestAbLine(t *testing.T) {
	if _, err := exec.LookPath("ab"); err != nil {
		t.Skip("ab not installed")
	}
	_, srv := newFakeNode(t)
	createSale(t, srv.URL, "s1", 100, 1)
	tok, _ := auth.Mint(fakeAuthSecret, "u1", time.Hour)
	out, err := exec.Command("ab", "-k", "-n", "2000", "-c", "8", "-H", "Authorization: Bearer "+tok, srv.URL+"/v1/sales/s1/buy").CombinedOutput()
	if err != nil {
		t.Fatalf("ab: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, w := range []string{"Complete requests:      2000", "Non-2xx responses:      1999", "Keep-Alive requests:    2000"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("output lacks %q", w)
		}
	}
}
