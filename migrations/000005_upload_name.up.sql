-- The upload is an immutable file of the request (files.Name) that a
-- completed upload points to: a newer upload writes a file of its own and
-- takes the pointer over with its lease, so a writer that lost the lease
-- can never overwrite what a newer one stored (object storage has no
-- locks to rely on).
ALTER TABLE requests ADD COLUMN upload_name text;
UPDATE requests SET upload_name = 'upload' WHERE upload_completed_at IS NOT NULL;

-- An import's record also names the requests it imported: their files are
-- replaced by the staged ones when a crash interrupted the import.
ALTER TABLE imports ADD COLUMN imported bigint[] NOT NULL DEFAULT '{}';

-- Requests deleted (by an operator, a reset or an import) whose files may
-- still need removing: the deletion records them in its transaction, the
-- file removal forgets them once done, and a start-up sweep removes the
-- files of those a crash left. A wrong database URL thus never makes the
-- sweep remove files it does not know about.
CREATE TABLE deleted_requests (
    id         bigint PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
