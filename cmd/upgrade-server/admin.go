package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

const adminUsage = `Usage: upgrade-server admin [--url URL] [--token TOKEN] COMMAND [ARGS]

The command-line front of the admin API (/admin/v1) of a running server.
--url defaults to UPGRADE_ADMIN_URL, else http://localhost:8080;
--token to UPGRADE_ADMIN_TOKEN.

Commands:
  list [STATE]                    requests, newest first (STATE: draft, pending, done, …)
  show ID                         one request: record, upload size and sha256, log
  state ID STATE [MESSAGE]        force a state (MESSAGE becomes customer_message)
  scenario ID SCENARIO            give a request a scenario ("testing", "fail=Nope", "" for none)
  delete ID                       remove a request and its files
  reset                           remove every request and its files
  journal [N]                     the last N API calls this server answered
  export FILE                     save every request, its keys, log and files to FILE (.tar.gz)
  import FILE [--keep]            load an export (replacing everything unless --keep)
  faults                          the injected faults and the seed
  fault-add JSON                  inject a fault, e.g. '{"kind":"server_error","method":"status","times":1}'
  faults-clear                    remove every fault
  faults-seed N                   reseed the random source (repeatable faults)
`

// runAdmin is "upgrade-server admin …": it calls the admin API and prints
// its JSON answer.
func runAdmin(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage) }
	base := fs.String("url", firstNonEmpty(getenv("UPGRADE_ADMIN_URL"), "http://localhost:8080"), "server URL")
	token := fs.String("token", getenv("UPGRADE_ADMIN_TOKEN"), "admin token")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errors.New("admin: a command is needed")
	}
	need := func(n int) error {
		if len(rest) < n+1 {
			fs.Usage()
			return fmt.Errorf("admin %s: %d argument(s) needed", rest[0], n)
		}
		return nil
	}
	var method, path string
	var body any
	var rawBody io.Reader
	var saveTo string
	switch rest[0] {
	case "list":
		method, path = "GET", "/admin/v1/requests"
		if len(rest) > 1 {
			path += "?state=" + url.QueryEscape(rest[1])
		}
	case "show":
		if err := need(1); err != nil {
			return err
		}
		method, path = "GET", "/admin/v1/requests/"+url.PathEscape(rest[1])
	case "state":
		if err := need(2); err != nil {
			return err
		}
		method, path = "POST", "/admin/v1/requests/"+url.PathEscape(rest[1])+"/state"
		b := map[string]string{"state": rest[2]}
		if len(rest) > 3 {
			b["customer_message"] = strings.Join(rest[3:], " ")
		}
		body = b
	case "scenario":
		if err := need(2); err != nil {
			return err
		}
		method, path, body = "PUT", "/admin/v1/requests/"+url.PathEscape(rest[1])+"/scenario", map[string]string{"scenario": rest[2]}
	case "delete":
		if err := need(1); err != nil {
			return err
		}
		method, path = "DELETE", "/admin/v1/requests/"+url.PathEscape(rest[1])
	case "reset":
		method, path = "POST", "/admin/v1/reset"
	case "journal":
		method, path = "GET", "/admin/v1/journal"
		if len(rest) > 1 {
			path += "?limit=" + url.QueryEscape(rest[1])
		}
	case "export":
		if err := need(1); err != nil {
			return err
		}
		method, path, saveTo = "GET", "/admin/v1/export", rest[1]
	case "import":
		if err := need(1); err != nil {
			return err
		}
		f, err := os.Open(rest[1])
		if err != nil {
			return fmt.Errorf("admin import: %w", err)
		}
		defer f.Close()
		method, path, rawBody = "POST", "/admin/v1/import", f
		if len(rest) > 2 && rest[2] == "--keep" {
			path += "?replace=false"
		}
	case "faults":
		method, path = "GET", "/admin/v1/faults"
	case "fault-add":
		if err := need(1); err != nil {
			return err
		}
		var rule map[string]any
		if err := json.Unmarshal([]byte(rest[1]), &rule); err != nil {
			return fmt.Errorf("admin fault-add: the rule is not JSON: %w", err)
		}
		method, path, body = "POST", "/admin/v1/faults", rule
	case "faults-clear":
		method, path = "DELETE", "/admin/v1/faults"
	case "faults-seed":
		if err := need(1); err != nil {
			return err
		}
		n, err := strconv.ParseUint(rest[1], 10, 64)
		if err != nil {
			return fmt.Errorf("admin faults-seed: %q is not a number", rest[1])
		}
		method, path, body = "PUT", "/admin/v1/faults/seed", map[string]uint64{"seed": n}
	default:
		fs.Usage()
		return fmt.Errorf("admin: unknown command %q", rest[0])
	}
	rd := rawBody
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	timeout := time.Minute
	if rawBody != nil || saveTo != "" {
		timeout = 24 * time.Hour // exports carry dumps
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(*base, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+*token)
	req.Header.Set("Content-Type", "application/json")
	if rawBody != nil {
		req.Header.Set("Content-Type", "application/gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	if saveTo != "" && resp.StatusCode == http.StatusOK {
		return saveFile(saveTo, resp.Body)
	}
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	stdout.Write(out)
	if resp.StatusCode == http.StatusNotFound && !bytes.HasPrefix(bytes.TrimSpace(out), []byte("{\n  \"error\"")) {
		return fmt.Errorf("admin: HTTP 404: is the admin API enabled (UPGRADE_ADMIN_TOKEN on the server)?")
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("admin: HTTP %d", resp.StatusCode)
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// saveFile writes an export to a temporary file and renames it into place
// once complete.
func saveFile(p string, r io.Reader) error {
	tmp := p + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("admin export: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("admin export: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("admin export: %w", err)
	}
	return os.Rename(tmp, p)
}
