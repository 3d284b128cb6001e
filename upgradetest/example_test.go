package upgradetest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/upgradetest"
)

func TestMain(m *testing.M) { upgradetest.Exit(m) }

func get(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return out
}

// TestClientFlow is what a client's test suite does with upgradetest.
func TestClientFlow(t *testing.T) {
	srv := upgradetest.NewServer(t)
	c := get(t, srv.URL+"/database/v1/create?"+url.Values{"contract": {"scenario:testing"}, "aim": {"test"},
		"target": {"17.0"}, "email": {"qa@example.com"}, "filename": {"db.dump"}}.Encode())
	r := c["request"].(map[string]any)
	id := url.Values{"request": {fmt.Sprint(r["id"])}, "key": {r["key"].(string)}}
	req, _ := http.NewRequest("PUT", srv.URL+"/database/v1/upload?"+id.Encode(), strings.NewReader("any bytes will do"))
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	get(t, srv.URL+"/database/v1/process?"+id.Encode())
	deadline := time.Now().Add(30 * time.Second)
	for get(t, srv.URL+"/database/v1/status?"+id.Encode())["request"].(map[string]any)["state"] != "testing" {
		if time.Now().After(deadline) {
			t.Fatal("never reached testing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := get(t, srv.URL+"/database/v1/skip_test?"+id.Encode())["request"].(map[string]any)["state"]; s != "delivered" {
		t.Fatalf("skip_test: %v", s)
	}
	// request_sftp_access advertises the daemon's real port.
	form := url.Values{"request": id["request"], "key": id["key"], "ssh_keys": {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test"}}
	a := get(t, srv.URL+"/database/v1/request_sftp_access?"+form.Encode())
	if port := a["request"].(map[string]any)["sftp_port"]; port != float64(srv.SFTPPort) {
		t.Fatalf("advertised port %v, daemon on %d: %v", port, srv.SFTPPort, a)
	}
	srv.Close()
	if _, err := http.Get(srv.URL + "/healthz"); err == nil {
		t.Fatal("the server still answers after Close")
	}
	if _, err := os.Stat(srv.DataDir); err != nil {
		t.Fatal(err)
	}
}

// TestTwoServers: each test gets its own world.
func TestTwoServers(t *testing.T) {
	a, b := upgradetest.NewServer(t), upgradetest.NewServer(t)
	if a.URL == b.URL || a.SFTPPort == b.SFTPPort {
		t.Fatal("two servers share an address")
	}
	ca := get(t, a.URL+"/database/v1/create?contract=c&aim=test&target=16.0&email=a@b.example&filename=x.dump")
	cb := get(t, b.URL+"/database/v1/create?contract=c&aim=test&target=16.0&email=a@b.example&filename=x.dump")
	if ca["request"].(map[string]any)["id"] != float64(1) || cb["request"].(map[string]any)["id"] != float64(1) {
		t.Fatal("servers share their requests")
	}
}
