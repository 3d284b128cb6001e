package engine

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"html/template"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/files"
)

var notesTemplate = template.Must(template.New("notes").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Upgrade report: request {{.ID}}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 48rem; margin: 0 auto; padding: 1rem; color: #1f2328; }
table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .2rem .5rem; border-bottom: 1px solid #d0d7de; }
.warn { color: #9a6700; } code { font-size: .9em; }
</style></head><body>
<p><a href="../status">Back to the request's status page</a></p>
<h1>Upgrade report</h1>
<p>Request {{.ID}}: Odoo <strong>{{.Source}}</strong> → <strong>{{.Target}}</strong> ({{.Aim}}), engine <code>{{.Engine}}</code>,
PostgreSQL of the dump {{.PostgreSQL}}, layers <code>{{.Layers}}</code>. Finished {{.Finished}} UTC in {{.Total}}.</p>
<h2>Steps</h2>
<table><tr><th>step</th><th>time</th></tr>{{range .Steps}}<tr><td>{{.Name}}</td><td>{{.Duration}}</td></tr>{{end}}</table>
<h2>Warnings</h2>
{{if .Warnings}}<ul>{{range .Warnings}}<li class="warn">{{.}}</li>{{end}}</ul>{{else}}<p>None.</p>{{end}}
<h2>Modules ({{len .Modules}})</h2>
<table><tr><th>module</th><th>before</th><th>after</th></tr>{{range .Modules}}<tr><td>{{.Name}}</td><td>{{.Before}}</td><td>{{.After}}</td></tr>{{end}}</table>
</body></html>
`))

type notesStep struct {
	Name     string
	Duration string
}

func (r *run) writeNotes(ctx context.Context) error {
	var steps []notesStep
	for _, s := range r.steps {
		steps = append(steps, notesStep{s.Name, s.Duration.Round(time.Millisecond).String()})
	}
	var b bytes.Buffer
	err := notesTemplate.Execute(&b, map[string]any{
		"ID": r.job.ID, "Source": r.info.DatabaseVersion, "Target": r.job.Target, "Aim": r.job.Aim,
		"Engine": r.e.cfg.Kind, "PostgreSQL": orUnknown(r.info.PostgreSQL), "Layers": r.info.Compressions,
		"Finished": time.Now().UTC().Format("2006-01-02 15:04:05"), "Total": time.Since(r.started).Round(time.Millisecond).String(),
		"Steps": steps, "Warnings": r.warnings, "Modules": r.modules,
	})
	if err != nil {
		return err
	}
	return r.e.cfg.Files.WriteFile(ctx, r.job.ID, files.Notes, b.Bytes())
}

// writeModules writes modules/archive: modules.csv and modules.json with
// each installed module's version before and after.
func (r *run) writeModules(ctx context.Context) error {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	fw, err := zw.Create("modules.csv")
	if err != nil {
		return err
	}
	cw := csv.NewWriter(fw)
	cw.Write([]string{"module", "version_before", "version_after"})
	type mod struct {
		Name   string `json:"name"`
		Before string `json:"version_before"`
		After  string `json:"version_after"`
	}
	var list []mod
	for _, m := range r.modules {
		cw.Write([]string{m.Name, m.Before, m.After})
		list = append(list, mod{m.Name, m.Before, m.After})
	}
	cw.Flush()
	fw, err = zw.Create("modules.json")
	if err != nil {
		return err
	}
	enc := json.NewEncoder(fw)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"source": r.info.DatabaseVersion, "target": r.job.Target, "modules": list}); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return r.e.cfg.Files.WriteFile(ctx, r.job.ID, files.Modules, b.Bytes())
}
