DROP TABLE deleted_requests;
ALTER TABLE imports DROP COLUMN imported;
ALTER TABLE requests DROP COLUMN upload_name;
