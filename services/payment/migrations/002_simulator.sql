-- The simulated card provider's own records (provider.go, Simulator). A
-- real provider keeps these on its side; the simulator keeps them here so
-- a payment restart changes no outcome: a charge or refund asked again
-- with the same idempotency key (the order id) returns what was recorded
-- and moves no money twice. Nothing but the Simulator reads them.
CREATE TABLE simulator_charges (
    order_id     TEXT PRIMARY KEY,
    charge_id    TEXT NOT NULL UNIQUE,
    outcome      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    card_token   TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL
);

CREATE TABLE simulator_refunds (
    order_id     TEXT PRIMARY KEY,
    refund_id    TEXT NOT NULL UNIQUE,
    charge_id    TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL
);
