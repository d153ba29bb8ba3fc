-- Events waiting to be published; sent_at is set once JetStream has them.
CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    envelope      TEXT NOT NULL,
    trace_headers TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    sent_at       TIMESTAMP
);

CREATE INDEX outbox_unsent ON outbox (sent_at, created_at);

-- Events a consumer has handled, so a redelivery is acknowledged, not redone.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
