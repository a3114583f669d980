package sitegen

import (
	"strings"
	"testing"
)

func TestMarkdownBlocks(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // substrings of the output, in order
		not      []string
	}{
		{"heading ids like GitHub", "## 7. The promises\n### `tls { gateway { } }`\n## Flags\n## Flags\n",
			[]string{`<h2 id="7-the-promises">`, `<h3 id="tls--gateway---">`, `<code>tls { gateway { } }</code>`, `<h2 id="flags">`, `<h2 id="flags-1">`}, nil},
		{"paragraph lines join", "one\ntwo\n\nthree\n", []string{"<p>one\ntwo</p>", "<p>three</p>"}, nil},
		{"fenced code keeps everything", "```hcl\na = \"<b>\" # *x*\n\n  b\n```\n", []string{`<pre><code class="language-hcl">a = &#34;&lt;b&gt;&#34; # *x*` + "\n\n  b\n</code></pre>"}, []string{"<em>"}},
		{"indented code", "text\n\n    code line\n    more\n\nafter\n", []string{"<pre><code>code line\nmore\n</code></pre>", "<p>after</p>"}, nil},
		{"tight list", "- a\n- b\n  wrapped\n- c\n", []string{"<ul>\n<li>a\n</li>\n<li>b\nwrapped\n</li>\n<li>c\n</li>\n</ul>"}, []string{"<p>"}},
		{"loose ordered list with nested table", "1. first\n\n   | a | b |\n   |---|---|\n   | 1 | 2 |\n\n2. second\n",
			[]string{"<ol>", "<li><p>first</p>", "<table>", "<td>1</td><td>2</td>", "<li><p>second</p>", "</ol>"}, nil},
		{"ordered list start", "3. three\n4. four\n", []string{`<ol start="3">`}, nil},
		{"nested list", "* a\n  * inner\n* b\n", []string{"<ul>\n<li>a\n<ul>\n<li>inner\n</li>\n</ul>\n</li>\n<li>b"}, nil},
		{"list ends at unindented paragraph after blank", "- a\n\nafter\n", []string{"<li>a\n</li>\n</ul>\n<p>after</p>"}, nil},
		{"table with pipes in code and alignment", "| key | v |\n|:---|---:|\n| `a|b` | x \\| y |\n", []string{`<th style="text-align:left">key</th>`, "<code>a|b</code>", `<td style="text-align:right">x | y</td>`}, nil},
		{"blockquote", "> **Status: early.** text\n> more\n", []string{"<blockquote>\n<p><strong>Status: early.</strong> text\nmore</p>\n</blockquote>"}, nil},
		{"raw html block", "<div class=\"x\"><a href=\"a.html\">a</a></div>\n\ntext\n", []string{"<div class=\"x\"><a href=\"a.html\">a</a></div>\n<p>text</p>"}, nil},
		{"rule", "a\n\n---\n\nb\n", []string{"<hr>"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RenderMarkdown(tc.in)
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q (in order)\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("output contains %q\n%s", n, got)
				}
			}
		})
	}
}

