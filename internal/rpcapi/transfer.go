package rpcapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// What a download holds, under the client's /data.
const (
	dumpName   = "upgraded.dump" // a directory-format dump
	reportName = "upgrade-report.html"
	logName    = "upgrade.log"
	storeDir   = "filestore"
)

// The stored sets a download is made of (files.Store sets: names ending
// in "/").
var (
	upgradedSet  = files.UpgradedDir
	filestoreSet = files.FilestoreSet
)

// uploadNameRE are the names the client uploads to: -d sends a directory
// dump to origin.dump, -i a file to origin.dump, origin.sql,
// origin.sql.gz or origin.zip (or a directory holding toc.dat to
// origin.dump).
var uploadNameRE = regexp.MustCompile(`^origin\.(dump|sql|sql\.gz|zip)$`)

// transfers are the rsync transfers whose endpoints run in this process.
type transfers struct {
	a    *API
	mu   sync.Mutex
	open map[int64]*transfer
	// starting are the requests whose transfer/start runs: one at a time
	// per request, each holding a place under Config.MaxTransfers until
	// its transfer is open (or it failed).
	starting map[int64]bool
	// closed is set at shutdown: no transfer opens after it.
	closed bool
}

// transfer is one open endpoint and what watches it.
type transfer struct {
	id        int64
	direction store.Direction
	ep        *rsyncd.Endpoint
	dir       string
	stop      context.CancelFunc // ends the lease keeper and the watchdog
	once      sync.Once
	done      chan struct{} // closed once the outcome is recorded
	outcome   string        // "ok" or "failed"
	msg       string        // for a person, when failed
	owner     *transfers

	mu     sync.Mutex
	killed string // why the server ended it early ("" otherwise)
	clear  bool   // the upload folder is past the limits: removed once closed
}

func newTransfers(a *API) *transfers {
	return &transfers{a: a, open: map[int64]*transfer{}, starting: map[int64]bool{}}
}

// transferStart: token, transfer_type (upload, download) → ssh_port,
// known_hosts; dump_name for a download.
func (a *API) transferStart(ctx context.Context, req store.Request, p params) (any, error) {
	kind, ok := p.str("transfer_type")
	if !ok {
		return nil, refuse("transfer_type must be a string.")
	}
	var d store.Direction
	var allowed []store.State
	switch kind {
	case "upload":
		d, allowed = store.DirectionUpload, []store.State{store.StateDraft}
	case "download":
		d, allowed = store.DirectionDownload, []store.State{store.StateDone, store.StateTesting, store.StateDelivered}
	default:
		return nil, refuse("Unknown transfer type %q: upload or download.", shown(kind))
	}
	if !slices.Contains(allowed, req.State) {
		if d == store.DirectionUpload {
			return nil, refuse("The request is %s: a dump can be uploaded only to a new request.", stateName(req.State))
		}
		return nil, refuse("The request is %s: there is nothing to download until it is done.", stateName(req.State))
	}
	if a.cfg.Rsync == nil || a.cfg.Folders == nil {
		return nil, refuse("This server does not serve rsync transfers.")
	}
	if req.SSHKey == nil {
		return nil, refuse("This request has no SSH key to transfer with.")
	}
	key, _, _, _, err := gossh.ParseAuthorizedKey([]byte(*req.SSHKey))
	if err != nil {
		return nil, fmt.Errorf("request %d: stored ssh key: %w", req.ID, err)
	}
	t, err := a.tr.start(ctx, req, d, key, allowed)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"ssh_port": t.ep.Port(), "known_hosts": t.ep.KnownHosts(a.cfg.HostURI)}
	if d == store.DirectionDownload {
		out["dump_name"] = dumpName
	}
	return out, nil
}

