package bench

import (
	"os/exec"
	"strings"
	"testing"
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
	for _, tc := range []struct {
		script string
		args   []string
		want   []string
	}{
		{"wrk/buy_same_user.lua", []string{"s1", "solo"}, []string{"ok=2\n", "limit_reached=", "nodes    n1="}},
		{"wrk/buy.lua", []string{"s1", "1000"}, []string{"ok=48", "sold_out=", "status   409="}},
		{"wrk/shake.lua", []string{"c1", "1000"}, []string{"won=20", "no_win=", "won      140 cents"}},
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
