package gateway

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// errMessageTooLarge ends a session whose client sent a message above
// Config.MaxMessageSize.
var errMessageTooLarge = errors.New("message too large")

// maxTrackedServerMessage caps back-end messages the tracker decodes
// (ErrorResponse, CommandComplete, ...); bigger ones are passed through and
// the session is marked untrackable.
const maxTrackedServerMessage = 1 << 20

// forward moves messages both ways until either side ends.
func (s *session) forward() {
	s.mu.Lock()
	be := s.be
	s.mu.Unlock()

	done := make(chan error, 1)
	go func() {
		err := s.serverToClient(be)
		s.stopping.Store(true)
		// The back end is gone or the client cannot be written to: stop
		// the other direction too. (Issue 6 replaces this with a move to
		// another back end when the session is movable.)
		s.client.SetReadDeadline(aLongTimeAgo)
		done <- err
	}()
	cerr := s.clientToServer(be)
	var bwe *backendWriteError
	if !errors.As(cerr, &bwe) {
		// The client ended the session; a lost back end is reported by
		// serverToClient instead.
		s.stopping.Store(true)
	}
	// Let the back end see the client's end: Terminate was forwarded, or
	// the connection closes.
	be.w.Flush()
	be.conn.SetReadDeadline(time.Now().Add(time.Second))
	be.conn.Close()
	serr := <-done

	switch {
	case errors.Is(cerr, errMessageTooLarge):
		s.l.errors.Add(1)
		s.fatal(codeProtocolViolation, fmt.Sprintf("message exceeds the gateway's max message size of %d bytes", s.g.cfg.MaxMessageSize))
	case errors.Is(cerr, errIdleTimeout):
		s.fatal(codeIdleSessionTimeout, "terminating connection due to idle-session timeout")
	case cerr != nil && !isDisconnect(cerr) && !errors.Is(cerr, os.ErrDeadlineExceeded) && !errors.Is(cerr, errTerminated):
		s.l.errors.Add(1)
		s.logger.Debug("client side ended", "error", cerr)
	}
	if serr != nil && !isDisconnect(serr) && !errors.Is(serr, os.ErrDeadlineExceeded) {
		s.logger.Debug("server side ended", "error", serr)
	}
	s.cw.Flush()
}

var (
	errTerminated  = errors.New("client sent Terminate")
	errIdleTimeout = errors.New("idle session timeout")
)