// start opens an endpoint for req in direction d, replacing an idle one
// of this process's; one running an rsync, or another process's that is
// alive, makes it fail.
func (tr *transfers) start(ctx context.Context, req store.Request, d store.Direction, key gossh.PublicKey, allowed []store.State) (*transfer, error) {
	a := tr.a
	// Check and reserve at once: starts that ran side by side each opened
	// an endpoint, and all but the last were left open, uncounted.
	tr.mu.Lock()
	old := tr.open[req.ID]
	if tr.starting[req.ID] {
		tr.mu.Unlock()
		return nil, errBusy
	}
	if old == nil && tr.placesTaken() >= a.cfg.MaxTransfers {
		tr.mu.Unlock()
		return nil, refuse("This server has as many transfers open as it allows (%d); try again in a few minutes.", a.cfg.MaxTransfers)
	}
	tr.starting[req.ID] = true
	tr.mu.Unlock()
	defer func() {
		tr.mu.Lock()
		delete(tr.starting, req.ID)
		tr.mu.Unlock()
	}()
	if old != nil {
		if old.ep.Result().Running {
			return nil, errBusy
		}
		old.finish(context.WithoutCancel(ctx), "a new transfer replaced this one")
		tr.mu.Lock()
		closed := tr.closed
		tr.mu.Unlock()
		if closed {
			return nil, errShuttingDown
		}
	}
	var dir string
	var err error
	if d == store.DirectionUpload {
		dir, err = a.cfg.Folders.UploadDir(req.ID)
	} else {
		dir, err = a.cfg.Folders.DownloadDir(req.ID)
		if err == nil {
			err = tr.fillDownload(ctx, req, dir)
		}
	}
	if err != nil {
		return nil, err
	}
	dirn := rsyncd.Upload
	if d == store.DirectionDownload {
		dirn = rsyncd.Download
	}
	ep, err := a.cfg.Rsync.Open(rsyncd.Transfer{RequestID: req.ID, Direction: dirn, Key: key, Dir: dir})
	if errors.Is(err, rsyncd.ErrNoPort) {
		return nil, refuse("Every transfer port of this server is in use; try again in a few minutes.")
	}
	if err != nil {
		return nil, err
	}
	err = a.cfg.Requests.OpenTransfer(ctx, req.ID, d, a.cfg.Owner, ep.Port(), a.cfg.TransferLease,
		func(t store.Transfer) bool { return t.Owner == a.cfg.Owner }, allowed...)
	if err != nil {
		ep.Close()
		switch {
		case errors.Is(err, store.ErrTransferBusy):
			return nil, errBusy
		case errors.Is(err, store.ErrBadTransition):
			return nil, refuse("The request changed state; run the command again.")
		}
		return nil, err
	}
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	t := &transfer{id: req.ID, direction: d, ep: ep, dir: dir, stop: stop, done: make(chan struct{}), owner: tr}
	tr.mu.Lock()
	closed := tr.closed
	if !closed {
		tr.open[req.ID] = t
	}
	delete(tr.starting, req.ID)
	tr.mu.Unlock()
	if closed {
		// closeAll has run: this one would outlive it, open.
		t.finish(ctx, "the server is shutting down")
		return nil, errShuttingDown
	}
	go tr.watch(kctx, t, allowed)
	a.logger.Info("transfer opened", "request_id", req.ID, "direction", d, "port", ep.Port())
	return t, nil
}

// placesTaken counts the open transfers and the starts that will open
// one; tr.mu is held.
func (tr *transfers) placesTaken() int {
	n := len(tr.open)
	for id := range tr.starting {
		if tr.open[id] == nil {
			n++
		}
	}
	return n
}

var errBusy = refuse("Another transfer of this request is running; wait for it to end.")

var errShuttingDown = refuse("The server is shutting down; run the command again in a moment.")

// fillDownload puts the upgraded dump, the filestore, the report and the
// log in dir, as the client pulls them.
func (tr *transfers) fillDownload(ctx context.Context, req store.Request, dir string) error {
	fs := tr.a.cfg.Files
	if err := fs.Materialize(ctx, req.ID, upgradedSet, filepath.Join(dir, dumpName)); err != nil {
		if errors.Is(err, files.ErrNotExist) {
			return refuse("The upgraded dump of this request is not available.")
		}
		return err
	}
	if err := fs.Materialize(ctx, req.ID, filestoreSet, filepath.Join(dir, storeDir)); err != nil && !errors.Is(err, files.ErrNotExist) {
		return err
	}
	if o, err := fs.Open(ctx, req.ID, files.Notes); err == nil {
		err = copyOut(o, filepath.Join(dir, reportName))
		o.Close()
		if err != nil {
			return err
		}
	} else if !errors.Is(err, files.ErrNotExist) {
		return err
	}
	events, err := tr.a.cfg.Requests.Events(ctx, req.ID, maxLogLines)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, logName), []byte(LogText(events)), 0o644)
}

