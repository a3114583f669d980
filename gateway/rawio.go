package gateway

import (
	"io"
	"net"
	"os"
	"sync"
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

	// The callbacks RawConn runs are made once: a closure made per call
	// escapes through the RawConn interface, and its captured variables
	// with it, a handful of allocations per request. Their arguments and
	// results go through these fields, one read and one write at a time.
	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
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
	s := &socketIO{rc: rc, conn: conn}
	s.readFn, s.writeFn = s.readOnce, s.writeSome
	return s
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
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.rbuf, s.rn, s.rerrno = b, 0, 0
	err := s.rc.Read(s.readFn)
	n, errno := s.rn, s.rerrno
	s.rbuf = nil // the caller's buffer is not ours to keep
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

// readOnce is Read's RawConn callback: false asks RawConn to wait in the
// netpoller and call again.
func (s *socketIO) readOnce(fd uintptr) bool {
	for {
		r, e := sysRead(fd, s.rbuf)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		s.rn, s.rerrno = r, e
		return true
	}
}

func (s *socketIO) Write(b []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf, s.wn, s.werrno = b, 0, 0
	err := s.rc.Write(s.writeFn)
	written, errno := s.wn, s.werrno
	s.wbuf = nil
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, s.opError("write", os.NewSyscallError("write", errno))
	}
	return written, nil
}

// writeSome is Write's RawConn callback: it writes until all is written
// (true), an error (true, werrno set) or a full socket buffer (false: wait
// in the netpoller and call again).
func (s *socketIO) writeSome(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		r, e := sysWrite(fd, s.wbuf[s.wn:])
		switch e {
		case 0:
			s.wn += r
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werrno = e
			return true
		}
	}
	return true
}

func (s *socketIO) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.conn.LocalAddr(), Addr: s.conn.RemoteAddr(), Err: err}
}
