package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/scenario"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// AdminStore is what the admin API needs besides RequestStore; *store.Store
// satisfies it.
type AdminStore interface {
	ListRequests(ctx context.Context, f store.ListFilter) ([]store.Request, error)
	ForceState(ctx context.Context, id int64, to store.State, customerMessage string) (store.Request, error)
	SetScenario(ctx context.Context, id int64, scenario *string, holdPolls int) (store.Request, error)
	DeleteRequest(ctx context.Context, id int64) error
	DeleteAllRequests(ctx context.Context) ([]int64, error)
	ExportFixtures(ctx context.Context) ([]store.Fixture, error)
	ImportFixtures(ctx context.Context, fixtures []store.Fixture, replace bool, nonce string) (imported, removed []int64, err error)
	ImportStore
}

// adminRequest is a request as the admin API shows it: the v1 record plus
// what only an operator sees.
type adminRequest struct {
	Record            wireRequest  `json:"record"`
	StoredState       store.State  `json:"stored_state"`
	Contract          string       `json:"contract"`
	UploadSize        *int64       `json:"upload_size"`
	UploadSHA256      *string      `json:"upload_sha256"`
	UploadCompletedAt *time.Time   `json:"upload_completed_at"`
	Uploading         bool         `json:"uploading"`
	Scenario          *string      `json:"scenario"`
	StatusPolls       int          `json:"status_polls"`
	Events            []adminEvent `json:"events,omitempty"`
	SFTPExpiresAt     *time.Time   `json:"sftp_expires_at"`
}