func copyOut(o files.Object, p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.ReadFrom(o)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// watch keeps t's lease and, for an upload, its folder within bounds
// (overLimit), until t is stopped; an endpoint that closes itself (idle),
// a lease lost or a request that moved on ends it. The folder is walked
// every second, or less often when a walk takes long (a quarter of the
// time at most goes to it).
func (tr *transfers) watch(ctx context.Context, t *transfer, allowed []store.State) {
	a := tr.a
	period := a.cfg.TransferLease / 3
	lease := time.NewTicker(period)
	defer lease.Stop()
	size := time.NewTimer(time.Second)
	defer size.Stop()
	sizeC := size.C
	if t.direction != store.DirectionUpload {
		sizeC = nil
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.ep.Done():
			go t.finish(ctx, "") // closed by its idle limit
			return
		case <-lease.C:
			err := a.cfg.Requests.RenewTransfer(ctx, t.id, a.cfg.Owner, a.cfg.TransferLease)
			if errors.Is(err, store.ErrLeaseLost) {
				go t.kill(ctx, "the transfer was ended by the server", false)
				return
			}
			if err != nil {
				a.logger.Warn("renew a transfer's lease", "request_id", t.id, "err", err)
				continue
			}
			if req, err := a.cfg.Requests.Request(ctx, t.id); err == nil && !slices.Contains(allowed, req.State) {
				go t.kill(ctx, "the request is "+stateName(req.State)+" now", false)
				return
			}
		case <-sizeC:
			began := time.Now()
			if why := a.overLimit(t.dir); why != "" {
				go t.kill(ctx, why, true)
				return
			}
			size.Reset(max(time.Second, 4*time.Since(began)))
		}
	}
}

// maxUploadEntries bounds the files and folders of an upload folder (a
// set holds at most files.MaxSetMembers files).
const maxUploadEntries = files.MaxSetMembers

// entryBytes is what each file, folder or link of an upload folder counts
// for besides its bytes: its inode and directory entry take disk space
// too, and a folder of empty folders must not fill the disk unnoticed.
const entryBytes = 4096

// overLimit says why the upload folder dir is past this server's bounds
// ("" when it is not): more than MaxUploadBytes (each entry counting its
// bytes and entryBytes), or more than maxUploadEntries entries.
func (a *API) overLimit(dir string) string {
	bytes, entries := treeUsage(dir, a.cfg.MaxUploadBytes, maxUploadEntries)
	switch {
	case entries > maxUploadEntries:
		return fmt.Sprintf("the upload holds more than %d files and folders", maxUploadEntries)
	case a.cfg.MaxUploadBytes > 0 && bytes > a.cfg.MaxUploadBytes:
		return fmt.Sprintf("the upload is larger than this server accepts (%d bytes)", a.cfg.MaxUploadBytes)
	}
	return ""
}

// treeUsage sums what the entries under dir take (a regular file's size,
// and entryBytes for every entry) and counts them; it stops once the sum
// passes maxBytes (if > 0) or the count passes maxEntries.
func treeUsage(dir string, maxBytes int64, maxEntries int) (n int64, entries int) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		entries++
		n += entryBytes
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		if entries > maxEntries || (maxBytes > 0 && n > maxBytes) {
			return filepath.SkipAll
		}
		return nil
	})
	return n, entries
}

// kill ends t at once (its rsync killed, told why) and records it failed;
// clear removes the upload folder too (nothing in it is worth resuming).
func (t *transfer) kill(ctx context.Context, why string, clear bool) {
	t.mu.Lock()
	t.killed, t.clear = why, clear
	t.mu.Unlock()
	t.ep.Kill("upgrade-server: " + why)
	t.finish(ctx, "")
}

// transferStop: token → the upload recorded and the request pending, or
// the download's folder removed. A transfer run by another process is
// stopped there; this call waits for its outcome.
func (a *API) transferStop(ctx context.Context, req store.Request, p params) (any, error) {
	tr := a.tr
	tr.mu.Lock()
	t := tr.open[req.ID]
	tr.mu.Unlock()
	if t != nil {
		t.finish(ctx, "")
		return t.answer()
	}
	rec, err := a.cfg.Requests.TransferOf(ctx, req.ID)
	switch {
	case errors.Is(err, store.ErrNoTransfer):
		return nil, refuse("No transfer of this request is open.")
	case err != nil:
		return nil, err
	}
	if ans, done, err := ended(rec); done {
		return ans, err
	}
	if _, err := a.cfg.Requests.RequestTransferStop(ctx, req.ID); err != nil && !errors.Is(err, store.ErrNoTransfer) {
		return nil, err
	}
	// The owner stops it (the rsync it may let finish, the upload it
	// records) and writes the outcome.
	deadline := time.Now().Add(stopWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		rec, err := a.cfg.Requests.TransferOf(ctx, req.ID)
		if err != nil {
			return nil, err
		}
		if ans, done, err := ended(rec); done {
			return ans, err
		}
	}
	return nil, refuse("The transfer is still being stopped; ask its status again in a minute.")
}

