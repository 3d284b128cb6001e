package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// statusView is a request's status page, and what status.json answers
// for the page to stay live.
type statusView struct {
	ID      int64  `json:"id"`
	State   string `json:"state"` // v1's name
	Label   string `json:"label"`
	Explain string `json:"explain"`
	// Active: the request may still change (the page polls status.json
	// every PollMS).
	Active   bool       `json:"active"`
	PollMS   int        `json:"poll_ms"`
	Facts    []fact     `json:"facts"`
	Message  string     `json:"message"` // the reason of a failure, an operator's word
	Progress *progress  `json:"progress"`
	Files    []fileLink `json:"files"`
	// Draft: the request waits for its dump (the page says how to upload);
	// Uploaded: a complete upload waits for process.
	Draft    bool      `json:"draft"`
	Uploaded bool      `json:"uploaded"`
	Log      []logLine `json:"log"`
	After    int64     `json:"after"` // the last log line's id: status.json?after= gives the lines after it

	// For the page only.
	Help     *uploadHelp `json:"-"`
	SFTP     *sftpAccess `json:"-"`
	HostKeys []string    `json:"-"`
	JSONPath string      `json:"-"`
	FormPath string      `json:"-"`
	NotesURL string      `json:"-"`
}

type fact struct {
	Label string `json:"label"`
	Value string `json:"value"`
}

type fileLink struct {
	Label string `json:"label"`
	Name  string `json:"name"` // the download's file name
	URL   string `json:"url"`
	Main  bool   `json:"main"` // the upgraded dump: the one people come for
}

type logLine struct {
	ID      int64  `json:"id"`
	At      string `json:"at"`
	Level   string `json:"level"`
	Message string `json:"message"`
}

// progress is how far processing has gone: step n of m (the request log
// has a line for each step as it starts), time elapsed against the
// estimate.
type progress struct {
	Step      int    `json:"step"`
	Steps     int    `json:"steps"`
	StepName  string `json:"step_name"`
	Elapsed   string `json:"elapsed"`
	Estimated string `json:"estimated"` // "" while unknown
	Text      string `json:"text"`
	// Percent is how far the run has gone: elapsed against the estimate,
	// never below the steps done nor at 100 before the end; halfway through
	// the current step when there is no estimate.
	Percent int `json:"percent"`
}

// uploadHelp says how to upload a draft's dump, with the exact commands.
type uploadHelp struct {
	UploadPath, ProcessPath string // for the page's script (this server, from its root)
	Curl, CurlProcess       string
	SFTPGrant, SFTPCommand  string
	SFTPPut                 string
	MaxUpload               int64
	MaxText                 string
	Filename                string
}

type sftpAccess struct {
	Command  string
	File     string
	Expires  string
	Download bool // done: the upgraded dump is there to get
}

// pathRequest authenticates /database/<region>/<id>/<key>/…, as the API's
// file URLs do: a wrong region, id or key all look like an unknown
// request; each segment is read percent-decoded and the id only in its one
// form; keys are compared in constant time.
func (p *Pages) pathRequest(ctx context.Context, r *http.Request) (store.Request, bool, error) {
	region, err1 := url.PathUnescape(chi.URLParam(r, "region"))
	rawID, err2 := url.PathUnescape(chi.URLParam(r, "id"))
	key, err3 := url.PathUnescape(chi.URLParam(r, "key"))
	if err1 != nil || err2 != nil || err3 != nil || region != p.cfg.Region {
		return store.Request{}, false, nil
	}
	id, ok := input.RequestID(rawID)
	if !ok {
		return store.Request{}, false, nil
	}
	req, err := store.RequestByKey(ctx, p.cfg.Requests, id, key)
	if errors.Is(err, store.ErrNotFound) {
		return store.Request{}, false, nil
	}
	return req, err == nil, err
}

// logLimit is how many log lines the page shows (the newest).
const logLimit = 500