type adminEvent struct {
	At      time.Time `json:"at"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

func (o Options) adminView(r store.Request) adminRequest {
	return adminRequest{Record: o.record(r), StoredState: r.State, Contract: r.Contract, UploadSize: r.UploadSize,
		UploadSHA256: r.UploadSHA256, UploadCompletedAt: r.UploadCompletedAt, Uploading: r.Uploading,
		Scenario: r.Scenario, StatusPolls: r.StatusPolls, SFTPExpiresAt: r.SFTPExpiresAt}
}

// addAdminRoutes mounts /admin/v1, behind a bearer token.
func addAdminRoutes(r chi.Router, logger *slog.Logger, requests RequestStore, opts Options, j *journal) {
	admin := opts.AdminStore
	r.Route("/admin/v1", func(r chi.Router) {
		r.Use(requireToken(opts.AdminToken))
		r.Get("/requests", func(w http.ResponseWriter, r *http.Request) {
			limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
			list, err := admin.ListRequests(r.Context(), store.ListFilter{State: storedState(r.URL.Query().Get("state")), Limit: limit})
			if err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			out := make([]adminRequest, 0, len(list))
			for _, req := range list {
				out = append(out, opts.adminView(req))
			}
			adminJSON(w, http.StatusOK, map[string]any{"requests": out})
		})
		r.Get("/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
			req, ok := adminLoad(w, r, logger, requests)
			if !ok {
				return
			}
			v := opts.adminView(req)
			evs, err := requests.Events(r.Context(), req.ID, 500)
			if err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			for _, e := range evs {
				v.Events = append(v.Events, adminEvent{e.At, e.Level, e.Message})
			}
			adminJSON(w, http.StatusOK, v)
		})
		r.Post("/requests/{id}/state", func(w http.ResponseWriter, r *http.Request) {
			req, ok := adminLoad(w, r, logger, requests)
			if !ok {
				return
			}
			var body struct {
				State           string `json:"state"`
				CustomerMessage string `json:"customer_message"`
			}
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
				adminJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
				return
			}
			if strings.ContainsRune(body.CustomerMessage, 0) {
				adminJSON(w, http.StatusBadRequest, map[string]string{"error": "customer_message: a NUL character cannot be stored"})
				return
			}
			to := storedState(body.State)
			if to == "" {
				adminJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown state " + strconv.Quote(body.State) +
					" (draft, queued/pending, processing, testing, done, delivered, failed/invalid, cancelled)"})
				return
			}
			got, err := admin.ForceState(r.Context(), req.ID, to, body.CustomerMessage)
			if err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			adminJSON(w, http.StatusOK, opts.adminView(got))
		})
		r.Put("/requests/{id}/scenario", func(w http.ResponseWriter, r *http.Request) {
			req, ok := adminLoad(w, r, logger, requests)
			if !ok {
				return
			}
			var body struct {
				Scenario string `json:"scenario"`
			}
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
				adminJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
				return
			}
			if strings.ContainsRune(body.Scenario, 0) {
				adminJSON(w, http.StatusBadRequest, map[string]string{"error": "scenario: a NUL character cannot be stored"})
				return
			}
			var sc *string
			polls := 0
			if body.Scenario != "" {
				if !scenario.Is(body.Scenario) {
					body.Scenario = scenario.Prefix + body.Scenario
				}
				parsed, err := scenario.Parse(body.Scenario)
				if err != nil {
					adminJSON(w, http.StatusBadRequest, map[string]string{"error": "scenario: " + err.Error()})
					return
				}
				sc, polls = &body.Scenario, parsed.Polls
			}
			got, err := admin.SetScenario(r.Context(), req.ID, sc, polls)
			if err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			adminJSON(w, http.StatusOK, opts.adminView(got))
		})
		r.Delete("/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
			req, ok := adminLoad(w, r, logger, requests)
			if !ok {
				return
			}
			if err := admin.DeleteRequest(r.Context(), req.ID); err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			if err := os.RemoveAll(opts.Data.Request(req.ID)); err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			adminJSON(w, http.StatusOK, map[string]any{"deleted": []int64{req.ID}})
		})
		r.Post("/reset", func(w http.ResponseWriter, r *http.Request) {
			ids, err := admin.DeleteAllRequests(r.Context())
			if err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			for _, id := range ids {
				if err := os.RemoveAll(opts.Data.Request(id)); err != nil {
					adminError(w, logger, r, http.StatusInternalServerError, err)
					return
				}
			}
			j.reset()
			if ids == nil {
				ids = []int64{}
			}
			adminJSON(w, http.StatusOK, map[string]any{"deleted": ids})
		})
		r.Get("/export", handleExport(logger, admin, opts))
		r.Post("/import", handleImport(logger, admin, opts))
		r.Route("/faults", func(r chi.Router) {
			list := func(w http.ResponseWriter) {
				rules, seed := opts.Faults.List()
				adminJSON(w, http.StatusOK, map[string]any{"seed": seed, "rules": rules})
			}
			r.Get("/", func(w http.ResponseWriter, r *http.Request) { list(w) })
			r.Post("/", func(w http.ResponseWriter, r *http.Request) {
				var rule fault.Rule
				if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&rule); err != nil {
					adminJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
					return
				}
				got, err := opts.Faults.Add(rule)
				if err != nil {
					adminJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
					return
				}
				adminJSON(w, http.StatusCreated, got)
			})
			r.Delete("/", func(w http.ResponseWriter, r *http.Request) { opts.Faults.Clear(); list(w) })
			r.Delete("/{fid}", func(w http.ResponseWriter, r *http.Request) {
				id, _ := strconv.Atoi(chi.URLParam(r, "fid"))
				if !opts.Faults.Remove(id) {
					adminJSON(w, http.StatusNotFound, map[string]string{"error": "no such rule"})
					return
				}
				list(w)
			})
			r.Put("/seed", func(w http.ResponseWriter, r *http.Request) {
				var body struct {
					Seed uint64 `json:"seed"`
				}
				if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
					adminJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
					return
				}
				opts.Faults.Seed(body.Seed)
				list(w)
			})
		})
		r.Get("/journal", func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.Atoi(r.URL.Query().Get("limit"))
			adminJSON(w, http.StatusOK, map[string]any{"calls": j.last(n)})
		})
	})
}

// storedState reads a stored or v1 state name.
func storedState(s string) store.State {
	switch strings.TrimSpace(s) {
	case "pending":
		return store.StateQueued
	case "invalid":
		return store.StateFailed
	case "":
		return ""
	}
	st := store.State(strings.TrimSpace(s))
	switch st {
	case store.StateDraft, store.StateQueued, store.StateProcessing, store.StateTesting, store.StateDone,
		store.StateDelivered, store.StateFailed, store.StateCancelled:
		return st
	}
	return ""
}

func requireToken(token string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="upgrade-server admin"`)
				adminJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid admin token is needed (Authorization: Bearer <UPGRADE_ADMIN_TOKEN>)"})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func adminLoad(w http.ResponseWriter, r *http.Request, logger *slog.Logger, requests RequestStore) (store.Request, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		adminJSON(w, http.StatusBadRequest, map[string]string{"error": "the request id is a positive integer"})
		return store.Request{}, false
	}
	req, err := requests.Request(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		adminJSON(w, http.StatusNotFound, map[string]string{"error": "no request " + strconv.FormatInt(id, 10)})
		return store.Request{}, false
	}
	if err != nil {
		adminError(w, logger, r, http.StatusInternalServerError, err)
		return store.Request{}, false
	}
	return req, true
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func adminError(w http.ResponseWriter, logger *slog.Logger, r *http.Request, status int, err error) {
	id := correlationID(r.Context())
	if r.Context().Err() != nil { // the client went away
		logger.Info("admin: client gone before the answer", "correlation_id", id, "err", err)
		return
	}
	logger.Error("admin", "correlation_id", id, "err", err)
	adminJSON(w, status, map[string]string{"error": "internal error (reference " + id + ")"})
}
