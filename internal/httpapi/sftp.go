package httpapi

import (
	"crypto/rsa"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// maxSSHKeys bounds the keys of one grant.
const maxSSHKeys = 100

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
		keys, fails := parseAuthorizedKeys(text)
		if fails != nil {
			return reply{fails: fails}
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
		SharedFile:    r.Filename,
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

// parseAuthorizedKeys reads an authorized_keys text: one public key a line,
// blank lines and # comments allowed. Options (command=, from=, …),
// certificates, DSA and short RSA keys are refused, each bad line with its
// own failure.
func parseAuthorizedKeys(text string) ([]store.SFTPKey, []failure) {
	var keys []store.SFTPKey
	var fails []failure
	bad := func(n int, why string) {
		fails = append(fails, failure{Reason: reasonSSHKeysInvalid, Message: fmt.Sprintf("ssh_keys line %d: %s", n, why),
			Param: "ssh_keys"})
	}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pk, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
		switch {
		case err != nil:
			bad(n, "not a public key in authorized_keys format")
			continue
		case len(rest) > 0:
			bad(n, "unexpected text after the key")
			continue
		case len(options) > 0:
			bad(n, fmt.Sprintf("key options such as %q are not allowed; give the bare key", options[0]))
			continue
		}
		if _, isCert := pk.(*ssh.Certificate); isCert {
			bad(n, "certificates are not accepted; give the bare public key")
			continue
		}
		switch pk.Type() {
		case ssh.KeyAlgoDSA:
			bad(n, "DSA keys are not accepted; use ed25519, ECDSA or RSA (2048 bits or more)")
			continue
		case ssh.KeyAlgoRSA:
			if ck, ok := pk.(ssh.CryptoPublicKey); ok {
				if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
					bad(n, fmt.Sprintf("RSA key of %d bits is too short (2048 or more)", rk.N.BitLen()))
					continue
				}
			}
		}
		keys = append(keys, store.SFTPKey{
			Fingerprint: ssh.FingerprintSHA256(pk),
			PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))),
			Comment:     comment,
		})
	}
	if fails != nil {
		return nil, fails
	}
	if len(keys) == 0 {
		return nil, []failure{{Reason: reasonSSHKeysEmpty, Message: "ssh_keys holds no public key", Param: "ssh_keys"}}
	}
	if len(keys) > maxSSHKeys {
		return nil, []failure{{Reason: reasonSSHKeysInvalid, Param: "ssh_keys",
			Message: fmt.Sprintf("ssh_keys holds %d keys; at most %d are accepted", len(keys), maxSSHKeys)}}
	}
	return keys, nil
}
