CREATE TABLE products (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    currency    TEXT NOT NULL,
    -- The CHECK is a second line of defence: stores only decrement with
    -- "AND stock >= ?", so stock never goes negative in the first place.
    stock       INTEGER NOT NULL CHECK (stock >= 0)
);

-- One row per order that ever reserved (or released) stock; order_id is
-- the idempotency key of reserve, commit and release. A RELEASED row
-- without items is a tombstone: the order was released before it reserved.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE reservation_items (
    order_id         TEXT NOT NULL REFERENCES reservations (order_id),
    product_id       TEXT NOT NULL REFERENCES products (id),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
