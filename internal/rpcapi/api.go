// Package rpcapi serves the "upgrade request" protocol of Odoo's own
// command-line client (the script users run as
// `python <(curl -s https://upgrade.odoo.com/upgrade) test -d mydb -t 17.0`):
// JSON-RPC calls under /upgrade/request/, a token instead of v1's request
// and key, rsync over SSH for the dump (internal/rsyncd) and a plain-text
// log. Its requests are the same rows, lifecycle and workers as v1's.
//
// # Transport
//
// Every call but logs is a POST of {"jsonrpc": "2.0", "params": {...}};
// every answer is HTTP 200 with Content-Type application/json and a
// Content-Length (the client reads no body without one), the result under
// "result", a refusal as {"result": {"error": "<message for a person>"}}.
// An unknown, malformed or wrong token gets the same refusal, whichever
// it is. Tokens are stored as their sha256 and never logged.
package rpcapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// Requests is what the protocol needs of the store; *store.Store
// satisfies it.
type Requests interface {
	CreateRequest(ctx context.Context, n store.NewRequest) (store.Request, error)
	Request(ctx context.Context, id int64) (store.Request, error)
	RequestByToken(ctx context.Context, hash string) (store.Request, error)
	Process(ctx context.Context, id int64) (store.Request, error)
	TakeUpload(ctx context.Context, id int64, token string, lease time.Duration, inPlace bool) (string, error)
	CompleteUpload(ctx context.Context, id int64, token string, u store.Upload) (store.Request, string, error)
	AbortUpload(ctx context.Context, id int64, token string) error
	SetUploadOrigin(ctx context.Context, id int64, filename, clientArchive string) error
	AddEvent(ctx context.Context, id int64, level, message string) error
	Events(ctx context.Context, id int64, limit int) ([]store.Event, error)
	CountStatusPoll(ctx context.Context, id int64) error
	OpenTransfer(ctx context.Context, id int64, d store.Direction, owner string, port int, lease time.Duration,
		replace func(store.Transfer) bool, allowed ...store.State) error
	RenewTransfer(ctx context.Context, id int64, owner string, lease time.Duration) error
	TransferOf(ctx context.Context, id int64) (store.Transfer, error)
	RequestTransferStop(ctx context.Context, id int64) (store.Transfer, error)
	FinishTransfer(ctx context.Context, id int64, owner, outcome, msg string) error
}

// Files is what the protocol needs of the request files; *files.Store
// satisfies it.
type Files interface {
	Open(ctx context.Context, id int64, name files.Name) (files.Object, error)
	Stat(ctx context.Context, id int64, name files.Name) (files.Info, error)
	CommitFile(ctx context.Context, id int64, name files.Name, p string, sum *files.Received) (files.Received, error)
	CommitDir(ctx context.Context, id int64, set files.Name, dir string, max int64) (files.Received, error)
	Materialize(ctx context.Context, id int64, set files.Name, dst string) error
	Remove(ctx context.Context, id int64, names ...files.Name) error
	RemoveRequest(ctx context.Context, id int64) error
}

// Folders are the transfers' local folders; *engine.Engine makes them,
// owned so that the rsync it runs as the tools user can use them.
type Folders interface {
	UploadDir(id int64) (string, error)
	DownloadDir(id int64) (string, error)
	RemoveTransferDir(id int64, direction string) error
}

// Endpoints opens rsync endpoints; *rsyncd.Server satisfies it.
type Endpoints interface {
	Open(t rsyncd.Transfer) (*rsyncd.Endpoint, error)
}

// Config is what the API is built from.
type Config struct {
	Requests Requests
	Files    Files
	Folders  Folders
	// Rsync opens the transfers' SSH endpoints; nil refuses transfers.
	Rsync Endpoints
	// Rules are the valid targets and contracts of create (v1's).
	Rules input.Rules
	// HostURI is what create and status answer as assigned_host_uri and
	// host_uri: the client's next base is https://<HostURI>, and rsync's
	// SSH host is its host part.
	HostURI string
	// MaxUploadBytes bounds an upload (0: no limit).
	MaxUploadBytes int64
	// TransferLease is how long a transfer's lease lasts between renewals
	// (default 30 s): another process answering transfer/stop waits for
	// the owner that long at most before it calls the transfer lost.
	TransferLease time.Duration
	// UploadLease is the upload lease taken while an rsync upload is
	// recorded (default 1 minute).
	UploadLease time.Duration
	// Owner names this process in transfers' records (default: random).
	Owner string
	// MaxTransfers caps the transfers open at once in this process, each
	// an SSH listener (default 256).
	MaxTransfers int
	// PgVersionCompatible says whether a client whose pg_dump wrote an
	// upload restores this server's output (engine.PgVersionCompatible);
	// nil says yes.
	PgVersionCompatible func(clientArchive, clientPgDump string) bool
	// Metrics counts calls; nil counts nothing.
	Metrics *metrics.Metrics
}

// API is the protocol's handlers and this process's transfers.
type API struct {
	cfg    Config
	logger *slog.Logger
	tr     *transfers
}

// New returns the API. Run must run for transfers stopped through other
// processes to be stopped here; Close closes this process's transfers.
func New(logger *slog.Logger, cfg Config) *API {
	if cfg.TransferLease == 0 {
		cfg.TransferLease = 30 * time.Second
	}
	if cfg.UploadLease == 0 {
		cfg.UploadLease = time.Minute
	}
	if cfg.Owner == "" {
		cfg.Owner = token.Hex(8)
	}
	if cfg.MaxTransfers == 0 {
		cfg.MaxTransfers = 256
	}
	logger = logger.With("component", "rpcapi")
	a := &API{cfg: cfg, logger: logger}
	a.tr = newTransfers(a)
	return a
}

