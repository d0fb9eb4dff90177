package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestKafkaGoAgainstKfake proves the broker speaks the protocol kafka-go
// needs: acked produce, consumer-group fetch and commit, and resume after a
// reader restart from the committed offset.
func TestKafkaGoAgainstKfake(t *testing.T) {
	k := StartKafka(t, "probe")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(k.Addr), Topic: "probe", RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond, Balancer: &kafka.Hash{}}
	defer w.Close()
	var msgs []kafka.Message
	for i := 0; i < 100; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprint(i))})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write: %v", err)
	}
	read := func(n int) {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{k.Addr}, Topic: "probe", GroupID: "g",
			MaxWait: 50 * time.Millisecond, StartOffset: kafka.FirstOffset})
		defer r.Close()
		for i := 0; i < n; i++ {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("fetch %d: %v", i, err)
			}
			if err := r.CommitMessages(ctx, m); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
	}
	start := time.Now()
	read(60)
	t.Logf("first 60 in %v", time.Since(start))
	// The second reader of the same group must see only what was not committed.
	// Partition order means "the rest" is 40 messages in total.
	start = time.Now()
	read(40)
	t.Logf("next 40 in %v", time.Since(start))
}
