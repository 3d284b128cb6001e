package httpapi

import (
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// sftpAccess is request_sftp_access's request part.
type sftpAccess struct {
	Hostname      string `json:"hostname"`
	SFTPPort      int    `json:"sftp_port"`
	SFTPUser      string `json:"sftp_user"`
	SharedFile    string `json:"shared_file"`
	RequestID     int64  `json:"request_id"`
	SampleCommand string `json:"sample_command"`
}

// SFTP access is for uploading while draft and downloading once done.
var sftpStates = []store.State{store.StateDraft, store.StateDone, store.StateDelivered}

func handleRequestSFTPAccess(requests RequestStore, opts Options) methodFunc {
	return authenticated(requests, func(r *http.Request, p params, req store.Request) reply {
		text, ok := p.get("ssh_keys")
		if !ok {
			return reply{fails: []failure{missingParam("ssh_keys")}}
		}
		keys, probs := input.SSHKeys(text)
		if probs != nil {
			return reply{fails: fromProblems(probs)}
		}
		got, err := requests.GrantSFTP(r.Context(), req.ID, keys, opts.SFTPAccessTTL, sftpStates...)
		if err != nil {
			return transitionReply(opts, got, err)
		}
		if got.State == store.StateDraft {
			// The shared file exists from the start, so put -a works from the first byte.
			if err := ensureSharedFile(opts.Data, got.ID); err != nil {
				return reply{err: err}
			}
		}
		return reply{req: opts.sftpAccess(got)}
	})
}

func (o Options) sftpAccess(r store.Request) sftpAccess {
	user := "user_" + strconv.FormatInt(r.ID, 10)
	return sftpAccess{
		Hostname:      o.SFTPHost,
		SFTPPort:      o.SFTPPort,
		SFTPUser:      user,
		SharedFile:    input.ShownName(r.Filename),
		RequestID:     r.ID,
		SampleCommand: fmt.Sprintf("sftp -P %d %s@%s", o.SFTPPort, user, o.SFTPHost),
	}
}

func ensureSharedFile(data datadir.Dir, id int64) error {
	if _, err := data.EnsureRequest(id); err != nil {
		return err
	}
	f, err := os.OpenFile(data.Path(id, datadir.Upload), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create the shared file: %w", err)
	}
	return f.Close()
}