// Mount adds the protocol's routes to r.
func (a *API) Mount(r chi.Router) {
	r.Post("/upgrade/request/create", a.call("create", a.create))
	r.Post("/upgrade/request/process", a.call("process", a.withToken(a.process)))
	r.Post("/upgrade/request/status", a.call("status", a.status))
	r.Post("/upgrade/request/transfer/start", a.call("transfer/start", a.withToken(a.transferStart)))
	r.Post("/upgrade/request/transfer/stop", a.call("transfer/stop", a.withToken(a.transferStop)))
	r.Get("/upgrade/request/logs", a.logs)
}

// Run stops, in this process, the transfers other processes were asked
// to stop, until ctx ends; then it closes this process's transfers.
func (a *API) Run(ctx context.Context, listen func(ctx context.Context, stop func(id int64)) error) error {
	err := listen(ctx, func(id int64) { a.tr.stopRequested(id) })
	a.tr.closeAll()
	return err
}

// maxBody bounds a call's body: the largest, create, holds a public key
// and the env_vars.
const maxBody = 1 << 20

// params are a call's parameters as sent.
type params map[string]json.RawMessage

// str returns parameter name as a string ("" when absent or null), and
// false when it is another JSON type.
func (p params) str(name string) (string, bool) {
	raw, ok := p[name]
	if !ok || string(raw) == "null" {
		return "", true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// refusal is a business error: {"result": {"error": msg}}.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

func refuse(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

// errBadToken is the one answer to any token that names no request.
var errBadToken = refuse("Unknown or invalid token.")

type callFunc func(ctx context.Context, p params) (any, error)

// call decodes a JSON-RPC body, runs fn and writes its answer: every
// answer of the protocol leaves through here but logs'.
func (a *API) call(name string, fn callFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var id json.RawMessage
		result, err := func() (any, error) {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				return nil, refuse("The request body is larger than %d bytes.", maxBody)
			case err != nil:
				return nil, refuse("The request body could not be read.")
			}
			var req struct {
				ID     json.RawMessage `json:"id"`
				Params json.RawMessage `json:"params"`
			}
			if err := json.Unmarshal(body, &req); err != nil {
				return nil, refuse("The request body is not a JSON-RPC call: %s.", jsonProblem(err))
			}
			id = req.ID
			var p params
			if len(req.Params) > 0 && string(req.Params) != "null" {
				if err := json.Unmarshal(req.Params, &p); err != nil {
					return nil, refuse("params must be a JSON object.")
				}
			}
			return fn(r.Context(), p)
		}()
		outcome := "ok"
		var ref *refusal
		switch {
		case errors.As(err, &ref):
			outcome = "refused"
			result = map[string]string{"error": ref.msg}
		case err != nil && r.Context().Err() != nil:
			a.logger.Info("client gone before the answer", "call", name, "err", err)
			return
		case err != nil:
			outcome = "error"
			reference := token.Hex(6)
			a.logger.Error("internal error", "call", name, "reference", reference, "err", err)
			result = map[string]string{"error": "The server failed to answer (reference " + reference + "); try again later."}
		}
		if a.cfg.Metrics != nil {
			a.cfg.Metrics.Call("rpc/"+name, outcome)
		}
		if len(id) == 0 {
			id = json.RawMessage("null")
		}
		writeJSON(w, struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Result  any             `json:"result"`
		}{"2.0", id, result})
	}
}

// jsonProblem says what is wrong with a JSON body without echoing it.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return "malformed JSON at byte " + strconv.FormatInt(syn.Offset, 10)
	case errors.As(err, &typ):
		return "a JSON object is expected"
	}
	return "malformed JSON"
}

// writeJSON writes v with a Content-Length, as the client needs.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"jsonrpc":"2.0","id":null,"result":{"error":"The server failed to encode its answer."}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// withToken finds the request the token parameter names.
func (a *API) withToken(fn func(ctx context.Context, req store.Request, p params) (any, error)) callFunc {
	return func(ctx context.Context, p params) (any, error) {
		req, err := a.byToken(ctx, p)
		if err != nil {
			return nil, err
		}
		return fn(ctx, req, p)
	}
}

// byToken finds the request of the token parameter; any token that names
// none (absent, malformed, unknown, deleted) gets errBadToken.
func (a *API) byToken(ctx context.Context, p params) (store.Request, error) {
	tok, ok := p.str("token")
	req, err := a.cfg.Requests.RequestByToken(ctx, tokenHash(tok))
	switch {
	case !ok || tok == "" || len(tok) > 256:
		return store.Request{}, errBadToken
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrArchived):
		return store.Request{}, errBadToken
	case err != nil:
		return store.Request{}, err
	}
	return req, nil
}

// tokenHash is what the store keeps of a token.
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// stateName renders a stored state in the protocol's vocabulary: new
// until the upload is recorded, pending while queued, progress while a
// worker runs it, then done, failed or cancelled. A request held for
// testing (v1's testing, delivered) is done for this client.
func stateName(s store.State) string {
	switch s {
	case store.StateDraft:
		return "new"
	case store.StateQueued:
		return "pending"
	case store.StateProcessing:
		return "progress"
	case store.StateTesting, store.StateDone, store.StateDelivered:
		return "done"
	case store.StateFailed:
		return "failed"
	}
	return "cancelled"
}

// problems renders input problems as one message for a person.
func problems(probs []input.Problem) error {
	msgs := make([]string, len(probs))
	for i, p := range probs {
		msgs[i] = p.Message
		if len(p.Expected) > 0 {
			msgs[i] += " (expected one of " + strings.Join(p.Expected, ", ") + ")"
		}
	}
	return refuse("%s.", strings.TrimSuffix(strings.Join(msgs, "; "), "."))
}
