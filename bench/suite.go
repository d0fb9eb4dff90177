package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flashsale/flashsale/cluster"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// SuiteConfig describes one `flashsale bench suite` run.
type SuiteConfig struct {
	Duration    time.Duration // per scenario
	Connections int
	Threads     int    // wrk threads
	Runs        int    // rounds; each round measures every scenario once, in turn
	WrkScript   string // bench/wrk/buy.lua
	Binary      string // the flashsale binary for the node, broker and hello processes
	Dir         string // run directory (logs, stat.log, Redis data)
	Out         io.Writer
}

// SuiteRow is one scenario's figures in one round.
type SuiteRow struct {
	Scenario      string
	Round         int
	RPS           float64
	P50, P99      time.Duration
	Non2xx        int64
	Statuses      string
	Ratio         float64       // RPS / the hello server's RPS in the same round
	RedisCmdPerRq float64       // commands Redis ran per request, those inside scripts included
	EvalPerRq     float64       // script calls (round trips) per request: coalescing shows here
	RedisCPUPerRq time.Duration // Redis CPU time per request (per sold unit on the selling path)
}

// Suite measures, on this machine and in one run, a bare net/http hello
// server, a node's sold-out path and a node's selling path, each driven by
// the same wrk script (so the client costs the same for all three), and
// reports every figure as a ratio to the hello server of the same round.
func Suite(ctx context.Context, cfg SuiteConfig) ([]SuiteRow, error) {
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, fmt.Errorf("wrk not found: run `make deps`")
	}
	out := cfg.Out
	helloAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	hello := exec.CommandContext(ctx, cfg.Binary, "bench", "hello", "--addr", helloAddr)
	hello.Stdout, hello.Stderr = io.Discard, io.Discard
	if err := hello.Start(); err != nil {
		return nil, fmt.Errorf("start hello server: %w", err)
	}
	defer func() { _ = hello.Process.Kill(); _ = hello.Wait() }()

	fmt.Fprintln(out, "starting redis-server, the broker and one node ...")
	c, err := cluster.Up(ctx, cluster.Config{Nodes: 1, NoNginx: true, Dir: cfg.Dir, Fresh: true, Binary: cfg.Binary,
		RedisFsync: "everysec"})
	if err != nil {
		return nil, err
	}
	defer c.Down()
	node := c.NodeURLs()[0]
	api := NewAPI(node, c.AdminToken())
	for _, s := range []SaleSpec{{ID: "soldout", Stock: 1, PerUserLimit: 1}, {ID: "selling", Stock: 100_000_000, PerUserLimit: 1}} {
		if err := api.CreateSale(ctx, s); err != nil {
			return nil, fmt.Errorf("create sale %s: %w", s.ID, err)
		}
	}
	if _, err := http.Get(node + "/v1/sales/soldout/buy?user_id=first"); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+helloAddr+"/"); err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr()})
	defer rdb.Close()

	var rows []SuiteRow
	for round := 1; round <= max(cfg.Runs, 1); round++ {
		var base float64
		for _, sc := range []struct{ name, url, sale string }{
			{"hello (net/http)", "http://" + helloAddr, "none"},
			{"node sold-out path", node, "soldout"},
			{"node selling path", node, "selling"},
		} {
			before, err := redisStats(ctx, rdb)
			if err != nil {
				return nil, err
			}
			row, err := runWrk(ctx, cfg, sc.url, sc.sale)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sc.name, err)
			}
			after, err := redisStats(ctx, rdb)
			if err != nil {
				return nil, err
			}
			row.Scenario, row.Round = sc.name, round
			if sc.sale == "none" {
				base = row.RPS
			}
			if base > 0 {
				row.Ratio = row.RPS / base
			}
			if n := row.RPS * cfg.Duration.Seconds(); n > 0 && sc.sale != "none" {
				row.RedisCmdPerRq = float64(after.commands-before.commands) / n
				row.EvalPerRq = float64(after.evals-before.evals) / n
				row.RedisCPUPerRq = time.Duration(float64(after.cpu-before.cpu) / n)
			}
			fmt.Fprintf(out, "round %d  %-20s %9.0f req/s  p99 %-8v ratio %.2f  %s\n", round, sc.name, row.RPS, row.P99, row.Ratio, row.Statuses)
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// WriteTable prints rows as the table `make bench` shows and RESULTS.md keeps.
func WriteTable(w io.Writer, rows []SuiteRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tscenario\treq/s\tp50\tp99\tratio to hello\tnon-2xx\tscript calls/req\tRedis cmds/req\tRedis CPU/req\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%v\t%v\t%.2f\t%d\t%.4f\t%.3f\t%v\t\n", r.Round, r.Scenario, r.RPS, r.P50, r.P99, r.Ratio, r.Non2xx,
			r.EvalPerRq, r.RedisCmdPerRq, r.RedisCPUPerRq.Round(10*time.Nanosecond))
	}
	tw.Flush()
}

