-- Recovery that is safe with any number of order instances (issue 12).
-- A run of an order's checkout holds a claim on it, a lease taken by
-- compare-and-set: only the holder moves the order's step or finishes it.
-- A run that could not finish records an attempt and when to try again;
-- after the attempt budget the order is parked for an operator.
ALTER TABLE orders ADD COLUMN claim_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN claim_until TIMESTAMP;
ALTER TABLE orders ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN next_attempt_at TIMESTAMP;
ALTER TABLE orders ADD COLUMN parked_at TIMESTAMP;
