package sqlclass

import "strings"

// Kind is what a statement does, as far as the gateway cares.
type Kind uint8

const (
	// Other is a statement the classifier does not recognise. The gateway
	// treats it as a write that may also have changed session state.
	Other Kind = iota
	// Read only reads: SELECT, SHOW, VALUES, TABLE, EXPLAIN without
	// ANALYZE, COPY ... TO, WITH without data-modifying parts, and none of
	// the side-effecting built-in functions (nextval, set_config, advisory
	// locks ...). User-defined volatile functions cannot be seen from the
	// text; see Statement.
	Read
	// Write changes data or schema (INSERT, UPDATE, DDL, CALL, DO, ...).
	Write
	Begin      // BEGIN, START TRANSACTION
	Commit     // COMMIT, END
	Rollback   // ROLLBACK, ABORT (not ROLLBACK TO)
	Savepoint  // SAVEPOINT, RELEASE, ROLLBACK TO
	TwoPhase   // PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED
	Set        // SET / SET SESSION: session state to replay
	SetLocal   // SET LOCAL, SET TRANSACTION, SET CONSTRAINTS: transaction-scoped
	Reset      // RESET name, RESET ALL
	Discard    // DISCARD ALL|PLANS|SEQUENCES|TEMP
	Listen     // LISTEN channel
	Unlisten   // UNLISTEN channel | *
	Prepare    // PREPARE name AS ... (SQL-level prepared statement)
	Deallocate // DEALLOCATE [PREPARE] name | ALL
	Declare    // DECLARE cursor
	CursorOp   // FETCH, MOVE, CLOSE
)

