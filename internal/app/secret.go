package app

import (
	"context"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// redacted replaces a secret in messages.
const redacted = "xxxxx"

// dsnSecrets returns the passwords a database connection string holds, in
// every spelling an error message might quote them: the userinfo of a
// postgres:// URL, its password= (and sslpassword=) query parameters, and
// the password= of libpq's key=value form (quoted or not). Each comes raw
// and decoded.
func dsnSecrets(dsn string) []string {
	var out []string
	add := func(vals ...string) {
		for _, v := range vals {
			if v != "" && !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		// By hand first: url.Parse fails on some URLs pgx still reads,
		// and then so much the better if this finds the password anyway.
		rest := dsn[strings.Index(dsn, "://")+3:]
		if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				dec, _ := url.PathUnescape(pw)
				add(pw, dec)
			}
		}
		if _, query, ok := strings.Cut(dsn, "?"); ok {
			for _, kv := range strings.Split(query, "&") {
				k, v, _ := strings.Cut(kv, "=")
				if k == "password" || k == "sslpassword" {
					dec, _ := url.QueryUnescape(v)
					add(v, dec)
				}
			}
		}
		return out
	}
	// key=value: password=secret, password='a secret', password = 'it\'s'
	for s := dsn; s != ""; {
		s = strings.TrimLeft(s, " \t\n\r")
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t\n\r")
		var raw, val string
		if strings.HasPrefix(s, "'") {
			end := 1
			var b strings.Builder
			for end < len(s) && s[end] != '\'' {
				if s[end] == '\\' && end+1 < len(s) {
					end++
				}
				b.WriteByte(s[end])
				end++
			}
			raw, val = s[1:min(end, len(s))], b.String()
			s = s[min(end+1, len(s)):]
		} else {
			end := strings.IndexAny(s, " \t\n\r")
			if end < 0 {
				end = len(s)
			}
			raw, val = s[:end], strings.ReplaceAll(s[:end], `\`, "")
			s = s[end:]
		}
		if key == "password" || key == "sslpassword" {
			add(raw, val)
		}
	}
	return out
}

// The places a connection string keeps its password, whatever the
// password: password=… of the key=value form or a URL's query (quoted or
// not), and the userinfo of a URL.
var (
	passwordKV = regexp.MustCompile(`(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&'"]+)`)
	userinfoPW = regexp.MustCompile(`(://[^:/@\s]*:)[^/\s]*@`)
)

// redact removes passwords from s: wherever a connection string keeps one
// (passwordKV, userinfoPW), and each known secret where it follows ":" and
// precedes "@" or follows "password=" (a decoded URL password may hold "@"
// or "/"). A bare word equal to a password is left alone: the compose
// file's password is "upgrade", a word every log line has.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, ":"+sec+"@", ":"+redacted+"@")
		s = strings.ReplaceAll(s, "password="+sec, "password="+redacted)
		s = strings.ReplaceAll(s, "password='"+sec+"'", "password="+redacted)
	}
	s = passwordKV.ReplaceAllString(s, "${1}"+redacted)
	return userinfoPW.ReplaceAllString(s, "${1}"+redacted+"@")
}

// redactedError is an error whose text had secrets removed; errors.Is and
// errors.As still see the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr hides secrets in err's text.
func redactErr(err error, secrets []string) error {
	if err == nil || len(secrets) == 0 {
		return err
	}
	msg := err.Error()
	if clean := redact(msg, secrets); clean != msg {
		return &redactedError{msg: clean, err: err}
	}
	return err
}

// redactingHandler removes secrets from every log line: its message and
// every string, error or other value an attribute renders to.
type redactingHandler struct {
	next    slog.Handler
	secrets []string
}

// redactLogs wraps a logger so no line can carry one of secrets.
func redactLogs(logger *slog.Logger, secrets []string) *slog.Logger {
	if len(secrets) == 0 {
		return logger
	}
	return slog.New(redactingHandler{next: logger.Handler(), secrets: secrets})
}

func (h redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, redact(r.Message, h.secrets), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, redact(v.String(), h.secrets))
	case slog.KindGroup:
		attrs := v.Group()
		clean := make([]any, 0, len(attrs))
		for _, g := range attrs {
			clean = append(clean, h.attr(g))
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.Any(a.Key, redactErr(err, h.secrets))
		}
		s := v.String()
		if clean := redact(s, h.secrets); clean != s {
			return slog.String(a.Key, clean)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (h redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return redactingHandler{next: h.next.WithAttrs(clean), secrets: h.secrets}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{next: h.next.WithGroup(name), secrets: h.secrets}
}
