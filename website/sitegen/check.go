package sitegen

import (
	"fmt"
	"html"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

var (
	reRef = regexp.MustCompile(`\s(href|src)="([^"]*)"`)
	reID  = regexp.MustCompile(`\sid="([^"]*)"`)
)

// CheckLinks checks every internal link and anchor of the HTML files in
// dir: the file a link names must exist in dir, and the fragment must be
// an id in it. External links (with a scheme) are not followed: the site is
// built and checked with no network. It returns one line per problem.
func CheckLinks(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.html"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no HTML files in %s", dir)
	}
	ids := map[string]map[string]bool{}
	pages := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		name := filepath.Base(f)
		pages[name] = string(data)
		set := map[string]bool{}
		for _, m := range reID.FindAllStringSubmatch(string(data), -1) {
			id := html.UnescapeString(m[1])
			if set[id] {
				return nil, fmt.Errorf("%s: id %q used twice", name, id)
			}
			set[id] = true
		}
		ids[name] = set
	}
	var problems []string
	names := make([]string, 0, len(pages))
	for n := range pages {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, m := range reRef.FindAllStringSubmatch(pages[name], -1) {
			ref := html.UnescapeString(m[2])
			if ref == "" {
				problems = append(problems, fmt.Sprintf("%s: empty %s", name, m[1]))
				continue
			}
			u, err := url.Parse(ref)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: bad link %q: %v", name, ref, err))
				continue
			}
			if u.Scheme != "" || strings.HasPrefix(ref, "//") {
				if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "mailto" {
					problems = append(problems, fmt.Sprintf("%s: link %q has an unexpected scheme", name, ref))
				}
				continue
			}
			target := name
			if u.Path != "" {
				if strings.Contains(u.Path, "/") || strings.HasPrefix(u.Path, ".") {
					problems = append(problems, fmt.Sprintf("%s: link %q leaves the site's directory", name, ref))
					continue
				}
				target = u.Path
				if _, err := os.Stat(filepath.Join(dir, target)); err != nil {
					problems = append(problems, fmt.Sprintf("%s: link %q: no file %s", name, ref, target))
					continue
				}
			}
			if u.Fragment != "" {
				set, ok := ids[target]
				if !ok {
					problems = append(problems, fmt.Sprintf("%s: link %q: anchor in a file that is not a page", name, ref))
					continue
				}
				if !set[u.Fragment] {
					problems = append(problems, fmt.Sprintf("%s: link %q: %s has no id %q", name, ref, target, u.Fragment))
				}
			}
		}
	}
	return problems, nil
}
