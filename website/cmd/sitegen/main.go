// Command sitegen builds pgbattery's documentation site into static HTML
// (what `make website` runs), then checks every internal link and anchor
// and reports what it found (fatal with -strict).
//
//	go run ./website/cmd/sitegen -root . -out website/public
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgbattery/pgbattery/website/sitegen"
)

func main() {
	root := flag.String("root", ".", "repository root")
	out := flag.String("out", "website/public", "output directory")
	strict := flag.Bool("strict", false, "exit 1 on a broken link or an undocumented configuration key (go test ./website/... checks the same)")
	shot := flag.String("screenshot", "", "also render the landing page with headless Chromium into this PNG (1280x800)")
	flag.Parse()

	res, err := sitegen.Build(sitegen.Options{Root: *root, Out: *out})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sitegen: %v\n", err)
		os.Exit(1)
	}
	code := 0
	for _, p := range res.Problems {
		fmt.Fprintf(os.Stderr, "sitegen: warning: %s\n", p)
		if *strict {
			code = 1
		}
	}
	broken, err := sitegen.CheckLinks(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sitegen: checking links: %v\n", err)
		os.Exit(1)
	}
	for _, b := range broken {
		fmt.Fprintf(os.Stderr, "sitegen: broken link: %s\n", b)
		if *strict {
			code = 1
		}
	}
	if *shot != "" {
		browser := sitegen.FindBrowser()
		if browser == "" {
			fmt.Fprintln(os.Stderr, "sitegen: no chromium found for -screenshot (apt-get install chromium)")
			os.Exit(1)
		}
		if err := os.MkdirAll(filepath.Dir(*shot), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "sitegen: %v\n", err)
			os.Exit(1)
		}
		if err := sitegen.Screenshot(context.Background(), browser, filepath.Join(*out, "index.html"), *shot, 1280, 800); err != nil {
			fmt.Fprintf(os.Stderr, "sitegen: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("sitegen: landing page screenshot in %s\n", *shot)
	}
	fmt.Printf("sitegen: %d pages in %s (%d configuration keys, %d commands)\n",
		len(res.Pages), *out, len(res.ConfigKeys), len(res.Commands))
	os.Exit(code)
}
