-- When the broker last confirmed a message for the image (milliseconds since the
-- epoch); NULL: no confirmed message since it last became pending. The reconciler
-- re-queues unconfirmed images soon and confirmed ones only as a slow safety net.
-- Rows of earlier releases start unconfirmed, so each is re-queued at most once.
ALTER TABLE images ADD COLUMN published_at BIGINT;
