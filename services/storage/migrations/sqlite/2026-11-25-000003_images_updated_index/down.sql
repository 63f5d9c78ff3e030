DROP INDEX images_updated;
