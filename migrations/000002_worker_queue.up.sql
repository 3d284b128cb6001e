-- The processing queue: a worker holds a lease renewed by heartbeats; an
-- expired lease is taken up again by any process.
ALTER TABLE requests
    ADD COLUMN attempts       integer NOT NULL DEFAULT 0,
    ADD COLUMN lease_owner    text,
    ADD COLUMN lease_until    timestamptz,
    ADD COLUMN scratch_db     text,
    ADD COLUMN source_version text,
    ADD COLUMN upgraded_size  bigint;

DROP INDEX requests_state_idx;
CREATE INDEX requests_queue_idx ON requests (queued_at, id) WHERE state IN ('queued', 'processing');
