package input

import (
	"slices"
	"strings"
	"testing"
)

func TestEnvVars(t *testing.T) {
	got, probs := EnvVars([]string{"UPG_DEBUG=1", "EMPTY=", "A=x=y", "UPG_DEBUG=2"})
	if probs != nil || !slices.Equal(got, []string{"UPG_DEBUG=2", "EMPTY=", "A=x=y"}) {
		t.Fatalf("EnvVars = %q %+v", got, probs)
	}
	for _, bad := range []string{"novalue", "=x", "1A=x", "A-B=x", "PATH=/tmp", "LD_PRELOAD=/x.so", "ld_library_path=/x", "PGPASSWORD=x",
		"UPGRADE_ADMIN_TOKEN=x", "PYTHONPATH=/x", "BASH_FUNC_x%%=() { :; }", "IFS=x", "A=line\nbreak", "A=\x00",
		// files read as commands or settings, programs started, by the tools
		// a command may run (psql, libpq's GSSAPI and LDAP, Odoo, shells)
		"PSQLRC=filestore/0a/rc", "psqlrc=x", "PSQL_EDITOR=x", "PSQL_PAGER=x", "PAGER=x", "EDITOR=x", "VISUAL=x",
		"LESSOPEN=|x", "OPENERP_SERVER=x", "KRB5_CONFIG=x", "KRB5CCNAME=x", "GSS_MECH_CONFIG=x", "LDAPCONF=x", "LDAPRC=x",
		"XDG_CONFIG_HOME=x", "JDK_JAVA_OPTIONS=x", "ZDOTDIR=x", "BASH_LOADABLES_PATH=x", "LUA_INIT=x", "PIP_INDEX_URL=x",
		"PS1=x", "PROMPT_COMMAND=x", "TERMINFO=x", "TZDIR=filestore/0a"} {
		if _, probs := EnvVars([]string{bad}); len(probs) != 1 || probs[0].Param != "env_vars" {
			t.Errorf("%q: %+v", bad, probs)
		}
	}
	many := make([]string, MaxEnvVars+1)
	for i := range many {
		many[i] = "A=1"
	}
	if _, probs := EnvVars(many); len(probs) != 1 || !strings.Contains(probs[0].Message, "at most") {
		t.Errorf("too many: %+v", probs)
	}
}

func TestAllowedEnvVars(t *testing.T) {
	kept, dropped := AllowedEnvVars([]string{"UPG_DEBUG=1", "PSQLRC=filestore/0a/rc", "A=x=y", "ld_preload=/x.so"})
	if !slices.Equal(kept, []string{"UPG_DEBUG=1", "A=x=y"}) || !slices.Equal(dropped, []string{"PSQLRC", "ld_preload"}) {
		t.Fatalf("AllowedEnvVars = %q, %q", kept, dropped)
	}
}

func TestSSHKey(t *testing.T) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
	if got, probs := SSHKey(key + " user@host\n"); probs != nil || got != key {
		t.Fatalf("SSHKey = %q %+v", got, probs)
	}
	for _, bad := range []string{"", "nope", key + "\n" + key, `command="sh" ` + key} {
		if _, probs := SSHKey(bad); len(probs) == 0 || probs[0].Param != "ssh_key" {
			t.Errorf("%q: %+v", bad, probs)
		}
	}
}

func TestCreateRPC(t *testing.T) {
	get := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	rules := Rules{Targets: []string{"16.0", "17.0"}}
	n, probs := CreateRPC(get(map[string]string{"contract": "M1", "target": "17.0", "aim": "production"}), []string{"A=1"},
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", rules)
	if probs != nil || n.Target != "17.0" || n.Aim != "production" || n.Contract != "M1" || !slices.Equal(n.EnvVars, []string{"A=1"}) || n.SSHKey == nil {
		t.Fatalf("CreateRPC = %+v %+v", n, probs)
	}
	_, probs = CreateRPC(get(map[string]string{"contract": "scenario:nope=1", "target": "9.0"}), nil, "", rules)
	var reasons []string
	for _, p := range probs {
		reasons = append(reasons, p.Reason)
	}
	if !slices.Equal(reasons, []string{ReasonScenarioInvalid, ReasonTargetInvalid, ReasonParamMissing, ReasonParamMissing}) {
		t.Fatalf("problems: %+v", probs)
	}
}
