// Package httpapi serves Odoo's Upgrade API v1 (/database/v1/*), the
// per-request file URLs (/database/<region>/<id>/<key>/…), the admin API
// and the health endpoints, on a router other front ends mount their
// routes on (Config.Mounts: the status page and the other pages for people
// are internal/web's).
//
// Every business answer is HTTP 200 application/json
// {"failures": [...], "request": {...}}; failures carry Odoo's reasons where
// Odoo documents them and this project's own AREA:PROBLEM codes otherwise
// (README.md lists them). Internal errors are logged with a correlation id and
// answered SERVER:ERROR without details.
package httpapi
