// Package odooclient drives the server as Odoo's own upgrade script does
// (the "upgrade request" protocol: JSON-RPC calls under /upgrade/request/,
// the host switch to https://<assigned host>, rsync over SSH with the
// script's options, the log read with Range), for tests and benchmarks. It
// is written from the protocol's description, with the real rsync and ssh
// binaries; it is not Odoo's code.
package odooclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Client is one run of the script.
type Client struct {
	// Base is where calls go: the server's URL at first, https://<HostURI>
	// after create.
	Base string
	// HostURI is the assigned host (host or host:port).
	HostURI string
	// Token is the request's secret token.
	Token string
	// RequestID is the request's id.
	RequestID int64
	// Dir holds the key, the known_hosts file and rsync's downloads.
	Dir string
	// KeyPath is the private key ssh uses (<KeyPath>.pub went to create).
	KeyPath string
	// SSHHost overrides the host part of HostURI for rsync, when the
	// certificate's name is not how this machine reaches the server.
	SSHHost string

	http *http.Client
}

// ErrorResult is a {"result": {"error": …}} answer.
type ErrorResult struct{ Message string }

func (e *ErrorResult) Error() string { return "Error: " + e.Message }

// New returns a client of base, trusting the certificate in certFile (as
// SSL_CERT_FILE does; "" trusts the system's), with an RSA key made by
// ssh-keygen in dir, as the script makes its own.
func New(base, certFile, dir string) (*Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if certFile != "" {
		pem, err := os.ReadFile(certFile)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("odooclient: no certificate in %s", certFile)
		}
	}
	c := &Client{Base: strings.TrimRight(base, "/"), Dir: dir, KeyPath: filepath.Join(dir, "upgrade_ssh_key")}
	c.http = &http.Client{
		Timeout:   60 * time.Second, // the script's
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		// The script follows no redirect of a POST: a 3xx is an error.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-N", "", "-f", c.KeyPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	return c, nil
}

