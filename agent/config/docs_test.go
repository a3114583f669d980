package config

import (
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
)

// allKeys lists every key path of Config, e.g. "ports.http".
func allKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ",")
		key := joinKey(prefix, name)
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Ptr && ft.Elem().Kind() == reflect.Struct {
			keys = append(keys, allKeys(ft.Elem(), key)...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

// TestDocsListEveryKey keeps docs/config.md complete: every key must appear
// in it, as a heading or table row, in its block's section.
func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for _, key := range allKeys(reflect.TypeOf(Config{}), "") {
		parts := strings.Split(key, ".")
		leaf := parts[len(parts)-1]
		section := text
		if len(parts) > 1 {
			// The block's section starts at its "## `block`" heading.
			heading := "## `" + parts[0] + "`"
			i := strings.Index(text, heading)
			if i < 0 {
				t.Errorf("docs/config.md has no section %s", heading)
				continue
			}
			section = text[i:]
			if j := strings.Index(section[len(heading):], "\n## "); j >= 0 {
				section = section[:len(heading)+j]
			}
		}
		if !strings.Contains(section, "`"+leaf+"`") {
			t.Errorf("docs/config.md does not document %s", key)
		}
	}
}

// TestFlagsMatchKeys checks that AddFlags registers exactly the flags named
// in flagForKey, so flag errors name a flag that exists.
func TestFlagsMatchKeys(t *testing.T) {
	var opts LoadOpts
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	AddFlags(fs, &opts)
	registered := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { registered["-"+f.Name] = true })
	valid := map[string]bool{}
	for _, k := range allKeys(reflect.TypeOf(Config{}), "") {
		valid[k] = true
	}
	named := map[string]bool{"-config-file": true, "-config-dir": true}
	for key, fl := range flagForKey {
		if !valid[key] {
			t.Errorf("flagForKey has unknown key %s", key)
		}
		if !registered[fl] {
			t.Errorf("flag %s for %s is not registered", fl, key)
		}
		named[fl] = true
	}
	for fl := range registered {
		if !named[fl] {
			t.Errorf("flag %s is registered but not in flagForKey", fl)
		}
	}
}

func TestIPv6Bind(t *testing.T) {
	path := writeFile(t, t.TempDir(), "v6.hcl", "data_dir = \"/x\"\nbind_addr = \"::1\"\njoin = [\"[::1]:8302\", \"::1\"]\n")
	rt, _ := mustLoad(t, LoadOpts{ConfigFiles: []string{path}})
	if rt.BindAddr != "::1" || rt.AdvertiseAddr != "::1" {
		t.Fatalf("bind %q advertise %q", rt.BindAddr, rt.AdvertiseAddr)
	}
}
