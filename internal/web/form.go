package web

import (
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// formView is the upgrade form: what was typed, and the errors in words.
type formView struct {
	Contract, Email, Target, Aim string
	// Errors by field (contract, email, target, aim, dump); General those
	// of no field.
	Errors  map[string]string
	General []string

	Targets   []string
	Aims      []aimChoice
	MaxUpload int64  // bytes; 0 means no limit
	MaxText   string // MaxUpload in words
	PublicURL string
	SFTP      SFTPInfo
	Words     template.JS
	DocsURL   string
}

type aimChoice struct {
	Value, Label, Explain string
}

var aims = []aimChoice{
	{"test", "Test", "A copy to try the upgrade on: outgoing mail, incoming mail servers and scheduled actions are switched off."},
	{"production", "Production", "The database you will run your business on after the upgrade: nothing is switched off."},
}

func (p *Pages) formView() formView {
	targets := newestFirst(p.cfg.Rules.Targets)
	v := formView{Aim: "test", Errors: map[string]string{}, Targets: targets, Aims: aims, MaxUpload: p.cfg.MaxUploadBytes,
		PublicURL: p.cfg.PublicURL, SFTP: p.cfg.SFTP, Words: p.words, DocsURL: p.cfg.DocsURL}
	if len(targets) > 0 {
		v.Target = targets[0]
	}
	if v.MaxUpload > 0 {
		v.MaxText = humanBytes(v.MaxUpload)
	}
	return v
}

func (p *Pages) handleForm(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "form.html", cspScript, page{Title: "Upgrade a database",
		Scripts: []string{"upload.js", "form.js"}, Body: p.formView()})
}

// maxFormBytes bounds the form sent without JavaScript (fields and the
// file's name, never the file: the form is urlencoded).
const maxFormBytes = 64 << 10

// handleFormPost is the form sent without JavaScript: its fields go
// through create's own checks (internal/input); a refused one comes back
// in words next to its field, with everything typed kept. A good form
// creates the request as create does and leads to its status page, which
// says how to upload the dump. (With JavaScript, the page calls the v1 API
// itself and uploads the file.)
func (p *Pages) handleFormPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	v := p.formView()
	if err := r.ParseForm(); err != nil {
		v.General = append(v.General, "The form could not be read; please send it again.")
		p.render(w, r, http.StatusBadRequest, "form.html", cspScript, page{Title: "Upgrade a database",
			Scripts: []string{"upload.js", "form.js"}, Body: v})
		return
	}
	get := func(name string) string {
		if name == "filename" {
			name = "dump" // a file field in a urlencoded form sends the file's name
		}
		return r.PostForm.Get(name)
	}
	v.Contract, v.Email, v.Target, v.Aim = get("contract"), get("email"), get("target"), get("aim")
	n, probs := input.Create(get, p.cfg.Rules)
	if probs != nil {
		for _, pr := range probs {
			field, text := explain(pr.Reason, pr.Param, pr.Message)
			switch {
			case field == "":
				v.General = append(v.General, text)
			case v.Errors[field] == "":
				v.Errors[field] = text
			}
		}
		p.render(w, r, http.StatusUnprocessableEntity, "form.html", cspScript, page{Title: "Upgrade a database",
			Scripts: []string{"upload.js", "form.js"}, Body: v})
		return
	}
	n.Key = token.Key()
	req, err := p.cfg.Requests.CreateRequest(r.Context(), n)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	// As create does: files a forgotten request of this id left are not
	// this one's.
	if err := p.cfg.Files.RemoveRequest(r.Context(), req.ID); err != nil {
		p.internal(w, r, err)
		return
	}
	http.Redirect(w, r, p.statusPath(req.ID, req.Key), http.StatusSeeOther)
}

// statusPath is a request's status page, from the root of this server.
func (p *Pages) statusPath(id int64, key string) string {
	return fmt.Sprintf("%s/database/%s/%d/%s/status", p.base, p.cfg.Region, id, key)
}

// newestFirst orders target versions newest first ("19.0", "saas~18.4",
// "18.0", …); what does not read as a version keeps its place at the end.
func newestFirst(targets []string) []string {
	out := slices.Clone(targets)
	slices.SortStableFunc(out, func(a, b string) int {
		va, oka := versionOf(a)
		vb, okb := versionOf(b)
		switch {
		case oka && okb:
			if c := slices.Compare(vb, va); c != 0 {
				return c
			}
			return strings.Compare(a, b) // 17.0 before saas~17.0
		case oka:
			return -1
		case okb:
			return 1
		}
		return 0
	})
	return out
}

// versionOf reads "17.0" or "saas~17.2" as [17 2].
func versionOf(s string) ([]int, bool) {
	s = strings.TrimPrefix(s, "saas~")
	var out []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		out = append(out, n)
	}
	return out, len(out) > 0
}

// humanBytes is a size for people: "23.2 KiB", "1.5 GiB", "512 bytes".
func humanBytes(n int64) string {
	if n < 1024 {
		if n == 1 {
			return "1 byte"
		}
		return strconv.FormatInt(n, 10) + " bytes"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v >= 100 || v == float64(int64(v)) {
		return strconv.FormatFloat(v, 'f', 0, 64) + " " + units[i]
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}
