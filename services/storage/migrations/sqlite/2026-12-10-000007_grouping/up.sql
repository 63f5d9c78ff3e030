-- Grouping unknown faces into suggested people (unnamed people).
-- A lease names the one process allowed to do a kind of work (the grouping writer):
-- taken when free or expired, renewed by its holder, so a dead holder is replaced
-- after its lease runs out.
CREATE TABLE leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- "Same person?" suggestions a user declined; never offered again (low id first).
CREATE TABLE merge_declines (
    person_a BIGINT NOT NULL,
    person_b BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (person_a, person_b)
);
-- Every replica follows changes to faces (new faces, new assignments) by updated_at.
CREATE INDEX faces_updated_at ON faces (updated_at, id);