// Call posts a JSON-RPC call and returns its result. Like the script, it
// reads the body only with a Content-Length and a JSON Content-Type, and
// takes any HTTP error status as a communication error.
func (c *Client) Call(ctx context.Context, name string, params map[string]any) (map[string]any, error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "not_used", "params": params, "id": "not_used"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+"/upgrade/request/"+name, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("upgrade server communication error: HTTP %d", resp.StatusCode)
	}
	if resp.ContentLength <= 0 {
		return nil, errors.New("missing data: the answer has no Content-Length")
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "application/json") {
		return nil, fmt.Errorf("the answer is %s, not JSON", resp.Header.Get("Content-Type"))
	}
	var ans struct {
		Result map[string]any `json:"result"`
		Error  *struct {
			Data struct {
				Message string `json:"message"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, fmt.Errorf("the answer is not JSON: %v", err)
	}
	if ans.Error != nil {
		return nil, &ErrorResult{ans.Error.Data.Message}
	}
	if msg, ok := ans.Result["error"]; ok {
		return nil, &ErrorResult{fmt.Sprint(msg)}
	}
	return ans.Result, nil
}

// Create creates the request (contract, target, aim, env_vars, the public
// key) and switches to the assigned host, as the script does.
func (c *Client) Create(ctx context.Context, contract, target, aim string, env []string) (map[string]any, error) {
	pub, err := os.ReadFile(c.KeyPath + ".pub")
	if err != nil {
		return nil, err
	}
	if env == nil {
		env = []string{}
	}
	res, err := c.Call(ctx, "create", map[string]any{"contract": contract, "target": target, "aim": aim, "actuator": "cli",
		"env_vars": env, "ssh_key": string(pub), "api_version": "0.2"})
	if err != nil {
		return nil, err
	}
	tok, _ := res["token"].(string)
	host, _ := res["assigned_host_uri"].(string)
	id, _ := res["request_id"].(float64)
	if tok == "" || host == "" || id == 0 {
		return nil, fmt.Errorf("create answered %v", res)
	}
	c.Token, c.HostURI, c.RequestID = tok, host, int64(id)
	c.Base = "https://" + host
	return res, nil
}

// Transfer is an open transfer: its port, its known_hosts file, and
// dump_name for a download.
type Transfer struct {
	Port       int
	KnownHosts string
	DumpName   string
}

// Start calls transfer/start and writes the known_hosts text to a file.
func (c *Client) Start(ctx context.Context, kind string) (Transfer, error) {
	res, err := c.Call(ctx, "transfer/start", map[string]any{"token": c.Token, "transfer_type": kind})
	if err != nil {
		return Transfer{}, err
	}
	port, _ := res["ssh_port"].(float64)
	kh, _ := res["known_hosts"].(string)
	if port == 0 || kh == "" {
		return Transfer{}, fmt.Errorf("transfer/start answered %v", res)
	}
	t := Transfer{Port: int(port), KnownHosts: filepath.Join(c.Dir, "known_hosts")}
	t.DumpName, _ = res["dump_name"].(string)
	if err := os.WriteFile(t.KnownHosts, []byte(kh), 0o600); err != nil {
		return Transfer{}, err
	}
	return t, nil
}

// Stop calls transfer/stop.
func (c *Client) Stop(ctx context.Context) error {
	_, err := c.Call(ctx, "transfer/stop", map[string]any{"token": c.Token})
	return err
}

// SSH is the -e value of the script's rsync for t.
func (c *Client) SSH(t Transfer) string {
	return fmt.Sprintf("ssh -p %d -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s -i %s",
		t.Port, t.KnownHosts, c.KeyPath)
}

// Remote is odoo@<host URI>:/data/<name>, as the script writes it (with a
// host:port host URI, rsync sends "<port>:/data/<name>" as the path).
func (c *Client) Remote(name string) string {
	host := c.HostURI
	if c.SSHHost != "" {
		host = c.SSHHost
		if i := strings.LastIndexByte(c.HostURI, ':'); i > 0 && !strings.Contains(c.HostURI, "]") {
			host += c.HostURI[i:]
		}
	}
	return "odoo@" + host + ":/data/" + name
}

// UploadCommand is the script's rsync of src to /data/<dest> (for a
// directory dump, src ends in "/": its contents go to /data/origin.dump).
func (c *Client) UploadCommand(ctx context.Context, t Transfer, src, dest string, extra ...string) *exec.Cmd {
	args := append([]string{"--chmod=u+rwx,g+rwx,o+r", "--info=progress2", "--delete-after", "-are", c.SSH(t)}, extra...)
	return exec.CommandContext(ctx, "rsync", append(args, src, c.Remote(dest))...)
}

// Upload sends src to /data/<dest> as the script does: transfer/start,
// rsync, transfer/stop. It returns rsync's output.
func (c *Client) Upload(ctx context.Context, src, dest string, extra ...string) (string, error) {
	t, err := c.Start(ctx, "upload")
	if err != nil {
		return "", err
	}
	out, rerr := c.UploadCommand(ctx, t, src, dest, extra...).CombinedOutput()
	serr := c.Stop(ctx)
	if rerr != nil {
		return string(out), fmt.Errorf("rsync: %v: %s", rerr, out)
	}
	return string(out), serr
}

// Process calls process and returns is_pg_version_compatible.
func (c *Client) Process(ctx context.Context) (bool, error) {
	res, err := c.Call(ctx, "process", map[string]any{"token": c.Token})
	if err != nil {
		return false, err
	}
	compat, ok := res["is_pg_version_compatible"].(bool)
	if !ok {
		return false, fmt.Errorf("process answered %v", res)
	}
	return compat, nil
}

// Status calls status.
func (c *Client) Status(ctx context.Context) (map[string]any, error) {
	return c.Call(ctx, "status", map[string]any{"token": c.Token})
}

// Logs reads the log from byte offset from, as the script does (GET with
// Range: bytes=<from>-).
func (c *Client) Logs(ctx context.Context, from int) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/upgrade/request/logs?token="+c.Token, nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Range", "bytes="+strconv.Itoa(from)+"-")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return "", resp.StatusCode, fmt.Errorf("logs: HTTP %d", resp.StatusCode)
	}
	return string(b), resp.StatusCode, err
}

// Wait polls status every poll, and the log while the request runs, until
// the request is done, failed or cancelled; onLog hears each new piece of
// the log. The offset moves as the script moves it: by the characters
// read, minus one (consecutive reads overlap by a character).
func (c *Client) Wait(ctx context.Context, poll time.Duration, onLog func(string)) (map[string]any, error) {
	offset := 0
	for {
		st, err := c.Status(ctx)
		if err != nil {
			return nil, err
		}
		state, _ := st["status"].(string)
		if state == "progress" || state == "done" || state == "failed" {
			text, _, err := c.Logs(ctx, offset)
			if err != nil {
				return nil, err
			}
			if n := len([]rune(text)); n > 0 {
				if onLog != nil {
					onLog(text)
				}
				offset += n - 1
			}
		}
		switch state {
		case "done", "failed", "cancelled":
			return st, nil
		case "new", "pending", "progress":
		default:
			return nil, fmt.Errorf("status %q is not one of the protocol's", state)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Download pulls the upgraded dump, the filestore, the report and the log
// into dst as the script does, and returns the dump's name.
func (c *Client) Download(ctx context.Context, dst string, extra ...string) (string, error) {
	t, err := c.Start(ctx, "download")
	if err != nil {
		return "", err
	}
	if t.DumpName == "" {
		return "", errors.New("transfer/start of a download answered no dump_name")
	}
	args := append([]string{"--info=progress2", "--ignore-missing-args", "-are", c.SSH(t)}, extra...)
	for _, name := range []string{t.DumpName, "filestore", "upgrade-report.html", "upgrade.log"} {
		args = append(args, c.Remote(name))
	}
	out, rerr := exec.CommandContext(ctx, "rsync", append(args, dst+"/")...).CombinedOutput()
	serr := c.Stop(ctx)
	if rerr != nil {
		return "", fmt.Errorf("rsync: %v: %s", rerr, out)
	}
	return t.DumpName, serr
}
