package rpcapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// slowRequests is the part of the store transfer/start uses, with
// OpenTransfer slowed down so that starts overlap.
type slowRequests struct {
	Requests // nil: other methods are not called
}

func (slowRequests) OpenTransfer(ctx context.Context, id int64, d store.Direction, owner string, port int, lease time.Duration,
	replace func(store.Transfer) bool, allowed ...store.State) error {
	time.Sleep(50 * time.Millisecond)
	return nil
}

func (slowRequests) FinishTransfer(ctx context.Context, id int64, owner, outcome, msg string) error {
	return nil
}

// tempFolders are transfer folders in a test's temporary folder.
type tempFolders struct{ dir string }

func (f tempFolders) UploadDir(id int64) (string, error) {
	p := filepath.Join(f.dir, fmt.Sprintf("transfer-%d-upload", id))
	return p, os.MkdirAll(p, 0o700)
}

func (f tempFolders) DownloadDir(id int64) (string, error) {
	return "", errors.New("no downloads here")
}

func (f tempFolders) RemoveTransferDir(id int64, direction string) error {
	return os.RemoveAll(filepath.Join(f.dir, fmt.Sprintf("transfer-%d-%s", id, direction)))
}

// TestTransferCap: transfer/start calls side by side never open more
// endpoints than MaxTransfers, for many requests or for one (each would
// otherwise be a listener the server no longer counts).
func TestTransferCap(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed")
	}
	rs, client := testEndpoints(t)
	const max = 3
	a := New(slog.New(slog.DiscardHandler), Config{Requests: slowRequests{}, Folders: tempFolders{t.TempDir()}, Rsync: rs,
		MaxTransfers: max, TransferLease: time.Hour})
	defer a.tr.closeAll()

	var mu sync.Mutex
	var ports []int
	capped, busy := 0, 0
	var wg sync.WaitGroup
	for i := range 24 {
		id := int64(1 + i%12) // twelve requests, two starts each
		wg.Go(func() {
			tr, err := a.tr.start(context.Background(), store.Request{ID: id, State: store.StateDraft}, store.DirectionUpload,
				client.PublicKey(), []store.State{store.StateDraft})
			mu.Lock()
			defer mu.Unlock()
			var ref *refusal
			switch {
			case err == nil:
				ports = append(ports, tr.ep.Port())
			case errors.As(err, &ref) && strings.Contains(ref.msg, "as many transfers open"):
				capped++
			case errors.Is(err, errBusy):
				busy++
			default:
				t.Errorf("start: %v", err)
			}
		})
	}
	wg.Wait()
	a.tr.mu.Lock()
	open := len(a.tr.open)
	a.tr.mu.Unlock()
	// Every endpoint opened is one the server counts: the replaced ones
	// are closed.
	listening := 0
	for _, p := range ports {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 2*time.Second); err == nil {
			c.Close()
			listening++
		}
	}
	if open > max || listening != open || len(ports) == 0 || capped == 0 {
		t.Fatalf("%d transfers open (cap %d), %d endpoints listening; %d starts opened one, %d were capped, %d busy",
			open, max, listening, len(ports), capped, busy)
	}
}

