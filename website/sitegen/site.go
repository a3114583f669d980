// Package sitegen builds pgbattery's documentation site: Markdown pages
// from website/content and docs/, plus reference pages generated from the
// code itself (configuration keys from agent/config's structs, the CLI from
// the command registry, metrics from the agent's catalogue), rendered to
// static HTML with no network access and no external assets.
//
// Content pages may contain directives, each alone in a paragraph:
//
//	{{include "docs/ARCHITECTURE.md" "7. The promises"}}  a section of a file (heading prefix), or
//	{{include "README.md" "Quick start" "nohead"}}        the same without the section's heading
//	{{include "docs/api.md"}}                             a whole file, without its title
//	{{godoc "gateway" "Failover"}}                        a section of a package's doc comment
//	{{file "dist/pgbattery.service" "ini"}}               a file as a code block
//	{{config}} {{cli}} {{metrics}} {{benchmarks}}         generated references
//
// "include?" and "godoc?" include nothing when the file or section does not
// exist (for documents that are being written).
// so the site includes the project's documents instead of copying them.
package sitegen

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/command"
)

// DefaultRepoURL is where links to repository files that are not pages of
// the site point (the same address as dist/pgbattery.service's
// Documentation=).
const DefaultRepoURL = "https://github.com/pgbattery/pgbattery"

//go:embed assets/*
var assets embed.FS

// Options says what to build from where.
type Options struct {
	Root    string // repository root
	Out     string // output directory, created if needed; pages it wrote before are replaced
	RepoURL string // default DefaultRepoURL
	// Commands is the CLI registry; nil means command.Commands.
	Commands map[string]cli.CommandFactory
}

// Page is one page of the site.
type Page struct {
	Slug    string // output file name without .html
	Nav     string // title in the navigation
	Section string // navigation group
	Source  string // repository-relative Markdown file
	// Owns lists other files whose links should lead to this page (the
	// page includes them).
	Owns []string

	Title string // from the first heading, set while building
}

// Result is what Build produced, for checks.
type Result struct {
	Out        string
	Pages      []*Page
	ConfigKeys []ConfigKey
	Commands   []CommandDoc
	Metrics    []MetricDoc
	// Problems are documentation gaps found while generating (a config key
	// without a description, a documented key that no longer exists). The
	// site is still written; the tests fail on them.
	Problems []string
}

// sections orders the navigation.
var sections = []string{"Start", "Concepts", "Reference", "Operations", "More"}

// knownPages lists the site's pages. docs/*.md files not listed here are
// added under "More", so a new document appears without a code change.
func knownPages() []*Page {
	return []*Page{
		{Slug: "index", Nav: "Overview", Section: "Start", Source: "website/content/index.md", Title: "pgbattery: PostgreSQL high availability in one binary"},
		{Slug: "getting-started", Nav: "Getting started", Section: "Start", Source: "website/content/getting-started.md"},
		{Slug: "deployment", Nav: "Production deployment", Section: "Start", Source: "website/content/deployment.md"},
		{Slug: "concepts", Nav: "The promises", Section: "Concepts", Source: "website/content/concepts.md"},
		{Slug: "architecture", Nav: "Architecture", Section: "Concepts", Source: "docs/ARCHITECTURE.md"},
		{Slug: "failure-detection", Nav: "Failure detection", Section: "Concepts", Source: "docs/gossip.md"},
		{Slug: "sessions", Nav: "Sessions across failover", Section: "Concepts", Source: "website/content/sessions.md"},
		{Slug: "configuration", Nav: "Configuration", Section: "Reference", Source: "website/content/configuration.md", Owns: []string{"docs/config.md"}},
		{Slug: "cli", Nav: "Command line", Section: "Reference", Source: "website/content/cli.md"},
		{Slug: "api", Nav: "HTTP API", Section: "Reference", Source: "docs/api.md"},
		{Slug: "metrics", Nav: "Metrics", Section: "Reference", Source: "website/content/metrics.md"},
		{Slug: "operations", Nav: "Runbook", Section: "Operations", Source: "website/content/operations.md"},
		{Slug: "benchmarks", Nav: "Benchmarks", Section: "Operations", Source: "website/content/benchmarks.md", Owns: []string{"docs/benchmarks.md"}},
		{Slug: "chaos", Nav: "Fault injection", Section: "Operations", Source: "docs/chaos.md"},
		{Slug: "ui", Nav: "Web UI", Section: "Operations", Source: "docs/ui.md"},
	}
}

