-- Requests of Odoo's own upgrade client (the "upgrade request" JSON-RPC
-- protocol, internal/rpcapi): the same rows and lifecycle as v1's, found
-- by the sha256 of their token (the token itself is never stored).
ALTER TABLE requests
    ADD COLUMN token_hash     text UNIQUE,
    ADD COLUMN env_vars       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN ssh_key        text,
    -- '' writes the upgraded dump in the upload's own format (v1);
    -- 'directory' as a directory-format dump (the client's download).
    ADD COLUMN output         text NOT NULL DEFAULT '' CHECK (output IN ('', 'directory')),
    -- The archive version the client's own pg_dump writes, read from the
    -- upload's header: process answers is_pg_version_compatible with it.
    ADD COLUMN client_archive text;

-- Tokens of deleted requests: status answers archived rather than an
-- unknown token, so a client does not offer to resume them.
CREATE TABLE archived_tokens (
    token_hash       text PRIMARY KEY,
    state            text        NOT NULL,
    customer_message text,
    archived_at      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION archive_request_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO archived_tokens (token_hash, state, customer_message)
    VALUES (OLD.token_hash, OLD.state, OLD.customer_message) ON CONFLICT DO NOTHING;
    RETURN OLD;
END
$$;

CREATE TRIGGER requests_archive_token AFTER DELETE ON requests
    FOR EACH ROW WHEN (OLD.token_hash IS NOT NULL) EXECUTE FUNCTION archive_request_token();

-- The rsync transfer of a request, at most one at a time: the endpoint
-- runs in the process that opened it (owner), which renews the lease;
-- transfer/stop reaching another process asks the owner to stop it
-- (stop_requested and a NOTIFY) and waits for the outcome.
CREATE TABLE transfers (
    request_id     bigint PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
    direction      text        NOT NULL CHECK (direction IN ('upload', 'download')),
    owner          text        NOT NULL,
    port           integer     NOT NULL,
    opened_at      timestamptz NOT NULL DEFAULT now(),
    lease_until    timestamptz NOT NULL,
    stop_requested boolean     NOT NULL DEFAULT false,
    -- NULL while open; 'ok' or 'failed' once stopped, with error for a person.
    outcome        text CHECK (outcome IN ('ok', 'failed')),
    error          text
);
