package httpapi

import (
	"fmt"
	"net/http"
	"strconv"

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

func handleRequestSFTPAccess(requests RequestStore, sftp sftpView, rec recorder) methodFunc {
	return authenticated(requests, func(r *http.Request, p params, req store.Request) reply {
		text, ok := p.get("ssh_keys")
		if !ok {
			return reply{fails: []failure{missingParam("ssh_keys")}}
		}
		keys, probs := input.SSHKeys(text)
		if probs != nil {
			return reply{fails: fromProblems(probs)}
		}
		got, err := requests.GrantSFTP(r.Context(), req.ID, keys, sftp.info.AccessTTL, sftpStates...)
		if err != nil {
			return transitionReply(rec, got, err)
		}
		return reply{req: sftp.access(got)}
	})
}

// sftpView renders the SFTP daemon as a request's clients reach it.
type sftpView struct{ info SFTPInfo }

func (v sftpView) access(r store.Request) sftpAccess {
	user := "user_" + strconv.FormatInt(r.ID, 10)
	return sftpAccess{
		Hostname:      v.info.Host,
		SFTPPort:      v.info.Port,
		SFTPUser:      user,
		SharedFile:    input.ShownName(r.Filename),
		RequestID:     r.ID,
		SampleCommand: fmt.Sprintf("sftp -P %d %s@%s", v.info.Port, user, v.info.Host),
	}
}
