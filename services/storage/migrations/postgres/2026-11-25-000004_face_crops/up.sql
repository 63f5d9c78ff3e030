-- A small JPEG of each face as the recogniser saw it (aligned, 112x112), for the web
-- page's people list. NULL for faces enrolled before crops were kept.
ALTER TABLE faces ADD COLUMN crop BYTEA;
