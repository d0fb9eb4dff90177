package cluster

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flashsale/flashsale/internal/testenv"
)

// produce writes n messages "prefix-i" to topic through kafka-go and waits
// for every acknowledgement.
func produce(t *testing.T, addr, topic, prefix string, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond, Balancer: &kafka.Hash{}, AllowAutoTopicCreation: true}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(strconv.Itoa(i % 7)), Value: []byte(fmt.Sprintf("%s-%d", prefix, i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce to %s: %v", addr, err)
	}
}

// consumeAll reads every message of every partition of topic, sorted.
func consumeAll(t *testing.T, addr, topic string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range parts {
		lc, err := kafka.DialLeader(ctx, "tcp", addr, topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := lc.ReadLastOffset()
		lc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: p.ID, MaxWait: 50 * time.Millisecond})
		for off := int64(0); off < last; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("partition %d offset %d: %v", p.ID, off, err)
			}
			out = append(out, string(m.Value))
		}
		r.Close()
	}
	slices.Sort(out)
	return out
}

func TestBrokerRoundTripAndRestartKeepsLog(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	cfg := BrokerConfig{Addr: addr, Topics: []string{DefaultTopic}, Partitions: 3, DataDir: t.TempDir()}
	b, err := StartBroker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b.Addr() != addr {
		t.Fatalf("listening on %s, want %s", b.Addr(), addr)
	}
	produce(t, addr, DefaultTopic, "a", 100)
	if got := consumeAll(t, addr, DefaultTopic); len(got) != 100 {
		t.Fatalf("read %d messages before restart, want 100", len(got))
	}
	b.Close()

	// Invariant: every acknowledged message is still there after a clean restart.
	b, err = StartBroker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	produce(t, addr, DefaultTopic, "b", 10)
	got := consumeAll(t, addr, DefaultTopic)
	if len(got) != 110 || !slices.Contains(got, "a-0") || !slices.Contains(got, "a-99") || !slices.Contains(got, "b-9") {
		t.Fatalf("after restart read %d messages, want 110 (a-0..a-99, b-0..b-9)", len(got))
	}
}

func TestBrokerHonoursHostAndNeedsPort(t *testing.T) {
	if _, err := StartBroker(BrokerConfig{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("port 0 accepted")
	}
	port := testenv.FreePort(t)
	b, err := StartBroker(BrokerConfig{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	produce(t, b.Addr(), "auto.created", "x", 3)
	if got := consumeAll(t, b.Addr(), "auto.created"); len(got) != 3 {
		t.Fatalf("auto-created topic: read %d, want 3", len(got))
	}
}
