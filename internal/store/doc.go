// Package store keeps upgrade requests in PostgreSQL: the one state machine
// every API renders, the upload facts, SFTP grants and the request log.
//
// Transitions are compare-and-set in SQL, so several server processes sharing
// one database never both move a request. Errors are wrapped with context;
// callers match the sentinels (ErrNotFound, ErrBadTransition, ErrUploadBusy,
// ErrNoUpload) with errors.Is and *StateError with errors.As.
package store
