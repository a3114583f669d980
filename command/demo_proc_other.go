//go:build !linux

package command

import "syscall"

// demoSysProcAttr puts an agent in its own process group, so a terminal's
// Ctrl-C reaches the demo only, which then stops the agents in order. There
// is no parent-death signal outside Linux: the demo's signal handler is the
// only cleanup.
func demoSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// isTTY cannot ask the terminal driver portably here; a character device
// is taken for a terminal.
func isTTY(fd uintptr) bool { return true }
