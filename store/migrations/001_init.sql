-- 001_init.sql: the order store. Every table is written from Kafka events
-- (see store/apply.go) and is idempotent by its primary key: a redelivered
-- event changes nothing.

-- One row per sale: its settings when the store first saw it, and its final
-- books once it was archived out of Redis (archived_at set).
CREATE TABLE sales (
    id             text PRIMARY KEY,
    name           text,
    stock          bigint,
    price_cents    bigint,
    per_user_limit bigint,
    pay_timeout_ms bigint,
    starts_at      timestamptz,
    ends_at        timestamptz,
    archived_at    timestamptz,
    remaining      bigint,
    pending        bigint,
    paid           bigint,
    expired        bigint,
    cancelled      bigint,
    aborted        bigint
);

-- One row per order. status moves only forward: pending -> paid, cancelled,
-- expired or aborted; expired -> aborted (a lost reply resolved late).
-- id is compared bytewise (COLLATE "C") whatever the database's locale, so
-- the keyset pages' order is the one the API merges Redis's live orders in.
CREATE TABLE orders (
    id          text COLLATE "C" PRIMARY KEY,
    sale_id     text NOT NULL,
    order_no    bigint NOT NULL,
    user_id     text NOT NULL,
    status      text NOT NULL CHECK (status IN ('pending', 'paid', 'cancelled', 'expired', 'aborted')),
    price_cents bigint,
    created_at  timestamptz NOT NULL,
    deadline_at timestamptz NOT NULL,
    settled_at  timestamptz,
    node        text NOT NULL,
    payment_id  text
) WITH (fillfactor = 85);
-- GET /v1/users/me/orders: a buyer's orders, newest first (keyset pages).
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
-- The archiver's and reconcile's per-sale reads. status is in no index and
-- pages keep 15% free, so a transition (order.paid, ...) is a HOT update
-- that touches no index at all.
CREATE INDEX orders_by_sale ON orders (sale_id);

CREATE TABLE envelopes (
    id             text PRIMARY KEY,
    sender_id      text NOT NULL,
    total_cents    bigint NOT NULL,
    count          bigint NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    refunded_cents bigint,
    refunded_at    timestamptz
);

-- One open per user per envelope.
CREATE TABLE envelope_opens (
    envelope_id  text NOT NULL,
    user_id      text NOT NULL,
    seq          bigint NOT NULL,
    amount_cents bigint NOT NULL,
    node         text NOT NULL,
    opened_at    timestamptz NOT NULL,
    PRIMARY KEY (envelope_id, user_id)
);

-- The wallet ledger as the events tell it: the sender's debit, each
-- opener's credit, the sender's refund. entry_id is the wallet's own id
-- (send:env:ID, open:env:ID, refund:env:ID), so the rows match Redis's.
CREATE TABLE wallet_entries (
    user_id      text NOT NULL,
    entry_id     text NOT NULL,
    amount_cents bigint NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (user_id, entry_id)
);