// fill returns the next n bytes of r without consuming them, flushing w
// first when it would have to wait for the network: requests the client
// pipelines go out in one write, and nothing sits in a buffer while we block.
func fill(r *bufio.Reader, w *bufio.Writer, n int) ([]byte, error) {
	if r.Buffered() < n && w.Buffered() > 0 {
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	return r.Peek(n)
}

// copyMessage copies a whole message of total bytes (header included) from
// r to w without allocating: through r's buffer, in pieces if it is larger.
func copyMessage(r *bufio.Reader, w *bufio.Writer, total int) error {
	for total > 0 {
		chunk := r.Buffered()
		if chunk == 0 {
			if _, err := fill(r, w, 1); err != nil {
				return err
			}
			chunk = r.Buffered()
		}
		if chunk > total {
			chunk = total
		}
		b, _ := r.Peek(chunk)
		if _, err := w.Write(b); err != nil {
			return err
		}
		r.Discard(chunk)
		total -= chunk
	}
	return nil
}

// readMessage returns a whole message (header included) from r, consumed.
// Messages that fit the read buffer are returned in place (valid until the
// next read); larger ones go to the reusable scratch buffer.
func readMessage(r *bufio.Reader, w *bufio.Writer, total int, scratch *[]byte) ([]byte, error) {
	if total <= r.Size() {
		b, err := fill(r, w, total)
		if err != nil {
			return nil, err
		}
		r.Discard(total)
		return b, nil
	}
	if cap(*scratch) < total {
		*scratch = make([]byte, total)
	}
	buf := (*scratch)[:total]
	if _, err := fill(r, w, 1); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// clientToServer forwards client messages to the back end, decoding the few
// the tracker needs.
func (s *session) clientToServer(be *backend) error {
	r, w := s.cr, be.w
	maxLen := s.g.cfg.MaxMessageSize
	idle := s.g.cfg.IdleTimeout
	bytesIn := &s.l.bytesIn
	for {
		if idle > 0 && r.Buffered() == 0 && s.track.idle() {
			s.client.SetReadDeadline(time.Now().Add(idle))
		}
		hdr, err := fill(r, w, 5)
		if err != nil {
			if idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !s.stopping.Load() && len(hdr) == 0 {
				return errIdleTimeout
			}
			return err
		}
		if idle > 0 {
			s.client.SetReadDeadline(noDeadline)
		}
		typ := hdr[0]
		n := int(binary.BigEndian.Uint32(hdr[1:5]))
		if n < 4 {
			return fmt.Errorf("invalid message length %d", n)
		}
		if n-4 > maxLen {
			return errMessageTooLarge
		}
		total := 1 + n
		bytesIn.Add(int64(total))

		switch typ {
		case 'Q', 'P', 'E', 'C':
			msg, err := readMessage(r, w, total, &s.scratch)
			if err != nil {
				return err
			}
			body := msg[5:]
			switch typ {
			case 'Q':
				s.requestStarted()
				q := body
				if len(q) > 0 && q[len(q)-1] == 0 {
					q = q[:len(q)-1]
				}
				s.track.query(unsafeString(q))
			case 'P':
				s.track.parse(body)
			case 'E':
				s.track.execute(body)
			case 'C':
				s.track.closeMsg(body)
			}
			if _, err := w.Write(msg); err != nil {
				return err
			}
			if cap(s.scratch) > maxRetainedScratch {
				s.scratch = nil
			}
		case 'B':
			// Only the portal and statement names at the front matter;
			// the parameters stream through.
			want := total
			if want > r.Size() {
				want = r.Size()
			}
			if want > 5+2*64+2 {
				want = 5 + 2*64 + 2 // NAMEDATALEN-bounded names
				if want > total {
					want = total
				}
			}
			prefix, err := fill(r, w, want)
			if err != nil {
				return err
			}
			s.track.bind(prefix[5:])
			if err := copyMessage(r, w, total); err != nil {
				return err
			}
		case 'S', 'F':
			s.requestStarted()
			s.track.sync()
			if err := copyMessage(r, w, total); err != nil {
				return err
			}
		case 'X':
			if err := copyMessage(r, w, total); err != nil {
				return err
			}
			return errTerminated
		default:
			// Describe, Flush, CopyData, CopyDone, CopyFail, and anything
			// unknown (the back end judges it).
			if err := copyMessage(r, w, total); err != nil {
				return err
			}
		}
	}
}

// serverToClient forwards back-end messages to the client.
func (s *session) serverToClient(be *backend) error {
	r, w := be.r, s.cw
	bytesOut := &s.l.bytesOut
	var scratch []byte
	var last byte // type of the last message forwarded
	for {
		hdr, err := fill(r, w, 5)
		if err != nil {
			if len(hdr) == 0 && last != 'E' && !s.stopping.Load() {
				// The back end went away between messages without saying
				// why (crash, network): tell the client, as libpq would
				// see it. (Issue 6 moves movable sessions here instead.)
				writeMessages(w, errorMessage("FATAL", codeConnectionFailure,
					fmt.Sprintf("the pgbattery gateway lost its connection to PostgreSQL on %s", be.target.Node)))
				s.l.errors.Add(1)
			}
			w.Flush()
			return err
		}
		typ := hdr[0]
		last = typ
		n := int(binary.BigEndian.Uint32(hdr[1:5]))
		if n < 4 {
			w.Flush()
			return fmt.Errorf("invalid message length %d from back end", n)
		}
		total := 1 + n
		bytesOut.Add(int64(total))
		switch typ {
		case 'Z', 'S', 'E', 'C', '1', '2', '3', 'I', 's', 'G', 'H', 'W':
			if total > maxTrackedServerMessage {
				s.track.mu.Lock()
				s.track.loseTrack()
				s.track.mu.Unlock()
				if err := copyMessage(r, w, total); err != nil {
					return err
				}
				continue
			}
			msg, err := readMessage(r, w, total, &scratch)
			if err != nil {
				return err
			}
			s.track.server(typ, msg[5:])
			if typ == 'Z' {
				s.requestDone()
				if idle := s.g.cfg.IdleTimeout; idle > 0 && s.track.idle() {
					s.client.SetReadDeadline(time.Now().Add(idle))
				}
			}
			if _, err := w.Write(msg); err != nil {
				return err
			}
			if cap(scratch) > maxRetainedScratch {
				scratch = nil
			}
		default:
			if err := copyMessage(r, w, total); err != nil {
				return err
			}
		}
	}
}

// requestStarted notes when the oldest unanswered request went out.
func (s *session) requestStarted() {
	s.latMu.Lock()
	if s.reqStart == 0 {
		s.reqStart = time.Now().UnixNano()
	}
	s.latMu.Unlock()
}

// requestDone samples the latency of the request ReadyForQuery answered.
func (s *session) requestDone() {
	s.latMu.Lock()
	start := s.reqStart
	s.reqStart = 0
	s.latMu.Unlock()
	if start != 0 {
		ms := float32(time.Now().UnixNano()-start) / 1e6
		s.g.cfg.Metrics.AddSampleWithLabels([]string{"gateway", "request_ms"}, ms, s.l.labels)
	}
}