func TestMarkdownInline(t *testing.T) {
	for in, want := range map[string]string{
		"`code` and ``a ` b``":                 "<code>code</code> and <code>a ` b</code>",
		"**bold** and *em* and _em_":           "<strong>bold</strong> and <em>em</em> and <em>em</em>",
		"node_name and retry_join_max stay":    "node_name and retry_join_max stay",
		"2 * 3 * 4 is not emphasis":            "2 * 3 * 4 is not emphasis",
		"[the *docs*](a.md#x) here":            `<a href="a.md#x">the <em>docs</em></a> here`,
		"![alt `x`](img/a.png)":                `<img src="img/a.png" alt="alt x">`,
		"<https://example.com/a> and <b>":      `<a href="https://example.com/a">https://example.com/a</a> and &lt;b&gt;`,
		"see https://example.com/x.":           `see <a href="https://example.com/x">https://example.com/x</a>.`,
		`escaped \*star\* and \_u\_`:           "escaped *star* and _u_",
		"a & b < c":                            "a &amp; b &lt; c",
		"**`tls`** key":                        "<strong><code>tls</code></strong> key",
		"[link with _under_score](x_y_z.md)":   `<a href="x_y_z.md">link with _under_score</a>`,
		"*unclosed emphasis":                   "*unclosed emphasis",
		"`unclosed code":                       "`unclosed code",
		"[not a link] (x)":                     "[not a link] (x)",
		"**bold with `code**` inside** done":   "<strong>bold with <code>code**</code> inside</strong> done",
		"*[a link](x_y.md) in emphasis*":       `<em><a href="x_y.md">a link</a> in emphasis</em>`,
		"snake_case_words_only":                "snake_case_words_only",
		"`a` → `b`":                            "<code>a</code> → <code>b</code>",
		"p50 ≤ 300 ms, ¹ footnote":             "p50 ≤ 300 ms, ¹ footnote",
		"[x](<with space.md>)":                 `<a href="with">x</a>`,
		"text [x](y.md \"title\") after":       `text <a href="y.md">x</a> after`,
		"a\\\nb":                               "a\\\nb",
		"**`http://a/`** (`x`; `/` y)":         "<strong><code>http://a/</code></strong> (<code>x</code>; <code>/</code> y)",
		"***both***":                           "<strong><em>both</em></strong>",
		"__strong__ and a_b_c":                 "<strong>strong</strong> and a_b_c",
		"`x`_suffix":                           "<code>x</code>_suffix",
		"(**parenthesised**)":                  "(<strong>parenthesised</strong>)",
		"[`members`](#commands) and `status`.": `<a href="#commands"><code>members</code></a> and <code>status</code>.`,
	} {
		r := newRenderer(nil)
		if got := r.inline(in, ""); got != want {
			t.Errorf("inline(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}

func TestPlainTextAndSlug(t *testing.T) {
	for in, want := range map[string]string{
		"`tls { gateway { } }`":         "tls--gateway---",
		"6a. The gateway [built]":       "6a-the-gateway-built",
		"The CLI's HTTP client flags":   "the-clis-http-client-flags",
		"Results (2026-11-23, 2 vCPUs)": "results-2026-11-23-2-vcpus",
		"[Flags](#flags) and *more*":    "flags-and-more",
		"node_name":                     "node_name",
		"":                              "section",
	} {
		if got := Slug(PlainText(in)); got != want {
			t.Errorf("Slug(PlainText(%q)) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitTopLevel(t *testing.T) {
	for in, want := range map[string]docRow{
		"string, default: the host name. The node's name.":      {Type: "string", Default: "the host name", Meaning: "The node's name."},
		"string, **required**, absolute. Where it lives.":       {Type: "string", Default: "**required**, absolute", Meaning: "Where it lives."},
		"string (an IP address), default `\"0.0.0.0\"`. Binds.": {Type: "string (an IP address)", Default: "`\"0.0.0.0\"`", Meaning: "Binds."},
		"string (an IP, or a name). The address.":               {Type: "string (an IP, or a name)", Meaning: "The address."},
		"int, default `0` (do not bootstrap). Voters.":          {Type: "int", Default: "`0` (do not bootstrap)", Meaning: "Voters."},
	} {
		if got := splitTopLevel(in); got != want {
			t.Errorf("splitTopLevel(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func FuzzMarkdown(f *testing.F) {
	for _, s := range []string{"# a\n\n- b\n  - c\n\n| x | y |\n|---|---|\n| `|` | *z* |\n", "```\ncode", "1. a\n\n    code\n", "> q\n> - l\n", "[a](b) **c** _d_ `e`", "*_*_*_", "[[[(((", "- \n-\n  \n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4096 {
			return
		}
		out := RenderMarkdown(s) // must terminate without panicking
		if strings.Count(out, "<table>") != strings.Count(out, "</table>") {
			t.Errorf("unbalanced tables for %q", s)
		}
	})
}