// ended answers transfer/stop for a transfer another process ran, once it
// has ended (its outcome) or was lost (its process stopped); done is
// false while it runs.
func ended(rec store.Transfer) (ans any, done bool, err error) {
	switch {
	case rec.Outcome != "":
		ans, err = answerOf(rec.Outcome, rec.Error)
		return ans, true, err
	case !rec.Live:
		return nil, true, refuse("The transfer was lost (the server that ran it stopped); run the command again.")
	}
	return nil, false, nil
}

// stopWait is how long transfer/stop waits for another process to stop a
// transfer: within the client's 60 s.
const stopWait = 50 * time.Second

// stopRequested stops t when another process was asked to (transfer/stop
// reached it).
func (tr *transfers) stopRequested(id int64) {
	tr.mu.Lock()
	t := tr.open[id]
	tr.mu.Unlock()
	if t != nil {
		go t.finish(context.Background(), "")
	}
}

// closeAll stops this process's transfers (shutdown): uploads are not
// recorded, the client runs again; no transfer opens after it. It waits
// at most shutdownWait: a transfer/stop recording a large upload goes on
// until the process ends, and what it leaves half-committed is swept.
func (tr *transfers) closeAll() {
	tr.mu.Lock()
	tr.closed = true
	all := make([]*transfer, 0, len(tr.open))
	for _, t := range tr.open {
		all = append(all, t)
	}
	tr.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range all {
		wg.Go(func() { t.finish(context.Background(), "the server is shutting down") })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownWait):
	}
}

// shutdownWait bounds closeAll (a variable for tests).
var shutdownWait = 20 * time.Second

func answerOf(outcome, msg string) (any, error) {
	if outcome != "ok" {
		return nil, &refusal{msg}
	}
	return map[string]any{}, nil
}

func (t *transfer) answer() (any, error) {
	<-t.done
	return answerOf(t.outcome, t.msg)
}

// finish closes t's endpoint (a running rsync gets rsyncd's StopGrace to
// end), records an upload that completed, and writes the outcome; once.
// abandon, when set, records the transfer failed with that reason without
// recording its upload.
func (t *transfer) finish(ctx context.Context, abandon string) {
	t.once.Do(func() {
		defer close(t.done)
		tr := t.owner
		a := tr.a
		ctx = context.WithoutCancel(ctx)
		t.ep.Close()
		t.stop()
		// t stays open (and counted) until its outcome is recorded: a
		// transfer/start meanwhile waits for it in finish rather than
		// opening a second endpoint on the folder being committed, and a
		// second transfer/stop waits for the same outcome.
		defer func() {
			tr.mu.Lock()
			if tr.open[t.id] == t {
				delete(tr.open, t.id)
			}
			tr.mu.Unlock()
		}()
		res := t.ep.Result()
		t.mu.Lock()
		killed, clear := t.killed, t.clear
		t.mu.Unlock()
		t.outcome, t.msg = "ok", ""
		switch {
		case abandon != "":
			t.outcome, t.msg = "failed", "The transfer was closed: "+abandon+"."
		case killed != "":
			t.outcome, t.msg = "failed", "The transfer was closed: "+killed+"."
		case t.direction == store.DirectionDownload:
			if !res.OK && res.Sessions > 0 {
				t.outcome, t.msg = "failed", "The download did not complete: "+scrub(res.Err, t.dir)+"."
			}
		case res.Sessions == 0:
			t.outcome, t.msg = "failed", "No rsync reached this transfer's port: nothing was uploaded."
		case !res.OK:
			t.outcome, t.msg = "failed", "The upload did not complete ("+scrub(res.Err, t.dir)+"); run the same command "+
				"again: rsync sends only what is missing."
		default:
			if err := a.leased(ctx, t.id, func() error { return a.record(ctx, t, res.Paths) }); err != nil {
				var ref *refusal
				if !errors.As(err, &ref) {
					reference := token.Hex(6)
					a.logger.Error("record an rsync upload", "request_id", t.id, "reference", reference, "err", err)
					ref = &refusal{"The upload could not be recorded (reference " + reference + "); run the same command again."}
				}
				t.outcome, t.msg = "failed", ref.msg
			}
		}
		if clear {
			if err := a.cfg.Folders.RemoveTransferDir(t.id, "upload"); err != nil {
				a.logger.Warn("remove an upload folder", "request_id", t.id, "err", err)
			}
		}
		if t.direction == store.DirectionDownload {
			if err := a.cfg.Folders.RemoveTransferDir(t.id, "download"); err != nil {
				a.logger.Warn("remove a download folder", "request_id", t.id, "err", err)
			}
		}
		if err := a.cfg.Requests.FinishTransfer(ctx, t.id, a.cfg.Owner, t.outcome, t.msg); err != nil {
			a.logger.Warn("record a transfer's outcome", "request_id", t.id, "err", err)
		}
		a.logger.Info("transfer closed", "request_id", t.id, "direction", t.direction, "outcome", t.outcome,
			"sessions", res.Sessions, "bytes_in", res.BytesIn, "bytes_out", res.BytesOut)
	})
	<-t.done
}

