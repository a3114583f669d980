package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(testutil.Addr(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case server = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("accept timed out")
	}
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestSocketIOIsRawForTCPOnly(t *testing.T) {
	c, _ := tcpPair(t)
	if _, ok := newSocketIO(c).(*socketIO); !ok {
		t.Errorf("newSocketIO(%T) is not raw", c)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got := newSocketIO(p1); got != io.ReadWriter(p1) {
		t.Errorf("newSocketIO(net.Pipe) = %T, want the conn itself", got)
	}
	if got := withSocketIO(p1); got != p1 {
		t.Errorf("withSocketIO(net.Pipe) = %T, want the conn itself", got)
	}
}

// TestSocketIOMovesBytesBothWays sends more than the socket buffers hold in
// both directions at once, so writes wait for the peer (EAGAIN) and reads
// wait for data.
func TestSocketIOMovesBytesBothWays(t *testing.T) {
	c, s := tcpPair(t)
	cio, sio := newSocketIO(c), withSocketIO(s)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	s.SetDeadline(time.Now().Add(30 * time.Second))
	payload := make([]byte, 16<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	type result struct {
		got []byte
		err error
	}
	echo := make(chan error, 1)
	go func() {
		// The server echoes everything back as it comes.
		_, err := io.Copy(sio, io.LimitReader(sio, int64(len(payload))))
		echo <- err
	}()
	read := make(chan result, 1)
	go func() {
		got, err := io.ReadAll(io.LimitReader(cio, int64(len(payload))))
		read <- result{got, err}
	}()
	n, err := cio.Write(payload)
	if err != nil || n != len(payload) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(payload))
	}
	if err := <-echo; err != nil {
		t.Fatalf("echo: %v", err)
	}
	r := <-read
	if r.err != nil {
		t.Fatalf("read: %v", r.err)
	}
	if !bytes.Equal(r.got, payload) {
		t.Fatal("bytes read back differ from bytes written")
	}
}

func TestSocketIOEndsLikeNetConn(t *testing.T) {
	t.Run("EOF", func(t *testing.T) {
		c, s := tcpPair(t)
		s.Write([]byte("ab"))
		s.Close()
		buf := make([]byte, 8)
		cio := newSocketIO(c)
		if n, err := io.ReadFull(cio, buf[:2]); n != 2 || err != nil {
			t.Fatalf("ReadFull = %d, %v", n, err)
		}
		if n, err := cio.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, _ := tcpPair(t)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := newSocketIO(c).Read(make([]byte, 8))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past the deadline: %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("deadline set while blocked", func(t *testing.T) {
		// How the gateway interrupts a forwarding loop (aLongTimeAgo).
		c, _ := tcpPair(t)
		done := make(chan error, 1)
		go func() {
			_, err := newSocketIO(c).Read(make([]byte, 8))
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		c.SetReadDeadline(aLongTimeAgo)
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("interrupted Read: %v, want os.ErrDeadlineExceeded", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Read was not interrupted by the deadline")
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := tcpPair(t)
		cio := newSocketIO(c)
		done := make(chan error, 1)
		go func() {
			_, err := cio.Read(make([]byte, 8))
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		c.Close()
		select {
		case err := <-done:
			if !isDisconnect(err) {
				t.Fatalf("Read on a closed conn: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Read was not ended by Close")
		}
		if _, err := cio.Write([]byte("x")); !isDisconnect(err) {
			t.Fatalf("Write on a closed conn: %v, want net.ErrClosed", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, s := tcpPair(t)
		s.(*net.TCPConn).SetLinger(0) // close with RST
		s.Close()
		cio := newSocketIO(c)
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = cio.Write(make([]byte, 1024))
			time.Sleep(10 * time.Millisecond)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "write" {
			t.Fatalf("Write to a reset conn: %v, want a *net.OpError from write", err)
		}
	})
}

// TestSocketIODoesNotAllocate: a read and a write on the forwarding path
// allocate nothing (the RawConn callbacks are made once per socket).
func TestSocketIODoesNotAllocate(t *testing.T) {
	c, s := tcpPair(t)
	cio, sio := newSocketIO(c), newSocketIO(s)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	s.SetDeadline(time.Now().Add(30 * time.Second))
	msg := []byte("Q\x00\x00\x00\x0dSELECT 1;\x00")
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := cio.Write(msg); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(msg); {
			n, err := sio.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("a write and a read allocate %.1f times, want 0", allocs)
	}
}
