-- One row per order: order_id is unique, so of concurrent charges for one
-- order exactly one inserts its row and goes on to call the provider.
CREATE TABLE payments (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL,
    status       TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    currency     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    card_token   TEXT NOT NULL,
    charge_id    TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);

-- The resolver's scan: payments still PENDING or UNKNOWN.
CREATE INDEX payments_unsettled ON payments (status, updated_at);
