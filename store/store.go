// Package store is the order store of record: PostgreSQL tables of sales,
// orders, envelopes, envelope opens and wallet entries, written by a Kafka
// consumer group from the events the nodes publish, and read by the order
// history API and reconcile. Redis keeps only what is live; once a sale is
// finished and every one of its orders is here, the Archiver removes its
// per-order records from Redis.
//
// Writes are idempotent (primary keys, forward-only order status), so a
// redelivered event applies nothing twice, and offsets are committed only
// after the database transaction commits, so nothing is skipped.
package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a pool of connections to the order store. It is safe for
// concurrent use; Close releases it.
type Store struct {
	Pool    *pgxpool.Pool
	timeout time.Duration
}

// Config configures Open.
type Config struct {
	DSN      string        // postgres://user@host:port/db?sslmode=...
	MaxConns int32         // pool size (the consumer needs one; readers share the rest)
	Timeout  time.Duration // bound of one statement or transaction
}

// Open connects to the database and applies the embedded migrations not yet
// applied. A database that is down makes Open fail; callers that must not
// wait for it (a node) retry in the background.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// The DSN may hold a password: never echo it.
		return nil, fmt.Errorf("store: bad dsn: %w", errNoEcho)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pc.ConnConfig.ConnectTimeout = max(cfg.Timeout, time.Second)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	s := &Store{Pool: pool, timeout: max(cfg.Timeout, time.Second)}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

var errNoEcho = fmt.Errorf("cannot parse it (not shown, it may hold a password)")

// Close releases the pool.
func (s *Store) Close() { s.Pool.Close() }

// migrate applies every migrations/NNN_*.sql whose number is not in
// schema_migrations, each in its own transaction, holding an advisory lock
// so nodes starting together do not race.
func (s *Store) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("store: list migrations: %w", err)
	}
	sort.Strings(files)
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer conn.Release()
	const lock = 0x666c617368 // "flash"
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lock); err != nil {
		return fmt.Errorf("store: migration lock: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lock) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("store: schema_migrations: %w", err)
	}
	for _, f := range files {
		name := strings.TrimPrefix(f, "migrations/")
		num, _, _ := strings.Cut(name, "_")
		version, err := strconv.Atoi(num)
		if err != nil {
			return fmt.Errorf("store: migration %s: name must start with a number", name)
		}
		var applied bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", version).Scan(&applied); err != nil {
			return fmt.Errorf("store: migration %s: %w", name, err)
		}
		if applied {
			continue
		}
		sql, err := migrations.ReadFile(f)
		if err != nil {
			return fmt.Errorf("store: read %s: %w", name, err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
			return err
		})
		if err != nil {
			return fmt.Errorf("store: apply migration %s: %w", name, err)
		}
	}
	return nil
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.Pool.Ping(ctx)
}
