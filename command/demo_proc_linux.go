//go:build linux

package command

import (
	"syscall"
	"unsafe"
)

// demoSysProcAttr puts an agent in its own process group (so a terminal's
// Ctrl-C reaches the demo only, which then stops the agents in order) and
// asks Linux to send it SIGTERM should the demo die without cleaning up.
func demoSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// isTTY reports whether fd is a terminal: TCGETS succeeds only on one.
func isTTY(fd uintptr) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