// builder holds one build's state.
type builder struct {
	opts   Options
	pages  []*Page
	owner  map[string]*Page // repository file -> page that shows it
	result *Result
	cur    *Page
}

// Build renders the site into opts.Out.
func Build(opts Options) (*Result, error) {
	if opts.Root == "" {
		opts.Root = "."
	}
	if opts.RepoURL == "" {
		opts.RepoURL = DefaultRepoURL
	}
	if opts.Commands == nil {
		opts.Commands = command.Commands(&cli.BasicUi{Reader: strings.NewReader(""), Writer: io.Discard, ErrorWriter: io.Discard})
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("resolving the repository root %s: %w", opts.Root, err)
	}
	opts.Root = root
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return nil, fmt.Errorf("%s does not look like the repository root (no go.mod): %w", root, err)
	}
	b := &builder{opts: opts, owner: map[string]*Page{}, result: &Result{Out: opts.Out}}
	if err := b.collectPages(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", opts.Out, err)
	}
	// Pages that no longer exist must not linger and hide a broken link;
	// only files this generator wrote are removed.
	old, _ := filepath.Glob(filepath.Join(opts.Out, "*.html"))
	for _, f := range old {
		data, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(data, []byte(generatorMeta)) {
			continue
		}
		if err := os.Remove(f); err != nil {
			return nil, fmt.Errorf("removing stale %s: %w", f, err)
		}
	}
	if err := b.writeAssets(); err != nil {
		return nil, err
	}
	// Parse every page first: titles are needed by the navigation.
	bodies := make([][]*Block, len(b.pages))
	for i, p := range b.pages {
		b.cur = p
		blocks, err := b.pageBlocks(p)
		if err != nil {
			return nil, err
		}
		bodies[i] = blocks
		for _, bl := range blocks {
			if p.Title != "" {
				break
			}
			if bl.Kind == blockHeading && bl.Level == 1 {
				p.Title = PlainText(bl.Text)
				break
			}
		}
		if p.Title == "" {
			p.Title = p.Nav
		}
	}
	for i, p := range b.pages {
		b.cur = p
		if err := b.writePage(p, bodies[i]); err != nil {
			return nil, err
		}
	}
	b.result.Pages = b.pages
	return b.result, nil
}

func (b *builder) collectPages() error {
	listed := map[string]bool{}
	for _, p := range knownPages() {
		listed[p.Source] = true
		for _, o := range p.Owns {
			listed[o] = true
		}
		if _, err := os.Stat(filepath.Join(b.opts.Root, p.Source)); err != nil {
			if strings.HasPrefix(p.Source, "docs/") && os.IsNotExist(err) {
				continue // an optional document not written yet
			}
			return fmt.Errorf("page %s: %w", p.Slug, err)
		}
		b.pages = append(b.pages, p)
	}
	docs, err := filepath.Glob(filepath.Join(b.opts.Root, "docs", "*.md"))
	if err != nil {
		return err
	}
	sort.Strings(docs)
	for _, d := range docs {
		rel := "docs/" + filepath.Base(d)
		if listed[rel] {
			continue
		}
		slug := Slug(strings.TrimSuffix(filepath.Base(d), ".md"))
		b.pages = append(b.pages, &Page{Slug: slug, Nav: strings.TrimSuffix(filepath.Base(d), ".md"), Section: "More", Source: rel})
	}
	seen := map[string]bool{}
	for _, p := range b.pages {
		if seen[p.Slug] {
			return fmt.Errorf("two pages named %s.html", p.Slug)
		}
		seen[p.Slug] = true
		b.owner[p.Source] = p
		for _, o := range p.Owns {
			b.owner[o] = p
		}
	}
	return nil
}

