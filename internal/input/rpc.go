package input

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

// The bounds of env_vars (create of Odoo's own client).
const (
	MaxEnvVars     = 64       // variables
	MaxEnvVarBytes = 16 << 10 // one NAME=VALUE
	MaxSSHKeyBytes = 16 << 10 // the ssh_key text
)

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// envDenied are the names, or name prefixes (ending in "*"), a client may
// not set: they would change how the command engine and the tools it runs
// behave (loader, interpreter and shell start-up, PostgreSQL connection,
// the server's own settings), not what the upgrade does. That includes
// every variable that names a file a tool reads as commands or settings,
// or a program a tool starts: the upload puts files of its choosing in the
// run's folder (an Odoo backup's filestore), so PSQLRC=filestore/… would
// make any psql the command runs execute the dump's "\!" lines.
var envDenied = []string{
	// the loader, the C library, the shells
	"PATH", "HOME", "SHELL", "USER", "LOGNAME", "IFS", "ENV", "BASH_*", "ZDOTDIR", "FPATH", "PS0", "PS1", "PS2", "PS3", "PS4",
	"PROMPT_COMMAND", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLOBIGNORE", "TMPDIR", "TMP", "TEMP", "LANG", "LANGUAGE", "LC_*", "TZ", "TZDIR",
	"TERM", "TERMINFO*", "TERMCAP", "LD_*", "DYLD_*", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RES_OPTIONS",
	"LOCALDOMAIN", "MALLOC_*", "GLIBC_*", "XDG_*",
	// PostgreSQL's clients and the libraries libpq loads
	"PG*", "PSQL*", "KRB5*", "GSS_*", "LDAP*", "SASL_*", "OPENSSL_*", "SSL_*",
	// programs that tools start
	"PAGER", "MANPAGER", "LESS*", "EDITOR", "VISUAL", "BROWSER",
	// the server's settings, Odoo's configuration file
	"UPGRADE_*", "ODOO_RC", "OPENERP_SERVER",
	// interpreters and their package tools
	"PYTHON*", "PIP_*", "PERL*", "RUBY*", "NODE_*", "NPM_*", "JAVA_*", "_JAVA_*", "JDK_JAVA_OPTIONS", "CLASSPATH", "LUA_*",
	"TCLLIBPATH", "PHPRC", "PHP_INI_SCAN_DIR", "ODBC*",
	// network clients
	"GIT_*", "SSH_*", "CURL_*", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY",
}

func envNameDenied(name string) bool {
	up := strings.ToUpper(name)
	for _, d := range envDenied {
		if p, ok := strings.CutSuffix(d, "*"); ok {
			if strings.HasPrefix(up, p) {
				return true
			}
		} else if up == d {
			return true
		}
	}
	return false
}

// EnvVars checks env_vars: at most MaxEnvVars "NAME=VALUE" strings, NAME a
// shell variable name not in the denied list (PATH, LD_*, PG*, UPGRADE_*,
// PYTHON*… see README.md), VALUE clean text; a name given twice keeps its
// last value. It returns the list as it will be passed on.
func EnvVars(list []string) ([]string, []Problem) {
	var probs []Problem
	bad := func(i int, why string) {
		probs = append(probs, Problem{Reason: ReasonParamInvalid, Param: "env_vars",
			Message: fmt.Sprintf("env_vars[%d]: %s", i, why)})
	}
	if len(list) > MaxEnvVars {
		return nil, []Problem{{Reason: ReasonParamInvalid, Param: "env_vars",
			Message: fmt.Sprintf("env_vars holds %d variables; at most %d are accepted", len(list), MaxEnvVars)}}
	}
	index := map[string]int{}
	var out []string
	for i, kv := range list {
		name, value, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			bad(i, "not of the form NAME=VALUE")
		case !envNameRE.MatchString(name) || len(name) > 128:
			bad(i, "the name is not a variable name (letters, digits and _, not starting with a digit)")
		case envNameDenied(name):
			bad(i, fmt.Sprintf("%s may not be set: it would change how the server's tools run, not the upgrade", name))
		case textProblem(value, MaxEnvVarBytes) != "":
			bad(i, "the value of "+name+": "+textProblem(value, MaxEnvVarBytes))
		default:
			if j, seen := index[name]; seen {
				out[j] = name + "=" + value
			} else {
				index[name] = len(out)
				out = append(out, name+"="+value)
			}
		}
	}
	if probs != nil {
		return nil, probs
	}
	return out, nil
}

// AllowedEnvVars keeps of a request's stored env_vars those EnvVars
// accepts now, and returns the names of the others: a request created
// before a name was denied still holds it in its record.
func AllowedEnvVars(list []string) (kept, dropped []string) {
	for _, kv := range list {
		if _, probs := EnvVars([]string{kv}); probs != nil {
			name, _, _ := strings.Cut(kv, "=")
			dropped = append(dropped, ShownName(name))
			continue
		}
		kept = append(kept, kv)
	}
	return kept, dropped
}

// SSHKey checks ssh_key, the client's public key (the .pub file's text):
// one key, by the rules of request_sftp_access's keys. It returns the key
// as one authorized_keys line.
func SSHKey(text string) (string, []Problem) {
	if strings.TrimSpace(text) == "" {
		return "", []Problem{Missing("ssh_key")}
	}
	if len(text) > MaxSSHKeyBytes {
		return "", []Problem{{Reason: ReasonSSHKeysInvalid, Param: "ssh_key", Message: "ssh_key is too long for a public key"}}
	}
	keys, probs := SSHKeys(text)
	for i := range probs {
		probs[i].Param = "ssh_key"
		probs[i].Message = strings.Replace(probs[i].Message, "ssh_keys", "ssh_key", 1)
	}
	switch {
	case probs != nil:
		return "", probs
	case len(keys) != 1:
		return "", []Problem{{Reason: ReasonSSHKeysInvalid, Param: "ssh_key", Message: "ssh_key must hold one public key"}}
	}
	return keys[0].PublicKey, nil
}

// CreateRPC checks the create call of Odoo's own client: contract, target
// and aim by v1's rules (scenario contracts included), env_vars and
// ssh_key. get returns a text parameter ("" when absent). The request it
// returns has no key, token or email: the caller sets them.
func CreateRPC(get func(name string) string, envVars []string, sshKey string, rules Rules) (store.NewRequest, []Problem) {
	var n store.NewRequest
	c := checker{get: get}
	c.contract(&n, rules)
	c.target(&n, rules)
	c.aim(&n)
	probs := c.probs
	env, p := EnvVars(envVars)
	probs = append(probs, p...)
	key, p := SSHKey(sshKey)
	probs = append(probs, p...)
	n.EnvVars, n.SSHKey = env, &key
	return n, probs
}
