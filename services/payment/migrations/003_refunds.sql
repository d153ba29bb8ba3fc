-- At most one refund per payment, always of its whole amount: payment_id
-- and order_id are unique, so of concurrent refunds for one order exactly
-- one inserts its row and goes on to call the provider. The payment
-- itself keeps its status (SUCCEEDED: the charge's outcome).
CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY,
    payment_id         TEXT NOT NULL UNIQUE REFERENCES payments (id),
    order_id           TEXT NOT NULL UNIQUE,
    user_id            TEXT NOT NULL,
    status             TEXT NOT NULL,
    amount_cents       BIGINT NOT NULL CHECK (amount_cents > 0),
    currency           TEXT NOT NULL,
    provider_refund_id TEXT NOT NULL,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);

-- The resolver's scan: refunds still PENDING or UNKNOWN.
CREATE INDEX refunds_unsettled ON refunds (status, updated_at);
