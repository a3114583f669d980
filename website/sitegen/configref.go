package sitegen

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/pgbattery/pgbattery/agent/config"
)

// ConfigKey is one configuration key as the configuration reference shows
// it: found by walking agent/config's raw structs (so the list cannot
// drift from what the loader accepts), described by docs/config.md.
type ConfigKey struct {
	Path        string // "failover.hold_down"; top-level keys have no dot
	Block       string // "failover"; "" for top-level keys
	Name        string // "hold_down"
	GoType      string // "string", "int", "bool", "list of strings", "map of strings"
	Type        string // as documented (Markdown), else GoType
	Default     string // as documented (Markdown)
	Description string // Markdown; "" when docs/config.md does not describe the key
}

// configBlock is one HCL block of the configuration, in struct order.
type configBlock struct {
	Path string // "" for the top level, "tls.gateway"
	Keys []ConfigKey
}

// walkConfig lists every key and block of config.Config from its hcl tags.
func walkConfig() []configBlock {
	var blocks []configBlock
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		idx := len(blocks)
		blocks = append(blocks, configBlock{Path: prefix})
		var nested []func()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, ok := f.Tag.Lookup("hcl")
			if !ok {
				continue
			}
			name, kind, _ := strings.Cut(tag, ",")
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			if kind == "block" {
				ft := f.Type
				for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
					ft = ft.Elem()
				}
				nested = append(nested, func() { walk(ft, path) })
				continue
			}
			blocks[idx].Keys = append(blocks[idx].Keys, ConfigKey{
				Path: path, Block: prefix, Name: name, GoType: goTypeName(f.Type),
			})
		}
		for _, n := range nested {
			n()
		}
	}
	walk(reflect.TypeOf(config.Config{}), "")
	return blocks
}

func goTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return goTypeName(t.Elem())
	case reflect.Slice:
		return "list of " + goTypeName(t.Elem()) + "s"
	case reflect.Map:
		return "map of " + goTypeName(t.Elem()) + "s"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "int"
	}
	return t.Kind().String()
}

// docSection is a part of docs/config.md about one block (or the top-level
// keys): its blocks, and the key descriptions found in it.
type docSection struct {
	Blocks []*Block
	Rows   map[string]docRow // key name -> documented row
	Order  []string
}

type docRow struct {
	Type, Default, Meaning string
}

// configDocs reads docs/config.md: for every block heading (## `ports`,
// ### `tls { gateway { } }`) the key tables under it, and for the top-level
// keys their ### `name` sections.
func configDocs(blocks []*Block, known map[string]bool) map[string]*docSection {
	secs := map[string]*docSection{}
	cur := ""
	inTop := false
	topKey := ""
	get := func(p string) *docSection {
		if secs[p] == nil {
			secs[p] = &docSection{Rows: map[string]docRow{}}
		}
		return secs[p]
	}
	for _, bl := range blocks {
		if bl.Kind == blockHeading {
			text := PlainText(bl.Text)
			topKey = ""
			switch {
			case bl.Level == 2 && text == "Top-level keys":
				inTop, cur = true, ""
				get("")
				continue
			case bl.Level <= 2:
				inTop = false
				cur = "-"
			case bl.Level == 3 && inTop:
				topKey = strings.Trim(text, "` ")
				s := get("")
				s.Order = append(s.Order, topKey)
				continue
			}
			if p := blockPathOf(text); known[p] {
				cur = p
				get(p).Blocks = append(get(p).Blocks, bl)
				continue
			}
			if bl.Level <= 2 {
				cur = "-"
			}
			continue
		}
		if inTop && topKey != "" {
			s := get("")
			row := s.Rows[topKey]
			if bl.Kind == blockParagraph {
				if row.Meaning != "" {
					row.Meaning += "\n\n"
				}
				row.Meaning += bl.Text
			}
			s.Rows[topKey] = row
			continue
		}
		if cur == "" || cur == "-" {
			continue
		}
		s := get(cur)
		s.Blocks = append(s.Blocks, bl)
		if bl.Kind != blockTable || len(bl.Header) == 0 || strings.ToLower(PlainText(bl.Header[0])) != "key" {
			continue
		}
		for _, row := range bl.Rows {
			var r docRow
			name := strings.Trim(PlainText(row[0]), "` ")
			for i, h := range bl.Header {
				switch strings.ToLower(PlainText(h)) {
				case "type":
					r.Type = row[i]
				case "default":
					r.Default = row[i]
				case "meaning", "description":
					r.Meaning = row[i]
				}
			}
			s.Rows[name] = r
			s.Order = append(s.Order, name)
		}
	}
	// Top-level sections: "TYPE, default X. Meaning ..." -> type, default, meaning.
	if top := secs[""]; top != nil {
		for k, r := range top.Rows {
			top.Rows[k] = splitTopLevel(r.Meaning)
		}
	}
	return secs
}

// blockPathOf turns a heading like "ports" or "tls { gateway { } }" into
// a block path ("tls.gateway").
func blockPathOf(text string) string {
	text = strings.NewReplacer("{", " ", "}", " ", "`", " ").Replace(text)
	return strings.Join(strings.Fields(text), ".")
}

