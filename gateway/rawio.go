package gateway

import (
	"io"
	"net"
	"os"
	"syscall"
)

// socketIO reads and writes a plain TCP connection with raw system calls
// through its syscall.RawConn, waiting in Go's netpoller as net.Conn does.
//
// Why: a request and its answer make a session's goroutines go idle twice,
// and then every P is idle. The runtime's sysmon thread then sleeps on a
// note, and the next read or write that enters the system call through
// syscall.Syscall wakes it (a futex wake-up on the forwarding path, then
// sysmon's own sleeps and wake-ups competing for the CPUs): measured with
// perf at pgbench -c 1, about 1.4 context switches, 0.8 nanosleeps and
// half a futex call per transaction, more than PgBouncer's whole
// 2 context switches. A raw system call on a non-blocking socket never
// blocks, so it needs none of that bookkeeping (see TestGatewaySyscalls,
// build tag bench). Deadlines, Close and errors behave as with net.Conn:
// RawConn's waits honour them. Race-detector builds use syscall.Read and
// Write instead (rawio_race.go).
type socketIO struct {
	rc   syscall.RawConn
	conn net.Conn // for error messages
}

// newSocketIO returns raw-syscall I/O for conn if it is a plain TCP
// connection, or conn itself (TLS, test pipes, custom dialers).
func newSocketIO(conn net.Conn) io.ReadWriter {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return conn
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return conn
	}
	return &socketIO{rc: rc, conn: conn}
}

// withSocketIO returns conn with its Read and Write through socketIO when it
// is a plain TCP connection, for crypto/tls, which wants a net.Conn.
func withSocketIO(conn net.Conn) net.Conn {
	if sio, ok := newSocketIO(conn).(*socketIO); ok {
		return &socketConn{Conn: conn, io: sio}
	}
	return conn
}

type socketConn struct {
	net.Conn
	io *socketIO
}

func (c *socketConn) Read(b []byte) (int, error)  { return c.io.Read(b) }
func (c *socketConn) Write(b []byte) (int, error) { return c.io.Write(b) }

func (s *socketIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			r, e := sysRead(fd, b)
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the netpoller
			}
			n, errno = r, e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err // deadline, closed: already a *net.OpError
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *socketIO) Write(b []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	err := s.rc.Write(func(fd uintptr) bool {
		for written < len(b) {
			r, e := sysWrite(fd, b[written:])
			switch e {
			case 0:
				written += r
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait in the netpoller
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, s.opError("write", os.NewSyscallError("write", errno))
	}
	return written, nil
}

func (s *socketIO) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.conn.LocalAddr(), Addr: s.conn.RemoteAddr(), Err: err}
}
