-- The recognition gallery: enrolled people and their face embeddings.
CREATE TABLE people (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT   NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
CREATE TABLE faces (
    id            BIGSERIAL PRIMARY KEY,
    person_id     BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    -- Hex SHA-256 of the enrolled image: the same photo enrolled twice is one face.
    content_hash  TEXT   NOT NULL,
    -- 128 little-endian f32 values (unit length), the same bytes on every backend.
    embedding     BYTEA  NOT NULL,
    box_x         REAL   NOT NULL,
    box_y         REAL   NOT NULL,
    box_width     REAL   NOT NULL,
    box_height    REAL   NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (person_id, content_hash)
);
-- One row, bumped by every change to people or faces: replicas poll it to know when to
-- reload their in-memory gallery.
CREATE TABLE gallery_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT  NOT NULL
);
INSERT INTO gallery_version (id, version) VALUES (1, 0);
