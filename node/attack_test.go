package node_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/node"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
)

// snapshot is every Redis key an attack could touch — the sale's books,
// orders, users and payments, the wallets of everyone involved, the
// victim's envelope and the shake campaign — DUMPed, so "nothing changed"
// is checked byte for byte.
func snapshot(t *testing.T, rdb *redis.Client, sale, envelope string, users ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	for _, pattern := range []string{"fs:{sale:" + sale + "}:*", "fs:{env:" + envelope + "}:*", "fs:{shake:*"} {
		ks, err := rdb.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, ks...)
	}
	for _, u := range users {
		w := lua.WalletKeysFor(u)
		keys = append(keys, w.Meta, w.Entries, w.Recent)
	}
	sort.Strings(keys)
	out := map[string]string{}
	for _, k := range keys {
		if strings.Contains(k, ":batch:") {
			continue // a buy batch's record: only written by a buy that reached Redis
		}
		v, err := rdb.Dump(ctx, k).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

func sameSnapshot(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range after {
		if before[k] != v {
			t.Errorf("key %s changed", k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("key %s disappeared", k)
		}
	}
}

// hs signs claims with alg and key: forged and odd tokens.
func hs(t *testing.T, m jwt.SigningMethod, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// signCallback is a Flashsale-Signature for body at t with secret.
func signCallback(secret string, t time.Time, body string) string {
	return auth.SignPayload([]byte(secret), t, []byte(body))
}

// Every attack of issue 11, through a real node on a real Redis: each is
// refused with the right status, and byte for byte nothing changes — no
// book, order, payment, wallet, envelope or campaign.
func TestAttacksChangeNothing(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	rdb := e.Redis.Client(t)
	admin := bearer(e2e.AdminToken)
	e2e.CreateSale(t, n.URL, `{"id":"att","stock":10,"price_cents":500,"per_user_limit":1}`)
	alice, bob, mallory := e2e.As(t, "alice"), e2e.As(t, "bob"), e2e.As(t, "mallory")

	// The victims' state: alice holds a pending order, bob a paid one;
	// alice has money and a live envelope; a shake campaign runs.
	buy := e2e.Do(t, "POST", n.URL+"/v1/sales/att/buy", "", alice...)
	if buy.Status != 201 {
		t.Fatalf("alice buys: %d %s", buy.Status, buy.Raw)
	}
	order := buy.Body["order_id"].(string) // "att.<seq>.<tag>"
	rec := e2e.RecordID(order)             // "att.<seq>"
	tag := order[len(rec)+1:]
	seq := rec[len("att."):]
	bobOrder := e2e.Do(t, "POST", n.URL+"/v1/sales/att/buy", "", bob...).Body["order_id"].(string)
	if p := e2e.Pay(t, n.URL, bobOrder, "pay-bob", 500); p.Status != 200 || p.Body["status"] != "paid" {
		t.Fatalf("bob pays: %d %s", p.Status, p.Raw)
	}
	e2e.Credit(t, n.URL, "alice", 300000, "alice-salary")
	env := e2e.Do(t, "POST", n.URL+"/v1/envelopes", `{"total_cents":1000,"count":5}`, alice...)
	if env.Status != 201 {
		t.Fatalf("alice sends: %d %s", env.Status, env.Raw)
	}
	envID := env.Body["envelope_id"].(string)
	if r := e2e.Do(t, "POST", n.URL+"/v1/shakes", `{"id":"rain","total_envelopes":5,"budget_cents":500,"rate_per_sec":1,"max_wins_per_user":1,"starts_at":"`+
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`, admin...); r.Status != 201 {
		t.Fatalf("create shake: %d %s", r.Status, r.Raw)
	}

	now := time.Now()
	otherKey := []byte("not-the-cluster-secret-0123456789abcdef")
	exp := now.Add(time.Hour).Unix()
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"alice","exp":%d}`, exp))) + "."
	cb := func(o, pay string, cents int) string {
		return fmt.Sprintf(`{"order_id":%q,"payment_id":%q,"amount_cents":%d}`, o, pay, cents)
	}
	good := cb(order, "pay-alice", 500)
	mac := hmac.New(sha256.New, []byte("wrong-payment-secret"))
	fmt.Fprintf(mac, "%d.%s", now.Unix(), good)
	forgedSig := fmt.Sprintf("t=%d,v1=%s", now.Unix(), hex.EncodeToString(mac.Sum(nil)))

	cases := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		code                     string
	}{
		// Walking sequential ids, and their aliases, to cancel others' orders.
		{"cancel without a token", "POST", "/v1/orders/" + order + "/cancel", ``, nil, 401, "unauthorized"},
		{"cancel another's order", "POST", "/v1/orders/" + order + "/cancel", ``, mallory, 404, "not_found"},
		{"cancel by sequence number", "POST", "/v1/orders/" + rec + "/cancel", ``, mallory, 404, "not_found"},
		{"cancel own by sequence number", "POST", "/v1/orders/" + rec + "/cancel", ``, alice, 404, "not_found"},
		{"cancel a zero-padded alias", "POST", "/v1/orders/att.0" + seq + "." + tag + "/cancel", ``, alice, 404, "not_found"},
		{"cancel a plus-sign alias", "POST", "/v1/orders/att.+" + seq + "." + tag + "/cancel", ``, alice, 404, "not_found"},
		{"cancel with an upper-case tag", "POST", "/v1/orders/" + rec + "." + strings.ToUpper(tag) + "/cancel", ``, alice, 404, "not_found"},
		{"cancel with a guessed tag", "POST", "/v1/orders/" + rec + ".0000000000000000/cancel", ``, alice, 404, "not_found"},
		{"cancel the next order", "POST", "/v1/orders/att.99." + tag + "/cancel", ``, mallory, 404, "not_found"},
		// Reading what is not yours.
		{"read another's order", "GET", "/v1/orders/" + order, ``, mallory, 404, "not_found"},
		{"read an order without a token", "GET", "/v1/orders/" + order, ``, nil, 401, "unauthorized"},
		{"read another's wallet", "GET", "/v1/users/alice/wallet", ``, mallory, 403, "forbidden"},
		{"read a wallet without a token", "GET", "/v1/users/alice/wallet", ``, nil, 401, "unauthorized"},
		// Marking orders paid without paying.
		{"buyer-facing pay is gone", "POST", "/v1/orders/" + order + "/pay", ``, alice, 404, "not_found"},
		{"callback without a signature", "POST", "/v1/payments/callback", good, nil, 401, "unauthorized"},
		{"callback signed with another secret", "POST", "/v1/payments/callback", good, []string{auth.SignatureHeader, forgedSig}, 401, "unauthorized"},
		{"callback signature of another body", "POST", "/v1/payments/callback", cb(order, "pay-alice", 5000),
			[]string{auth.SignatureHeader, signCallback(e2e.PaymentSecret, now, good)}, 401, "unauthorized"},
		{"callback replayed 6 minutes later", "POST", "/v1/payments/callback", good,
			[]string{auth.SignatureHeader, signCallback(e2e.PaymentSecret, now.Add(-6*time.Minute), good)}, 401, "unauthorized"},
		{"callback from 6 minutes ahead", "POST", "/v1/payments/callback", good,
			[]string{auth.SignatureHeader, signCallback(e2e.PaymentSecret, now.Add(6*time.Minute), good)}, 401, "unauthorized"},
		{"callback for the wrong amount", "POST", "/v1/payments/callback", cb(order, "pay-alice", 1),
			[]string{auth.SignatureHeader, signCallback(e2e.PaymentSecret, now, cb(order, "pay-alice", 1))}, 400, "invalid"},
		{"callback for an untagged order id", "POST", "/v1/payments/callback", cb(rec, "pay-alice", 500),
			[]string{auth.SignatureHeader, signCallback(e2e.PaymentSecret, now, cb(rec, "pay-alice", 500))}, 404, "not_found"},
		{"callback with a duplicate key", "POST", "/v1/payments/callback", good[:len(good)-1] + `,"amount_cents":500}`,
			[]string{auth.SignatureHeader, signCallback(e2e.PaymentSecret, now, good[:len(good)-1]+`,"amount_cents":500}`)}, 400, "invalid"},
		{"second payment of a paid order", "POST", "/v1/payments/callback", cb(bobOrder, "pay-bob-again", 500),
			[]string{auth.SignatureHeader, signCallback(e2e.PaymentSecret, now, cb(bobOrder, "pay-bob-again", 500))}, 409, "conflict"},
		// Buying as someone else; forged and odd tokens.
		{"buy naming another user", "POST", "/v1/sales/att/buy", `{"user_id":"alice"}`, mallory, 403, "forbidden"},
		{"buy naming another user in the query", "GET", "/v1/sales/att/buy?user_id=alice", ``, mallory, 403, "forbidden"},
		{"buy with a re-cased duplicate name", "POST", "/v1/sales/att/buy", `{"user_id":"mallory","User_Id":"bob"}`, mallory, 400, "invalid"},
		{"buy with a duplicate key", "POST", "/v1/sales/att/buy", `{"user_id":"mallory","user_id":"mallory"}`, mallory, 400, "invalid"},
		{"buy without a token", "POST", "/v1/sales/att/buy", `{"user_id":"carol"}`, nil, 401, "unauthorized"},
		{"buy with alg none", "POST", "/v1/sales/att/buy", ``, bearer(none), 401, "unauthorized"},
		{"buy with HS512", "POST", "/v1/sales/att/buy", ``, bearer(hs(t, jwt.SigningMethodHS512, []byte(e2e.AuthSecret), jwt.MapClaims{"sub": "carol", "exp": exp})), 401, "unauthorized"},
		{"buy with another key", "POST", "/v1/sales/att/buy", ``, bearer(hs(t, jwt.SigningMethodHS256, otherKey, jwt.MapClaims{"sub": "carol", "exp": exp})), 401, "unauthorized"},
		{"buy with an expired token", "POST", "/v1/sales/att/buy", ``, bearer(hs(t, jwt.SigningMethodHS256, []byte(e2e.AuthSecret), jwt.MapClaims{"sub": "carol", "exp": now.Add(-time.Minute).Unix()})), 401, "unauthorized"},
		{"buy with no exp", "POST", "/v1/sales/att/buy", ``, bearer(hs(t, jwt.SigningMethodHS256, []byte(e2e.AuthSecret), jwt.MapClaims{"sub": "carol"})), 401, "unauthorized"},
		{"buy with the admin token", "POST", "/v1/sales/att/buy", ``, admin, 401, "unauthorized"},
		{"buy as a second-time buyer", "POST", "/v1/sales/att/buy", ``, alice, 409, "limit_reached"},
		// Sales whose JSON means two things.
		{"sale with Stock and stock", "POST", "/v1/sales", `{"id":"dup","stock":5,"Stock":7}`, admin, 400, "invalid"},
		{"sale with stock twice", "POST", "/v1/sales", `{"id":"dup","stock":5,"stock":7}`, admin, 400, "invalid"},
		{"sale with a control character", "POST", "/v1/sales", `{"id":"dup","stock":5,"name":"a\u0000b"}`, admin, 400, "invalid"},
		{"sale ending in the past", "POST", "/v1/sales", `{"id":"dup","stock":5,"ends_at":"2020-01-01T00:00:00Z"}`, admin, 400, "invalid"},
		{"sale starting before 1970", "POST", "/v1/sales", `{"id":"dup","stock":5,"starts_at":"1960-01-01T00:00:00Z"}`, admin, 400, "invalid"},
		{"sale starting in 5 years", "POST", "/v1/sales", `{"id":"dup","stock":5,"starts_at":"` + now.AddDate(5, 0, 0).UTC().Format(time.RFC3339) + `"}`, admin, 400, "invalid"},
		// Money from nothing.
		{"send from another's wallet", "POST", "/v1/envelopes", `{"sender_id":"alice","total_cents":200000,"count":10}`, mallory, 403, "forbidden"},
		{"send from an empty wallet", "POST", "/v1/envelopes", `{"total_cents":200000,"count":10}`, mallory, 409, "insufficient_funds"},
		{"credit without the admin token", "POST", "/v1/users/mallory/wallet/credit", `{"cents":100000,"reference":"gift"}`, mallory, 401, "unauthorized"},
		{"credit a negative amount", "POST", "/v1/users/alice/wallet/credit", `{"cents":-100000,"reference":"fine"}`, admin, 400, "invalid"},
		{"credit a reused reference", "POST", "/v1/users/alice/wallet/credit", `{"cents":900000,"reference":"alice-salary"}`, admin, 409, "conflict"},
		{"open as another user", "POST", "/v1/envelopes/" + envID + "/open", `{"user_id":"alice"}`, mallory, 403, "forbidden"},
		// Rotating ids on a shake.
		{"shake naming another user", "POST", "/v1/shakes/rain/shake", `{"user_id":"bob"}`, mallory, 403, "forbidden"},
		{"shake with a forged token", "POST", "/v1/shakes/rain/shake", ``, bearer(hs(t, jwt.SigningMethodHS256, otherKey, jwt.MapClaims{"sub": "sybil1", "exp": exp})), 401, "unauthorized"},
		// Internals on the public port.
		{"metrics on the public port", "GET", "/metrics", ``, nil, 404, "not_found"},
		{"pprof on the public port", "GET", "/debug/pprof/", ``, nil, 404, "not_found"},
	}
	users := []string{"alice", "bob", "mallory", "carol"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, rdb, "att", envID, users...)
			r := e2e.Do(t, tc.method, n.URL+tc.path, tc.body, tc.hdr...)
			if r.Status != tc.status || r.Code() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
			}
			if tc.status == 401 && strings.HasPrefix(tc.path, "/v1/") && tc.path != "/v1/sales" &&
				!strings.Contains(tc.path, "/payments/") && !strings.Contains(tc.path, "/credit") && r.WWWAuthenticate == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			sameSnapshot(t, before, snapshot(t, rdb, "att", envID, users...))
		})
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/sales/dup", ""); r.Status != 404 {
		t.Fatalf("a refused sale exists: %d", r.Status)
	}

	// What must work still works, once: the provider's callback pays
	// alice's order, its retry answers the same and counts once, and the
	// double charge above was counted.
	sig := signCallback(e2e.PaymentSecret, time.Now(), good)
	first := e2e.Do(t, "POST", n.URL+"/v1/payments/callback", good, auth.SignatureHeader, sig)
	before := snapshot(t, rdb, "att", envID, users...)
	again := e2e.Do(t, "POST", n.URL+"/v1/payments/callback", good, auth.SignatureHeader, sig)
	if first.Status != 200 || first.Body["status"] != "paid" || again.Raw != first.Raw {
		t.Fatalf("pay: %d %s; retry: %d %s", first.Status, first.Raw, again.Status, again.Raw)
	}
	sameSnapshot(t, before, snapshot(t, rdb, "att", envID, users...))
	if b := e2e.GetBooks(t, n.URL, "att"); b.Paid != 2 || b.Pending != 0 || b.Remaining != 8 {
		t.Fatalf("books %+v, want 2 paid", b)
	}
	if g := e2e.Do(t, "GET", n.URL+"/v1/orders/"+order, "", alice...); g.Status != 200 || g.Body["order_id"] != order {
		t.Fatalf("alice reads her order: %d %s", g.Status, g.Raw)
	}
	metrics := e2e.Do(t, "GET", n.AdminURL+"/metrics", "").Raw
	if !strings.Contains(metrics, "flashsale_payments_double_charged_total 1") {
		t.Fatalf("double charge not counted on the admin listener's /metrics")
	}
	if w := walletOf(t, n.URL, "alice"); w != 300000-1000 {
		t.Fatalf("alice's wallet %d", w)
	}
	// The public /readyz says ready and nothing else; the admin one says which.
	if r := e2e.Do(t, "GET", n.URL+"/readyz", ""); r.Status != 200 || r.Raw != `{"status":"ready"}` {
		t.Fatalf("public readyz: %d %s", r.Status, r.Raw)
	}
	if r := e2e.Do(t, "GET", n.AdminURL+"/readyz", ""); r.Status != 200 || r.Body["redis"] != "ok" {
		t.Fatalf("admin readyz: %d %s", r.Status, r.Raw)
	}
}

