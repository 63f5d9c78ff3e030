ALTER TABLE images DROP COLUMN published_at;