// handleStatusPage renders status_url. The page then stays live through
// status.json (with JavaScript); without, it is right as of its loading.
func (p *Pages) handleStatusPage(w http.ResponseWriter, r *http.Request) {
	req, ok, err := p.pathRequest(r.Context(), r)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	if !ok {
		p.requestNotFound(w, r)
		return
	}
	v, err := p.statusView(r.Context(), req, 0)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "status.html", cspScript, page{Title: fmt.Sprintf("Request %d: %s", req.ID, v.Label),
		Scripts: []string{"upload.js", "status.js"}, Body: v})
}

// handleStatusJSON is what the status page polls: the request as the page
// shows it, with the log lines after the one given (?after=<id>).
func (p *Pages) handleStatusJSON(w http.ResponseWriter, r *http.Request) {
	req, ok, err := p.pathRequest(r.Context(), r)
	if err != nil {
		p.internalJSON(w, r, err)
		return
	}
	if !ok {
		secure(w, cspData)
		p.requestNotFound(w, r)
		return
	}
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	v, err := p.statusView(r.Context(), req, max(after, 0))
	if err != nil {
		p.internalJSON(w, r, err)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		p.internalJSON(w, r, err)
		return
	}
	secure(w, cspData)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (p *Pages) internalJSON(w http.ResponseWriter, r *http.Request, err error) {
	ref := w.Header().Get("X-Request-Id")
	if r.Context().Err() != nil {
		p.logger.Info("client gone before the answer", "correlation_id", ref, "err", err)
		return
	}
	p.logger.Error("internal error", "correlation_id", ref, "err", err)
	secure(w, cspData)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `{"error": "internal error (reference %s)"}`+"\n", ref)
}

// The words of each state: a label, and what it means for the person.
var stateWords = map[store.State][2]string{
	store.StateDraft:      {"Waiting for the dump", "Upload the database dump; the upgrade starts once it is uploaded."},
	store.StateQueued:     {"Waiting for a worker", "The upgrade starts as soon as a worker is free."},
	store.StateProcessing: {"Upgrading", "The database is being upgraded."},
	store.StateTesting:    {"Upgraded, held for testing", "The upgraded database is ready for your tests; it is delivered once they are skipped (skip_test)."},
	store.StateDone:       {"Done", "The upgraded database is ready to download."},
	store.StateDelivered:  {"Delivered", "The upgraded database is delivered and ready to download."},
	store.StateFailed:     {"Failed", "The upgrade stopped; the reason is below."},
	store.StateCancelled:  {"Cancelled", "The request was cancelled."},
}

func (p *Pages) statusView(ctx context.Context, req store.Request, after int64) (statusView, error) {
	now := p.cfg.NowFunc()
	words := stateWords[req.State]
	v := statusView{ID: req.ID, State: req.State.V1(), Label: words[0], Explain: words[1],
		Draft: req.State == store.StateDraft, Uploaded: req.UploadCompletedAt != nil && req.State == store.StateDraft,
		HostKeys: p.cfg.SFTP.HostKeys, FormPath: p.base + "/"}
	statusPath := p.statusPath(req.ID, req.Key)
	v.JSONPath = statusPath + ".json"
	switch req.State {
	case store.StateDraft:
		v.Active, v.PollMS = true, 3000
	case store.StateQueued, store.StateProcessing:
		v.Active, v.PollMS = true, 1000
	case store.StateTesting:
		v.Active, v.PollMS = true, 5000
	}
	if v.Uploaded {
		v.Explain = "The dump is uploaded; start the upgrade."
	}
	if req.CustomerMessage != nil {
		v.Message = *req.CustomerMessage
	}
	v.Facts = p.facts(req, now)

	lines, err := p.cfg.Requests.LogSince(ctx, req.ID, after, logLimit)
	if err != nil {
		return statusView{}, err
	}
	v.After = after
	for _, l := range lines {
		v.Log = append(v.Log, logLine{ID: l.ID, At: l.At.UTC().Format("2006-01-02 15:04:05"), Level: l.Level, Message: l.Message})
		v.After = l.ID
	}
	if v.Log == nil {
		v.Log = []logLine{}
	}
	if req.State == store.StateProcessing {
		all, err := p.cfg.Requests.LogSince(ctx, req.ID, 0, 300)
		if err != nil {
			return statusView{}, err
		}
		v.Progress = p.progress(req, all, now)
	}

	links, err := p.fileLinks(ctx, req)
	if err != nil {
		return statusView{}, err
	}
	v.Files = links
	for _, f := range links {
		if strings.HasSuffix(f.URL, "/upgraded/notes") {
			v.NotesURL = f.URL
		}
	}
	if v.Draft {
		v.Help = p.uploadHelp(req)
	}
	if req.SFTPGrantedAt != nil {
		a := &sftpAccess{Command: p.sftpCommand(req.ID), File: input.ShownName(req.Filename),
			Download: req.State == store.StateDone || req.State == store.StateDelivered}
		if a.Download {
			a.File = "upgraded_" + a.File
		}
		if req.SFTPExpiresAt != nil {
			a.Expires = req.SFTPExpiresAt.UTC().Format("2006-01-02 15:04") + " UTC"
		}
		v.SFTP = a
	}
	return v, nil
}

