package httpapi

import (
	"fmt"
	"strconv"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// wireRequest is v1's request record: the 28 documented keys in the
// documented order, then migrated_sql_url, which an older client reads for
// the upgraded SQL stream.
type wireRequest struct {
	ID              int64    `json:"id"`
	Key             string   `json:"key"`
	Email           string   `json:"email"`
	Target          string   `json:"target"`
	Aim             string   `json:"aim"`
	Filename        string   `json:"filename"`
	Timezone        *string  `json:"timezone"`
	State           string   `json:"state"`
	IssueStage      string   `json:"issue_stage"`
	Issue           int64    `json:"issue"`
	StatusURL       string   `json:"status_url"`
	NotesURL        string   `json:"notes_url"`
	OriginalSQLURL  string   `json:"original_sql_url"`
	OriginalDumpURL string   `json:"original_dump_url"`
	UpgradedSQLURL  string   `json:"upgraded_sql_url"`
	UpgradedDumpURL string   `json:"upgraded_dump_url"`
	ModulesURL      string   `json:"modules_url"`
	Filesize        *string  `json:"filesize"`
	DatabaseUUID    *string  `json:"database_uuid"`
	CreatedAt       string   `json:"created_at"`
	EstimatedTime   *string  `json:"estimated_time"`
	ProcessedAt     *string  `json:"processed_at"`
	Elapsed         string   `json:"elapsed"`
	Filestore       bool     `json:"filestore"`
	CustomerMessage *string  `json:"customer_message"`
	DatabaseVersion *string  `json:"database_version"`
	PostgreSQL      *string  `json:"postgresql"`
	Compressions    []string `json:"compressions"`
	MigratedSQLURL  string   `json:"migrated_sql_url"`
}

// issueStage renders the state as the stage of the platform's issue.
func issueStage(s store.State) string {
	switch s {
	case store.StateDraft, store.StateQueued:
		return "new"
	case store.StateProcessing:
		return "in_progress"
	case store.StateTesting:
		return "testing"
	case store.StateDone, store.StateDelivered:
		return "done"
	}
	return "cancelled"
}

const wireTime = "2006-01-02 15:04:05"

// links build a request's URLs.
type links struct{ public, region string }

// url is <public>/database/<region>/<id>/<key>/<suffix>.
func (l links) url(r store.Request, suffix string) string {
	return fmt.Sprintf("%s/database/%s/%d/%s/%s", l.public, l.region, r.ID, r.Key, suffix)
}

// recorder renders v1's request record.
type recorder struct {
	links links
	now   func() time.Time
	// staged is the size of an upload being written at random offsets on
	// this host (SFTP), shown as filesize until it is recorded.
	staged func(id int64, name files.Name) (int64, bool)
}

func (rc recorder) record(r store.Request) wireRequest {
	o := rc.links
	w := wireRequest{
		ID: r.ID, Key: r.Key, Email: r.Email, Target: r.Target, Aim: r.Aim, Filename: input.ShownName(r.Filename),
		Timezone: r.Timezone, State: r.State.V1(), IssueStage: issueStage(r.State), Issue: r.Issue,
		StatusURL:       o.url(r, "status"),
		NotesURL:        o.url(r, "upgraded/notes"),
		OriginalSQLURL:  o.url(r, "original/sql"),
		OriginalDumpURL: o.url(r, "original/archive"),
		UpgradedSQLURL:  o.url(r, "upgraded/sql"),
		UpgradedDumpURL: o.url(r, "upgraded/archive"),
		ModulesURL:      o.url(r, "modules/archive"),
		DatabaseUUID:    r.DatabaseUUID,
		CreatedAt:       r.CreatedAt.UTC().Format(wireTime),
		Elapsed:         "00:00",
		Filestore:       r.Filestore,
		CustomerMessage: r.CustomerMessage,
		DatabaseVersion: r.DatabaseVersion,
		PostgreSQL:      r.PostgreSQL,
		Compressions:    r.Compressions,
	}
	w.MigratedSQLURL = w.UpgradedSQLURL
	if w.Compressions == nil {
		w.Compressions = []string{}
	}
	if r.UploadSize != nil {
		w.Filesize = ptr(humanSize(*r.UploadSize))
	} else if r.State == store.StateDraft && rc.staged != nil {
		// An SFTP upload not recorded yet: its live size.
		if n, ok := rc.staged(r.ID, files.Upload); ok && n > 0 {
			w.Filesize = ptr(humanSize(n))
		}
	}
	if r.EstimatedSeconds != nil {
		w.EstimatedTime = ptr(hoursMinutes(time.Duration(*r.EstimatedSeconds) * time.Second))
	}
	if r.ProcessedAt != nil {
		w.ProcessedAt = ptr(r.ProcessedAt.UTC().Format(wireTime))
		end := rc.now()
		if r.FinishedAt != nil {
			end = *r.FinishedAt
		}
		w.Elapsed = hoursMinutes(end.Sub(*r.ProcessedAt))
	}
	return w
}

// humanSize formats a size as Odoo's tools.human_size does: "912.99 Kb".
func humanSize(n int64) string {
	units := []string{"bytes", "Kb", "Mb", "Gb", "Tb"}
	s, i := float64(n), 0
	for s >= 1024 && i < len(units)-1 {
		s /= 1024
		i++
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " " + units[i]
}

// hoursMinutes formats a duration as "HH:MM" (hours may exceed 99).
func hoursMinutes(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	m := int64(d / time.Minute)
	return fmt.Sprintf("%02d:%02d", m/60, m%60)
}
