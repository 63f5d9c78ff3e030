-- Back to names per image: every assigned face's person, as the old JSON list.
ALTER TABLE images ADD COLUMN people TEXT NOT NULL DEFAULT '[]';
UPDATE images i SET people = COALESCE((
    SELECT json_agg(json_build_object('name', COALESCE(p.name, ''), 'similarity', COALESCE(f.similarity, 1.0)) ORDER BY f.id)::text
    FROM faces f LEFT JOIN people p ON p.id = f.person_id WHERE f.image_id = i.id), '[]');
DROP TABLE jobs;
DROP TABLE merge_faces;
DROP TABLE merge_people;
DROP TABLE merges;
DROP TABLE face_rejections;
DELETE FROM faces WHERE source <> 'enrolled' OR person_id IS NULL;
DROP INDEX faces_person_image;
DROP INDEX faces_image;
DROP INDEX faces_enrolment;
ALTER TABLE faces DROP COLUMN image_id, DROP COLUMN source, DROP COLUMN assigned,
    DROP COLUMN similarity, DROP COLUMN landmarks, DROP COLUMN detection_score,
    DROP COLUMN quality, DROP COLUMN updated_at;
ALTER TABLE faces ALTER COLUMN person_id SET NOT NULL;
ALTER TABLE faces ADD CONSTRAINT faces_person_id_content_hash_key UNIQUE (person_id, content_hash);
DELETE FROM people WHERE name IS NULL;
ALTER TABLE people ALTER COLUMN name SET NOT NULL;
ALTER TABLE people DROP COLUMN hidden, DROP COLUMN feature_face_id, DROP COLUMN merged_into,
    DROP COLUMN version, DROP COLUMN updated_at;
