DROP INDEX faces_updated_at;
DROP TABLE merge_declines;
DROP TABLE leases;
