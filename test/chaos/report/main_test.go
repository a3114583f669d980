package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	in := `{"scenario":"KillPrimaryNode","round":1,"seed":1,"nodes":3,"ok":true,"failover_gaps_ms":[1000,3000],"errors_by_sqlstate":{"40003":2,"08007":1},"checkers":[{"checker":"split-brain","ok":true,"stats":{"values":{"split_brains":0}}}]}
{"scenario":"KillPrimaryNode","round":2,"seed":1,"nodes":3,"ok":false,"problems":["checker append failed"],"failover_gaps_ms":[2000],"checkers":[{"checker":"append","ok":false,"stats":{"values":{"lost":3}}}]}

{"scenario":"SwitchoverStorm","round":1,"seed":1,"nodes":3,"ok":true}
`
	rounds, err := read(strings.NewReader(in), "test")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := render(&b, rounds, "test"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| KillPrimaryNode | 3 | 2 | 1 | 2.00 s | 3.00 s | 3 | 0 | 40003 2, 08007 1 | **FAIL** |",
		"| SwitchoverStorm | 3 | 1 | 1 | – | – | 0 | 0 | none | PASS |",
		"KillPrimaryNode, round 2 (seed 1): checker append failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestReadRejectsGarbage(t *testing.T) {
	if _, err := read(strings.NewReader("{\"round\":1}\n"), "x"); err == nil || !strings.Contains(err.Error(), "x:1") {
		t.Fatalf("a round without a scenario: err = %v", err)
	}
	if _, err := read(strings.NewReader("not json\n"), "x"); err == nil {
		t.Fatal("garbage accepted")
	}
}
