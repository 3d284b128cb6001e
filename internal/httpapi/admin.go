package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
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

// adminViewer renders requests for the admin API.
type adminViewer struct{ rec recorder }

func (v adminViewer) view(r store.Request) adminRequest {
	return adminRequest{Record: v.rec.record(r), StoredState: r.State, Contract: r.Contract, UploadSize: r.UploadSize,
		UploadSHA256: r.UploadSHA256, UploadCompletedAt: r.UploadCompletedAt, Uploading: r.Uploading,
		Scenario: r.Scenario, StatusPolls: r.StatusPolls, SFTPExpiresAt: r.SFTPExpiresAt}
}

func handleAdminList(logger *slog.Logger, admin AdminStore, v adminViewer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		list, err := admin.ListRequests(r.Context(), store.ListFilter{State: storedState(r.URL.Query().Get("state")), Limit: limit})
		if err != nil {
			adminError(w, logger, r, err)
			return
		}
		out := make([]adminRequest, 0, len(list))
		for _, req := range list {
			out = append(out, v.view(req))
		}
		writeJSON(w, r, logger, http.StatusOK, map[string]any{"requests": out})
	}
}

func handleAdminShow(logger *slog.Logger, requests RequestStore, v adminViewer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, ok := adminLoad(w, r, logger, requests)
		if !ok {
			return
		}
		out := v.view(req)
		evs, err := requests.Events(r.Context(), req.ID, 500)
		if err != nil {
			adminError(w, logger, r, err)
			return
		}
		for _, e := range evs {
			out.Events = append(out.Events, adminEvent{e.At, e.Level, e.Message})
		}
		writeJSON(w, r, logger, http.StatusOK, out)
	}
}

func handleAdminState(logger *slog.Logger, requests RequestStore, admin AdminStore, v adminViewer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, ok := adminLoad(w, r, logger, requests)
		if !ok {
			return
		}
		var body struct {
			State           string `json:"state"`
			CustomerMessage string `json:"customer_message"`
		}
		if !adminBody(w, r, logger, &body) {
			return
		}
		if strings.ContainsRune(body.CustomerMessage, 0) {
			adminBad(w, r, logger, "customer_message: a NUL character cannot be stored")
			return
		}
		to := storedState(body.State)
		if to == "" {
			adminBad(w, r, logger, "unknown state "+strconv.Quote(body.State)+
				" (draft, queued/pending, processing, testing, done, delivered, failed/invalid, cancelled)")
			return
		}
		got, err := admin.ForceState(r.Context(), req.ID, to, body.CustomerMessage)
		if err != nil {
			adminError(w, logger, r, err)
			return
		}
		writeJSON(w, r, logger, http.StatusOK, v.view(got))
	}
}

func handleAdminScenario(logger *slog.Logger, requests RequestStore, admin AdminStore, v adminViewer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, ok := adminLoad(w, r, logger, requests)
		if !ok {
			return
		}
		var body struct {
			Scenario string `json:"scenario"`
		}
		if !adminBody(w, r, logger, &body) {
			return
		}
		if strings.ContainsRune(body.Scenario, 0) {
			adminBad(w, r, logger, "scenario: a NUL character cannot be stored")
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
				adminBad(w, r, logger, "scenario: "+err.Error())
				return
			}
			sc, polls = &body.Scenario, parsed.Polls
		}
		got, err := admin.SetScenario(r.Context(), req.ID, sc, polls)
		if err != nil {
			adminError(w, logger, r, err)
			return
		}
		writeJSON(w, r, logger, http.StatusOK, v.view(got))
	}
}

// handleAdminDelete removes a request: its record first, then its files (a
// crash in between leaves files without a record, which the start-up sweep
// removes; never a record without its files).
func handleAdminDelete(logger *slog.Logger, requests RequestStore, admin AdminStore, fs FileStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, ok := adminLoad(w, r, logger, requests)
		if !ok {
			return
		}
		if err := admin.DeleteRequest(r.Context(), req.ID); err != nil {
			adminError(w, logger, r, err)
			return
		}
		if err := removeFiles(context.WithoutCancel(r.Context()), admin, fs, []int64{req.ID}); err != nil {
			adminError(w, logger, r, err)
			return
		}
		writeJSON(w, r, logger, http.StatusOK, map[string]any{"deleted": []int64{req.ID}})
	}
}

