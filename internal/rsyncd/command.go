package rsyncd

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// refusal is a command line, request or path the endpoint will not serve.
// Its text goes to the client's stderr as it is, so it names the option or
// path the client sent and never a server path.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

func refuse(format string, args ...any) error {
	return &refusal{msg: fmt.Sprintf(format, args...)}
}

// command is an accepted "rsync --server ..." line.
type command struct {
	sender bool     // --sender: rsync sends (a download)
	opts   []string // the client's options, as sent, after --server
	paths  []string // path arguments, relative to the transfer folder
}

// maxCommandLen bounds the exec line: the client's are under 200 bytes.
const maxCommandLen = 4096

// maxPaths bounds a sender's path arguments: the client names four.
const maxPaths = 16

// shortLetters are the single-letter options an rsync server accepts in the
// client's bundle: -a (-rlptgoD) and -r, which every client sends, and -v,
// which only makes the server's messages longer. The letters after "e."
// are capability flags, not options (see parseBundle).
const shortLetters = "rlptgoDv"

var (
	// capsRE is the -e argument of a bundle: rsync's "<version>.<flags>",
	// flags being letters that name protocol features (iLsfxCIvu in 3.2 to
	// 3.5) that the server enables only when it implements them itself.
	capsRE = regexp.MustCompile(`^[0-9]*\.[A-Za-z]*$`)
	// longValues are the long options accepted with a value, and the value's
	// shape: --info only tunes messages, --chmod only the modes of files in
	// the transfer (a server-side --chmod=ug-s is forced after it on uploads)
	// and --bwlimit only slows the server down.
	longValues = map[string]*regexp.Regexp{
		"--info":    regexp.MustCompile(`^[A-Za-z0-9,]{1,200}$`),
		"--chmod":   regexp.MustCompile(`^[ugoaDF0-7rwxXst+=,-]{1,200}$`),
		"--bwlimit": regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,6})?[KMGkmgBb]?$`),
	}
	// longFlags are the accepted long options without a value, by direction:
	// the client sends --delete-after to the receiver (it deletes within the
	// destination it names) and --ignore-missing-args to the sender.
	longFlags = map[string]Direction{
		"--delete-after":        Upload,
		"--ignore-missing-args": Download,
	}
)

// lineChar reports whether c may appear in an accepted command line. The
// client's lines use no quote, backslash or glob character: anything else
// is refused before it could mean something to rsync (which expands globs
// in a sender's arguments and unescapes backslashes).
func lineChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte(" ._,:=+/-", c) >= 0
}

// parseCommand checks an exec request's command line against the forms
// the upgrade client sends for direction d and maps its paths. A refused
// line returns a *refusal whose text says what was refused.
func parseCommand(line string, d Direction) (*command, error) {
	if len(line) > maxCommandLen {
		return nil, refuse("command line too long")
	}
	words := strings.Split(line, " ")
	if len(words) < 2 || words[0] != "rsync" || words[1] != "--server" {
		return nil, refuse("only rsync --server commands are served here")
	}
	for i := 0; i < len(line); i++ {
		if !lineChar(line[i]) {
			return nil, refuse("unexpected character %q in the command line", line[i])
		}
	}
	dot := slices.Index(words, ".")
	if dot < 0 {
		// Say which option is wrong, if one is (-s sends its paths over
		// the protocol, so its lines have none).
		for _, w := range words[2:] {
			if err := new(command).option(w, d); err != nil && w != "" {
				return nil, err
			}
		}
		return nil, refuse("no path in the command line")
	}
	// The direction first: it is the most useful thing to say to a client
	// that reached the wrong endpoint.
	sender := slices.Contains(words[2:dot], "--sender")
	switch {
	case d == Upload && sender:
		return nil, refuse("this is an upload endpoint: it only receives files (--sender is not allowed)")
	case d == Download && !sender:
		return nil, refuse("this is a download endpoint: it only sends files (the receiver form is not allowed)")
	}
	cmd := &command{}
	for _, w := range words[2:dot] {
		if w == "" {
			return nil, refuse("empty argument in the command line")
		}
		if err := cmd.option(w, d); err != nil {
			return nil, err
		}
	}
	args := words[dot+1:]
	switch {
	case len(args) == 0:
		return nil, refuse("no path in the command line")
	case d == Upload && len(args) > 1:
		return nil, refuse("an upload names one destination")
	case len(args) > maxPaths:
		return nil, refuse("too many paths")
	}
	for _, a := range args {
		p, err := mapPath(a)
		if err != nil {
			return nil, err
		}
		cmd.paths = append(cmd.paths, p)
	}
	return cmd, nil
}

// option accepts one option word of the client's, or refuses it by name.
func (c *command) option(w string, d Direction) error {
	if w == "--sender" {
		c.sender = true
		c.opts = append(c.opts, w)
		return nil
	}
	if strings.HasPrefix(w, "--") {
		name, value, hasValue := strings.Cut(w, "=")
		if re, ok := longValues[name]; ok && hasValue {
			if !re.MatchString(value) {
				return refuse("option %s: value not allowed", name)
			}
			c.opts = append(c.opts, w)
			return nil
		}
		if dir, ok := longFlags[name]; ok && !hasValue && dir == d {
			c.opts = append(c.opts, w)
			return nil
		}
		return refuse("option %s is not allowed", truncate(name, 40))
	}
	if err := parseBundle(w); err != nil {
		return err
	}
	c.opts = append(c.opts, w)
	return nil
}

// parseBundle accepts a bundle of single-letter options such as
// -logDtpre.iLsfxCIvu: letters of shortLetters, then optionally "e" and
// the capability string.
func parseBundle(w string) error {
	body, ok := strings.CutPrefix(w, "-")
	if !ok || body == "" {
		return refuse("argument %s is not allowed before the path", truncate(w, 40))
	}
	letters, caps, hasCaps := strings.Cut(body, "e")
	if hasCaps && !capsRE.MatchString(caps) {
		return refuse("option -e is not allowed")
	}
	for _, l := range letters {
		if l == 's' {
			return refuse("option -s (--secluded-args) is not allowed: its arguments could not be checked")
		}
		if !strings.ContainsRune(shortLetters, l) {
			return refuse("option -%c is not allowed", l)
		}
	}
	return nil
}

// dataPrefix is the client's remote base path.
const dataPrefix = "/data/"

// mapPath maps a path argument the client sent to a path relative to the
// transfer folder: "/data/<rel>", or "<digits>:/data/<rel>" when the
// client's host was "host:port" (rsync then sends the port as part of the
// path). rel must be a clean relative path; a trailing slash is kept, as it
// means "the folder's contents" to rsync.
func mapPath(arg string) (string, error) {
	p := arg
	if i := strings.IndexByte(p, ':'); i >= 0 {
		port := p[:i]
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return "", refuse("path %s is not allowed: paths are /data/<name>", truncate(arg, 80))
		}
		p = p[i+1:]
	}
	rel, ok := strings.CutPrefix(p, dataPrefix)
	if !ok {
		return "", refuse("path %s is not allowed: paths are /data/<name>", truncate(arg, 80))
	}
	trailing := strings.HasSuffix(rel, "/")
	rel = strings.TrimSuffix(rel, "/")
	if rel == "" {
		return "", refuse("path %s is not allowed: name a file or folder under /data", truncate(arg, 80))
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." || strings.IndexByte(c, ':') >= 0 {
			return "", refuse("path %s is not allowed: paths are /data/<name>", truncate(arg, 80))
		}
	}
	if trailing {
		rel += "/"
	}
	return rel, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
