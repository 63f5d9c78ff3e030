CREATE TABLE images (
    id            BIGSERIAL PRIMARY KEY,
    path          TEXT    NOT NULL,
    content_hash  TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processing', 'done', 'no_face', 'failed')),
    people        TEXT    NOT NULL DEFAULT '[]',
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
-- The reconciler scans by status and age; the web page lists by status.
CREATE INDEX images_status_updated ON images (status, updated_at);
