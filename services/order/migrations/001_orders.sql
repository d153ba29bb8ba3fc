CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    total_cents     BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    payment_id      TEXT,
    cancel_reason   TEXT,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    UNIQUE (user_id, idempotency_key)
);

CREATE INDEX orders_by_user ON orders (user_id, created_at);

CREATE TABLE order_items (
    order_id         TEXT NOT NULL REFERENCES orders (id),
    line             INTEGER NOT NULL,
    product_id       TEXT NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, line)
);
