// Package web serves the pages for people, beside the API on the same
// router (httpapi.Config.Mounts):
//
//   - / is the upgrade form: it creates a request through the v1 API's own
//     checks (internal/input), uploads the dump from the browser with a
//     progress bar, calls process and lands on the status page. Without
//     JavaScript it still creates the request (field errors shown by the
//     server) and the status page says how to upload.
//   - /database/<region>/<id>/<key>/status is a request's status page, kept
//     live by polling status.json beside it (state, progress, new log
//     lines, files as they appear).
//   - /admin/ is the operator console, only when an admin token is set:
//     sign in with the token, see counts, queue, running jobs and failures,
//     search requests, force a state, set a scenario, delete, manage fault
//     rules.
//   - Unknown pages and wrong keys give browsers a small HTML page
//     (NotFound); API clients keep the API's JSON answers.
//
// Pages are html/template, embedded, server-rendered; the little
// JavaScript there is (upload progress, live status) is served as files, so
// every page's Content-Security-Policy allows no inline script. Nothing is
// loaded from elsewhere: the pages work offline.
//
// The package reads and writes requests through the store and the files
// owner only; it imports no other front end.
package web
