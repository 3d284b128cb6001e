package rpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/scenario"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// create: contract, target, aim, env_vars, ssh_key (actuator and
// api_version are read and otherwise ignored) → request_id, token,
// assigned_host_uri.
func (a *API) create(ctx context.Context, p params) (any, error) {
	for _, name := range []string{"contract", "target", "aim", "ssh_key", "actuator", "api_version"} {
		if _, ok := p.str(name); !ok {
			return nil, refuse("%s must be a string.", name)
		}
	}
	var env []string
	if raw, ok := p["env_vars"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &env); err != nil {
			return nil, refuse(`env_vars must be a list of "NAME=VALUE" strings.`)
		}
	}
	get := func(name string) string { s, _ := p.str(name); return s }
	n, probs := input.CreateRPC(get, env, get("ssh_key"), a.cfg.Rules)
	if len(probs) > 0 {
		return nil, problems(probs)
	}
	tok := token.Hex(20)
	hash := tokenHash(tok)
	n.Key, n.TokenHash, n.Output = token.Key(), &hash, store.OutputDirectory
	n.Filename = "origin.dump" // until the upload says which file it is
	req, err := a.cfg.Requests.CreateRequest(ctx, n)
	if err != nil {
		return nil, err
	}
	// Files left under this id by a request the database forgot are none
	// of this one's (as v1's create).
	if err := a.cfg.Files.RemoveRequest(ctx, req.ID); err != nil {
		return nil, err
	}
	what := "Created by Odoo's upgrade client"
	if v := get("actuator"); v != "" && input.Text(v, 32) == "" {
		what += " (" + v + ")"
	}
	if err := a.cfg.Requests.AddEvent(ctx, req.ID, "info", what+"."); err != nil {
		return nil, err
	}
	a.logger.Info("request created", "request_id", req.ID, "target", n.Target, "aim", n.Aim, "env_vars", len(n.EnvVars))
	out := map[string]any{"request_id": req.ID, "token": tok, "assigned_host_uri": a.cfg.HostURI}
	if v := get("api_version"); v != "" && v != apiVersion {
		out["info"] = fmt.Sprintf("This server speaks api_version %s of the upgrade request protocol; your client sent %q.", apiVersion, input.ShownName(v))
	}
	return out, nil
}

// apiVersion is the client protocol version this server speaks.
const apiVersion = "0.2"

// process: queues a request whose upload is recorded (transfer/stop
// already did) → is_pg_version_compatible.
func (a *API) process(ctx context.Context, req store.Request, p params) (any, error) {
	switch req.State {
	case store.StateDraft:
		if req.UploadCompletedAt == nil {
			return nil, refuse("No dump has been uploaded for this request yet: upload it first.")
		}
		var err error
		req, err = a.cfg.Requests.Process(ctx, req.ID)
		switch {
		case errors.Is(err, store.ErrUploadBusy):
			return nil, refuse("An upload of this request is still running; wait for it to end.")
		case errors.Is(err, store.ErrBadTransition):
			return nil, refuse("The request cannot be processed any more.")
		case err != nil:
			return nil, err
		}
	case store.StateQueued, store.StateProcessing:
	default:
		return nil, refuse("The request is %s; it cannot be processed again.", stateName(req.State))
	}
	return map[string]any{"is_pg_version_compatible": a.compatible(req)}, nil
}

// compatible says whether the client's PostgreSQL restores the upgraded
// dump, from what its upload's header said of its pg_dump.
func (a *API) compatible(req store.Request) bool {
	if a.cfg.PgVersionCompatible == nil || req.ClientArchive == nil {
		return true
	}
	pgDump, archive, _ := strings.Cut(*req.ClientArchive, "/")
	return a.cfg.PgVersionCompatible(archive, pgDump)
}