func (p *Pages) facts(req store.Request, now time.Time) []fact {
	orNot := func(s *string, prefix, none string) string {
		if s == nil || *s == "" {
			return none
		}
		return prefix + *s
	}
	size := "not uploaded yet"
	switch {
	case req.UploadSize != nil:
		size = humanBytes(*req.UploadSize)
	case req.State == store.StateDraft && p.cfg.Files != nil:
		if n, ok := p.cfg.Files.StagedSize(req.ID, files.Upload); ok && n > 0 {
			size = humanBytes(n) + " so far (an SFTP upload is running)"
		}
	}
	if req.Uploading && req.UploadSize != nil {
		size += " (a new upload is running)"
	}
	layers := "not known yet"
	if len(req.Compressions) > 0 {
		layers = strings.Join(req.Compressions, " › ")
	}
	filestore := "no"
	if req.Filestore {
		filestore = "included"
	}
	aim := req.Aim
	for _, a := range aims {
		if a.Value == req.Aim {
			aim = a.Label + ": " + strings.ToLower(a.Explain[:1]) + a.Explain[1:]
		}
	}
	out := []fact{
		{"Database file", input.ShownName(req.Filename)},
		{"Size", size},
		{"Source version", orNot(req.DatabaseVersion, "Odoo ", "not known yet")},
		{"Target version", "Odoo " + req.Target},
		{"Aim", aim},
		{"PostgreSQL of the dump", orNot(req.PostgreSQL, "", "not known yet")},
		{"Dump layers", layers},
		{"Filestore", filestore},
		{"Created", req.CreatedAt.UTC().Format("2006-01-02 15:04:05") + " UTC"},
	}
	if req.ProcessedAt != nil {
		out = append(out, fact{"Processing started", req.ProcessedAt.UTC().Format("2006-01-02 15:04:05") + " UTC"})
		end := now
		if req.FinishedAt != nil && req.State != store.StateProcessing && req.State != store.StateQueued {
			end = *req.FinishedAt
		}
		out = append(out, fact{"Elapsed", clock(end.Sub(*req.ProcessedAt))})
	}
	if req.EstimatedSeconds != nil {
		out = append(out, fact{"Estimated time", clock(time.Duration(*req.EstimatedSeconds) * time.Second)})
	}
	return out
}

