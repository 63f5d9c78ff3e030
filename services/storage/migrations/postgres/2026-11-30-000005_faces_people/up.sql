-- Every face is a record and people are made of faces.
--
-- people: a name is optional (a suggested person has none), people can be hidden, have a
-- feature face and a version bumped by every edit (optimistic concurrency). A merged
-- person is kept, emptied and marked, so a merge can be undone exactly.
ALTER TABLE people ALTER COLUMN name DROP NOT NULL;
ALTER TABLE people ADD COLUMN hidden BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE people ADD COLUMN feature_face_id BIGINT;
ALTER TABLE people ADD COLUMN merged_into BIGINT REFERENCES people (id) ON DELETE SET NULL;
ALTER TABLE people ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE people ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE people SET updated_at = created_at;

-- faces: enrolment photos (as before) and every face detected in a submitted image.
ALTER TABLE faces DROP CONSTRAINT faces_person_id_content_hash_key;
ALTER TABLE faces DROP CONSTRAINT faces_person_id_fkey;
ALTER TABLE faces ALTER COLUMN person_id DROP NOT NULL;
ALTER TABLE faces ADD CONSTRAINT faces_person_id_fkey
    FOREIGN KEY (person_id) REFERENCES people (id) ON DELETE SET NULL;
ALTER TABLE faces ALTER COLUMN content_hash DROP NOT NULL;
ALTER TABLE faces ALTER COLUMN embedding DROP NOT NULL;
ALTER TABLE faces ALTER COLUMN box_x DROP NOT NULL;
ALTER TABLE faces ALTER COLUMN box_y DROP NOT NULL;
ALTER TABLE faces ALTER COLUMN box_width DROP NOT NULL;
ALTER TABLE faces ALTER COLUMN box_height DROP NOT NULL;
ALTER TABLE faces ADD COLUMN image_id BIGINT REFERENCES images (id) ON DELETE CASCADE;
ALTER TABLE faces ADD COLUMN source TEXT NOT NULL DEFAULT 'enrolled'
    CHECK (source IN ('detected', 'enrolled', 'drawn', 'legacy'));
ALTER TABLE faces ADD COLUMN assigned TEXT CHECK (assigned IN ('enrolled', 'auto', 'manual'));
ALTER TABLE faces ADD COLUMN similarity REAL;
ALTER TABLE faces ADD COLUMN landmarks BYTEA;
ALTER TABLE faces ADD COLUMN detection_score REAL;
ALTER TABLE faces ADD COLUMN quality REAL;
ALTER TABLE faces ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE faces SET assigned = 'enrolled', updated_at = created_at,
    quality = LEAST(box_width, box_height);
ALTER TABLE faces ALTER COLUMN source DROP DEFAULT;
-- The same photo enrolled twice for one person is one face.
CREATE UNIQUE INDEX faces_enrolment ON faces (person_id, content_hash) WHERE source = 'enrolled';
CREATE INDEX faces_image ON faces (image_id);
-- Images of a person, newest first.
CREATE INDEX faces_person_image ON faces (person_id, image_id);

-- A face moved away from a person by hand never goes back to them automatically.
CREATE TABLE face_rejections (
    face_id     BIGINT NOT NULL REFERENCES faces (id) ON DELETE CASCADE,
    person_id   BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (face_id, person_id)
);

-- Merges, recorded so they can be undone exactly.
CREATE TABLE merges (
    id              BIGSERIAL PRIMARY KEY,
    into_person_id  BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    -- The name `into` had before (it takes a merged person's name when it had none).
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
    -- The face's updated_at as the merge left it: a later edit changes it.
    moved_at        BIGINT NOT NULL,
    PRIMARY KEY (merge_id, face_id)
);

-- Re-runs: one queued or running job per kind.
CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
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

-- The previous release kept an image's result as a JSON list of names: each entry
-- becomes a face record (no box, no embedding until detection is re-run), assigned to
-- the person of that name, so every result stays queryable by person.
INSERT INTO people (name, created_at, updated_at)
SELECT DISTINCT e->>'name', i.updated_at, i.updated_at
FROM images i CROSS JOIN LATERAL jsonb_array_elements(i.people::jsonb) e
WHERE COALESCE(e->>'name', '') <> ''
ON CONFLICT (name) DO NOTHING;
INSERT INTO faces (image_id, person_id, source, assigned, similarity, created_at, updated_at)
SELECT i.id, p.id, 'legacy', CASE WHEN p.id IS NULL THEN NULL ELSE 'auto' END,
       (e->>'similarity')::real, i.updated_at, i.updated_at
FROM images i CROSS JOIN LATERAL jsonb_array_elements(i.people::jsonb) WITH ORDINALITY AS t(e, n)
LEFT JOIN people p ON p.name = e->>'name' AND COALESCE(e->>'name', '') <> ''
ORDER BY i.id, t.n;
ALTER TABLE images DROP COLUMN people;
