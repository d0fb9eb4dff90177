package reconcile

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "Reconciliation of sale %q\n\n", r.Sale)
	b := r.Books
	fmt.Fprintf(w, "Books (Redis): stock %d | remaining %d | pending %d | paid %d | expired %d | cancelled %d | aborted %d\n",
		b.Stock, b.Remaining, b.Pending, b.Paid, b.Expired, b.Cancelled, b.Aborted)
	fmt.Fprintf(w, "Kafka: %d order.created events\n\n", r.Events)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "node\tlines\tok\tsold_out\tother\tstat.log")
	for _, n := range r.Nodes {
		var other []string
		keys := make([]string, 0, len(n.Results))
		for k := range n.Results {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k != "ok" && k != "sold_out" {
				other = append(other, fmt.Sprintf("%s=%d", k, n.Results[k]))
			}
		}
		note := ""
		if n.Killed {
			note = " (killed)"
		}
		if n.Truncated {
			note += " (last line cut)"
		}
		fmt.Fprintf(tw, "%s%s\t%d\t%d\t%d\t%s\t%s\n", n.Node, note, n.Lines, n.OK, n.SoldOut, strings.Join(other, " "), strings.Join(n.Files, ","))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, c := range r.Checks {
		mark := "PASS"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-24s %s\n", mark, c.Name, c.Detail)
		for _, s := range c.Sample {
			fmt.Fprintf(w, "        %s\n", s)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "NOTE  %-24s %d: %s\n", n.Name, n.Count, n.Detail)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "NOTE  %s\n", warn)
	}
	if r.OK {
		fmt.Fprintln(w, "\nRESULT: the books balance.")
	} else {
		fmt.Fprintln(w, "\nRESULT: the books DO NOT balance.")
	}
}