var kindNames = [...]string{"other", "read", "write", "begin", "commit", "rollback", "savepoint",
	"two-phase", "set", "set-local", "reset", "discard", "listen", "unlisten", "prepare",
	"deallocate", "declare", "cursor"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Pin is a set of reasons a session is bound to the server it runs on: state
// that lives only in that server process and cannot be rebuilt elsewhere.
type Pin uint8

const (
	PinTemp         Pin = 1 << iota // temporary table, view, sequence (or pg_temp schema)
	PinAdvisoryLock                 // session-level advisory lock
	PinHoldCursor                   // cursor declared WITH HOLD
	PinSessionState                 // LOAD, set_config(), or other state the gateway cannot replay
)

func (p Pin) String() string {
	if p == 0 {
		return "none"
	}
	var parts []string
	if p&PinTemp != 0 {
		parts = append(parts, "temporary objects")
	}
	if p&PinAdvisoryLock != 0 {
		parts = append(parts, "session advisory locks")
	}
	if p&PinHoldCursor != 0 {
		parts = append(parts, "WITH HOLD cursors")
	}
	if p&PinSessionState != 0 {
		parts = append(parts, "session state the gateway cannot replay")
	}
	return strings.Join(parts, ", ")
}

// Statement is one classified statement of a query string.
type Statement struct {
	Kind Kind
	// Start and End are byte offsets of the statement text in the source,
	// without the terminating semicolon.
	Start, End int
	// Name is the object the statement is about, normalised the way the
	// server would (unquoted identifiers folded to lower case): the
	// parameter of SET/RESET, the channel of LISTEN/UNLISTEN, the statement
	// of PREPARE/DEALLOCATE, the cursor of DECLARE, the target of DISCARD
	// ("all", "plans", "sequences", "temp").
	Name string
	// All is set for RESET ALL, UNLISTEN *, DEALLOCATE ALL, CLOSE ALL.
	All bool
	// Pin lists what this statement may leave behind that pins the session.
	Pin Pin
	// Unpin lists pins this statement removes (DISCARD TEMP/ALL,
	// pg_advisory_unlock_all()).
	Unpin Pin
}

// Text returns the statement's text within src (the string it was split
// from).
func (s Statement) Text(src string) string {
	if s.Start < 0 || s.End > len(src) || s.Start > s.End {
		return ""
	}
	return src[s.Start:s.End]
}

// Split appends the non-empty statements of a simple-query string to dst and
// returns it. Empty statements (only whitespace, comments, semicolons) are
// skipped, as the server skips them: the server answers each returned
// statement with one CommandComplete (or stops at the first error).
func Split(sql string, dst []Statement) []Statement {
	l := lexer{src: sql}
	// Plain assignments to sc, not through a method: escape analysis takes
	// a store through a pointer for a store to the heap, which would move l
	// there, one allocation per statement on the gateway's per-request path.
	sc := scanner{l: &l, start: -1}
	for {
		t := l.next()
		if t.kind == tokEOF {
			if sc.n > 0 {
				dst = append(dst, sc.finish())
			}
			return dst
		}
		if t.kind == tokSemicolon && sc.depth <= 0 && sc.atomic <= 0 {
			if sc.n > 0 {
				dst = append(dst, sc.finish())
			}
			sc = scanner{l: &l, start: -1}
			continue
		}
		sc.add(t)
	}
}

// Classify classifies a string that holds one statement, such as the query of
// an extended-protocol Parse message. With several statements it returns the
// first; with none, a Statement of Kind Other and Start == End.
func Classify(sql string) Statement {
	var buf [1]Statement
	out := Split(sql, buf[:0])
	if len(out) == 0 {
		return Statement{Kind: Other}
	}
	return out[0]
}

// maxLead is how many leading tokens a statement's classification looks at.
const maxLead = 8

// scanner accumulates what classification needs about one statement.
type scanner struct {
	l     *lexer
	lead  [maxLead]token
	n     int // tokens seen in this statement
	depth int // parenthesis depth
	// atomic is the BEGIN/CASE ... END depth inside a CREATE FUNCTION or
	// PROCEDURE body written BEGIN ATOMIC ... END, where semicolons do not
	// end the statement.
	atomic        int
	createRoutine bool
	start         int
	last          int // end of the last token, where the statement ends

	prevWord    token // previous token if a word, for "fn(" detection
	prevWasWord bool

	into, temp, hold, forLock, from, modifies, analyze bool
	sideEffect                                         bool
	pin, unpin                                         Pin
}

func (s *scanner) add(t token) {
	l := s.l
	if s.n == 0 {
		s.start = t.start
	}
	if s.n < maxLead {
		s.lead[s.n] = t
	}
	s.n++
	s.last = t.end

	switch t.kind {
	case tokOpenParen:
		s.depth++
		if s.prevWasWord {
			s.function(s.prevWord)
		}
	case tokCloseParen:
		s.depth--
	case tokWord:
		if s.n > 1 && l.word(s.lead[0], "create") && s.n <= 6 &&
			(l.word(t, "function") || l.word(t, "procedure")) {
			s.createRoutine = true
		}
		if s.createRoutine {
			switch {
			case l.word(t, "begin"):
				s.atomic++
			case l.word(t, "case") && s.atomic > 0:
				s.atomic++
			case l.word(t, "end") && s.atomic > 0:
				s.atomic--
			}
		}
		switch {
		case l.word(t, "into") && s.depth == 0:
			s.into = true
		case l.word(t, "temp") || l.word(t, "temporary"):
			s.temp = true
		case l.word(t, "pg_temp"):
			s.temp = true
		case l.word(t, "hold") && s.prevWasWord && l.word(s.prevWord, "with"):
			s.hold = true
		case (l.word(t, "update") || l.word(t, "share")) && s.prevWasWord &&
			(l.word(s.prevWord, "for") || l.word(s.prevWord, "no") || l.word(s.prevWord, "key")):
			s.forLock = true
		case l.word(t, "from") && s.depth == 0:
			s.from = true
		case l.word(t, "insert") || l.word(t, "update") || l.word(t, "delete") || l.word(t, "merge"):
			s.modifies = true
		case l.word(t, "analyze") || l.word(t, "analyse"):
			s.analyze = true
		}
	}
	if t.kind == tokWord || t.kind == tokQuotedIdent {
		s.prevWord = t
		s.prevWasWord = true
	} else {
		s.prevWasWord = false
	}
}

// sideEffectFuncs are built-in functions a statement that otherwise only
// reads may call to change something.
var sideEffectFuncs = []string{
	"nextval", "setval", "set_config", "pg_notify", "txid_current", "pg_current_xact_id",
	"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_switch_wal",
	"pg_logical_emit_message", "pg_create_physical_replication_slot",
	"pg_create_logical_replication_slot", "pg_drop_replication_slot", "lo_create", "lo_import",
	"lo_unlink", "lo_from_bytea", "lo_put", "dblink", "dblink_exec", "pg_stat_reset",
	"pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all",
	"pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_xact_lock",
	"pg_try_advisory_xact_lock_shared",
}

// function notes a call of the function named by word t.
func (s *scanner) function(t token) {
	l := s.l
	switch {
	case l.word(t, "pg_advisory_lock"), l.word(t, "pg_advisory_lock_shared"),
		l.word(t, "pg_try_advisory_lock"), l.word(t, "pg_try_advisory_lock_shared"):
		s.pin |= PinAdvisoryLock
		s.sideEffect = true
		return
	case l.word(t, "pg_advisory_unlock_all"):
		s.unpin |= PinAdvisoryLock
	case l.word(t, "set_config"):
		s.pin |= PinSessionState
	}
	for _, f := range sideEffectFuncs {
		if l.word(t, f) {
			s.sideEffect = true
			return
		}
	}
}

func (s *scanner) leadWord(i int, kw string) bool {
	return i < s.n && i < maxLead && s.l.word(s.lead[i], kw)
}

// ident returns the i-th lead token as an identifier normalised like the
// server does, or "" when it is not an identifier.
func (s *scanner) ident(i int) string {
	if i >= s.n || i >= maxLead {
		return ""
	}
	return identText(s.l.src, s.lead[i])
}

func identText(src string, t token) string {
	text := src[t.start:t.end]
	switch t.kind {
	case tokWord:
		return strings.ToLower(text)
	case tokQuotedIdent:
		if strings.HasPrefix(text, "U&") || strings.HasPrefix(text, "u&") {
			return text // rare; keep verbatim rather than decode escapes
		}
		text = strings.TrimPrefix(text, `"`)
		text = strings.TrimSuffix(text, `"`)
		return strings.ReplaceAll(text, `""`, `"`)
	case tokString:
		// LISTEN/SET accept some string forms; strip simple quotes.
		if len(text) >= 2 && text[0] == '\'' && text[len(text)-1] == '\'' {
			return strings.ReplaceAll(text[1:len(text)-1], "''", "'")
		}
		return text
	}
	return ""
}

func (s *scanner) finish() Statement {
	// End is the last token's end: trailing whitespace and comments are
	// not part of the statement.
	st := Statement{Kind: Other, Start: s.start, End: s.last, Pin: s.pin, Unpin: s.unpin}

	switch {
	case s.leadWord(0, "select"):
		switch {
		case s.into:
			st.Kind = Write
			if s.temp {
				st.Pin |= PinTemp
			}
		case s.forLock || s.sideEffect:
			st.Kind = Write
		default:
			st.Kind = Read
		}
	case s.leadWord(0, "with"):
		if s.modifies || s.into || s.forLock || s.sideEffect {
			st.Kind = Write
		} else {
			st.Kind = Read
		}
	case s.leadWord(0, "show"), s.leadWord(0, "values"), s.leadWord(0, "table"):
		st.Kind = Read
		if s.sideEffect {
			st.Kind = Write
		}
	case s.leadWord(0, "explain"):
		if s.analyze {
			st.Kind = Write
		} else {
			st.Kind = Read
		}
	case s.leadWord(0, "copy"):
		if s.from {
			st.Kind = Write
		} else {
			st.Kind = Read
			if s.modifies || s.sideEffect {
				st.Kind = Write
			}
		}
	case s.leadWord(0, "begin"), s.leadWord(0, "start"):
		st.Kind = Begin
	case s.leadWord(0, "commit"), s.leadWord(0, "end"):
		st.Kind = Commit
		if s.leadWord(1, "prepared") {
			st.Kind = TwoPhase
		}
	case s.leadWord(0, "rollback"), s.leadWord(0, "abort"):
		st.Kind = Rollback
		if s.leadWord(1, "prepared") {
			st.Kind = TwoPhase
		} else if s.leadWord(1, "to") || s.leadWord(2, "to") {
			st.Kind = Savepoint
		}
	case s.leadWord(0, "savepoint"), s.leadWord(0, "release"):
		st.Kind = Savepoint
	case s.leadWord(0, "prepare"):
		if s.leadWord(1, "transaction") {
			st.Kind = TwoPhase
		} else {
			st.Kind = Prepare
			st.Name = s.ident(1)
		}
	case s.leadWord(0, "deallocate"):
		st.Kind = Deallocate
		i := 1
		if s.leadWord(1, "prepare") {
			i = 2
		}
		if s.leadWord(i, "all") {
			st.All = true
		} else {
			st.Name = s.ident(i)
		}
	case s.leadWord(0, "set"):
		s.classifySet(&st)
	case s.leadWord(0, "reset"):
		st.Kind = Reset
		switch {
		case s.leadWord(1, "all"):
			st.All = true
		case s.leadWord(1, "session") && s.leadWord(2, "authorization"):
			st.Name = "session_authorization"
		case s.leadWord(1, "time") && s.leadWord(2, "zone"):
			st.Name = "timezone"
		default:
			st.Name = s.paramName(1)
		}
	case s.leadWord(0, "discard"):
		st.Kind = Discard
		st.Name = s.ident(1)
		switch st.Name {
		case "all":
			st.Unpin |= PinTemp | PinAdvisoryLock | PinHoldCursor
		case "temp", "temporary":
			st.Name = "temp"
			st.Unpin |= PinTemp
		}
	case s.leadWord(0, "listen"):
		st.Kind = Listen
		st.Name = s.ident(1)
	case s.leadWord(0, "unlisten"):
		st.Kind = Unlisten
		if s.n > 1 && s.l.src[s.lead[1].start:s.lead[1].end] == "*" {
			st.All = true
		} else {
			st.Name = s.ident(1)
		}
	case s.leadWord(0, "declare"):
		st.Kind = Declare
		st.Name = s.ident(1)
		if s.hold {
			st.Pin |= PinHoldCursor
		}
	case s.leadWord(0, "fetch"), s.leadWord(0, "move"):
		st.Kind = CursorOp
	case s.leadWord(0, "close"):
		st.Kind = CursorOp
		if s.leadWord(1, "all") {
			st.All = true
			st.Unpin |= PinHoldCursor
		} else {
			st.Name = s.ident(1)
		}
	case s.leadWord(0, "create"):
		st.Kind = Write
		// Only a TEMP among the first words (CREATE [OR REPLACE]
		// [GLOBAL|LOCAL] TEMP ...) or a pg_temp-qualified name makes a
		// temporary object; "temp" deeper in could be a column name.
		for i := 1; i < maxLead && i < s.n && s.lead[i].kind == tokWord; i++ {
			if s.leadWord(i, "temp") || s.leadWord(i, "temporary") {
				st.Pin |= PinTemp
				break
			}
			if s.leadWord(i, "table") || s.leadWord(i, "view") || s.leadWord(i, "sequence") {
				if s.leadWord(i+1, "pg_temp") {
					st.Pin |= PinTemp
				}
				break
			}
		}
	case s.leadWord(0, "load"):
		st.Kind = Other
		st.Pin |= PinSessionState
	case s.leadWord(0, "insert"), s.leadWord(0, "update"), s.leadWord(0, "delete"),
		s.leadWord(0, "merge"), s.leadWord(0, "alter"), s.leadWord(0, "drop"),
		s.leadWord(0, "truncate"), s.leadWord(0, "grant"), s.leadWord(0, "revoke"),
		s.leadWord(0, "comment"), s.leadWord(0, "vacuum"), s.leadWord(0, "analyze"),
		s.leadWord(0, "analyse"), s.leadWord(0, "cluster"), s.leadWord(0, "reindex"),
		s.leadWord(0, "refresh"), s.leadWord(0, "lock"), s.leadWord(0, "call"),
		s.leadWord(0, "do"), s.leadWord(0, "notify"), s.leadWord(0, "security"),
		s.leadWord(0, "import"), s.leadWord(0, "checkpoint"), s.leadWord(0, "reassign"),
		s.leadWord(0, "execute"):
		st.Kind = Write
	}
	return st
}

func (s *scanner) classifySet(st *Statement) {
	st.Kind = Set
	i := 1
	switch {
	case s.leadWord(1, "local"):
		st.Kind = SetLocal
		i = 2
	case s.leadWord(1, "transaction"), s.leadWord(1, "constraints"):
		st.Kind = SetLocal
		st.Name = s.ident(1)
		return
	case s.leadWord(1, "session"):
		if s.leadWord(2, "characteristics") {
			st.Name = "session characteristics"
			return
		}
		if s.leadWord(2, "authorization") {
			st.Name = "session_authorization"
			return
		}
		i = 2
	}
	switch {
	case s.leadWord(i, "time") && s.leadWord(i+1, "zone"):
		st.Name = "timezone"
	case s.leadWord(i, "names"):
		st.Name = "client_encoding"
	case s.leadWord(i, "schema"):
		st.Name = "search_path"
	case s.leadWord(i, "xml") && s.leadWord(i+1, "option"):
		st.Name = "xmloption"
	default:
		st.Name = s.paramName(i)
	}
}

// paramName reads a possibly dotted parameter name (myapp.setting) at lead
// position i.
func (s *scanner) paramName(i int) string {
	name := s.ident(i)
	if name == "" {
		return ""
	}
	if i+2 < s.n && i+2 < maxLead {
		dot := s.lead[i+1]
		if dot.kind == tokOther && s.l.src[dot.start:dot.end] == "." {
			if rest := s.ident(i + 2); rest != "" {
				return name + "." + rest
			}
		}
	}
	return name
}
