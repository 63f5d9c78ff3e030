-- WatchImages follows changes by time.
CREATE INDEX images_updated ON images (updated_at);
