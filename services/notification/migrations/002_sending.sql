-- A notification is recorded in the consumer's transaction and sent after
-- it commits, outside any transaction (issue 12). It is due while
-- next_send_at is set: the dispatcher claims it by moving next_send_at
-- past the send's timeout, then records the outcome (sent_at, or
-- send_error and the next try; next_send_at NULL once sent or given up).
ALTER TABLE notifications ADD COLUMN send_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN next_send_at TIMESTAMP;
ALTER TABLE notifications ADD COLUMN sent_at TIMESTAMP;
ALTER TABLE notifications ADD COLUMN send_error TEXT;
-- Rows recorded before this migration were sent in the transaction that
-- recorded them.
UPDATE notifications SET sent_at = created_at;
CREATE INDEX notifications_due ON notifications (next_send_at);
