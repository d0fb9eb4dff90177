package chaos

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText prints the run for people: what happened when, who sold what,
// the load phases, the client check, the reconciliation report and the
// verdict.
func (o *Outcome) WriteText(w io.Writer) {
	fmt.Fprintf(w, "\n== chaos run: sale %s, %d units, %d buyers, nodes %s, load via %s\n",
		o.Sale, o.Stock, o.Buyers, strings.Join(o.Nodes, ","), strings.Join(o.Targets, ","))
	tm := o.Timings
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if tm.Up > 0 {
		fmt.Fprintf(tw, "cluster up\t%v\n", round(tm.Up))
	}
	if o.Fault != "" {
		fmt.Fprintf(tw, "fault\t%s at %v with %d/%d sold (%.0f%%), done at %v\n", o.Fault, round(tm.FaultAt),
			tm.SoldAtFault, o.Stock, 100*float64(tm.SoldAtFault)/float64(max(o.Stock, 1)), round(tm.FaultDone))
	}
	if tm.SoldOutAt > 0 {
		fmt.Fprintf(tw, "sold out\tat %v: %v after the fault, the nodes alive sold everything left\n", round(tm.SoldOutAt), round(tm.SoldOutAt-tm.FaultAt))
	} else {
		fmt.Fprintf(tw, "sold out\tnever seen\n")
	}
	fmt.Fprintf(tw, "rush\t%v (every buyer asked once)\n", round(tm.Rush))
	if tm.FirstExpiry > 0 {
		fmt.Fprintf(tw, "first expiry\tat %v\n", round(tm.FirstExpiry))
	}
	if tm.SettledAt > 0 {
		fmt.Fprintf(tw, "settled\tat %v: every unit paid\n", round(tm.SettledAt))
	}
	if p := o.Probe; p.Probes > 0 {
		if p.Failed > 0 {
			fmt.Fprintf(tw, "probe\t%d GETs to %s: %d failed, from %v to %v (%v unavailable), slowest %v\n",
				p.Probes, p.Target, p.Failed, round(p.FirstFail), round(p.LastFail), round(p.Unavailable()), round(p.MaxLatency))
		} else {
			fmt.Fprintf(tw, "probe\t%d GETs to %s: none failed, slowest %v\n", p.Probes, p.Target, round(p.MaxLatency))
		}
	}
	fmt.Fprintf(tw, "reconcile\t%v\n", round(tm.Reconcile))
	fmt.Fprintf(tw, "total\t%v\n", round(tm.Total))
	_ = tw.Flush()

	if len(o.PerNode) > 0 {
		fmt.Fprintln(w, "\norders by node (from Redis):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "node\torders\tpaid\texpired\tafter fault done\taborted\t")
		for _, n := range o.PerNode {
			mark := ""
			for _, k := range o.Killed {
				if k == n.Node {
					mark = " (killed)"
				}
			}
			fmt.Fprintf(tw, "%s%s\t%d\t%d\t%d\t%d\t%d\t\n", n.Node, mark, n.Orders, n.Paid, n.Expired, n.AfterFault, n.Aborted)
		}
		_ = tw.Flush()
	}
	for _, ph := range []struct {
		name string
		r    interface{ Summary(io.Writer) }
		ok   bool
	}{{"rush", o.Rush, o.Rush != nil}, {"settle", o.Settle, o.Settle != nil}} {
		if ph.ok {
			fmt.Fprintf(w, "\nload, %s phase:\n", ph.name)
			ph.r.Summary(w)
		}
	}
	if o.Rush != nil {
		fmt.Fprintf(w, "\nclient check (%d requests, %d wins, %d unanswered): ", o.Tally.Requests, o.Tally.Successes, o.Tally.Unanswered)
		if o.ClientCheck == nil {
			fmt.Fprintln(w, "ok")
		} else {
			fmt.Fprintf(w, "FAILED\n%v\n", o.ClientCheck)
		}
	}
	if o.Reconcile != nil {
		fmt.Fprintln(w)
		o.Reconcile.WriteText(w)
	}
	if o.OK() {
		fmt.Fprintln(w, "\nPASS: no oversell, no undersell, every success real, the books balance")
		return
	}
	fmt.Fprintln(w, "\nFAIL:")
	for _, f := range o.Failures {
		fmt.Fprintln(w, "  -", f)
	}
}

func round(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}
