package security_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/app"
	"github.com/upgrade-server/upgrade-server/upgradetest"
)

func TestMain(m *testing.M) { upgradetest.Exit(m) }

// client drives a server through the v1 API, as any client would.
type client struct {
	t   testing.TB
	srv *upgradetest.Server
	// addrs are the server's listeners when newClientWith started it
	// (the HTTPS one and its certificate for Odoo's client).
	addrs app.Addrs
}

func newClient(t testing.TB, opts ...upgradetest.Options) *client {
	t.Helper()
	return &client{t: t, srv: upgradetest.NewServer(t, opts...)}
}

// record is the part of v1's request record the tests read.
type record struct {
	ID              int64    `json:"id"`
	Key             string   `json:"key"`
	State           string   `json:"state"`
	CustomerMessage *string  `json:"customer_message"`
	Compressions    []string `json:"compressions"`
	UpgradedDumpURL string   `json:"upgraded_dump_url"`
	UpgradedSQLURL  string   `json:"upgraded_sql_url"`
	OriginalDumpURL string   `json:"original_dump_url"`
	StatusURL       string   `json:"status_url"`
	Filesize        *string  `json:"filesize"`
}

type failure struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Param   string `json:"param"`
}

type answer struct {
	Failures []failure `json:"failures"`
	Request  record    `json:"request"`
}

// call runs a v1 method with urlencoded parameters and decodes the answer.
func (c *client) call(method string, params url.Values) answer {
	c.t.Helper()
	resp, err := http.PostForm(c.srv.URL+"/database/v1/"+method, params)
	if err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		c.t.Fatalf("%s: HTTP %d, undecodable answer: %v", method, resp.StatusCode, err)
	}
	return a
}

// create makes a draft request (target 16.0, aim test) and fails the test
// on any failure.
func (c *client) create(filename string) record {
	c.t.Helper()
	a := c.call("create", url.Values{"contract": {"M-security"}, "email": {"attacker@example.com"},
		"target": {"16.0"}, "aim": {"test"}, "filename": {filename}})
	if len(a.Failures) > 0 {
		c.t.Fatalf("create: %+v", a.Failures)
	}
	return a.Request
}

func auth(r record) url.Values {
	return url.Values{"key": {r.Key}, "request": {fmt.Sprint(r.ID)}}
}

// upload sends body as the request's dump.
func (c *client) upload(r record, body io.Reader) answer {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPut, c.srv.URL+"/database/v1/upload?"+auth(r).Encode(), body)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("upload: %v", err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		c.t.Fatalf("upload: HTTP %d, undecodable answer: %v", resp.StatusCode, err)
	}
	return a
}

// run uploads a dump, processes it and waits for the request to end.
func (c *client) run(filename string, dump []byte) record {
	c.t.Helper()
	r := c.create(filename)
	if a := c.upload(r, strings.NewReader(string(dump))); len(a.Failures) > 0 {
		c.t.Fatalf("upload: %+v", a.Failures)
	}
	if a := c.call("process", auth(r)); len(a.Failures) > 0 {
		c.t.Fatalf("process: %+v", a.Failures)
	}
	return c.wait(r)
}

// wait polls status until the request leaves pending and processing.
func (c *client) wait(r record) record {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		a := c.call("status", auth(r))
		if len(a.Failures) > 0 {
			c.t.Fatalf("status: %+v", a.Failures)
		}
		switch a.Request.State {
		case "pending", "processing":
		default:
			return a.Request
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("request %d still %s after 2 minutes", r.ID, a.Request.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// message is the request's customer_message, "" when none.
func message(r record) string {
	if r.CustomerMessage == nil {
		return ""
	}
	return *r.CustomerMessage
}