// testEndpoints returns an rsync endpoint server on loopback, closed at
// cleanup, and a client key.
func testEndpoints(t *testing.T) (*rsyncd.Server, gossh.Signer) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	host, _ := gossh.NewSignerFromKey(priv)
	rs, err := rsyncd.New(slog.New(slog.DiscardHandler), rsyncd.Config{HostSigners: []gossh.Signer{host}, ListenHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	client, _ := gossh.NewSignerFromKey(cpriv)
	return rs, client
}

// recordingRequests holds FinishTransfer until release is closed, as a
// long recording of an upload (a large dump hashed) holds transfer/stop.
type recordingRequests struct {
	slowRequests
	finishing chan struct{} // one value when a FinishTransfer began
	release   chan struct{}
}

func (r recordingRequests) FinishTransfer(ctx context.Context, id int64, owner, outcome, msg string) error {
	select {
	case r.finishing <- struct{}{}:
	default:
	}
	<-r.release
	return nil
}

// TestStartWaitsForTheRecording: a transfer/start while the same
// request's transfer/stop still records the upload (the script timed out
// on a large dump and was run again) waits for that outcome, and does
// not open a second endpoint on the folder being committed.
func TestStartWaitsForTheRecording(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed")
	}
	rs, client := testEndpoints(t)
	reqs := recordingRequests{finishing: make(chan struct{}, 1), release: make(chan struct{})}
	a := New(slog.New(slog.DiscardHandler), Config{Requests: reqs, Folders: tempFolders{t.TempDir()}, Rsync: rs,
		MaxTransfers: 4, TransferLease: time.Hour})
	defer a.tr.closeAll()
	ctx := context.Background()
	req, allowed := store.Request{ID: 7, State: store.StateDraft}, []store.State{store.StateDraft}
	first, err := a.tr.start(ctx, req, store.DirectionUpload, client.PublicKey(), allowed)
	if err != nil {
		t.Fatal(err)
	}
	go first.finish(ctx, "") // transfer/stop
	<-reqs.finishing
	started := make(chan error, 1)
	go func() {
		_, err := a.tr.start(ctx, req, store.DirectionUpload, client.PublicKey(), allowed)
		started <- err
	}()
	select {
	case err := <-started:
		close(reqs.release)
		t.Fatalf("transfer/start answered (%v) while the previous transfer's outcome was being recorded", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(reqs.release)
	if err := <-started; err != nil {
		t.Fatalf("transfer/start after the recording: %v", err)
	}
	<-first.done
	if first.outcome != "failed" || !strings.Contains(first.msg, "No rsync reached") {
		t.Fatalf("the first transfer ended %s: %s", first.outcome, first.msg)
	}
}

// TestShutdownDuringTheRecording: closeAll does not wait past its bound
// for a transfer/stop that records a large upload, and a transfer/start
// that waited for that recording opens nothing once closeAll has run.
func TestShutdownDuringTheRecording(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed")
	}
	defer func(d time.Duration) { shutdownWait = d }(shutdownWait)
	shutdownWait = 100 * time.Millisecond
	rs, client := testEndpoints(t)
	reqs := recordingRequests{finishing: make(chan struct{}, 1), release: make(chan struct{})}
	a := New(slog.New(slog.DiscardHandler), Config{Requests: reqs, Folders: tempFolders{t.TempDir()}, Rsync: rs,
		MaxTransfers: 4, TransferLease: time.Hour})
	ctx := context.Background()
	req, allowed := store.Request{ID: 7, State: store.StateDraft}, []store.State{store.StateDraft}
	first, err := a.tr.start(ctx, req, store.DirectionUpload, client.PublicKey(), allowed)
	if err != nil {
		t.Fatal(err)
	}
	go first.finish(ctx, "")
	<-reqs.finishing
	started := make(chan error, 1)
	go func() {
		_, err := a.tr.start(ctx, req, store.DirectionUpload, client.PublicKey(), allowed)
		started <- err
	}()
	closed := make(chan struct{})
	go func() { a.tr.closeAll(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		close(reqs.release)
		t.Fatal("closeAll waited for the recording past its bound")
	}
	close(reqs.release)
	if err := <-started; !errors.Is(err, errShuttingDown) {
		t.Fatalf("transfer/start after closeAll: %v, want %v", err, errShuttingDown)
	}
	a.tr.mu.Lock()
	open := len(a.tr.open)
	a.tr.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d transfers open after closeAll", open)
	}
}

// renewingRequests counts RenewTransfer calls.
type renewingRequests struct {
	slowRequests
	renewed chan int64
}

func (r renewingRequests) RenewTransfer(ctx context.Context, id int64, owner string, lease time.Duration) error {
	select {
	case r.renewed <- id:
	default:
	}
	return nil
}

// TestLeasedWhileRecording: the transfer's lease is renewed while an
// upload is recorded (hashing a large dump takes longer than the lease,
// and another front end would take the transfer for lost).
func TestLeasedWhileRecording(t *testing.T) {
	reqs := renewingRequests{renewed: make(chan int64)}
	a := New(slog.New(slog.DiscardHandler), Config{Requests: reqs, TransferLease: 30 * time.Millisecond})
	err := a.leased(context.Background(), 9, func() error {
		for range 3 {
			select {
			case id := <-reqs.renewed:
				if id != 9 {
					return fmt.Errorf("renewed the lease of request %d", id)
				}
			case <-time.After(10 * time.Second):
				return errors.New("the lease was not renewed while the upload was recorded")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTreeUsage: every entry of an upload folder counts (a folder of empty
// folders is not free), and the walk stops once past a bound.
func TestTreeUsage(t *testing.T) {
	dir := t.TempDir()
	for i := range 50 {
		if err := os.Mkdir(filepath.Join(dir, fmt.Sprintf("d%02d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "d00", "f"), make([]byte, 1000), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(dir, "link"))
	if n, entries := treeUsage(dir, 0, 1000); entries != 52 || n != 52*entryBytes+1000 {
		t.Fatalf("treeUsage = %d bytes, %d entries; want %d, 52", n, entries, 52*entryBytes+1000)
	}
	if _, entries := treeUsage(dir, 0, 10); entries != 11 {
		t.Fatalf("the walk went on past the entries' bound: %d entries", entries)
	}
	if n, entries := treeUsage(dir, 3*entryBytes, 1000); entries > 4 || n <= 3*entryBytes {
		t.Fatalf("the walk went on past the bytes' bound: %d bytes, %d entries", n, entries)
	}
	a := New(slog.New(slog.DiscardHandler), Config{MaxUploadBytes: 100 * entryBytes})
	if why := a.overLimit(dir); why != "" {
		t.Fatalf("overLimit = %q under the limit", why)
	}
	a.cfg.MaxUploadBytes = 10 * entryBytes
	if why := a.overLimit(dir); !strings.Contains(why, "larger than this server accepts") {
		t.Fatalf("overLimit = %q past the limit", why)
	}
}
