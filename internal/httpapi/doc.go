// Package httpapi serves Odoo's Upgrade API v1 (/database/v1/*), the
// per-request status page and artifact URLs (/database/<region>/<id>/<key>/…),
// and the health endpoints.
//
// Every business answer is HTTP 200 application/json
// {"failures": [...], "request": {...}}; failures carry Odoo's reasons where
// Odoo documents them and this project's own AREA:PROBLEM codes otherwise
// (README.md lists them). Internal errors are logged with a correlation id and
// answered SERVER:ERROR without details.
package httpapi
