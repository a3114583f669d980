package workload

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	ctx := context.Background()
	good := Config{DSN: "host=127.0.0.9 port=1 user=x password=hunter2-secret", Duration: time.Second}
	bad := map[string]func(c *Config){
		"no DSN":          func(c *Config) { c.DSN = "" },
		"no duration":     func(c *Config) { c.Duration = 0 },
		"huge duration":   func(c *Config) { c.Duration = 48 * time.Hour },
		"negative ops":    func(c *Config) { c.MaxOps = -1 },
		"too many ops":    func(c *Config) { c.MaxOps = MaxOpsLimit + 1 },
		"too many":        func(c *Config) { c.Clients = MaxClients + 1 },
		"bad table":       func(c *Config) { c.Table = `x"; DROP TABLE y; --` },
		"upper-case name": func(c *Config) { c.Table = "Register" },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			if _, err := RunRegister(ctx, RegisterConfig{Config: c}); err == nil {
				t.Fatal("RunRegister accepted it")
			}
			if _, _, err := RunBank(ctx, BankConfig{Config: c}); err == nil {
				t.Fatal("RunBank accepted it")
			}
			if _, _, err := RunAppend(ctx, AppendConfig{Config: c}); err == nil {
				t.Fatal("RunAppend accepted it")
			}
		})
	}
	c := good
	if _, err := RunRegister(ctx, RegisterConfig{Config: c, Keys: -3}); err == nil {
		t.Fatal("negative keys accepted")
	}
	if _, _, err := RunBank(ctx, BankConfig{Config: c, Accounts: 1}); err == nil {
		t.Fatal("a one-account bank accepted")
	}
	c.DSN = "postgres://user:hunter2-secret@%zz"
	_, err := RunRegister(ctx, RegisterConfig{Config: c})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("unparseable DSN: %v", err)
	}
	if _, err := StartWriteGap(ctx, WriteGapConfig{DSN: good.DSN, Interval: 2 * time.Second}); err == nil {
		t.Fatal("write-gap interval of 2s accepted")
	}
}

// Setup against an address where nothing listens gives up within
// SetupTimeout with an error, rather than hanging.
func TestSetupGivesUp(t *testing.T) {
	c := Config{DSN: "host=127.0.0.1 port=1 user=x password=y connect_timeout=1", Duration: time.Second, SetupTimeout: 500 * time.Millisecond}
	started := time.Now()
	_, err := RunRegister(context.Background(), RegisterConfig{Config: c})
	if err == nil {
		t.Fatal("setup against nothing succeeded")
	}
	if time.Since(started) > 10*time.Second {
		t.Fatalf("setup took %v to give up", time.Since(started))
	}
}
