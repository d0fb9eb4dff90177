package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Options are the command's flags beyond Config: setup, outputs and check.
type Options struct {
	Config
	CreateSale bool
	Stock      int64
	Limit      int64
	PayTimeout string
	AdminToken string
	// FundCents, for send, is credited to every user's wallet before the
	// run (once per run): an envelope is paid from its sender's balance.
	FundCents int64
	JSON      string
	Plot      string
	Check     bool
	// queue scenario: the waiting room's rate and how long after creation
	// the sale opens (the pre-queue window).
	AdmitPerSec int64
	OpensIn     time.Duration
	// Hold (--hold C): open and hold C connections from worker processes
	// first, then run the shake steps over them (see hold.go).
	Hold HoldOptions
}

// Command returns `flashsale bench` and its `hello` subcommand.
func Command() *cobra.Command {
	var (
		o          Options
		targets    string
		steps      string
		authSecret string
		paySecret  string
		serverPIDs string
		memFloor   float64
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load nodes with many distinct users and report what the clients saw",
		Long: `bench drives one or more flashsale nodes (or the nginx in front of them) with
many distinct users and reports throughput, latency (HDR histogram), the status
and code mix, per-node counts and what the clients won, live once a second and
as a summary; optionally as JSON and a plot, and checked against the books.

Closed loop by default (each connection sends its next request when the last
is answered); --rate R sends at a fixed arrival rate and measures latency from
the intended send time, so a stalled server cannot hide its queue
(no coordinated omission); --slot-groups G runs hongbao-style time-slot clients.`,
		Example: `  flashsale bench --target http://127.0.0.1:8080 --create-sale --sale s1 --stock 500 \
      --admin-token secret --users 100000 --connections 256 --duration 10s --check \
      --json run.json --plot run.png
  flashsale bench --target http://127.0.0.1:8080,http://127.0.0.1:8081 --sale s1 \
      --users 100000 --rate 20000 --duration 10s
  flashsale bench --target 127.0.0.1:8080 --scenario shake --campaign c1 \
      --users 1000000 --slot-groups 20 --steps 30000:10s,60000:10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for t := range strings.SplitSeq(targets, ",") {
				if t = strings.TrimSpace(t); t != "" {
					o.Targets = append(o.Targets, t)
				}
			}
			if steps != "" {
				s, err := ParseSteps(steps)
				if err != nil {
					return err
				}
				o.Steps = s
			}
			o.Progress = cmd.ErrOrStderr()
			o.AuthSecret, o.PaymentSecret = []byte(authSecret), []byte(paySecret)
			o.Hold.MemFloor = int64(memFloor * (1 << 30))
			for p := range strings.SplitSeq(serverPIDs, ",") {
				if p = strings.TrimSpace(p); p != "" {
					pid, err := strconv.Atoi(p)
					if err != nil {
						return fmt.Errorf("--server-pids: %q is not a pid", p)
					}
					o.Hold.ServerPIDs = append(o.Hold.ServerPIDs, pid)
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return Main(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&targets, "target", "http://127.0.0.1:8080", "base URL(s), comma-separated; requests go round-robin over them")
	f.StringVar(&o.Scenario, "scenario", ScenarioBuy, "buy | open | shake | send | get | queue (waiting room: join, poll with backoff, buy when admitted; --users buyers)")
	f.Int64Var(&o.AdmitPerSec, "admit-per-sec", 200, "queue with --create-sale: the waiting room's admission rate")
	f.DurationVar(&o.OpensIn, "opens-in", 2*time.Second, "queue with --create-sale: the sale opens this long after creation; buyers joining before are shuffled")
	f.StringVar(&o.Sale, "sale", "", "buy: the sale id (default with --create-sale: bench-<unix time>)")
	f.StringVar(&o.Envelope, "envelope", "", "open: the envelope id")
	f.StringVar(&o.Campaign, "campaign", "", "shake: the shake campaign id")
	f.StringVar(&o.Path, "path", "/", "get: the request path")
	f.Int64Var(&o.EnvelopeCents, "envelope-cents", 10000, "send: total cents of each envelope")
	f.Int64Var(&o.EnvelopeShares, "envelope-shares", 10, "send: shares of each envelope")
	f.BoolVar(&o.CreateSale, "create-sale", false, "buy: create the sale first (POST /v1/sales)")
	f.Int64Var(&o.Stock, "stock", 1000, "with --create-sale: units")
	f.Int64Var(&o.Limit, "limit", 1, "with --create-sale: per-user limit")
	f.Int64Var(&o.PriceCents, "price-cents", 100, "with --create-sale: price (the amount paid callbacks carry)")
	f.StringVar(&o.PayTimeout, "pay-timeout", "5m", "with --create-sale: how long an order waits for payment")
	f.StringVar(&o.AdminToken, "admin-token", os.Getenv("FLASHSALE_ADMIN_TOKEN"), "admin bearer token (default $FLASHSALE_ADMIN_TOKEN)")
	f.StringVar(&authSecret, "auth-secret", os.Getenv("FLASHSALE_AUTH_SECRET"), "the nodes' auth.secret: each request carries a token for its user (default $FLASHSALE_AUTH_SECRET)")
	f.StringVar(&paySecret, "payment-secret", os.Getenv("FLASHSALE_PAYMENT_SECRET"), "the nodes' payment.secret, to pay through signed callbacks (default $FLASHSALE_PAYMENT_SECRET)")
	f.Int64Var(&o.FundCents, "fund-cents", 0, "send: credit every user this much before the run (admin)")
	f.IntVar(&o.Users, "users", 10000, "distinct user ids")
	f.StringVar(&o.UserPrefix, "user-prefix", "u", "user ids are PREFIX0 .. PREFIX(N-1)")
	f.IntVar(&o.Connections, "connections", 64, "keep-alive connections (workers); each holds one connection per target")
	f.DurationVar(&o.Duration, "duration", 0, "run this long (default 10s unless --requests is set)")
	f.Int64Var(&o.Requests, "requests", 0, "stop after this many requests")
	f.Float64Var(&o.Rate, "rate", 0, "open loop: arrivals per second (0: closed loop, as fast as answers come)")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Second, "per-request timeout")
	f.Float64Var(&o.PayFraction, "pay-fraction", 0, "buy: fraction of winners that pay at once; the rest let orders expire")
	f.IntVar(&o.SlotGroups, "slot-groups", 0, "time-slot clients: user u sends only in seconds s with s%G == u%G, at most once")
	f.StringVar(&steps, "steps", "", `time-slot step profile "QPS:DURATION,..." e.g. "30000:10s,60000:10s"`)
	f.StringVar(&o.JSON, "json", "", "write the JSON report here")
	f.StringVar(&o.Plot, "plot", "", "write a plot of req/s, successes/s and p99 here (.png or .svg)")
	f.BoolVar(&o.Check, "check", false, "after the run, compare the client tally with the server's books; a mismatch fails")
	f.IntVar(&o.Hold.Conns, "hold", 0, "shake: first open and hold this many connections (epoll worker processes), then run --steps over them")
	f.Float64Var(&o.Hold.Rate, "hold-rate", 20000, "--hold: connects per second over all worker processes")
	f.IntVar(&o.Hold.PerProc, "hold-per-proc", 18000, "--hold: connections per worker process (one process may hold at most its open-files limit)")
	f.StringVar(&o.Hold.FirstSource, "hold-source", "127.0.0.2", "--hold: first loopback source address; as many as the connections need follow it")
	f.DurationVar(&o.Hold.Settle, "hold-settle", 2*time.Second, "--hold: idle time after the ramp before memory is read and the shakes start")
	f.Float64Var(&memFloor, "mem-floor", 3, "--hold: stop the ramp when MemAvailable falls under this many GiB")
	f.StringVar(&serverPIDs, "server-pids", "", "--hold: server processes whose RSS is measured (default: every process listening on a target's port)")
	cmd.AddCommand(helloCommand(), suiteCommand(), holdWorkerCommand())
	return cmd
}

// Main runs one bench as the command does: setup, run, summary to out,
// outputs, check. A failed check is returned as an error after the summary
// and files are written, so the evidence survives the failure.
func Main(ctx context.Context, o Options, out io.Writer) error {
	if o.Duration == 0 && o.Requests == 0 && len(o.Steps) == 0 {
		o.Duration = 10 * time.Second
	}
	if len(o.Targets) == 0 {
		return errors.New("no --target")
	}
	if o.Scenario == "" {
		o.Scenario = ScenarioBuy
	}
	target := strings.TrimRight(o.Targets[0], "/")
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	api := NewAPI(target, o.AdminToken)
	api.AuthSecret = o.AuthSecret
	if o.Scenario == ScenarioQueue {
		return mainQueue(ctx, o, api, out)
	}
	if o.Hold.Conns > 0 {
		return mainHold(ctx, o, api, out)
	}
	if o.CreateSale {
		if o.Scenario != ScenarioBuy {
			return errors.New("--create-sale is for --scenario buy")
		}
		if o.Sale == "" {
			o.Sale = fmt.Sprintf("bench-%d", time.Now().Unix())
		}
		err := api.CreateSale(ctx, SaleSpec{ID: o.Sale, Name: "bench " + o.Sale, Stock: o.Stock,
			PriceCents: o.PriceCents, PerUserLimit: o.Limit, PayTimeout: o.PayTimeout})
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Progress, "created sale %s: stock %d, limit %d per user\n", o.Sale, o.Stock, o.Limit)
	}
	if o.Scenario == ScenarioBuy && o.PayFraction > 0 && !o.CreateSale {
		v, err := api.Sale(ctx, o.Sale)
		if err != nil {
			return fmt.Errorf("read the sale's price: %w", err)
		}
		o.PriceCents = v.PriceCents
	}
	if o.Scenario == ScenarioSend && o.FundCents > 0 {
		if err := fundUsers(ctx, api, o.UserPrefix, o.Users, o.FundCents); err != nil {
			return err
		}
	}
	var base Baseline
	if o.Check {
		var err error
		if base, err = api.ReadBaseline(ctx, &o.Config); err != nil {
			return fmt.Errorf("read books before the run: %w", err)
		}
	}
	res, err := Run(ctx, o.Config)
	if err != nil {
		return err
	}
	var checkErr error
	if o.Check {
		// The books are read with a fresh context: an interrupted run
		// still deserves its check.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		books, err := api.ReadBooks(cctx, &o.Config, res.Tally, base)
		if err == nil {
			err = Check(cctx, res.Tally, books)
		}
		cancel()
		if err != nil {
			checkErr = fmt.Errorf("check failed:\n%w", err)
			res.Report.Check = "FAILED: " + strings.ReplaceAll(err.Error(), "\n", "; ")
		} else {
			res.Report.Check = fmt.Sprintf("ok: %d client wins match the server's books", res.Tally.Successes)
		}
	}
	res.Report.Summary(out)
	if o.JSON != "" {
		if err := res.Report.WriteJSON(o.JSON); err != nil {
			return err
		}
	}
	if o.Plot != "" {
		if err := res.Report.WritePlot(o.Plot); err != nil {
			return err
		}
	}
	return checkErr
}

// fundUsers credits every user prefix0..prefix(n-1), 16 at a time, under a
// reference unique to this run.
func fundUsers(ctx context.Context, api *API, prefix string, n int, cents int64) error {
	ref := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	next := make(chan int)
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			var first error
			for i := range next {
				if err := api.Credit(ctx, prefix+strconv.Itoa(i), cents, ref); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	var first error
	for range 16 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// helloBody is the ceiling server's reply: 13 bytes, as in the classic
// "hello world" benchmarks the mission's baseline (≈ 78k req/s) was taken with.
var helloBody = []byte("Hello, World!")

// HelloHandler answers every request with a 13-byte body. It is what a node
// could at best be on this box: net/http with no work behind it.
func HelloHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(helloBody)
	})
}

func helloCommand() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "hello",
		Short: "Serve a bare net/http hello (the ceiling of this box) for comparison runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv := &http.Server{Addr: addr, Handler: HelloHandler(), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				_ = srv.Close()
			}()
			fmt.Fprintf(cmd.ErrOrStderr(), "hello on http://%s\n", addr)
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:18000", "listen address")
	return cmd
}