// handleAdminReset removes every request (records first, then files) and
// empties the journal.
func handleAdminReset(logger *slog.Logger, admin AdminStore, fs FileStore, j *journal) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ids, err := admin.DeleteAllRequests(r.Context())
		if err != nil {
			adminError(w, logger, r, err)
			return
		}
		if err := removeFiles(context.WithoutCancel(r.Context()), admin, fs, ids); err != nil {
			adminError(w, logger, r, err)
			return
		}
		j.reset()
		if ids == nil {
			ids = []int64{}
		}
		writeJSON(w, r, logger, http.StatusOK, map[string]any{"deleted": ids})
	}
}

// removeFiles removes deleted requests' files, then forgets their deletion
// records (a crash before that leaves the records for the start-up sweep).
func removeFiles(ctx context.Context, admin ImportStore, fs FileStore, ids []int64) error {
	for _, id := range ids {
		if err := fs.RemoveRequest(ctx, id); err != nil {
			return err
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return admin.ForgetDeleted(ctx, ids)
}

func handleFaultsList(logger *slog.Logger, faults *fault.Injector) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { writeFaults(w, r, logger, faults) }
}

func writeFaults(w http.ResponseWriter, r *http.Request, logger *slog.Logger, faults *fault.Injector) {
	rules, seed := faults.List()
	writeJSON(w, r, logger, http.StatusOK, map[string]any{"seed": seed, "rules": rules})
}

func handleFaultsAdd(logger *slog.Logger, faults *fault.Injector) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var rule fault.Rule
		if !adminBody(w, r, logger, &rule) {
			return
		}
		got, err := faults.Add(rule)
		if err != nil {
			adminBad(w, r, logger, err.Error())
			return
		}
		writeJSON(w, r, logger, http.StatusCreated, got)
	}
}

func handleFaultsClear(logger *slog.Logger, faults *fault.Injector) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { faults.Clear(); writeFaults(w, r, logger, faults) }
}

func handleFaultsRemove(logger *slog.Logger, faults *fault.Injector) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(chi.URLParam(r, "fid"))
		if !faults.Remove(id) {
			writeJSON(w, r, logger, http.StatusNotFound, map[string]string{"error": "no such rule"})
			return
		}
		writeFaults(w, r, logger, faults)
	}
}

func handleFaultsSeed(logger *slog.Logger, faults *fault.Injector) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Seed uint64 `json:"seed"`
		}
		if !adminBody(w, r, logger, &body) {
			return
		}
		faults.Seed(body.Seed)
		writeFaults(w, r, logger, faults)
	}
}

func handleJournal(logger *slog.Logger, j *journal) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		writeJSON(w, r, logger, http.StatusOK, map[string]any{"calls": j.last(n)})
	}
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
				writeJSON(w, r, slog.New(slog.DiscardHandler), http.StatusUnauthorized,
					map[string]string{"error": "a valid admin token is needed (Authorization: Bearer <UPGRADE_ADMIN_TOKEN>)"})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func adminLoad(w http.ResponseWriter, r *http.Request, logger *slog.Logger, requests RequestStore) (store.Request, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		adminBad(w, r, logger, "the request id is a positive integer")
		return store.Request{}, false
	}
	req, err := requests.Request(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, r, logger, http.StatusNotFound, map[string]string{"error": "no request " + strconv.FormatInt(id, 10)})
		return store.Request{}, false
	}
	if err != nil {
		adminError(w, logger, r, err)
		return store.Request{}, false
	}
	return req, true
}

// adminBody decodes a JSON body (1 MiB at most), answering 400 when it
// cannot.
func adminBody(w http.ResponseWriter, r *http.Request, logger *slog.Logger, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v); err != nil {
		adminBad(w, r, logger, "body: "+err.Error())
		return false
	}
	return true
}

func adminBad(w http.ResponseWriter, r *http.Request, logger *slog.Logger, msg string) {
	writeJSON(w, r, logger, http.StatusBadRequest, map[string]string{"error": msg})
}

// adminError logs err with the correlation id and answers 500 without
// details (nothing when the client went away).
func adminError(w http.ResponseWriter, logger *slog.Logger, r *http.Request, err error) {
	id := correlationID(r.Context())
	if r.Context().Err() != nil { // the client went away
		logger.Info("admin: client gone before the answer", "correlation_id", id, "err", err)
		return
	}
	logger.Error("admin", "correlation_id", id, "err", err)
	writeJSON(w, r, logger, http.StatusInternalServerError, map[string]string{"error": "internal error (reference " + id + ")"})
}
