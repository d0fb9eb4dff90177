package reconcile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/flashsale/flashsale/lua"
)

// ClientAnswer is one buy answer a client saw: one line of a client log
// (JSON lines), the client's side of the books.
type ClientAnswer struct {
	Sale   string    `json:"sale"`
	User   string    `json:"user"`
	Status int       `json:"status"`          // HTTP status; 0: no answer (transport error, client timeout)
	Order  string    `json:"order,omitempty"` // the order id of a 201 (public "<sale>.<seq>.<tag>" or record "<sale>.<seq>")
	Sent   time.Time `json:"sent"`
	Got    time.Time `json:"got"`
}

// ReadClientLog reads a client log: one ClientAnswer per line.
func ReadClientLog(r io.Reader) ([]ClientAnswer, error) {
	var out []ClientAnswer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var a ClientAnswer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return nil, fmt.Errorf("client log line %d: %w", n, err)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read client log: %w", err)
	}
	return out, nil
}

// clientChecks adds the client view: every 201 a client saw is an order of
// that buyer that was not undone (live, paid, or ended after it was told);
// and a buyer told 5xx holds no order made between sending that request and
// ClientInDoubt after its answer (the documented in-doubt window: the
// node's last check before writing a "yes" and the bytes reaching the
// client). A request with no answer at all is unknown and only counted.
func clientChecks(in Input, orders map[string]orderRec, add func(string, bool, string, []string)) {
	told := map[string]bool{} // order ids clients were told of
	var bad []string
	successes, failures, unknown := 0, 0, 0
	failed := map[string][]ClientAnswer{}
	for _, a := range in.Client {
		if a.Sale != "" && a.Sale != in.Sale {
			continue
		}
		switch {
		case a.Status == 201:
			successes++
			a.Order = recordID(a.Order)
			told[a.Order] = true
			o, ok := orders[a.Order]
			switch {
			case !ok:
				bad = append(bad, a.Order+": 201 to "+a.User+", no such order")
			case o.rec.User != a.User:
				bad = append(bad, a.Order+": 201 to "+a.User+", order of "+o.rec.User)
			case o.rec.Status == lua.StatusAborted:
				bad = append(bad, a.Order+": 201 to "+a.User+", but undone (aborted)")
			case o.rec.DeadlineMs <= a.Got.UnixMilli():
				bad = append(bad, a.Order+": 201 to "+a.User+" after its pay deadline")
			}
		case a.Status == 0:
			unknown++
		case a.Status >= 500:
			failures++
			failed[a.User] = append(failed[a.User], a)
		}
	}
	sort.Strings(bad)
	add("client_successes_are_orders", len(bad) == 0,
		fmt.Sprintf("%d 201s seen by clients, %d not a payable order of theirs", successes, len(bad)), bad)

	var holding []string
	if len(failed) > 0 {
		for id, o := range orders {
			fs := failed[o.rec.User]
			if len(fs) == 0 || told[id] || o.rec.Status == lua.StatusAborted {
				continue
			}
			for _, a := range fs {
				if o.rec.CreatedMs >= a.Sent.UnixMilli() && o.rec.CreatedMs <= a.Got.Add(in.ClientInDoubt).UnixMilli() {
					holding = append(holding, fmt.Sprintf("%s: %s was told %d but holds it (status %c)", id, a.User, a.Status, o.rec.Status))
					break
				}
			}
		}
	}
	sort.Strings(holding)
	add("client_told_no_holds_nothing", len(holding) == 0,
		fmt.Sprintf("%d answers 5xx, %d with an order made for that request (in-doubt window %v); %d requests had no answer (unknown, not checked)",
			failures, len(holding), in.ClientInDoubt, unknown), holding)
}

// recordID is the record id ("<sale>.<seq>", as in Redis) of an order id a
// client was given: the public id carries a tag ("<sale>.<seq>.<tag>",
// issue 11) that reconcile cannot and need not verify; sale ids have no dot.
func recordID(id string) string {
	if strings.Count(id, ".") == 2 {
		return id[:strings.LastIndexByte(id, '.')]
	}
	return id
}