var (
	rpsRe    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	pctRe    = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\b`)
	non2xxRe = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	statusRe = regexp.MustCompile(`(?m)^status\s+(.*)$`)
)

func runWrk(ctx context.Context, cfg SuiteConfig, url, sale string) (SuiteRow, error) {
	args := []string{"-t" + strconv.Itoa(max(cfg.Threads, 1)), "-c" + strconv.Itoa(cfg.Connections),
		"-d" + strconv.Itoa(int(cfg.Duration.Seconds())) + "s", "--latency", "-s", cfg.WrkScript, url, "--", sale, "1000000000"}
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, "wrk", args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return SuiteRow{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	s := buf.String()
	var r SuiteRow
	if m := rpsRe.FindStringSubmatch(s); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	} else {
		return r, fmt.Errorf("no Requests/sec in wrk output:\n%s", s)
	}
	for _, m := range pctRe.FindAllStringSubmatch(s, -1) {
		d, _ := time.ParseDuration(m[2] + m[3])
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if m := non2xxRe.FindStringSubmatch(s); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := statusRe.FindStringSubmatch(s); m != nil {
		r.Statuses = strings.TrimSpace(m[1])
	}
	return r, nil
}

type rstats struct {
	commands int64
	evals    int64
	cpu      int64 // nanoseconds of user+sys CPU
}

func redisStats(ctx context.Context, rdb *redis.Client) (rstats, error) {
	info, err := rdb.Info(ctx, "stats", "cpu", "commandstats").Result()
	if err != nil {
		return rstats{}, fmt.Errorf("redis INFO: %w", err)
	}
	var st rstats
	var cpu float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "total_commands_processed":
			st.commands, _ = strconv.ParseInt(v, 10, 64)
		case "cmdstat_evalsha", "cmdstat_eval":
			for _, kv := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(kv, "calls="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					st.evals += c
				}
			}
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		}
	}
	// INFO itself is a command; two of them bracket every scenario.
	st.commands--
	st.cpu = int64(cpu * 1e9)
	return st, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitHTTP(ctx context.Context, url string) error {
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
	}
	return fmt.Errorf("%s did not answer", url)
}

func suiteCommand() *cobra.Command {
	cfg := SuiteConfig{}
	var results string
	cmd := &cobra.Command{
		Use:   "suite",
		Short: "Measure hello vs the node's sold-out and selling paths with wrk; print ratios (make bench)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.ErrOrStderr()
			if cfg.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				cfg.Binary = exe
			}
			if cfg.Dir == "" {
				dir, err := os.MkdirTemp("", "flashsale-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				cfg.Dir = dir
			}
			rows, err := Suite(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			var tbl bytes.Buffer
			WriteTable(&tbl, rows)
			fmt.Fprintln(cmd.OutOrStdout())
			cmd.OutOrStdout().Write(tbl.Bytes())
			if results != "" {
				host, _ := os.Hostname()
				f, err := os.OpenFile(results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					return err
				}
				defer f.Close()
				fmt.Fprintf(f, "\n### %s — %s, %d cores (wrk -t%d -c%d, %v per scenario)\n\n```\n%s```\n",
					time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), cfg.Threads, cfg.Connections, cfg.Duration, tbl.String())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "per scenario and round")
	f.IntVar(&cfg.Connections, "connections", 256, "wrk connections")
	f.IntVar(&cfg.Threads, "threads", 1, "wrk threads")
	f.IntVar(&cfg.Runs, "runs", 3, "rounds (the spread across rounds is the run-to-run noise)")
	f.StringVar(&cfg.WrkScript, "script", filepath.Join("bench", "wrk", "buy.lua"), "wrk script for all three scenarios")
	f.StringVar(&cfg.Binary, "binary", "", "flashsale binary (default: this one)")
	f.StringVar(&cfg.Dir, "dir", "", "run directory (default: a temporary one)")
	f.StringVar(&results, "results", "", "append the table to this file (e.g. bench/RESULTS.md)")
	return cmd
}
