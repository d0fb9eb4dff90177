package limit

import (
	"strconv"
	"sync"
	"testing"
)

func TestBurstThenRefuse(t *testing.T) {
	k := New(1, 3, 100)
	for i := 0; i < 3; i++ {
		if !k.Allow("a") {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if k.Allow("a") {
		t.Fatal("fourth request within the second allowed")
	}
	if !k.Allow("b") {
		t.Fatal("another key shares a's bucket")
	}
	if k.RetryAfter[0] != "1" {
		t.Fatalf("Retry-After %v", k.RetryAfter)
	}
}

func TestOffAllowsAll(t *testing.T) {
	var k *Keyed = New(0, 1, 1)
	if k != nil || !k.Allow("x") || k.Exhausted("x") {
		t.Fatal("a zero rate must turn the limit off")
	}
}

// A million distinct keys (an attacker rotating ids) never hold more than
// maxKeys buckets.
func TestBoundedMemory(t *testing.T) {
	k := New(10, 1, 6400)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50_000; i++ {
				k.Allow(strconv.Itoa(g) + ":" + strconv.Itoa(i))
			}
		}()
	}
	wg.Wait()
	if n := k.Len(); n > 6400 {
		t.Fatalf("%d keys held, cap 6400", n)
	}
}

func TestExhausted(t *testing.T) {
	k := New(0.001, 2, 10)
	if k.Exhausted("ip") {
		t.Fatal("fresh bucket exhausted")
	}
	k.Allow("ip")
	k.Allow("ip")
	if !k.Exhausted("ip") {
		t.Fatal("empty bucket not exhausted")
	}
	if k.RetryAfter[0] != "1000" {
		t.Fatalf("Retry-After %v", k.RetryAfter)
	}
}
