package sitegen

import (
	"fmt"
	"html"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// This file is a small Markdown converter for the subset the project's
// documents use: ATX headings, paragraphs, bullet and ordered lists (nested,
// tight or loose), fenced and indented code blocks, GitHub tables,
// blockquotes, thematic breaks, raw HTML blocks, and inline code, strong,
// emphasis, links, images and autolinks. It is not CommonMark; it is
// predictable, and the site's tests check its output (every link resolves).

// blockKind says what a Block is.
type blockKind int

const (
	blockParagraph blockKind = iota
	blockHeading
	blockCode
	blockList
	blockTable
	blockQuote
	blockHTML
	blockRule
)

// Block is one node of a parsed document.
type Block struct {
	Kind  blockKind
	Level int    // heading level 1..6
	Text  string // heading or paragraph inline text; code or HTML content
	Lang  string // fenced code language
	ID    string // heading id; set when generated, else derived from Text

	Ordered bool
	Start   int
	Loose   bool
	Items   [][]*Block // list items

	Children []*Block // blockquote

	Header []string
	Align  []string
	Rows   [][]string

	// Src is the repository-relative file the block came from, so that
	// relative links are resolved against it wherever it is included.
	Src string
}

var (
	reHeading   = regexp.MustCompile(`^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	reFence     = regexp.MustCompile("^( {0,3})(`{3,}|~{3,})[ \t]*([^`\\s]*)")
	reRule      = regexp.MustCompile(`^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$`)
	reListItem  = regexp.MustCompile(`^( {0,3})([-*+]|\d{1,9}[.)])([ \t]+|$)`)
	reTableDel  = regexp.MustCompile(`^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$`)
	reHTMLStart = regexp.MustCompile(`^ {0,3}<(/?[a-zA-Z][a-zA-Z0-9-]*|!--)`)
)

// ParseMarkdown parses a document. src is the repository-relative path it
// came from (for link resolution).
func ParseMarkdown(text, src string) []*Block {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	lines := strings.Split(text, "\n")
	blocks := parseBlocks(lines)
	setSrc(blocks, src)
	return blocks
}

func setSrc(blocks []*Block, src string) {
	for _, b := range blocks {
		b.Src = src
		for _, it := range b.Items {
			setSrc(it, src)
		}
		setSrc(b.Children, src)
	}
}

func isBlank(s string) bool { return strings.TrimSpace(s) == "" }

// indentOf is the visual indentation of s (tabs to the next multiple of 4).
func indentOf(s string) int {
	n := 0
	for _, r := range s {
		switch r {
		case ' ':
			n++
		case '\t':
			n += 4 - n%4
		default:
			return n
		}
	}
	return n
}

// stripIndent removes up to n columns of leading white space.
func stripIndent(s string, n int) string {
	col := 0
	for i, r := range s {
		if col >= n {
			return s[i:]
		}
		switch r {
		case ' ':
			col++
		case '\t':
			w := 4 - col%4
			if col+w > n {
				return strings.Repeat(" ", col+w-n) + s[i+1:]
			}
			col += w
		default:
			return s[i:]
		}
	}
	return ""
}

// startsBlock reports whether line begins a block that interrupts a paragraph.
func startsBlock(line string) bool {
	if reHeading.MatchString(line) || reFence.MatchString(line) || reRule.MatchString(line) {
		return true
	}
	if strings.HasPrefix(strings.TrimLeft(line, " "), ">") && indentOf(line) < 4 {
		return true
	}
	if m := reListItem.FindStringSubmatch(line); m != nil && m[3] != "" {
		marker := m[2]
		if marker[0] >= '0' && marker[0] <= '9' {
			return strings.TrimRight(marker, ".)") == "1"
		}
		return true
	}
	return false
}

func parseBlocks(lines []string) []*Block {
	var out []*Block
	i := 0
	for i < len(lines) {
		line := lines[i]
		if isBlank(line) {
			i++
			continue
		}
		// Indented code: only where no paragraph is open (we are at a block start).
		if indentOf(line) >= 4 {
			var code []string
			for i < len(lines) && (isBlank(lines[i]) || indentOf(lines[i]) >= 4) {
				code = append(code, stripIndent(lines[i], 4))
				i++
			}
			for len(code) > 0 && isBlank(code[len(code)-1]) {
				code = code[:len(code)-1]
			}
			out = append(out, &Block{Kind: blockCode, Text: strings.Join(code, "\n") + "\n"})
			continue
		}
		if m := reFence.FindStringSubmatch(line); m != nil {
			indent, fence, lang := len(m[1]), m[2], m[3]
			i++
			var code []string
			for i < len(lines) {
				t := strings.TrimLeft(lines[i], " ")
				if strings.HasPrefix(t, fence[:3]) && strings.Trim(strings.TrimSpace(t), string(fence[0])) == "" &&
					len(strings.TrimSpace(t)) >= len(fence) {
					i++
					break
				}
				code = append(code, stripIndent(lines[i], indent))
				i++
			}
			text := strings.Join(code, "\n")
			if len(code) > 0 {
				text += "\n"
			}
			out = append(out, &Block{Kind: blockCode, Text: text, Lang: lang})
			continue
		}
		if m := reHeading.FindStringSubmatch(line); m != nil {
			out = append(out, &Block{Kind: blockHeading, Level: len(m[1]), Text: strings.TrimSpace(m[2])})
			i++
			continue
		}
		if reRule.MatchString(line) {
			out = append(out, &Block{Kind: blockRule})
			i++
			continue
		}
		if reHTMLStart.MatchString(line) {
			var h []string
			for i < len(lines) && !isBlank(lines[i]) {
				h = append(h, lines[i])
				i++
			}
			out = append(out, &Block{Kind: blockHTML, Text: strings.Join(h, "\n") + "\n"})
			continue
		}
		if t := strings.TrimLeft(line, " "); strings.HasPrefix(t, ">") {
			var q []string
			for i < len(lines) && !isBlank(lines[i]) {
				t := strings.TrimLeft(lines[i], " ")
				if strings.HasPrefix(t, ">") {
					t = strings.TrimPrefix(t[1:], " ")
				} else if startsBlock(lines[i]) {
					break
				}
				q = append(q, t)
				i++
			}
			out = append(out, &Block{Kind: blockQuote, Children: parseBlocks(q)})
			continue
		}
		if strings.Contains(line, "|") && i+1 < len(lines) && reTableDel.MatchString(lines[i+1]) {
			header := splitRow(line)
			delim := splitRow(lines[i+1])
			if len(delim) == len(header) {
				b := &Block{Kind: blockTable, Header: header}
				for _, d := range delim {
					d = strings.TrimSpace(d)
					switch {
					case strings.HasPrefix(d, ":") && strings.HasSuffix(d, ":"):
						b.Align = append(b.Align, "center")
					case strings.HasSuffix(d, ":"):
						b.Align = append(b.Align, "right")
					case strings.HasPrefix(d, ":"):
						b.Align = append(b.Align, "left")
					default:
						b.Align = append(b.Align, "")
					}
				}
				i += 2
				for i < len(lines) && !isBlank(lines[i]) && strings.Contains(lines[i], "|") {
					row := splitRow(lines[i])
					for len(row) < len(header) {
						row = append(row, "")
					}
					b.Rows = append(b.Rows, row[:len(header)])
					i++
				}
				out = append(out, b)
				continue
			}
		}
		if m := reListItem.FindStringSubmatch(line); m != nil {
			b, n := parseList(lines[i:])
			out = append(out, b)
			i += n
			continue
		}
		// Paragraph.
		var p []string
		for i < len(lines) && !isBlank(lines[i]) {
			if len(p) > 0 && startsBlock(lines[i]) {
				break
			}
			if len(p) > 0 && strings.Contains(lines[i], "|") && i+1 < len(lines) && reTableDel.MatchString(lines[i+1]) {
				break
			}
			p = append(p, strings.TrimSpace(lines[i]))
			i++
		}
		out = append(out, &Block{Kind: blockParagraph, Text: strings.Join(p, "\n")})
	}
	return out
}

// parseList parses a list starting at lines[0] and returns it with the
// number of lines it used.
func parseList(lines []string) (*Block, int) {
	first := reListItem.FindStringSubmatch(lines[0])
	ordered := first[2][0] >= '0' && first[2][0] <= '9'
	delim := first[2][len(first[2])-1:]
	b := &Block{Kind: blockList, Ordered: ordered, Start: 1}
	if ordered {
		b.Start, _ = strconv.Atoi(first[2][:len(first[2])-1])
	}
	sameKind := func(m []string) bool {
		o := m[2][0] >= '0' && m[2][0] <= '9'
		if o != ordered {
			return false
		}
		if o {
			return m[2][len(m[2])-1:] == delim
		}
		return m[2] == first[2]
	}
	i := 0
	for i < len(lines) {
		m := reListItem.FindStringSubmatch(lines[i])
		if m == nil || !sameKind(m) {
			break
		}
		// Content column: marker plus at most 4 spaces after it (more means
		// the content is an indented code block: take one space).
		markerEnd := len(m[1]) + len(m[2])
		spaces := indentOf(lines[i][markerEnd:])
		content := markerEnd + spaces
		if spaces > 4 || m[3] == "" {
			content = markerEnd + 1
		}
		item := []string{stripIndent(lines[i][markerEnd:], spaces)}
		if spaces > 4 {
			item[0] = stripIndent(lines[i][markerEnd:], 1)
		}
		i++
		prevBlank := false
		for i < len(lines) {
			l := lines[i]
			if isBlank(l) {
				item = append(item, "")
				prevBlank = true
				i++
				continue
			}
			if indentOf(l) >= content {
				item = append(item, stripIndent(l, content))
				prevBlank = false
				i++
				continue
			}
			if prevBlank {
				break
			}
			// Lazy continuation of the item's paragraph.
			if startsBlock(l) || reListItem.MatchString(l) {
				break
			}
			item = append(item, strings.TrimSpace(l))
			i++
		}
		// Trailing blank lines belong between items (they make the list loose
		// only when another item follows).
		trailing := 0
		for len(item) > 0 && isBlank(item[len(item)-1]) {
			item = item[:len(item)-1]
			trailing++
		}
		for _, l := range item {
			if isBlank(l) {
				b.Loose = true
			}
		}
		b.Items = append(b.Items, parseBlocks(item))
		if trailing > 0 {
			if i < len(lines) {
				if m := reListItem.FindStringSubmatch(lines[i]); m != nil && sameKind(m) {
					b.Loose = true
					continue
				}
			}
			// Give the blank lines back: the list ended.
			i -= trailing
			break
		}
	}
	if i == 0 {
		i = 1
	}
	return b, i
}

// splitRow splits a table row into cells. A pipe inside a code span or
// escaped as \| does not split.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	if strings.HasSuffix(line, "|") && !strings.HasSuffix(line, `\|`) {
		line = line[:len(line)-1]
	}
	var cells []string
	var cur strings.Builder
	inCode := 0
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case c == '`':
			n := 1
			for i+n < len(line) && line[i+n] == '`' {
				n++
			}
			if inCode == 0 {
				inCode = n
			} else if inCode == n {
				inCode = 0
			}
			cur.WriteString(line[i : i+n])
			i += n - 1
		case c == '|' && inCode == 0:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	cells = append(cells, strings.TrimSpace(cur.String()))
	return cells
}

// LinkResolver rewrites a link target found in file src.
type LinkResolver func(src, href string) string

// renderer turns blocks into HTML.
type renderer struct {
	resolve LinkResolver
	image   LinkResolver   // for image sources; nil: resolve
	ids     map[string]int // heading ids used on the page
	toc     []tocEntry
}

type tocEntry struct {
	Level int
	ID    string
	Text  string // HTML
}

func newRenderer(resolve LinkResolver) *renderer {
	if resolve == nil {
		resolve = func(_, href string) string { return href }
	}
	return &renderer{resolve: resolve, ids: map[string]int{}}
}

// uniqueID returns id, or id-N when id is already taken on this page.
func (r *renderer) uniqueID(id string) string {
	n, taken := r.ids[id]
	r.ids[id] = n + 1
	if !taken {
		return id
	}
	for {
		cand := fmt.Sprintf("%s-%d", id, n)
		if _, ok := r.ids[cand]; !ok {
			r.ids[cand] = 1
			return cand
		}
		n++
	}
}

func (r *renderer) render(b *strings.Builder, blocks []*Block, tight bool) {
	for _, bl := range blocks {
		r.renderBlock(b, bl, tight)
	}
}

func (r *renderer) renderBlock(b *strings.Builder, bl *Block, tight bool) {
	switch bl.Kind {
	case blockParagraph:
		if tight {
			b.WriteString(r.inline(bl.Text, bl.Src))
			b.WriteString("\n")
			return
		}
		fmt.Fprintf(b, "<p>%s</p>\n", r.inline(bl.Text, bl.Src))
	case blockHeading:
		id := bl.ID
		if id == "" {
			id = Slug(PlainText(bl.Text))
		}
		id = r.uniqueID(id)
		text := r.inline(bl.Text, bl.Src)
		if bl.Level <= 3 {
			r.toc = append(r.toc, tocEntry{Level: bl.Level, ID: id, Text: text})
		}
		fmt.Fprintf(b, "<h%d id=\"%s\"><a class=\"anchor\" href=\"#%s\" aria-hidden=\"true\">#</a>%s</h%d>\n",
			bl.Level, html.EscapeString(id), html.EscapeString(id), text, bl.Level)
	case blockCode:
		class := ""
		if bl.Lang != "" {
			class = fmt.Sprintf(" class=\"language-%s\"", html.EscapeString(bl.Lang))
		}
		fmt.Fprintf(b, "<pre><code%s>%s</code></pre>\n", class, html.EscapeString(bl.Text))
	case blockList:
		tag := "ul"
		if bl.Ordered {
			tag = "ol"
		}
		if bl.Ordered && bl.Start != 1 {
			fmt.Fprintf(b, "<%s start=\"%d\">\n", tag, bl.Start)
		} else {
			fmt.Fprintf(b, "<%s>\n", tag)
		}
		for _, it := range bl.Items {
			b.WriteString("<li>")
			r.render(b, it, !bl.Loose)
			b.WriteString("</li>\n")
		}
		fmt.Fprintf(b, "</%s>\n", tag)
	case blockTable:
		b.WriteString("<div class=\"table\"><table>\n<thead><tr>")
		for i, h := range bl.Header {
			fmt.Fprintf(b, "<th%s>%s</th>", alignAttr(bl.Align, i), r.inline(h, bl.Src))
		}
		b.WriteString("</tr></thead>\n<tbody>\n")
		for _, row := range bl.Rows {
			b.WriteString("<tr>")
			for i, c := range row {
				fmt.Fprintf(b, "<td%s>%s</td>", alignAttr(bl.Align, i), r.inline(c, bl.Src))
			}
			b.WriteString("</tr>\n")
		}
		b.WriteString("</tbody>\n</table></div>\n")
	case blockQuote:
		b.WriteString("<blockquote>\n")
		r.render(b, bl.Children, false)
		b.WriteString("</blockquote>\n")
	case blockHTML:
		b.WriteString(bl.Text)
	case blockRule:
		b.WriteString("<hr>\n")
	}
}

func alignAttr(align []string, i int) string {
	if i < len(align) && align[i] != "" {
		return fmt.Sprintf(" style=\"text-align:%s\"", align[i])
	}
	return ""
}

// inline renders inline Markdown to HTML.
func (r *renderer) inline(s, src string) string {
	var b strings.Builder
	r.inlineTo(&b, s, src)
	return b.String()
}

var (
	reAutolink = regexp.MustCompile(`^<((?:https?|mailto):[^\s<>]+)>`)
	reBareURL  = regexp.MustCompile(`^https?://[^\s<>()]*[^\s<>().,;:!?'"*_]`)
)

func (r *renderer) inlineTo(b *strings.Builder, s, src string) {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && strings.IndexByte("\\`*_{}[]()#+-.!|<>\"'~", s[i+1]) >= 0:
			b.WriteString(html.EscapeString(s[i+1 : i+2]))
			i += 2
			continue
		case c == '\n':
			b.WriteString("\n")
			i++
			continue
		case c == '`':
			n := 1
			for i+n < len(s) && s[i+n] == '`' {
				n++
			}
			fence := s[i : i+n]
			if end := findRun(s[i+n:], fence); end >= 0 {
				code := strings.ReplaceAll(s[i+n:i+n+end], "\n", " ")
				if len(code) >= 2 && code[0] == ' ' && code[len(code)-1] == ' ' && strings.TrimSpace(code) != "" {
					code = code[1 : len(code)-1]
				}
				fmt.Fprintf(b, "<code>%s</code>", html.EscapeString(code))
				i += n + end + n
				continue
			}
			b.WriteString(fence)
			i += n
			continue
		case c == '!' && i+1 < len(s) && s[i+1] == '[':
			if text, href, n, ok := parseLink(s[i+1:]); ok {
				resolve := r.resolve
				if r.image != nil {
					resolve = r.image
				}
				fmt.Fprintf(b, "<img src=\"%s\" alt=\"%s\">", html.EscapeString(resolve(src, href)), html.EscapeString(PlainText(text)))
				i += 1 + n
				continue
			}
		case c == '[':
			if text, href, n, ok := parseLink(s[i:]); ok {
				fmt.Fprintf(b, "<a href=\"%s\">", html.EscapeString(r.resolve(src, href)))
				r.inlineTo(b, text, src)
				b.WriteString("</a>")
				i += n
				continue
			}
		case c == '<':
			if m := reAutolink.FindStringSubmatch(s[i:]); m != nil {
				fmt.Fprintf(b, "<a href=\"%s\">%s</a>", html.EscapeString(m[1]), html.EscapeString(m[1]))
				i += len(m[0])
				continue
			}
		case c == 'h' && (i == 0 || !isWordByte(s[i-1])):
			if m := reBareURL.FindString(s[i:]); m != "" {
				fmt.Fprintf(b, "<a href=\"%s\">%s</a>", html.EscapeString(m), html.EscapeString(m))
				i += len(m)
				continue
			}
		case (c == '*' || c == '_') && strings.HasPrefix(s[i:], strings.Repeat(string(c), 3)) && len(s) > i+3 && s[i+3] != ' ':
			// ***strong emphasis***
			delim := strings.Repeat(string(c), 3)
			if end := strings.Index(s[i+3:], delim); end > 0 && s[i+3+end-1] != ' ' {
				b.WriteString("<strong><em>")
				r.inlineTo(b, s[i+3:i+3+end], src)
				b.WriteString("</em></strong>")
				i += 3 + end + 3
				continue
			}
			b.WriteString(html.EscapeString(delim))
			i += 3
			continue
		case c == '*' || c == '_':
			n := 1
			if i+1 < len(s) && s[i+1] == c {
				n = 2
			}
			if end, ok := findEmphasis(s, i, n); ok {
				tag := "em"
				if n == 2 {
					tag = "strong"
				}
				fmt.Fprintf(b, "<%s>", tag)
				r.inlineTo(b, s[i+n:end], src)
				fmt.Fprintf(b, "</%s>", tag)
				i = end + n
				continue
			}
			// A run that opens nothing is literal.
			b.WriteString(html.EscapeString(s[i : i+n]))
			i += n
			continue
		}
		b.WriteString(html.EscapeString(s[i : i+1]))
		i++
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// findRun finds the first run of exactly len(fence) backticks in s.
func findRun(s, fence string) int {
	for i := 0; i < len(s); {
		if s[i] != '`' {
			i++
			continue
		}
		n := 1
		for i+n < len(s) && s[i+n] == '`' {
			n++
		}
		if n == len(fence) {
			return i
		}
		i += n
	}
	return -1
}

// findEmphasis finds the closing delimiter for an emphasis run of n
// characters s[i] at i. Underscores only work at word boundaries, so
// snake_case names stay as they are.
func findEmphasis(s string, i, n int) (int, bool) {
	c := s[i]
	open := i + n
	if open >= len(s) || s[open] == ' ' || s[open] == '\n' || s[open] == c {
		return 0, false
	}
	if c == '_' && i > 0 && isWordByte(s[i-1]) {
		return 0, false
	}
	delim := strings.Repeat(string(c), n)
	for j := open; j+n <= len(s); j++ {
		if s[j] == '`' { // skip code spans
			k := 1
			for j+k < len(s) && s[j+k] == '`' {
				k++
			}
			if end := findRun(s[j+k:], s[j:j+k]); end >= 0 {
				j += k + end + k - 1
				continue
			}
		}
		if s[j] == '[' { // skip link targets, which may contain _ or *
			if _, _, ln, ok := parseLink(s[j:]); ok {
				j += ln - 1
				continue
			}
		}
		if j == open || s[j:j+n] != delim || s[j-1] == ' ' || s[j-1] == '\n' {
			continue
		}
		if j+n < len(s) && s[j+n] == c {
			continue // a longer run: not ours
		}
		if c == '_' && j+n < len(s) && isWordByte(s[j+n]) {
			continue
		}
		return j, true
	}
	return 0, false
}

// parseLink parses "[text](href)" at the start of s and returns the text,
// the href and the length consumed.
func parseLink(s string) (text, href string, n int, ok bool) {
	if len(s) < 4 || s[0] != '[' {
		return "", "", 0, false
	}
	depth := 0
	end := -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '`':
			k := 1
			for i+k < len(s) && s[i+k] == '`' {
				k++
			}
			if e := findRun(s[i+k:], s[i:i+k]); e >= 0 {
				i += k + e + k - 1
			}
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 {
				end = i
			}
		}
		if end >= 0 {
			break
		}
	}
	if end < 0 || end+1 >= len(s) || s[end+1] != '(' {
		return "", "", 0, false
	}
	close := strings.IndexByte(s[end+2:], ')')
	if close < 0 {
		return "", "", 0, false
	}
	target := strings.TrimSpace(s[end+2 : end+2+close])
	if i := strings.IndexAny(target, " \t"); i >= 0 { // drop a title
		target = target[:i]
	}
	target = strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">")
	if target == "" {
		return "", "", 0, false
	}
	return s[1:end], target, end + 2 + close + 1, true
}

var (
	reStripLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// PlainText strips inline Markdown from s (for ids, titles and alt text).
func PlainText(s string) string {
	s = reStripLink.ReplaceAllString(s, "$1")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i++
		case c == '`':
		case c == '*':
		case c == '_' && (i == 0 || !isWordByte(s[i-1]) || i+1 == len(s) || !isWordByte(s[i+1])):
		default:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// Slug turns heading text into an id the way GitHub does: lower case,
// letters, digits, '-' and '_' kept, spaces to '-', everything else dropped.
// Links into docs/*.md therefore work the same on GitHub and on the site.
func Slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(s)) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "section"
	}
	return b.String()
}

// RenderMarkdown renders a document to HTML without link rewriting (for
// tests and small fragments).
func RenderMarkdown(text string) string {
	r := newRenderer(nil)
	var b strings.Builder
	r.render(&b, ParseMarkdown(text, ""), false)
	return b.String()
}
