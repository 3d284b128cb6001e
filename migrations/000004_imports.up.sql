-- Admin imports whose database part committed: their files are staged in
-- the data directory and moved into place after the commit; a process that
-- crashed in between finishes the moves at its next start, and removes the
-- folders of the requests the import deleted.
CREATE TABLE imports (
    nonce        text PRIMARY KEY,
    removed      bigint[]    NOT NULL DEFAULT '{}',
    committed_at timestamptz NOT NULL DEFAULT now()
);