func (b *builder) writeAssets() error {
	entries, err := assets.ReadDir("assets")
	if err != nil {
		return err
	}
	for _, e := range entries {
		data, err := assets.ReadFile("assets/" + e.Name())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(b.opts.Out, e.Name()), data, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", e.Name(), err)
		}
	}
	return nil
}

func (b *builder) readFile(rel string) (string, error) {
	data, err := os.ReadFile(filepath.Join(b.opts.Root, filepath.FromSlash(rel)))
	if err != nil {
		return "", fmt.Errorf("page %s: %w", b.cur.Slug, err)
	}
	return string(data), nil
}

// pageBlocks parses a page's source and expands its directives.
func (b *builder) pageBlocks(p *Page) ([]*Block, error) {
	text, err := b.readFile(p.Source)
	if err != nil {
		return nil, err
	}
	return b.expand(ParseMarkdown(text, p.Source), 0)
}

func (b *builder) expand(blocks []*Block, depth int) ([]*Block, error) {
	if depth > 4 {
		return nil, fmt.Errorf("page %s: includes nested too deeply", b.cur.Slug)
	}
	var out []*Block
	for _, bl := range blocks {
		if bl.Kind != blockParagraph {
			out = append(out, bl)
			continue
		}
		t := strings.TrimSpace(bl.Text)
		if !strings.HasPrefix(t, "{{") || !strings.HasSuffix(t, "}}") {
			out = append(out, bl)
			continue
		}
		args, err := splitArgs(strings.TrimSpace(t[2 : len(t)-2]))
		if err != nil || len(args) == 0 {
			return nil, fmt.Errorf("%s: bad directive %s: %v", bl.Src, t, err)
		}
		optional := strings.HasSuffix(args[0], "?")
		args[0] = strings.TrimSuffix(args[0], "?")
		got, err := b.directive(bl.Src, args)
		if err != nil && optional && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoSection)) {
			continue // an optional include of a document not written yet
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", bl.Src, t, err)
		}
		got, err = b.expand(got, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// splitArgs splits `name "a b" "c"` into its words.
func splitArgs(s string) ([]string, error) {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, err
			}
			v, _ := strconv.Unquote(q)
			out = append(out, v)
			s = s[len(q):]
			continue
		}
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			i = len(s)
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out, nil
}

func (b *builder) directive(src string, args []string) ([]*Block, error) {
	switch args[0] {
	case "include":
		if len(args) < 2 || len(args) > 4 || (len(args) == 4 && args[3] != "nohead") {
			return nil, fmt.Errorf("want include FILE [HEADING [nohead]]")
		}
		text, err := b.readFile(args[1])
		if err != nil {
			return nil, err
		}
		blocks := ParseMarkdown(text, args[1])
		if len(args) == 2 {
			if len(blocks) > 0 && blocks[0].Kind == blockHeading && blocks[0].Level == 1 {
				blocks = blocks[1:]
			}
			return blocks, nil
		}
		sec, err := section(blocks, args[2], args[1])
		if err == nil && len(args) == 4 {
			sec = sec[1:] // the page's own title stands for the heading
		}
		return sec, err
	case "godoc":
		if len(args) != 3 {
			return nil, fmt.Errorf("want godoc PACKAGE-DIR HEADING")
		}
		md, err := packageDocMarkdown(filepath.Join(b.opts.Root, filepath.FromSlash(args[1])))
		if err != nil {
			return nil, err
		}
		return section(ParseMarkdown(md, args[1]+"/doc.go"), args[2], args[1])
	case "file":
		if len(args) < 2 || len(args) > 3 {
			return nil, fmt.Errorf("want file PATH [LANG]")
		}
		text, err := b.readFile(args[1])
		if err != nil {
			return nil, err
		}
		lang := ""
		if len(args) == 3 {
			lang = args[2]
		}
		link := fmt.Sprintf("[`%s`](%s)", args[1], b.repoURL(args[1]))
		return []*Block{
			{Kind: blockParagraph, Text: link, Src: src},
			{Kind: blockCode, Text: text, Lang: lang, Src: src},
		}, nil
	case "config":
		return b.configBlocks()
	case "cli":
		return b.cliBlocks()
	case "metrics":
		return b.metricsBlocks()
	case "benchmarks":
		return b.benchmarkBlocks()
	}
	return nil, fmt.Errorf("unknown directive %q", args[0])
}

