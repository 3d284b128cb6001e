DROP TABLE transfers;
DROP TRIGGER requests_archive_token ON requests;
DROP FUNCTION archive_request_token();
DROP TABLE archived_tokens;
ALTER TABLE requests
    DROP COLUMN token_hash,
    DROP COLUMN env_vars,
    DROP COLUMN ssh_key,
    DROP COLUMN output,
    DROP COLUMN client_archive;
