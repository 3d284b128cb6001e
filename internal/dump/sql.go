package dump

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
)

var (
	dumpedFromRE = regexp.MustCompile(`^-- Dumped from database version (\S+)`)
	dumpedByRE   = regexp.MustCompile(`^-- Dumped by pg_dump version (\S+)`)
)

// looksLikeSQL tells plain SQL from other text by its first bytes.
func looksLikeSQL(head []byte) bool {
	s := strings.TrimLeft(string(head), " \t\r\n\ufeff")
	for _, p := range []string{"--", "/*", "SET ", "\\restrict", "\\connect", "CREATE ", "BEGIN", "SELECT ", "COPY ", "INSERT ", "ALTER ", "START TRANSACTION"} {
		if strings.HasPrefix(strings.ToUpper(s), strings.ToUpper(p)) {
			return true
		}
	}
	return false
}

// inspectSQL scans a plain SQL dump once, streaming: version comments,
// CREATE TABLE column lists, COPY blocks and INSERT statements of the tables
// inspection needs. It stops early once both tables are read.
func inspectSQL(r io.Reader, info *Info, t *tables) error {
	return inspectSQLWith(r, info, t, map[string][]string{})
}

// inspectSQLWith is inspectSQL with column lists already known (the TOC of
// an archive whose data is INSERT statements).
func inspectSQLWith(r io.Reader, info *Info, t *tables, tableCols map[string][]string) error {
	br := bufio.NewReaderSize(r, 1<<20)
	done := map[string]bool{}
	var stmt strings.Builder
	inStmt := ""
	quotes := 0
	lines := 0
	for {
		line, long, err := readLine(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		lines++
		if lines == 1 && bytes.HasPrefix(line, []byte("--\n-- PostgreSQL database cluster dump")) {
			return formatErr("this is a pg_dumpall cluster dump; dump the one database with pg_dump")
		}
		s := string(line)
		if inStmt != "" {
			if !long {
				stmt.WriteString("\n")
				stmt.WriteString(s)
			}
			quotes += strings.Count(s, "'")
			if quotes%2 == 0 && (inStmt == "create" && strings.HasPrefix(s, ")") || inStmt == "insert" && strings.HasSuffix(strings.TrimSpace(s), ";")) {
				finishStmt(inStmt, stmt.String(), tableCols, t)
				inStmt = ""
				stmt.Reset()
			}
			continue
		}
		switch {
		case long:
			continue
		case strings.HasPrefix(s, "-- "):
			if m := dumpedFromRE.FindStringSubmatch(s); m != nil {
				info.PostgreSQL = majorOf(m[1])
			} else if m := dumpedByRE.FindStringSubmatch(s); m != nil {
				info.PgDump = majorOf(m[1])
			} else if strings.HasPrefix(s, "-- PostgreSQL database cluster dump") {
				return formatErr("this is a pg_dumpall cluster dump; dump the one database with pg_dump")
			}
		case strings.HasPrefix(s, "COPY "):
			table, cols, ok := parseCopyStmt(s)
			if !ok {
				continue
			}
			sink := t.sinkFor(table)
			if err := readCopyData(br, cols, sink); err != nil {
				return err
			}
			if sink != nil {
				done[unqualified(table)] = true
				if done["ir_module_module"] && done["ir_config_parameter"] {
					return nil
				}
			}
		case strings.HasPrefix(s, "CREATE TABLE ") || strings.HasPrefix(s, "CREATE UNLOGGED TABLE "):
			if strings.HasSuffix(strings.TrimSpace(s), ";") && strings.Count(s, "'")%2 == 0 {
				// The whole statement on one line.
				finishStmt("create", singleLineCreate(s), tableCols, t)
				continue
			}
			stmt.WriteString(s)
			inStmt, quotes = "create", strings.Count(s, "'")
		case strings.HasPrefix(s, "INSERT INTO "):
			stmt.WriteString(s)
			quotes = strings.Count(s, "'")
			if quotes%2 == 0 && strings.HasSuffix(strings.TrimSpace(s), ";") {
				finishStmt("insert", s, tableCols, t)
				stmt.Reset()
				continue
			}
			inStmt = "insert"
		}
	}
	return nil
}

func finishStmt(kind, stmt string, tableCols map[string][]string, t *tables) {
	switch kind {
	case "create":
		if table, cols, ok := createTableColumns(stmt); ok && t.sinkFor(table) != nil {
			tableCols[unqualified(table)] = cols
		}
	case "insert":
		parseInsert(stmt, func(table string) []string { return tableCols[unqualified(table)] }, t.sinkFor)
	}
}

// singleLineCreate spreads "CREATE TABLE t (a int, b text);" over lines, as
// pg_dump writes it, for createTableColumns.
func singleLineCreate(s string) string {
	open := strings.IndexByte(s, '(')
	closeAt := strings.LastIndexByte(s, ')')
	if open < 0 || closeAt < open {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:open+1])
	depth := 0
	start := open + 1
	for i := open + 1; i < closeAt; i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				b.WriteString("\n" + strings.TrimSpace(s[start:i]) + ",")
				start = i + 1
			}
		}
	}
	b.WriteString("\n" + strings.TrimSpace(s[start:closeAt]) + "\n);")
	return b.String()
}
