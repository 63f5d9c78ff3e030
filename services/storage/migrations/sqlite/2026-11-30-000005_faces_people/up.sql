-- Every face is a record and people are made of faces (see the PostgreSQL migration for
-- the meaning of each column). SQLite cannot relax NOT NULL in place, so people and
-- faces are rebuilt: new tables, copy, drop the old (faces first, so dropping people
-- cascades to nothing), rename.
CREATE TABLE people_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT UNIQUE,
    hidden           BOOLEAN NOT NULL DEFAULT FALSE,
    feature_face_id  BIGINT,
    merged_into      BIGINT REFERENCES people_new (id) ON DELETE SET NULL,
    version          BIGINT  NOT NULL DEFAULT 1,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
INSERT INTO people_new (id, name, created_at, updated_at)
SELECT id, name, created_at, created_at FROM people;

CREATE TABLE faces_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id         BIGINT REFERENCES images (id) ON DELETE CASCADE,
    person_id        BIGINT REFERENCES people_new (id) ON DELETE SET NULL,
    source           TEXT NOT NULL CHECK (source IN ('detected', 'enrolled', 'drawn', 'legacy')),
    assigned         TEXT CHECK (assigned IN ('enrolled', 'auto', 'manual')),
    similarity       REAL,
    content_hash     TEXT,
    embedding        BLOB,
    box_x            REAL,
    box_y            REAL,
    box_width        REAL,
    box_height       REAL,
    landmarks        BLOB,
    detection_score  REAL,
    quality          REAL,
    crop             BLOB,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
INSERT INTO faces_new (id, person_id, source, assigned, content_hash, embedding, box_x, box_y,
                       box_width, box_height, quality, crop, created_at, updated_at)
SELECT id, person_id, 'enrolled', 'enrolled', content_hash, embedding, box_x, box_y,
       box_width, box_height, MIN(box_width, box_height), crop, created_at, created_at
FROM faces;
DROP TABLE faces;
DROP TABLE people;
ALTER TABLE people_new RENAME TO people;
ALTER TABLE faces_new RENAME TO faces;
CREATE UNIQUE INDEX faces_enrolment ON faces (person_id, content_hash) WHERE source = 'enrolled';
CREATE INDEX faces_image ON faces (image_id);
CREATE INDEX faces_person_image ON faces (person_id, image_id);

CREATE TABLE face_rejections (
    face_id     BIGINT NOT NULL REFERENCES faces (id) ON DELETE CASCADE,
    person_id   BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (face_id, person_id)
);

CREATE TABLE merges (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    into_person_id  BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    into_name       TEXT,
    created_at      BIGINT NOT NULL,
    undone_at       BIGINT
);
CREATE TABLE merge_people (
    merge_id         BIGINT NOT NULL REFERENCES merges (id) ON DELETE CASCADE,
    person_id        BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    name             TEXT,
    hidden           BOOLEAN NOT NULL,
    feature_face_id  BIGINT,
    PRIMARY KEY (merge_id, person_id)
);
CREATE TABLE merge_faces (
    merge_id        BIGINT NOT NULL REFERENCES merges (id) ON DELETE CASCADE,
    face_id         BIGINT NOT NULL,
    from_person_id  BIGINT NOT NULL,
    moved_at        BIGINT NOT NULL,
    PRIMARY KEY (merge_id, face_id)
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL CHECK (kind IN ('recognition', 'detection')),
    scope         TEXT    NOT NULL CHECK (scope IN ('missing', 'all')),
    state         TEXT    NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
    done          BIGINT  NOT NULL DEFAULT 0,
    total         BIGINT  NOT NULL DEFAULT 0,
    error         TEXT,
    owner         TEXT,
    heartbeat_at  BIGINT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE UNIQUE INDEX jobs_one_active ON jobs (kind) WHERE state IN ('queued', 'running');

-- The previous release's JSON list of names per image becomes face records.
INSERT OR IGNORE INTO people (name, created_at, updated_at)
SELECT DISTINCT json_extract(e.value, '$.name'), i.updated_at, i.updated_at
FROM images i, json_each(i.people) e
WHERE COALESCE(json_extract(e.value, '$.name'), '') <> '';
INSERT INTO faces (image_id, person_id, source, assigned, similarity, created_at, updated_at)
SELECT i.id, p.id, 'legacy', CASE WHEN p.id IS NULL THEN NULL ELSE 'auto' END,
       json_extract(e.value, '$.similarity'), i.updated_at, i.updated_at
FROM images i JOIN json_each(i.people) e
LEFT JOIN people p ON p.name = json_extract(e.value, '$.name')
                  AND COALESCE(json_extract(e.value, '$.name'), '') <> ''
ORDER BY i.id, e.key;
ALTER TABLE images DROP COLUMN people;