// A pending order whose deadline passed is 410 expired to the provider,
// and nothing is paid.
func TestCallbackForAnExpiredOrder(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"late","stock":1,"price_cents":100,"pay_timeout":"1s"}`)
	o := e2e.Do(t, "POST", n.URL+"/v1/sales/late/buy", "", e2e.As(t, "slow")...).Body["order_id"].(string)
	time.Sleep(1100 * time.Millisecond)
	if p := e2e.Pay(t, n.URL, o, "pay-slow", 100); p.Status != 410 || p.Code() != "expired" {
		t.Fatalf("pay after the deadline: %d %s", p.Status, p.Raw)
	}
	if b := e2e.GetBooks(t, n.URL, "late"); b.Paid != 0 {
		t.Fatalf("books %+v: an expired order was paid", b)
	}
}

// Abuse limits: a person past their burst, and a host past its own, are
// 429 rate_limited with Retry-After, changing nothing; behind a trusted
// proxy the client's own X-Forwarded-For address is the one limited, and
// from anyone else the header is ignored.
func TestRateLimits(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) {
		c.Rate.PerUser, c.Rate.PerUserBurst = 0.01, 3
		c.Rate.PerIP, c.Rate.PerIPBurst = 0.01, 8
		c.Rate.CallbackFailuresPerIP, c.Rate.CallbackFailuresBurst = 0.01, 2
	})
	rdb := e.Redis.Client(t)
	e2e.CreateSale(t, n.URL, `{"id":"rl","stock":100,"per_user_limit":100}`)
	greedy := e2e.As(t, "greedy")
	for i := 0; i < 3; i++ {
		if r := e2e.Do(t, "POST", n.URL+"/v1/sales/rl/buy", "", greedy...); r.Status != 201 {
			t.Fatalf("buy %d within the burst: %d %s", i, r.Status, r.Raw)
		}
	}
	before := snapshot(t, rdb, "rl", "none", "greedy")
	r := e2e.Do(t, "POST", n.URL+"/v1/sales/rl/buy", "", greedy...)
	if r.Status != 429 || r.Code() != "rate_limited" || r.RetryAfter != "100" {
		t.Fatalf("past the burst: %d %s Retry-After %q", r.Status, r.Raw, r.RetryAfter)
	}
	sameSnapshot(t, before, snapshot(t, rdb, "rl", "none", "greedy"))
	// The IP bucket (8) has 4 left: other people from this host get 4 more.
	ok := 0
	for i := 0; i < 6; i++ {
		if e2e.Do(t, "POST", n.URL+"/v1/sales/rl/buy", "", e2e.As(t, fmt.Sprintf("p%d", i))...).Status == 201 {
			ok++
		}
	}
	if ok != 4 {
		t.Fatalf("%d buys from this host past 4 others, want the IP burst of 8 in all", ok)
	}
	// An X-Forwarded-For from an untrusted peer changes nothing.
	if r := e2e.Do(t, "POST", n.URL+"/v1/sales/rl/buy", "", append(e2e.As(t, "spoof"), "X-Forwarded-For", "203.0.113.9")...); r.Status != 429 {
		t.Fatalf("spoofed X-Forwarded-For escaped the IP limit: %d %s", r.Status, r.Raw)
	}
	// Failed callbacks from one host: two, then 429 even for a good one.
	for i := 0; i < 2; i++ {
		if r := e2e.Do(t, "POST", n.URL+"/v1/payments/callback", `{}`); r.Status != 401 {
			t.Fatalf("unsigned callback: %d", r.Status)
		}
	}
	if r := e2e.Pay(t, n.URL, "rl.1.0000000000000000", "p", 0); r.Status != 429 || r.RetryAfter == "" {
		t.Fatalf("callback past the failure burst: %d %s", r.Status, r.Raw)
	}
}

// Behind trusted proxies the limit follows the client's address.
func TestTrustedProxyClientIP(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) {
		c.Rate.PerIP, c.Rate.PerIPBurst = 0.01, 2
		c.HTTP.TrustedProxies = []string{"127.0.0.0/8"}
	})
	e2e.CreateSale(t, n.URL, `{"id":"px","stock":100,"per_user_limit":100}`)
	from := func(client, user string) int {
		return e2e.Do(t, "POST", n.URL+"/v1/sales/px/buy", "",
			append(e2e.As(t, user), "X-Forwarded-For", "198.51.100.1, "+client)...).Status
	}
	if a, b, c := from("203.0.113.1", "a"), from("203.0.113.1", "b"), from("203.0.113.1", "c"); a != 201 || b != 201 || c != 429 {
		t.Fatalf("one client behind the proxy: %d %d %d, want 201 201 429", a, b, c)
	}
	if d := from("203.0.113.2", "d"); d != 201 {
		t.Fatalf("another client behind the same proxy: %d, want its own bucket", d)
	}
}

// The node never runs out of descriptors: at http.max_conns, holding many
// more idle keep-alives than the cap, a new client still gets its answer
// (the oldest idle ones are closed for it). A cap of 200 here stands for
// the production cap below the fd limit, with 20,000+ idle clients.
func TestConnectionCapAdmitsNewClients(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) { c.HTTP.MaxConns = 200 })
	addr := strings.TrimPrefix(n.URL, "http://")
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	req := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	buf := make([]byte, 512)
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		idle = append(idle, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("read %d: %v", i, err) // each answered in turn, then left idle
		}
	}
	// A brand-new client, with 300 idle keep-alives held against a cap of 200.
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get(n.URL + "/healthz")
	if err != nil {
		t.Fatalf("new client not answered: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("new client: %s", resp.Status)
	}
	metrics := e2e.Do(t, "GET", n.AdminURL+"/metrics", "").Raw
	if !strings.Contains(metrics, "flashsale_http_connections_evicted_total") {
		t.Fatal("no eviction metric")
	}
	var open float64
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "flashsale_http_connections ") {
			fmt.Sscan(strings.TrimPrefix(line, "flashsale_http_connections "), &open)
		}
	}
	if open > 200 {
		t.Fatalf("%v connections open, cap 200", open)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// The defaults keep idle connections short and the limits on.
func TestAbuseDefaults(t *testing.T) {
	c, err := configs.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.IdleTimeout > 30*time.Second || c.Rate.PerUser <= 0 || c.Rate.PerIP <= 0 || c.HTTP.AdminAddr == "" ||
		!strings.HasPrefix(c.HTTP.AdminAddr, "127.0.0.1:") {
		t.Fatalf("defaults: idle %v, rates %v/%v, admin %q", c.HTTP.IdleTimeout, c.Rate.PerUser, c.Rate.PerIP, c.HTTP.AdminAddr)
	}
	c.Auth.Secret = "too-short"
	c.HTTP.Addr, c.HTTP.AdminAddr = "127.0.0.1:0", ""
	if n, err := node.Open(c, nil); err == nil {
		n.Run(canceled())
		t.Fatal("a node started with a 9-byte auth secret")
	}
}
