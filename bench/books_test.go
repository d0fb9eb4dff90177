package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/flashsale/flashsale/client"
)

// Invariant: a read of the books is sent again while the node answers 503
// (it did nothing), at most readTries times, and any other answer — a 404
// here — is returned at once.
func TestBookReadsRetryOnlyA503(t *testing.T) {
	var calls atomic.Int32
	busy := int32(2) // the first busy answers are 503 overloaded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/sales/gone":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":{"code":"not_found","message":"no such sale"}}`))
		case r.URL.Path == "/v1/sales/busy" || n <= atomic.LoadInt32(&busy):
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"overloaded","message":"node is at capacity; retry shortly"}}`))
		default:
			w.Write([]byte(`{"id":"s","stock":10,"remaining":7}`))
		}
	}))
	defer srv.Close()
	api, ctx := NewAPI(srv.URL, "admin"), context.Background()

	v, err := api.Sale(ctx, "s")
	if err != nil || v.Remaining != 7 || calls.Load() != 3 {
		t.Fatalf("after two 503s: sale %+v, err %v, %d calls; want remaining 7 in 3 calls", v, err, calls.Load())
	}

	calls.Store(0)
	if _, err := api.Sale(ctx, "gone"); !client.IsNotFound(err) || calls.Load() != 1 {
		t.Fatalf("404: err %v after %d calls; want not_found after 1", err, calls.Load())
	}

	calls.Store(0)
	if _, err := api.Sale(ctx, "busy"); !client.IsCode(err, "overloaded") || calls.Load() != readTries {
		t.Fatalf("always busy: err %v after %d calls; want overloaded after %d", err, calls.Load(), readTries)
	}
}
