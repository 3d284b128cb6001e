DROP INDEX requests_queue_idx;
CREATE INDEX requests_state_idx ON requests (state, queued_at) WHERE state IN ('queued', 'processing');
ALTER TABLE requests
    DROP COLUMN attempts,
    DROP COLUMN lease_owner,
    DROP COLUMN lease_until,
    DROP COLUMN scratch_db,
    DROP COLUMN source_version,
    DROP COLUMN upgraded_size;
