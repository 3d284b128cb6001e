package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/upgrade-server/upgrade-server/internal/input"
)

// withCorrelationID gives every call an id, returned in X-Request-Id and
// attached to its log lines.
func withCorrelationID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 8)
		rand.Read(b)
		id := hex.EncodeToString(b)
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), correlationKey, id)))
	})
}

// logRequests logs one line per call with the route pattern, never the raw
// path or query: both can hold a request's key.
func logRequests(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			route := chi.RouteContext(r.Context()).RoutePattern()
			if route == "" {
				route = "(no route)"
			}
			attrs := []slog.Attr{
				slog.String("correlation_id", correlationID(r.Context())),
				slog.String("method", r.Method),
				slog.String("route", route),
				slog.Int("status", ww.Status()),
				slog.Int64("bytes_in", r.ContentLength),
				slog.Int("bytes_out", ww.BytesWritten()),
				slog.Duration("duration", time.Since(start)),
			}
			if id := requestIDOf(r); id != "" {
				attrs = append(attrs, slog.String("request_id", id))
			}
			logger.LogAttrs(r.Context(), slog.LevelInfo, "http", attrs...)
		})
	}
}

// requestIDOf is the upgrade request's id, if the call names one in its
// canonical form (anything else is not logged: it may be any text).
func requestIDOf(r *http.Request) string {
	id := chi.URLParam(r, "id")
	if id == "" {
		id = r.URL.Query().Get("request")
	}
	if _, ok := input.RequestID(id); !ok {
		return ""
	}
	return id
}

// recoverPanics turns a panic into a logged SERVER:ERROR.
func recoverPanics(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("panic", "correlation_id", correlationID(r.Context()), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				writeAnswer(w, r, logger, http.StatusInternalServerError, []failure{serverError(correlationID(r.Context()))}, nil)
			}()
			next.ServeHTTP(w, r)
		})
	}
}