// splitTopLevel splits a top-level key's description, which starts with
// "TYPE, default VALUE." into its parts.
func splitTopLevel(text string) docRow {
	first, rest, ok := strings.Cut(text, ". ")
	if !ok {
		first, rest = strings.TrimSuffix(text, "."), ""
	}
	first = strings.ReplaceAll(first, "\n", " ")
	r := docRow{Meaning: strings.TrimSpace(rest)}
	typ, more, _ := strings.Cut(first, ", ")
	if strings.Count(typ, "(") != strings.Count(typ, ")") { // a comma inside parentheses
		if i := strings.Index(first, "), "); i >= 0 {
			typ, more = first[:i+1], first[i+3:]
		} else {
			typ, more = first, ""
		}
	}
	r.Type = typ
	more = strings.TrimSpace(more)
	switch {
	case strings.HasPrefix(more, "default"):
		r.Default = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(more, "default"), ":"))
	case more != "":
		r.Default = more
	}
	if r.Meaning == "" { // one sentence only: it is the description
		r.Meaning = text
	}
	return r
}

// ConfigKeys returns every configuration key with its documentation, and
// the problems found: keys docs/config.md does not describe, and keys it
// describes that the structs do not have.
func ConfigKeys(docBlocks []*Block) ([]ConfigKey, []configBlock, map[string]*docSection, []string) {
	blocks := walkConfig()
	known := map[string]bool{}
	for _, cb := range blocks {
		known[cb.Path] = true
	}
	secs := configDocs(docBlocks, known)
	var keys []ConfigKey
	var problems []string
	for bi := range blocks {
		cb := &blocks[bi]
		sec := secs[cb.Path]
		inStruct := map[string]bool{}
		for ki := range cb.Keys {
			k := &cb.Keys[ki]
			inStruct[k.Name] = true
			k.Type = k.GoType
			if sec != nil {
				if r, ok := sec.Rows[k.Name]; ok {
					k.Description = r.Meaning
					if r.Type != "" {
						k.Type = r.Type
					}
					k.Default = r.Default
				}
			}
			if strings.TrimSpace(k.Description) == "" {
				problems = append(problems, fmt.Sprintf("config key %s: no description in docs/config.md", k.Path))
			}
			keys = append(keys, *k)
		}
		// Blocks that only contain blocks (none today) have no keys to check.
		if sec != nil {
			for _, name := range sec.Order {
				if !inStruct[name] {
					p := name
					if cb.Path != "" {
						p = cb.Path + "." + name
					}
					problems = append(problems, fmt.Sprintf("config key %s: described in docs/config.md but not a key of agent/config", p))
				}
			}
		}
	}
	return keys, blocks, secs, problems
}

// configBlocks generates the key reference: one section per block, with
// docs/config.md's prose for that block and a table of every key.
func (b *builder) configBlocks() ([]*Block, error) {
	text, err := b.readFile("docs/config.md")
	if err != nil {
		return nil, err
	}
	docBlocks := ParseMarkdown(text, "docs/config.md")
	keys, blocks, secs, problems := ConfigKeys(docBlocks)
	b.result.ConfigKeys = keys
	b.result.Problems = append(b.result.Problems, problems...)

	r := newRenderer(b.resolveLink)
	md := func(s string) string { return r.inline(s, "docs/config.md") }
	var out []*Block
	for _, cb := range blocks {
		if len(cb.Keys) == 0 {
			continue
		}
		sec := secs[cb.Path]
		title, id := "Top-level keys", "top-level-keys"
		if cb.Path != "" {
			title = "`" + blockTitle(cb.Path) + "`"
			id = Slug(blockTitle(cb.Path))
			if !strings.Contains(cb.Path, ".") {
				id = Slug(cb.Path) // as docs/config.md's "## `ports`"
			}
		}
		level := 2
		if strings.Contains(cb.Path, ".") {
			level = 3
		}
		out = append(out, &Block{Kind: blockHeading, Level: level, Text: title, ID: id, Src: "docs/config.md"})
		// The block's prose from docs/config.md, its key table replaced.
		var tail []*Block
		if sec != nil {
			seenTable := false
			for _, bl := range sec.Blocks {
				if bl.Kind == blockHeading {
					continue
				}
				if bl.Kind == blockTable && !seenTable {
					seenTable = true
					continue
				}
				if !seenTable {
					out = append(out, bl)
				} else {
					tail = append(tail, bl)
				}
			}
		}
		var h strings.Builder
		h.WriteString("<div class=\"table\"><table class=\"keys\">\n<thead><tr><th>key</th><th>type</th><th>default</th><th>meaning</th></tr></thead>\n<tbody>\n")
		for _, k := range cb.Keys {
			desc := md(k.Description)
			if strings.TrimSpace(k.Description) == "" {
				desc = "<em class=\"missing\">Not described in docs/config.md yet.</em>"
			}
			desc = strings.ReplaceAll(desc, "\n", " ")
			def := md(k.Default)
			if def == "" {
				def = "—"
			}
			fmt.Fprintf(&h, "<tr id=\"%s\"><td><a class=\"key\" href=\"#%s\"><code>%s</code></a></td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
				esc(k.Path), esc(k.Path), esc(k.Name), md(k.Type), def, desc)
		}
		h.WriteString("</tbody>\n</table></div>\n")
		out = append(out, &Block{Kind: blockHTML, Text: h.String()})
		out = append(out, tail...)
	}
	return out, nil
}

// blockTitle is how a block is written in HCL: "ports { }",
// "tls { gateway { } }".
func blockTitle(p string) string {
	parts := strings.Split(p, ".")
	s := ""
	for i := len(parts) - 1; i >= 0; i-- {
		if s == "" {
			s = parts[i] + " { }"
		} else {
			s = parts[i] + " { " + s + " }"
		}
	}
	return s
}
