package sitegen

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/doc"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pgbattery/pgbattery/agent"
)

// CommandDoc is one CLI command as the CLI reference shows it.
type CommandDoc struct {
	Name     string // "operator raft list-peers"
	ID       string // anchor on cli.html
	Synopsis string
	Help     string
}

// CommandID is the anchor of a command on the CLI reference page.
func CommandID(name string) string { return "cli-" + Slug(strings.ReplaceAll(name, " ", "-")) }

// cliBlocks generates the CLI reference from the command registry: every
// command's synopsis and its -h text, exactly as the binary prints them.
func (b *builder) cliBlocks() ([]*Block, error) {
	names := make([]string, 0, len(b.opts.Commands))
	for n := range b.opts.Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var docs []CommandDoc
	for _, n := range names {
		c, err := b.opts.Commands[n]()
		if err != nil {
			return nil, fmt.Errorf("creating command %q: %w", n, err)
		}
		docs = append(docs, CommandDoc{Name: n, ID: CommandID(n), Synopsis: c.Synopsis(), Help: strings.TrimSpace(c.Help())})
	}
	b.result.Commands = docs

	var h strings.Builder
	h.WriteString("<div class=\"table\"><table>\n<thead><tr><th>command</th><th>what it does</th></tr></thead>\n<tbody>\n")
	for _, d := range docs {
		fmt.Fprintf(&h, "<tr><td><a href=\"#%s\"><code>pgbattery %s</code></a></td><td>%s</td></tr>\n", esc(d.ID), esc(d.Name), esc(d.Synopsis))
	}
	h.WriteString("</tbody>\n</table></div>\n")
	out := []*Block{{Kind: blockHTML, Text: h.String()}}
	for _, d := range docs {
		out = append(out,
			&Block{Kind: blockHeading, Level: 2, Text: "`pgbattery " + d.Name + "`", ID: d.ID},
			&Block{Kind: blockHTML, Text: fmt.Sprintf("<p class=\"synopsis\">%s</p>\n<pre class=\"help\"><code>%s</code></pre>\n", esc(d.Synopsis), esc(d.Help))},
		)
	}
	return out, nil
}

// MetricDoc is one metric of the agent's catalogue.
type MetricDoc struct {
	Name       string // "postgres.crashes", without the metrics prefix
	Prometheus string // "pgbattery_postgres_crashes" with the default prefix
	Kind, Help string
}

// metricsBlocks generates the table of the metrics the agent registers with
// a HELP text (agent.MetricDefinitions).
func (b *builder) metricsBlocks() ([]*Block, error) {
	var h strings.Builder
	h.WriteString("<div class=\"table\"><table>\n<thead><tr><th>name</th><th>Prometheus (default prefix)</th><th>kind</th><th>meaning</th></tr></thead>\n<tbody>\n")
	for _, d := range agent.MetricDefinitions() {
		m := MetricDoc{
			Name:       strings.Join(d.Name, "."),
			Prometheus: "pgbattery_" + strings.Join(d.Name, "_"),
			Kind:       d.Kind,
			Help:       d.Help,
		}
		b.result.Metrics = append(b.result.Metrics, m)
		fmt.Fprintf(&h, "<tr id=\"metric-%s\"><td><code>%s</code></td><td><code>%s</code></td><td>%s</td><td>%s</td></tr>\n",
			esc(m.Name), esc(m.Name), esc(m.Prometheus), esc(m.Kind), esc(m.Help))
	}
	h.WriteString("</tbody>\n</table></div>\n")
	return []*Block{{Kind: blockHTML, Text: h.String()}}, nil
}

// benchmarkBlocks lists what `make bench` runs, read from scripts/bench.sh
// (its `run NAME COMMAND...` lines), so the page names the exact commands.
func (b *builder) benchmarkBlocks() ([]*Block, error) {
	f, err := os.Open(filepath.Join(b.opts.Root, "scripts", "bench.sh"))
	if err != nil {
		return nil, fmt.Errorf("reading the benchmark list: %w", err)
	}
	defer f.Close()
	var h strings.Builder
	h.WriteString("<div class=\"table\"><table>\n<thead><tr><th>name</th><th>command (run by <code>make bench</code> with <code>PGBATTERY_BENCH=1</code>)</th></tr></thead>\n<tbody>\n")
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "run ") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			continue
		}
		n++
		fmt.Fprintf(&h, "<tr id=\"bench-%s\"><td><code>%s</code></td><td><code>%s</code></td></tr>\n",
			esc(fields[1]), esc(fields[1]), esc(strings.Join(fields[2:], " ")))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("scripts/bench.sh has no run lines")
	}
	h.WriteString("</tbody>\n</table></div>\n")
	return []*Block{{Kind: blockHTML, Text: h.String()}}, nil
}

// packageDocMarkdown returns a package's doc comment as Markdown.
func packageDocMarkdown(dir string) (string, error) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("reading package %s: %w", dir, err)
	}
	var files []*ast.File
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return "", fmt.Errorf("parsing %s: %w", n, err)
		}
		files = append(files, f)
	}
	pkg, err := doc.NewFromFiles(fset, files, "example.com/"+filepath.Base(dir))
	if err != nil {
		return "", fmt.Errorf("reading the documentation of %s: %w", dir, err)
	}
	p := pkg.Printer()
	p.HeadingLevel = 2
	p.HeadingID = func(*comment.Heading) string { return "" }
	p.DocLinkURL = func(*comment.DocLink) string { return "" }
	return string(p.Markdown(pkg.Parser().Parse(pkg.Doc))), nil
}

// sourceMetricNames finds the metric keys written as literals in the
// module's Go code: calls of go-metrics' IncrCounter, SetGauge, AddSample,
// MeasureSince (and their WithLabels forms) whose key is a []string of
// string constants. Keys built at run time are not found; the metrics page
// describes those by hand.
func sourceMetricNames(root string, skip func(rel string) bool) (map[string]string, error) {
	calls := map[string]bool{
		"IncrCounter": true, "IncrCounterWithLabels": true, "SetGauge": true, "SetGaugeWithLabels": true,
		"AddSample": true, "AddSampleWithLabels": true, "MeasureSince": true, "MeasureSinceWithLabels": true,
	}
	found := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || skip(rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || skip(rel) {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", rel, err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !calls[sel.Sel.Name] {
				return true
			}
			lit, ok := call.Args[0].(*ast.CompositeLit)
			if !ok || len(lit.Elts) == 0 {
				return true
			}
			var parts []string
			for _, e := range lit.Elts {
				bl, ok := e.(*ast.BasicLit)
				if !ok || bl.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(bl.Value)
				if err != nil {
					return true
				}
				parts = append(parts, s)
			}
			found[strings.Join(parts, ".")] = fmt.Sprintf("%s:%d", rel, fset.Position(call.Pos()).Line)
			return true
		})
		return nil
	})
	return found, err
}
