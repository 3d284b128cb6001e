-- Scenario requests (magic contract codes, see internal/scenario).
ALTER TABLE requests
    ADD COLUMN scenario     text,
    ADD COLUMN hold_polls   integer NOT NULL DEFAULT 0,
    ADD COLUMN status_polls integer NOT NULL DEFAULT 0;
