// Package sqlclass splits a PostgreSQL simple-query string into statements and
// classifies each one by what the gateway needs to know about it: does it only
// read, does it control the transaction, does it change session state that a
// migrated session must replay (SET, PREPARE, LISTEN), and does it create state
// that cannot be moved to another server at all (temp objects, session
// advisory locks, WITH HOLD cursors).
//
// It is a lexer, not a parser. It understands everything that decides where a
// statement ends — comments (nested /* */ too), single-quoted strings with doubled
// quotes and E'...' escapes, quoted identifiers, dollar quotes, parentheses, and the
// BEGIN ATOMIC ... END bodies of SQL-standard functions — the same way psql
// does, and it looks at keywords to classify. Anything it cannot place it calls
// Other, which the gateway treats as "might be session state".
//
// The input comes from the network: every function here is total (no panics,
// no allocation proportional to anything but the statement count).
package sqlclass

import "strings"

// token kinds the lexer produces.
type tokKind uint8

const (
	tokEOF         tokKind = iota
	tokWord                // unquoted identifier or keyword
	tokQuotedIdent         // "..."
	tokString              // '...', E'...', $$...$$, B'..', X'..', U&'..'
	tokNumber
	tokSemicolon
	tokOpenParen
	tokCloseParen
	tokOther // operators, commas, parameters ($1), anything else
)

type token struct {
	kind       tokKind
	start, end int // byte offsets into the source
}

// lexer walks a SQL string one token at a time, skipping whitespace and
// comments.
type lexer struct {
	src string
	pos int
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

// skipSpaceAndComments advances over whitespace, -- comments and nested /* */
// comments. An unterminated block comment runs to the end of input, which is
// what the server's scanner would complain about; we just stop.
func (l *lexer) skipSpaceAndComments() {
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case isSpace(c):
			l.pos++
		case c == '-' && l.pos+1 < len(l.src) && l.src[l.pos+1] == '-':
			if i := strings.IndexByte(l.src[l.pos:], '\n'); i >= 0 {
				l.pos += i
			} else {
				l.pos = len(l.src)
			}
		case c == '/' && l.pos+1 < len(l.src) && l.src[l.pos+1] == '*':
			depth := 0
			for l.pos < len(l.src) {
				// Jump to the next '*' (long comments): nothing before it
				// opens or closes a comment, except a '/' just before it.
				if i := strings.IndexByte(l.src[l.pos:], '*'); i < 0 {
					l.pos = len(l.src)
					break
				} else if i > 0 {
					l.pos += i
					if l.src[l.pos-1] == '/' {
						l.pos--
					}
				}
				if l.src[l.pos] == '/' && l.pos+1 < len(l.src) && l.src[l.pos+1] == '*' {
					depth++
					l.pos += 2
					continue
				}
				if l.src[l.pos] == '*' && l.pos+1 < len(l.src) && l.src[l.pos+1] == '/' {
					depth--
					l.pos += 2
					if depth == 0 {
						break
					}
					continue
				}
				l.pos++
			}
		default:
			return
		}
	}
}

