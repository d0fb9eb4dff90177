package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultTopic is the topic order events go to.
const DefaultTopic = "flashsale.orders"

// EnvelopeTopic is the red-envelope topic the launcher's broker creates too.
const EnvelopeTopic = "flashsale.envelopes"

// BrokerConfig configures the dev broker.
type BrokerConfig struct {
	// Addr is host:port to listen on; the port must be set (kfake advertises
	// it in metadata, so it cannot be chosen late).
	Addr string
	// Topics are created at start with Partitions partitions each. Other
	// topics are created on first use.
	Topics     []string
	Partitions int
	// DataDir, when set, keeps the log on disk so a restarted broker has
	// every message and committed offset it had when it stopped cleanly.
	DataDir string
	// SyncWrites fsyncs every batch, so even a SIGKILL loses nothing that
	// was acknowledged. Off by default: it costs throughput.
	SyncWrites bool
}

// Broker is a single-broker Kafka-protocol server (kfake) for development and
// tests: the real wire protocol on a real TCP port, without a JVM.
type Broker struct {
	c    *kfake.Cluster
	addr string
}

// StartBroker starts a broker for cfg and returns once it is listening.
func StartBroker(cfg BrokerConfig) (*Broker, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker addr %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 {
		return nil, fmt.Errorf("broker addr %q: need a fixed port", cfg.Addr)
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	opts := []kfake.Opt{
		kfake.Ports(port),
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
		// kfake always binds 127.0.0.1; honour the host asked for.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, portStr))
		}),
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
		if cfg.SyncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start broker on %s: %w", cfg.Addr, err)
	}
	return &Broker{c: c, addr: c.ListenAddrs()[0]}, nil
}

// Addr returns the address the broker listens on.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker; with a DataDir it first writes its state to disk.
func (b *Broker) Close() { b.c.Close() }

// BrokerCommand returns `flashsale broker`: the dev broker as a process, so
// the local cluster can stop, kill and restart it like a real one.
func BrokerCommand() *cobra.Command {
	cfg := BrokerConfig{}
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run a Kafka-protocol dev broker (kfake) on a TCP port",
		Long: `Run a single Kafka-protocol broker (kfake) for development and tests.

It speaks the real Kafka wire protocol, so nodes talk to it exactly as to
Apache Kafka. With --data-dir its log survives a restart. It stops cleanly
(exit 0) on SIGTERM or Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBroker(ctx, cfg, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", "127.0.0.1:9092", "host:port to listen on")
	f.StringSliceVar(&cfg.Topics, "topics", []string{DefaultTopic}, "topics to create at start")
	f.IntVar(&cfg.Partitions, "partitions", 3, "partitions per topic")
	f.StringVar(&cfg.DataDir, "data-dir", "", "keep the log in this directory across restarts")
	f.BoolVar(&cfg.SyncWrites, "sync", false, "fsync every batch (with --data-dir): nothing acknowledged is lost on SIGKILL")
	return cmd
}

func runBroker(ctx context.Context, cfg BrokerConfig, log *slog.Logger) error {
	if cfg.Addr == "" {
		return errors.New("--addr is required")
	}
	b, err := StartBroker(cfg)
	if err != nil {
		return err
	}
	log.Info("broker ready", "addr", b.Addr(), "topics", cfg.Topics, "partitions", cfg.Partitions, "data_dir", cfg.DataDir)
	<-ctx.Done()
	log.Info("broker stopping")
	b.Close()
	log.Info("broker stopped")
	return nil
}
