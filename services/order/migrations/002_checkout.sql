-- Checkout state: the card token to charge (a provider token, never a card
-- number), and how far the checkout saga got, so a restart resumes it.
ALTER TABLE orders ADD COLUMN card_token TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN step TEXT NOT NULL DEFAULT 'created';

CREATE INDEX orders_pending ON orders (status, updated_at);