// errNoSection is the error of an include whose heading is not found.
var errNoSection = errors.New("no such section")

// section returns the blocks of the section whose heading starts with
// heading: the heading itself and everything up to the next heading of the
// same or a higher level.
func section(blocks []*Block, heading, file string) ([]*Block, error) {
	for i, bl := range blocks {
		if bl.Kind != blockHeading || !strings.HasPrefix(PlainText(bl.Text), heading) {
			continue
		}
		j := i + 1
		for j < len(blocks) && !(blocks[j].Kind == blockHeading && blocks[j].Level <= bl.Level) {
			j++
		}
		return blocks[i:j], nil
	}
	return nil, fmt.Errorf("%s has no heading starting with %q: %w", file, heading, errNoSection)
}

func (b *builder) repoURL(rel string) string {
	kind := "blob"
	if fi, err := os.Stat(filepath.Join(b.opts.Root, filepath.FromSlash(rel))); err == nil && fi.IsDir() {
		kind = "tree"
	}
	return fmt.Sprintf("%s/%s/main/%s", b.opts.RepoURL, kind, strings.TrimSuffix(rel, "/"))
}

// resolveLink rewrites a link written in file src for the current page: a
// link to a file the site shows goes to its page, a link to another file of
// the repository to the repository's web view. Links that resolve to
// nothing are left as they are, and the link check reports them.
func (b *builder) resolveLink(src, href string) string {
	if strings.Contains(href, "://") || strings.HasPrefix(href, "mailto:") {
		return href
	}
	target, frag, _ := strings.Cut(href, "#")
	if frag != "" {
		frag = "#" + frag
	}
	if target == "" { // an anchor in the file the link is written in
		if p := b.owner[src]; p != nil && p != b.cur {
			return p.Slug + ".html" + frag
		}
		return frag
	}
	if strings.HasPrefix(target, "/") {
		return href
	}
	// Links inside website/content may name output pages directly.
	if strings.HasSuffix(target, ".html") && !strings.Contains(target, "/") {
		return href
	}
	rel := path.Clean(path.Join(path.Dir(src), target))
	if strings.HasPrefix(rel, "../") {
		return href
	}
	if p := b.owner[rel]; p != nil {
		if p == b.cur && frag != "" {
			return frag
		}
		return p.Slug + ".html" + frag
	}
	if _, err := os.Stat(filepath.Join(b.opts.Root, filepath.FromSlash(rel))); err == nil {
		return b.repoURL(rel) + frag
	}
	return href
}

// copyImage copies an image a document shows from the repository into the
// site (flat, as docs_img_ui.png), so the site needs nothing from outside.
func (b *builder) copyImage(src, href string) string {
	if strings.Contains(href, "://") || strings.HasPrefix(href, "/") {
		return href
	}
	rel := path.Clean(path.Join(path.Dir(src), href))
	data, err := os.ReadFile(filepath.Join(b.opts.Root, filepath.FromSlash(rel)))
	if err != nil || strings.HasPrefix(rel, "../") {
		return href // left broken: the link check reports it
	}
	name := strings.ReplaceAll(rel, "/", "_")
	if err := os.WriteFile(filepath.Join(b.opts.Out, name), data, 0o644); err != nil {
		b.result.Problems = append(b.result.Problems, fmt.Sprintf("copying image %s: %v", rel, err))
		return href
	}
	return name
}