// next returns the next token.
func (l *lexer) next() token {
	l.skipSpaceAndComments()
	if l.pos >= len(l.src) {
		return token{kind: tokEOF, start: len(l.src), end: len(l.src)}
	}
	start := l.pos
	c := l.src[l.pos]
	switch {
	case c == ';':
		l.pos++
		return token{tokSemicolon, start, l.pos}
	case c == '(':
		l.pos++
		return token{tokOpenParen, start, l.pos}
	case c == ')':
		l.pos++
		return token{tokCloseParen, start, l.pos}
	case c == '\'':
		l.scanQuoted('\'', false)
		return token{tokString, start, l.pos}
	case c == '"':
		l.scanQuoted('"', false)
		return token{tokQuotedIdent, start, l.pos}
	case (c == 'e' || c == 'E') && l.peek(1) == '\'':
		l.pos++
		l.scanQuoted('\'', true)
		return token{tokString, start, l.pos}
	case (c == 'b' || c == 'B' || c == 'x' || c == 'X' || c == 'n' || c == 'N') && l.peek(1) == '\'':
		l.pos++
		l.scanQuoted('\'', false)
		return token{tokString, start, l.pos}
	case (c == 'u' || c == 'U') && l.peek(1) == '&' && (l.peek(2) == '\'' || l.peek(2) == '"'):
		q := l.peek(2)
		l.pos += 2
		l.scanQuoted(q, false)
		if q == '"' {
			return token{tokQuotedIdent, start, l.pos}
		}
		return token{tokString, start, l.pos}
	case c == '$':
		if tagEnd, ok := l.dollarTag(); ok {
			tag := l.src[l.pos:tagEnd]
			l.pos = tagEnd
			// Find the closing tag; unterminated runs to the end.
			if i := strings.Index(l.src[l.pos:], tag); i >= 0 {
				l.pos += i + len(tag)
			} else {
				l.pos = len(l.src)
			}
			return token{tokString, start, l.pos}
		}
		// A parameter reference ($1) or a stray dollar.
		l.pos++
		for l.pos < len(l.src) && l.src[l.pos] >= '0' && l.src[l.pos] <= '9' {
			l.pos++
		}
		return token{tokOther, start, l.pos}
	case isIdentStart(c):
		for l.pos < len(l.src) && isIdentCont(l.src[l.pos]) {
			l.pos++
		}
		return token{tokWord, start, l.pos}
	case c >= '0' && c <= '9' || c == '.' && l.peek(1) >= '0' && l.peek(1) <= '9':
		for l.pos < len(l.src) && (isIdentCont(l.src[l.pos]) || l.src[l.pos] == '.') {
			l.pos++
		}
		return token{tokNumber, start, l.pos}
	default:
		l.pos++
		return token{tokOther, start, l.pos}
	}
}

func (l *lexer) peek(n int) byte {
	if l.pos+n < len(l.src) {
		return l.src[l.pos+n]
	}
	return 0
}

// dollarTag reports whether a dollar-quote opening tag ($$ or $tag$) starts at
// l.pos and returns the offset just past it.
func (l *lexer) dollarTag() (int, bool) {
	i := l.pos + 1
	if i < len(l.src) && l.src[i] == '$' {
		return i + 1, true
	}
	if i >= len(l.src) || !isIdentStart(l.src[i]) {
		return 0, false
	}
	for i < len(l.src) && isIdentCont(l.src[i]) && l.src[i] != '$' {
		i++
	}
	if i < len(l.src) && l.src[i] == '$' {
		return i + 1, true
	}
	return 0, false
}

// scanQuoted consumes a quoted string or identifier starting at l.pos (the
// opening quote). A doubled quote is an escaped quote; with backslash set (E'...'
// strings) a backslash escapes the next byte. Unterminated runs to the end.
func (l *lexer) scanQuoted(q byte, backslash bool) {
	l.pos++ // opening quote
	for l.pos < len(l.src) {
		if !backslash {
			// Jump to the next quote: long literals (bulk data) are
			// common, and only a quote ends or escapes here.
			i := strings.IndexByte(l.src[l.pos:], q)
			if i < 0 {
				l.pos = len(l.src)
				return
			}
			l.pos += i
		}
		c := l.src[l.pos]
		switch {
		case backslash && c == '\\':
			l.pos += 2
		case c == q:
			if l.peek(1) == q {
				l.pos += 2
				continue
			}
			l.pos++
			return
		default:
			l.pos++
		}
	}
	if l.pos > len(l.src) {
		l.pos = len(l.src)
	}
}

// word reports whether t is the keyword kw (kw in lower case).
func (l *lexer) word(t token, kw string) bool {
	if t.kind != tokWord || t.end-t.start != len(kw) {
		return false
	}
	for i := 0; i < len(kw); i++ {
		c := l.src[t.start+i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != kw[i] {
			return false
		}
	}
	return true
}
