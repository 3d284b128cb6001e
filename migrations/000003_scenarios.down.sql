ALTER TABLE requests DROP COLUMN scenario, DROP COLUMN hold_polls, DROP COLUMN status_polls;
