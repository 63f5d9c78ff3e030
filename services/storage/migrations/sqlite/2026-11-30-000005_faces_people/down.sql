ALTER TABLE images ADD COLUMN people TEXT NOT NULL DEFAULT '[]';
UPDATE images SET people = COALESCE((
    SELECT json_group_array(json_object('name', COALESCE(p.name, ''), 'similarity', COALESCE(f.similarity, 1.0)))
    FROM faces f LEFT JOIN people p ON p.id = f.person_id WHERE f.image_id = images.id), '[]');
DROP TABLE jobs;
DROP TABLE merge_faces;
DROP TABLE merge_people;
DROP TABLE merges;
DROP TABLE face_rejections;
CREATE TABLE people_old (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT   NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
INSERT INTO people_old (id, name, created_at) SELECT id, name, created_at FROM people WHERE name IS NOT NULL;
CREATE TABLE faces_old (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id     BIGINT NOT NULL REFERENCES people_old (id) ON DELETE CASCADE,
    content_hash  TEXT   NOT NULL,
    embedding     BLOB   NOT NULL,
    box_x         REAL   NOT NULL,
    box_y         REAL   NOT NULL,
    box_width     REAL   NOT NULL,
    box_height    REAL   NOT NULL,
    created_at    BIGINT NOT NULL,
    crop          BLOB,
    UNIQUE (person_id, content_hash)
);
INSERT INTO faces_old SELECT id, person_id, content_hash, embedding, box_x, box_y, box_width,
    box_height, created_at, crop FROM faces
    WHERE source = 'enrolled' AND person_id IN (SELECT id FROM people_old);
DROP TABLE faces;
DROP TABLE people;
ALTER TABLE people_old RENAME TO people;
ALTER TABLE faces_old RENAME TO faces;
