//go:build linux

package command

import "syscall"

// demoSysProcAttr puts an agent in its own process group (so a terminal's
// Ctrl-C reaches the demo only, which then stops the agents in order) and
// asks Linux to send it SIGTERM should the demo die without cleaning up.
func demoSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