// generatorMeta marks the pages this package writes.
const generatorMeta = `<meta name="generator" content="pgbattery sitegen">`

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
` + generatorMeta + `
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}{{if not .Home}} · pgbattery{{end}}</title>
<link rel="stylesheet" href="style.css">
</head>
<body{{if .Home}} class="home"{{end}}>
<header class="top">
  <a class="brand" href="index.html"><span class="logo" aria-hidden="true"></span>pgbattery</a>
  <nav class="toplinks">
    <a href="getting-started.html">Get started</a>
    <a href="concepts.html">Concepts</a>
    <a href="configuration.html">Reference</a>
    <a href="operations.html">Operations</a>
    <a href="{{.RepoURL}}">Source</a>
  </nav>
</header>
<div class="layout">
<nav class="side" aria-label="Documentation">
{{range .Nav}}<div class="group"><div class="group-title">{{.Name}}</div>
<ul>{{range .Pages}}<li><a href="{{.Slug}}.html"{{if .Current}} class="current" aria-current="page"{{end}}>{{.Nav}}</a></li>{{end}}</ul></div>
{{end}}</nav>
<main{{if .TOC}} class="has-toc"{{end}}>
{{if .TOC}}<aside class="toc"><div class="toc-title">On this page</div><ul>{{range .TOC}}<li class="l{{.Level}}"><a href="#{{.ID}}">{{.Text}}</a></li>{{end}}</ul></aside>{{end}}
<article>
{{.Body}}
</article>
<footer>Built from the pgbattery repository by <code>make website</code>{{if .Source}} · source: <a href="{{.SourceURL}}">{{.Source}}</a>{{end}}</footer>
</main>
</div>
</body>
</html>
`))

type navGroup struct {
	Name  string
	Pages []navPage
}

type navPage struct {
	Slug, Nav string
	Current   bool
}

type tocView struct {
	Level int
	ID    string
	Text  template.HTML
}

func (b *builder) writePage(p *Page, blocks []*Block) error {
	r := newRenderer(b.resolveLink)
	r.image = b.copyImage
	var body strings.Builder
	r.render(&body, blocks, false)

	var groups []navGroup
	for _, s := range sections {
		g := navGroup{Name: s}
		for _, q := range b.pages {
			if q.Section == s {
				g.Pages = append(g.Pages, navPage{Slug: q.Slug, Nav: q.Nav, Current: q == p})
			}
		}
		if len(g.Pages) > 0 {
			groups = append(groups, g)
		}
	}
	var toc []tocView
	for _, e := range r.toc {
		if e.Level == 2 || e.Level == 3 {
			toc = append(toc, tocView{Level: e.Level, ID: e.ID, Text: template.HTML(stripTags(e.Text))})
		}
	}
	if len(toc) < 3 || p.Slug == "index" {
		toc = nil
	}
	var buf bytes.Buffer
	err := pageTemplate.Execute(&buf, map[string]any{
		"Title":     p.Title,
		"Home":      p.Slug == "index",
		"Nav":       groups,
		"TOC":       toc,
		"Body":      template.HTML(body.String()),
		"RepoURL":   b.opts.RepoURL,
		"Source":    p.Source,
		"SourceURL": b.repoURL(p.Source),
	})
	if err != nil {
		return fmt.Errorf("rendering %s: %w", p.Slug, err)
	}
	out := filepath.Join(b.opts.Out, p.Slug+".html")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}

// stripTags removes the anchor link and any markup from rendered heading
// text (the TOC shows plain text; code spans keep their <code>).
func stripTags(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '<' {
			j := strings.IndexByte(s[i:], '>')
			if j < 0 {
				break
			}
			tag := s[i : i+j+1]
			if tag == "<code>" || tag == "</code>" {
				b.WriteString(tag)
			}
			i += j + 1
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// esc is html.EscapeString, short for the generators.
func esc(s string) string { return html.EscapeString(s) }
