package config

import (
	"strings"
	"testing"
)

// debug.clock_control is off unless set, and a config that turns it on
// loads with a warning that says what it allows.
func TestDebugClockControl(t *testing.T) {
	dir := t.TempDir()
	rt, warnings := mustLoad(t, LoadOpts{ConfigFiles: []string{writeFile(t, dir, "off.hcl", base)}})
	if rt.Debug.ClockControl {
		t.Fatal("debug.clock_control is on by default")
	}
	for _, w := range warnings {
		if strings.Contains(w, "debug") {
			t.Fatalf("warning about debug with the block absent: %q", w)
		}
	}

	for _, src := range []struct{ name, content string }{
		{"on.hcl", base + "debug {\n  clock_control = true\n}\n"},
		{"on.json", `{"data_dir": "/var/lib/pgbattery", "bind_addr": "127.0.0.2", "debug": {"clock_control": true}}`},
	} {
		rt, warnings := mustLoad(t, LoadOpts{ConfigFiles: []string{writeFile(t, dir, src.name, src.content)}})
		if !rt.Debug.ClockControl {
			t.Fatalf("%s: debug.clock_control not on", src.name)
		}
		if len(warnings) != 1 || !strings.Contains(warnings[0], "debug.clock_control") || !strings.Contains(warnings[0], "never in production") {
			t.Fatalf("%s: warnings %q, want one about debug.clock_control", src.name, warnings)
		}
	}

	lines := loadErrors(t, LoadOpts{ConfigFiles: []string{writeFile(t, dir, "bad.hcl", base+"debug {\n  clock_control = \"yes please\"\n}\n")}})
	if len(lines) != 1 || !strings.Contains(lines[0], "bad.hcl:5") || !strings.Contains(lines[0], "clock_control") {
		t.Fatalf("a non-bool clock_control: %q", lines)
	}
	lines = loadErrors(t, LoadOpts{ConfigFiles: []string{writeFile(t, dir, "typo.hcl", base+"debug {\n  clock_contrl = true\n}\n")}})
	if len(lines) != 1 || !strings.Contains(lines[0], "clock_control") {
		t.Fatalf("a misspelt key: %q (want a suggestion of clock_control)", lines)
	}
}