// clock is a duration as people read a timer: "0:42", "12:05", "1:02:03".
func clock(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// plannedSteps is how many steps a run has (the engine logs "<step>…" as
// each starts): inspection, then per engine passthrough's one, or restore,
// upgrade (builtin: modules, neutralization of a test database) and dump;
// a scenario run has one.
func plannedSteps(engine, aim string, scenario bool) int {
	switch {
	case scenario:
		return 1
	case engine == "passthrough":
		return 2
	case engine == "command":
		return 4 // inspect, restore, command, dump
	case aim == "test":
		return 5 // inspect, restore, modules, neutralize, dump
	}
	return 4
}

// attemptStart tells the lines that start a run: the request was queued
// (by process or an operator) or a worker took it over.
func attemptStart(msg string) bool {
	return msg == "Queued for processing." || strings.HasPrefix(msg, "An operator moved the request to ") ||
		(strings.HasPrefix(msg, "Attempt ") && strings.Contains(msg, "taking over"))
}

// stepStart tells the engine's "<step>…" lines (not a command's own
// output, which the log shows as "| …").
func stepStart(l store.LogLine) bool {
	return l.Level == "info" && strings.HasSuffix(l.Message, "…") && !strings.HasPrefix(l.Message, "| ")
}

func (p *Pages) progress(req store.Request, log []store.LogLine, now time.Time) *progress {
	pr := &progress{Steps: plannedSteps(p.cfg.Engine, req.Aim, req.Scenario != nil)}
	for _, l := range log {
		switch {
		case attemptStart(l.Message):
			pr.Step, pr.StepName = 0, ""
		case stepStart(l):
			pr.Step++
			pr.StepName = strings.TrimSuffix(l.Message, "…")
		}
	}
	if pr.Step > pr.Steps {
		pr.Steps = pr.Step
	}
	if req.ProcessedAt != nil {
		pr.Elapsed = clock(now.Sub(*req.ProcessedAt))
	}
	if req.EstimatedSeconds != nil && *req.EstimatedSeconds > 0 {
		pr.Estimated = clock(time.Duration(*req.EstimatedSeconds) * time.Second)
	}
	done := float64(max(pr.Step-1, 0)) / float64(pr.Steps)
	frac := done + 0.5/float64(pr.Steps)
	if req.ProcessedAt != nil && req.EstimatedSeconds != nil && *req.EstimatedSeconds > 0 {
		frac = max(now.Sub(*req.ProcessedAt).Seconds()/float64(*req.EstimatedSeconds), done)
	}
	if pr.Step == 0 {
		frac = 0
	}
	pr.Percent = int(min(frac, 0.99) * 100)
	switch {
	case pr.Step == 0:
		pr.Text = "Starting"
	default:
		pr.Text = fmt.Sprintf("Step %d of %d: %s", pr.Step, pr.Steps, pr.StepName)
	}
	if pr.Elapsed != "" {
		pr.Text += " · " + pr.Elapsed + " elapsed"
		if pr.Estimated != "" {
			pr.Text += " of about " + pr.Estimated
		}
	}
	return pr
}

// fileLinks are the request's file URLs whose file exists, the upgraded
// dump first. What a run makes (upgraded dump, report, modules) is offered
// once the run has ended well (a run writes some of it before it ends);
// the plain SQL forms only for a dump the server could read (inspection
// named its layers).
func (p *Pages) fileLinks(ctx context.Context, req store.Request) ([]fileLink, error) {
	infos, err := p.cfg.Files.List(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	have := map[files.Name]bool{}
	for _, f := range infos {
		have[f.Name] = true
	}
	name := input.ShownName(req.Filename)
	stem := sqlStem(name)
	link := func(suffix string) string { return p.publicStatus(req) + "/" + suffix }
	readable := len(req.Compressions) > 0 && p.cfg.SQLStreams
	upgraded := req.State == store.StateDone || req.State == store.StateDelivered || req.State == store.StateTesting
	var out []fileLink
	if upgraded && have[files.UpgradedArchive] {
		out = append(out, fileLink{Label: "Upgraded dump", Name: "upgraded_" + name, URL: link("upgraded/archive"), Main: true})
		if readable {
			out = append(out, fileLink{Label: "Upgraded dump as plain SQL", Name: "upgraded_" + stem + ".sql", URL: link("upgraded/sql")})
		}
	}
	// A directory-format result (Odoo's own client downloads it with
	// rsync) is a folder: offered here as plain SQL only.
	if upgraded && have[files.UpgradedDir] && p.cfg.SQLStreams {
		out = append(out, fileLink{Label: "Upgraded dump as plain SQL", Name: "upgraded_" + stem + ".sql", URL: link("upgraded/sql"), Main: true})
	}
	if upgraded && have[files.Notes] {
		out = append(out, fileLink{Label: "Upgrade report", Name: fmt.Sprintf("upgrade_notes_%d.html", req.ID), URL: link("upgraded/notes")})
	}
	if upgraded && have[files.Modules] {
		out = append(out, fileLink{Label: "Modules before and after", Name: fmt.Sprintf("modules_%d.zip", req.ID), URL: link("modules/archive")})
	}
	if req.UploadCompletedAt != nil && req.UploadName != nil && have[files.Name(*req.UploadName)] {
		if !files.Name(*req.UploadName).IsSet() { // a folder is offered as SQL only
			out = append(out, fileLink{Label: "Your dump, as uploaded", Name: name, URL: link("original/archive")})
		}
		if readable {
			out = append(out, fileLink{Label: "Your dump as plain SQL", Name: stem + ".sql", URL: link("original/sql")})
		}
	}
	if out == nil {
		out = []fileLink{}
	}
	return out, nil
}

// publicStatus is the request's URL folder as the API gives it
// (<public>/database/<region>/<id>/<key>).
func (p *Pages) publicStatus(req store.Request) string {
	return fmt.Sprintf("%s/database/%s/%d/%s", p.cfg.PublicURL, p.cfg.Region, req.ID, req.Key)
}

// sqlStem drops a dump's extensions, as the API's SQL downloads are named
// (db.sql.gz -> db).
func sqlStem(name string) string {
	for _, ext := range []string{".gz", ".zip", ".dump", ".cdump", ".backup", ".sql", ".tar", ".pgdump"} {
		if s := strings.TrimSuffix(name, ext); s != "" {
			name = s
		}
	}
	return name
}

func (p *Pages) sftpCommand(id int64) string {
	return fmt.Sprintf("sftp -P %d user_%d@%s", p.cfg.SFTP.Port, id, p.cfg.SFTP.Host)
}

// uploadHelp gives the ways to upload a draft's dump: the browser (the
// page's script, through the v1 API), curl, and SFTP.
func (p *Pages) uploadHelp(req store.Request) *uploadHelp {
	auth := "request=" + strconv.FormatInt(req.ID, 10) + "&key=" + url.QueryEscape(req.Key)
	api := p.cfg.PublicURL + "/database/v1/"
	name := input.ShownName(req.Filename)
	h := &uploadHelp{
		UploadPath:  p.base + "/database/v1/upload?" + auth,
		ProcessPath: p.base + "/database/v1/process?" + auth,
		Curl:        "curl -sS -T " + shellQuote(name) + " " + shellQuote(api+"upload?"+auth),
		CurlProcess: "curl -sS " + shellQuote(api+"process?"+auth),
		SFTPGrant:   "curl -sS " + shellQuote(api+"request_sftp_access?"+auth) + " -F ssh_keys=@$HOME/.ssh/id_ed25519.pub",
		SFTPCommand: p.sftpCommand(req.ID),
		SFTPPut:     "put " + sftpQuote(name),
		MaxUpload:   p.cfg.MaxUploadBytes,
		Filename:    name,
	}
	if h.MaxUpload > 0 {
		h.MaxText = humanBytes(h.MaxUpload)
	}
	return h
}

// shellQuote quotes s for a POSIX shell, unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,/:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sftpQuote quotes a file name for the sftp prompt.
func sftpQuote(s string) string {
	if strings.ContainsAny(s, " \t\"'\\#") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	return s
}