// status → status, host_uri, reason (failed, cancelled), archived.
func (a *API) status(ctx context.Context, p params) (any, error) {
	tok, ok := p.str("token")
	if !ok || tok == "" || len(tok) > 256 {
		return nil, errBadToken
	}
	req, err := a.cfg.Requests.RequestByToken(ctx, tokenHash(tok))
	archived := errors.Is(err, store.ErrArchived)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errBadToken
	case err != nil && !archived:
		return nil, err
	}
	if !archived && req.Scenario != nil {
		if err := a.cfg.Requests.CountStatusPoll(ctx, req.ID); err != nil {
			return nil, err
		}
		if sc, err := scenario.Parse(*req.Scenario); err == nil && sc.Polls > 0 {
			if req, err = a.cfg.Requests.Request(ctx, req.ID); err != nil {
				return nil, err
			}
		}
	}
	out := map[string]any{"status": stateName(req.State), "host_uri": a.cfg.HostURI, "archived": archived}
	if (req.State == store.StateFailed || req.State == store.StateCancelled) && req.CustomerMessage != nil {
		out["reason"] = *req.CustomerMessage
	}
	return out, nil
}

// logs: GET ?token=…, Range: bytes=<n>- → the request log from byte n as
// plain text, 206 for a range (200 and an empty body past the end: the
// client does not survive a 416). The log is ASCII (other characters
// written as \uXXXX), so the client's offsets, which count characters,
// are byte offsets.
func (a *API) logs(w http.ResponseWriter, r *http.Request) {
	p := params{}
	if tok := r.URL.Query().Get("token"); tok != "" {
		b, _ := json.Marshal(tok)
		p["token"] = b
	}
	req, err := a.byToken(r.Context(), p)
	if err != nil {
		var ref *refusal
		if !errors.As(err, &ref) {
			reference := token.Hex(6)
			a.logger.Error("internal error", "call", "logs", "reference", reference, "err", err)
			ref = &refusal{"The server failed to answer (reference " + reference + "); try again later."}
		}
		writeJSON(w, map[string]any{"jsonrpc": "2.0", "id": nil, "result": map[string]string{"error": ref.msg}})
		return
	}
	events, err := a.cfg.Requests.Events(r.Context(), req.ID, maxLogLines)
	if err != nil {
		if r.Context().Err() == nil {
			a.logger.Error("request log", "request_id", req.ID, "err", err)
		}
		http.Error(w, "the log could not be read; try again", http.StatusServiceUnavailable)
		return
	}
	text := LogText(events)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Accept-Ranges", "bytes")
	start, ranged := rangeStart(r.Header.Get("Range"))
	status := http.StatusOK
	switch {
	case ranged && start < len(text):
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(text)-1, len(text)))
		text = text[start:]
	case ranged:
		text = ""
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(text)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write([]byte(text))
	}
}

// maxLogLines bounds the log lines logs serves (a log only grows, so the
// offsets of the lines served stay put).
const maxLogLines = 1_000_000

var rangeRE = regexp.MustCompile(`^bytes=(\d{1,18})-(\d{0,18})$`)

// rangeStart reads "bytes=<n>-" (an end, if any, is ignored: the client
// wants the tail); false for anything else, which is served whole.
func rangeStart(h string) (int, bool) {
	m := rangeRE.FindStringSubmatch(strings.TrimSpace(h))
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, false
	}
	return n, true
}

// LogText renders a request log as the status page shows it, one line an
// event ("2026-11-28 10:00:00 INFO Queued for processing."), in ASCII:
// other characters are written \uXXXX.
func LogText(events []store.Event) string {
	var b strings.Builder
	for _, e := range events {
		b.WriteString(e.At.UTC().Format("2006-01-02 15:04:05"))
		b.WriteByte(' ')
		b.WriteString(strings.ToUpper(asciiOnly(e.Level)))
		b.WriteByte(' ')
		b.WriteString(asciiOnly(e.Message))
		b.WriteByte('\n')
	}
	return b.String()
}

func asciiOnly(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '…':
			b.WriteString("...")
		case r == '›':
			b.WriteString(">")
		case r == '\n' || r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
		case r < utf8.RuneSelf:
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	return b.String()
}