// leased runs fn (the recording of an upload: a large dump takes longer
// than the lease) with the transfer's lease of request id renewed, so that
// the other front ends do not take the transfer for lost meanwhile.
func (a *API) leased(ctx context.Context, id int64, fn func() error) error {
	kctx, stop := context.WithCancel(ctx)
	var keeper sync.WaitGroup
	defer keeper.Wait() // no renewal after the outcome is written
	defer stop()
	keeper.Go(func() {
		store.KeepLease(kctx, a.cfg.TransferLease/3,
			func(ctx context.Context) error {
				return a.cfg.Requests.RenewTransfer(ctx, id, a.cfg.Owner, a.cfg.TransferLease)
			},
			func(err error) {
				a.logger.Warn("a transfer's lease was lost while its upload was recorded", "request_id", id)
			},
			func(err error) { a.logger.Warn("renew a transfer's lease", "request_id", id, "err", err) })
	})
	return fn()
}

// record stores what the upload wrote (the last rsync's destination) as
// the request's upload and queues the request.
func (a *API) record(ctx context.Context, t *transfer, paths []string) error {
	if len(paths) != 1 || !uploadNameRE.MatchString(paths[0]) {
		return refuse("Upload the dump to /data/origin.dump, origin.sql, origin.sql.gz or origin.zip, one at a time.")
	}
	rel := paths[0]
	if why := a.overLimit(t.dir); why != "" {
		// Nothing in it is worth resuming.
		if err := a.cfg.Folders.RemoveTransferDir(t.id, "upload"); err != nil {
			a.logger.Warn("remove an upload folder", "request_id", t.id, "err", err)
		}
		return refuse("%s.", upperFirst(why))
	}
	root, err := os.OpenRoot(t.dir)
	if err != nil {
		return err
	}
	defer root.Close()
	st, err := root.Lstat(rel)
	if err != nil {
		return refuse("Nothing arrived at /data/%s; run the same command again.", rel)
	}
	// The folder's writer (the tools user) may still change it: what is
	// read is opened without waiting on a FIFO, checked plain, and the
	// files package takes what it opens itself, following no link.
	var name files.Name
	var got files.Received
	var w dump.Writer
	switch {
	case st.IsDir():
		f, info, err := openPlain(root, filepath.Join(rel, "toc.dat"))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return refuse("/data/%s is a folder without toc.dat: send a pg_dump directory-format dump, or a file.", rel)
		case err != nil:
			return refuse("/data/%s/toc.dat is not a plain file.", rel)
		}
		w = dump.WrittenBy(f, info.Size())
		f.Close()
		name = files.NewUploadName() + "/"
		if got, err = a.cfg.Files.CommitDir(ctx, t.id, name, filepath.Join(t.dir, rel), a.cfg.MaxUploadBytes); err != nil {
			return uploadRefused(err, a.cfg.MaxUploadBytes)
		}
	case st.Mode().IsRegular():
		f, info, err := openPlain(root, rel)
		if err != nil {
			return refuse("/data/%s is not a plain file.", rel)
		}
		w = dump.WrittenBy(f, info.Size())
		f.Close()
		name = files.NewUploadName()
		if got, err = a.cfg.Files.CommitFile(ctx, t.id, name, filepath.Join(t.dir, rel), nil); err != nil {
			return uploadRefused(err, a.cfg.MaxUploadBytes)
		}
		if a.cfg.MaxUploadBytes > 0 && got.Size > a.cfg.MaxUploadBytes {
			a.cfg.Files.Remove(ctx, t.id, name)
			return uploadRefused(files.ErrTooLarge, a.cfg.MaxUploadBytes)
		}
	default:
		return refuse("/data/%s is neither a file nor a folder.", rel)
	}
	lease := token.Hex(16)
	if _, err := a.cfg.Requests.TakeUpload(ctx, t.id, lease, a.cfg.UploadLease, false); err != nil {
		a.cfg.Files.Remove(ctx, t.id, name)
		if errors.Is(err, store.ErrBadTransition) {
			return refuse("The request is no longer new: the upload was not recorded.")
		}
		return err
	}
	_, replaced, err := a.cfg.Requests.CompleteUpload(ctx, t.id, lease, store.Upload{Name: string(name), Size: got.Size, SHA256: got.SHA256})
	if err != nil {
		a.cfg.Files.Remove(ctx, t.id, name)
		a.cfg.Requests.AbortUpload(ctx, t.id, lease)
		return err
	}
	if replaced != "" {
		if err := a.cfg.Files.Remove(ctx, t.id, files.Name(replaced)); err != nil {
			a.logger.Warn("remove a replaced upload", "request_id", t.id, "err", err)
		}
	}
	archive := ""
	if w != (dump.Writer{}) {
		archive = w.PgDump + "/" + w.Archive
	}
	if err := a.cfg.Requests.SetUploadOrigin(ctx, t.id, rel, archive); err != nil {
		return err
	}
	kind := "file"
	if st.IsDir() {
		kind = "directory-format dump"
	}
	if err := a.cfg.Requests.AddEvent(ctx, t.id, "info", fmt.Sprintf("Upload received over rsync: %s (%s, %d bytes).", rel, kind, got.Size)); err != nil {
		return err
	}
	if _, err := a.cfg.Requests.Process(ctx, t.id); err != nil {
		return err
	}
	if err := a.cfg.Folders.RemoveTransferDir(t.id, "upload"); err != nil {
		a.logger.Warn("remove an upload folder", "request_id", t.id, "err", err)
	}
	a.logger.Info("rsync upload recorded", "request_id", t.id, "name", rel, "bytes", got.Size, "sha256", got.SHA256)
	return nil
}

