DROP TABLE gallery_version;
DROP TABLE faces;
DROP TABLE people;
