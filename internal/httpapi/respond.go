package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
)

// answer is every JSON answer: failures first, then the request.
type answer struct {
	Failures []failure `json:"failures"`
	Request  any       `json:"request"`
}

// writeAnswer writes a v1 answer: failures first, then the request.
func writeAnswer(w http.ResponseWriter, r *http.Request, logger *slog.Logger, status int, fails []failure, req any) {
	if fails == nil {
		fails = []failure{}
	}
	writeJSON(w, r, logger, status, answer{Failures: fails, Request: req})
}

// writeJSON is the single exit of every JSON answer, v1 and admin alike.
// Once the headers are sent, an encoding error (the client went away) is
// logged, not written.
func writeJSON(w http.ResponseWriter, r *http.Request, logger *slog.Logger, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		logger.LogAttrs(r.Context(), slog.LevelDebug, "write answer", slog.String("correlation_id", correlationID(r.Context())), slog.Any("err", err))
	}
}

// writeInternal logs err with the correlation id and answers SERVER:ERROR;
// the details never reach the client. When the client went away (its
// request's context ended, so err is most likely that), it is logged at
// INFO and nothing is written.
func writeInternal(w http.ResponseWriter, r *http.Request, logger *slog.Logger, status int, err error) {
	id := correlationID(r.Context())
	if r.Context().Err() != nil {
		logger.LogAttrs(r.Context(), slog.LevelInfo, "client gone before the answer", slog.String("correlation_id", id), slog.Any("err", err))
		return
	}
	logger.LogAttrs(r.Context(), slog.LevelError, "internal error", slog.String("correlation_id", id), slog.Any("err", err))
	writeAnswer(w, r, logger, status, []failure{serverError(id)}, nil)
}

type ctxKey int

const correlationKey ctxKey = iota

func correlationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey).(string)
	return id
}
