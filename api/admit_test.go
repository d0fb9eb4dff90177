package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/flashsale/flashsale/admit"
	"github.com/flashsale/flashsale/api"
)

// Requests over the slots wait in line and are refused with 503 overloaded
// and Retry-After once they have waited MaxWait, even while no slot frees.
func TestAdmissionLineRefusesAfterMaxWait(t *testing.T) {
	srv := api.New(api.Config{NodeID: "n1", MaxBodyBytes: 1 << 10,
		Admission: admit.Config{Slots: 1, MaxWaiting: 100, MaxWait: 200 * time.Millisecond}}, api.Deps{})
	defer srv.Close()
	if !srv.Admission().Acquire(context.Background()) {
		t.Fatal("free slot refused")
	}
	defer srv.Admission().Release()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	type res struct {
		status int
		retry  string
		took   time.Duration
	}
	out := make(chan res, 20)
	for i := 0; i < 20; i++ {
		go func() {
			start := time.Now()
			resp, err := http.Get(hs.URL + "/v1/sales/s/buy?user_id=u")
			if err != nil {
				t.Error(err)
				out <- res{}
				return
			}
			resp.Body.Close()
			out <- res{resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start)}
		}()
	}
	for i := 0; i < 20; i++ {
		r := <-out
		if r.status != http.StatusServiceUnavailable || r.retry != "1" {
			t.Fatalf("status %d Retry-After %q", r.status, r.retry)
		}
		if r.took < 200*time.Millisecond {
			t.Fatalf("refused after %v: it should have waited in line for MaxWait", r.took)
		}
		t.Logf("refused after %v", r.took)
	}
}
