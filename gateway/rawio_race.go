//go:build race

package gateway

import "syscall"

// Under the race detector, socketIO goes through syscall.Read and Write:
// they tell the detector that a write happens before the read that sees
// it, as net.Conn's do, and raw system calls would not (false reports).

func sysRead(fd uintptr, b []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), b)
	return errnoResult(n, err)
}

func sysWrite(fd uintptr, b []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), b)
	return errnoResult(n, err)
}

func errnoResult(n int, err error) (int, syscall.Errno) {
	if err != nil {
		if errno, ok := err.(syscall.Errno); ok {
			return 0, errno
		}
		return 0, syscall.EIO
	}
	return n, 0
}