// errNotPlain: what openPlain was asked for is not a plain file.
var errNotPlain = errors.New("rpcapi: not a plain file")

// openPlain opens name of root for reading if it is a plain file, without
// waiting on a FIFO: the file opened is the one looked at (a link or pipe
// swapped in meanwhile fails with errNotPlain).
func openPlain(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	before, err := root.Lstat(name)
	if err != nil {
		return nil, nil, err
	}
	if !before.Mode().IsRegular() {
		return nil, nil, errNotPlain
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || !os.SameFile(before, st) {
		f.Close()
		return nil, nil, errors.Join(err, errNotPlain)
	}
	return f, st, nil
}

// uploadRefused renders a refusal of the files package (too large, or
// holding what an upload may not: its text names the member, never a
// server path) for the client; other errors pass.
func uploadRefused(err error, max int64) error {
	switch {
	case errors.Is(err, files.ErrTooLarge):
		return refuse("The upload is larger than this server accepts (%d bytes).", max)
	case errors.Is(err, files.ErrRefused):
		msg := strings.TrimSuffix(strings.TrimPrefix(err.Error(), "files: "), ": "+files.ErrRefused.Error())
		return refuse("The upload cannot be taken: %s.", shown(msg))
	}
	return err
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// scrub keeps a server path out of an rsync message shown to a client:
// the transfer folder's, as given and with its links resolved (rsync
// names files from its working directory, which has none).
func scrub(msg, dir string) string {
	if real, err := filepath.EvalSymlinks(dir); err == nil && real != dir {
		msg = strings.ReplaceAll(msg, real, "/data")
	}
	msg = strings.ReplaceAll(msg, dir, "/data")
	if msg == "" {
		return "rsync failed"
	}
	return strings.TrimSuffix(shown(msg), ".")
}

// shown is s cut to one short line of clean text, safe to echo.
func shown(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}
