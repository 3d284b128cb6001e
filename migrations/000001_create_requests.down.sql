DROP TABLE request_events;
DROP TABLE sftp_keys;
DROP TABLE requests;
DROP SEQUENCE request_issue_seq;
