package dump

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
)

var copyStmtRE = regexp.MustCompile(`(?is)^\s*COPY\s+((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)\s*(?:\(([^)]*)\))?\s+FROM\s+stdin`)

// parseCopyStmt reads "COPY public.t (a, b) FROM stdin;".
func parseCopyStmt(stmt string) (table string, cols []string, ok bool) {
	m := copyStmtRE.FindStringSubmatch(stmt)
	if m == nil {
		return "", nil, false
	}
	return m[1], splitIdents(m[2]), true
}

func splitIdents(list string) []string {
	var out []string
	for _, c := range strings.Split(list, ",") {
		if c = strings.Trim(strings.TrimSpace(c), `"`); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// maxLine bounds one line kept in memory; longer lines (attachments stored
// in the database) are skipped, never buffered whole.
const maxLine = 4 << 20

// readLine returns the next line without its newline; a line over maxLine
// comes back truncated with long=true.
func readLine(br *bufio.Reader) (line []byte, long bool, err error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) <= maxLine {
			buf = append(buf, chunk...)
		} else {
			long = true
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && len(buf) == 0 && !long {
			return nil, false, err
		}
		return bytes.TrimSuffix(bytes.TrimSuffix(buf, []byte("\n")), []byte("\r")), long, nil
	}
}

// readCopyData reads COPY text rows until "\." or the end, giving each to
// sink (nil: skip them).
func readCopyData(br *bufio.Reader, cols []string, sink rowSink) error {
	for {
		line, long, err := readLine(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if string(line) == `\.` {
			return nil
		}
		if sink == nil || long {
			continue
		}
		sink(copyRow(line, cols))
	}
}

func copyRow(line []byte, cols []string) map[string]*string {
	row := make(map[string]*string, len(cols))
	for i, f := range bytes.Split(line, []byte{'\t'}) {
		if i >= len(cols) {
			break
		}
		if string(f) == `\N` {
			row[cols[i]] = nil
			continue
		}
		v := unescapeCopy(f)
		row[cols[i]] = &v
	}
	return row
}

// unescapeCopy undoes COPY text escapes: \\ \b \f \n \r \t \v \NNN \xHH.
func unescapeCopy(f []byte) string {
	if bytes.IndexByte(f, '\\') < 0 {
		return string(f)
	}
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '\\' || i+1 >= len(f) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := f[i]; e {
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case 'x':
			n, v := 0, 0
			for n < 2 && i+1 < len(f) && isHex(f[i+1]) {
				i++
				v = v*16 + hexVal(f[i])
				n++
			}
			b.WriteByte(byte(v))
		default:
			if e >= '0' && e <= '7' {
				v, n := int(e-'0'), 1
				for n < 3 && i+1 < len(f) && f[i+1] >= '0' && f[i+1] <= '7' {
					i++
					v = v*8 + int(f[i]-'0')
					n++
				}
				b.WriteByte(byte(v))
			} else {
				b.WriteByte(e)
			}
		}
	}
	return b.String()
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}

var insertRE = regexp.MustCompile(`(?is)^\s*INSERT\s+INTO\s+((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)\s*(?:\(([^)]*)\))?\s*(?:OVERRIDING\s+\w+\s+VALUE\s+)?VALUES\s*`)

// parseInsert reads "INSERT INTO public.t [(cols)] VALUES (...)[, (...)];"
// giving each tuple to sink; tableCols names the columns when the
// statement does not.
func parseInsert(stmt string, tableCols func(table string) []string, sinkFor func(table string) rowSink) {
	m := insertRE.FindStringSubmatchIndex(stmt)
	if m == nil {
		return
	}
	table := stmt[m[2]:m[3]]
	sink := sinkFor(table)
	if sink == nil {
		return
	}
	var cols []string
	if m[4] >= 0 {
		cols = splitIdents(stmt[m[4]:m[5]])
	} else {
		cols = tableCols(table)
	}
	if len(cols) == 0 {
		return
	}
	for _, tuple := range sqlTuples(stmt[m[1]:]) {
		row := make(map[string]*string, len(cols))
		for i, v := range tuple {
			if i < len(cols) {
				row[cols[i]] = v
			}
		}
		sink(row)
	}
}

// sqlTuples splits "(1, 'a”b', NULL), (2, E'x\\n', true);" into values.
func sqlTuples(s string) [][]*string {
	var out [][]*string
	var tuple []*string
	depth := 0
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '(':
			depth++
			if depth == 1 {
				tuple = nil
			}
			i++
		case c == ')':
			depth--
			if depth == 0 {
				out = append(out, tuple)
			}
			i++
		case depth == 1 && (c == ' ' || c == '\n' || c == '\t' || c == ','):
			i++
		case depth == 1:
			v, n := sqlValue(s[i:])
			tuple = append(tuple, v)
			i += max(n, 1)
		case c == ';' && depth == 0:
			return out
		default:
			i++
		}
	}
	return out
}

// sqlValue reads one literal (with an optional ::cast) and its length.
func sqlValue(s string) (*string, int) {
	i := 0
	var val *string
	switch {
	case strings.HasPrefix(s, "'") || strings.HasPrefix(s, "E'") || strings.HasPrefix(s, "e'"):
		escapes := s[0] != '\''
		if escapes {
			i = 1
		}
		i++ // opening quote
		var b strings.Builder
		for i < len(s) {
			c := s[i]
			if c == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					b.WriteByte('\'')
					i += 2
					continue
				}
				i++
				break
			}
			if escapes && c == '\\' && i+1 < len(s) {
				b.WriteString(unescapeCopy([]byte(s[i : i+2])))
				i += 2
				continue
			}
			b.WriteByte(c)
			i++
		}
		v := b.String()
		val = &v
	default:
		depth := 0
		for i < len(s) {
			c := s[i]
			if depth == 0 && (c == ',' || c == ')') {
				break
			}
			if c == '(' || c == '[' {
				depth++
			} else if c == ')' || c == ']' {
				depth--
			}
			i++
		}
		v := strings.TrimSpace(s[:i])
		if !strings.EqualFold(v, "NULL") {
			val = &v
		}
	}
	// Skip a cast: ::jsonb, ::character varying.
	for strings.HasPrefix(s[i:], "::") {
		i += 2
		for i < len(s) && s[i] != ',' && s[i] != ')' {
			i++
		}
	}
	return val, i
}

var createTableRE = regexp.MustCompile(`(?is)^\s*CREATE\s+(?:UNLOGGED\s+)?TABLE\s+((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)\s*\(`)

// createTableColumns reads the column names of a CREATE TABLE statement.
func createTableColumns(stmt string) (string, []string, bool) {
	m := createTableRE.FindStringSubmatchIndex(stmt)
	if m == nil {
		return "", nil, false
	}
	table := stmt[m[2]:m[3]]
	var cols []string
	for _, line := range strings.Split(stmt[m[1]:], "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, ")") {
			continue
		}
		f := strings.Fields(line)
		up := strings.ToUpper(f[0])
		if up == "CONSTRAINT" || up == "PRIMARY" || up == "UNIQUE" || up == "CHECK" || up == "FOREIGN" || up == "EXCLUDE" {
			continue
		}
		cols = append(cols, strings.Trim(f[0], `"`))
	}
	return table, cols, true
}
