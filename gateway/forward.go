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

// maxHeldPrelude caps the start of an answer serverToClient keeps back
// while a fence's refusal may follow (ParseComplete, BindComplete and
// descriptions: a RowDescription of a hundred columns fits).
const maxHeldPrelude = 8 << 10

// maxTrackedServerMessage caps back-end messages the tracker decodes
// (ErrorResponse, CommandComplete, ...); bigger ones are passed through and
// the session is marked untrackable.
const maxTrackedServerMessage = 1 << 20

// forward moves messages both ways until the session ends, moving it to a
// new back end when its primary changes or its back end is lost and the
// session can be moved (see migrate.go).
func (s *session) forward() {
	for {
		s.mu.Lock()
		be := s.be
		s.mu.Unlock()
		var ok bool
		switch next, rerun := s.runBackend(be); next {
		case nextEnd:
			return
		case nextMove:
			ok = s.moveIdle(be)
		case nextLost:
			ok = s.recoverLost(be, rerun)
		case nextReject:
			// Held past HoldTimeout: the request is refused and the
			// session stays on its back end.
			ok = s.rejectRequest(codeCannotConnectNow, fmt.Sprintf(
				"no writable primary became available within the gateway's hold timeout of %s", s.g.cfg.HoldTimeout)) == nil
			if !ok {
				be.conn.Close()
			}
		}
		if !ok {
			s.cw.Flush()
			return
		}
	}
}

// What forward does after runBackend.
const (
	nextEnd    = iota // the session is over
	nextMove          // idle, and the primary changed: move it
	nextLost          // the back end is gone
	nextReject        // a held request timed out: refuse it, then go on
)

// runBackend forwards between the client and be until the client ends the
// session, the back end is lost, or the session must move. rerun is set
// when the request in flight at the loss may be sent again (see
// recoverLost).
func (s *session) runBackend(be *backend) (next int, rerun bool) {
	s.resetInterrupt()
	be.conn.SetDeadline(noDeadline) // a previous run may have stopped it
	s2cDone := make(chan struct{})
	s.ctl.Lock()
	s.s2cDone = s2cDone
	s.ctl.Unlock()
	if v := s.g.currentView(); !s.l.readOnly && v != nil && v.fresh && v.target.Epoch != be.target.Epoch {
		// The primary changed again while this back end was being set up.
		s.interrupt(intrMove)
	}
	var serr error
	var mid bool
	go func() {
		mid, serr = s.serverToClient(be)
		var cwe *clientWriteError
		if errors.As(serr, &cwe) {
			s.stopping.Store(true)
			s.interrupt(intrEnd)
		} else {
			s.interrupt(intrLost)
		}
		// Unblock a write to a back end that stopped reading.
		be.conn.SetWriteDeadline(aLongTimeAgo)
		close(s2cDone)
	}()
	cerr := s.clientToServer(be)

	if errors.Is(cerr, errMove) || errors.Is(cerr, errLost) || errors.Is(cerr, errHoldTimeout) {
		if !errors.Is(cerr, errLost) {
			be.conn.SetReadDeadline(aLongTimeAgo) // stop serverToClient
		}
		<-s2cDone
		reason := s.interruptReason()
		switch {
		case reason&intrEnd != 0 || s.g.ctx.Err() != nil:
			be.conn.Close()
			return nextEnd, false
		case mid:
			// The back end's message to the client was cut in the middle:
			// the client's stream cannot be repaired.
			be.conn.Close()
			s.logger.Warn("back end lost in the middle of a message to the client; closing the session")
			return nextEnd, false
		case errors.Is(cerr, errHoldTimeout) && reason&intrLost != 0 && !errors.Is(serr, os.ErrDeadlineExceeded):
			// Lost while we gave up holding: the loss decides.
		case errors.Is(cerr, errHoldTimeout):
			return nextReject, false
		case errors.Is(cerr, errMove):
			// Idle: say goodbye to the old back end properly.
			be.conn.SetWriteDeadline(time.Now().Add(time.Second))
			be.conn.Write([]byte{'X', 0, 0, 0, 4})
			be.conn.Close()
			return nextMove, false
		}
		be.conn.Close()
		if serr != nil && !isDisconnect(serr) && !errors.Is(serr, os.ErrDeadlineExceeded) && !errors.Is(serr, errBackendShutdown) && !errors.Is(serr, errFenceRefusal) {
			s.logger.Debug("back end lost", "error", serr)
		}
		return nextLost, s.recOK
	}

	// The client ended the session (or the gateway is closing).
	s.stopping.Store(true)
	// Let the back end see the client's end: Terminate was forwarded, or
	// the connection closes.
	be.w.Flush()
	be.conn.SetReadDeadline(time.Now().Add(time.Second))
	be.conn.Close()
	<-s2cDone

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
	return nextEnd, false
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
// the tracker needs. It returns errMove or errLost, with the client's next
// message unread, when the session must leave be.
func (s *session) clientToServer(be *backend) error {
	r, w := s.cr, be.w
	maxLen := s.g.cfg.MaxMessageSize
	idle := s.g.cfg.IdleTimeout
	bytesIn := &s.l.bytesIn
	movable := !s.l.readOnly
	for {
		if idle > 0 && r.Buffered() == 0 && s.track.quiet() {
			s.client.SetReadDeadline(time.Now().Add(idle))
		}
		if err := s.enterWait(); err != nil {
			return err
		}
		hdr, err := fill(r, w, 5)
		if ierr := s.leaveWait(); ierr != nil {
			s.client.SetReadDeadline(noDeadline)
			return ierr
		}
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

		// The answer to the previous request may have come in while we
		// waited: ask again.
		if movable && typ != 'X' && s.track.quiet() {
			// A new request. While the primary is in doubt it waits here,
			// unread; it is recorded so it can be sent again if the back
			// end is lost before answering (recoverLost).
			if v := s.g.currentView(); v != nil && (!v.writable() || v.target.Epoch != be.target.Epoch) {
				if err := w.Flush(); err != nil {
					return err
				}
				if err := s.hold(be); err != nil {
					return err
				}
			}
			s.resetRecord()
		}
		bytesIn.Add(int64(total))

		switch typ {
		case 'Q', 'P', 'E', 'C':
			msg, err := readMessage(r, w, total, &s.scratch)
			if err != nil {
				return err
			}
			body := msg[5:]
			var capture, captureAfter []byte
			switch typ {
			case 'Q':
				s.requestStarted()
				q := body
				if len(q) > 0 && q[len(q)-1] == 0 {
					q = q[:len(q)-1]
				}
				before, after := s.track.query(unsafeString(q))
				if before {
					capture = xidQuerySimple
				}
				if after {
					captureAfter = xidQuerySimple
				}
			case 'P':
				s.track.parse(body)
			case 'E':
				// The capture after a write goes within the client's
				// batch, before its Sync.
				capture, captureAfter = s.track.executeCapture(body)
			case 'C':
				s.track.closeMsg(body)
			}
			if capture != nil {
				// The COMMIT's transaction id, asked for in the same write
				// (capture.go).
				if _, err := w.Write(capture); err != nil {
					return err
				}
			}
			s.record(msg)
			if _, err := w.Write(msg); err != nil {
				return err
			}
			if captureAfter != nil {
				// The transaction's id, asked for right after its first
				// write: known before the COMMIT, even if the back end is
				// lost before it answers anything of the COMMIT.
				if _, err := w.Write(captureAfter); err != nil {
					return err
				}
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
			if err := s.copyRecorded(r, w, total); err != nil {
				return err
			}
		case 'D':
			// Describe: the tracker notes what its answer will be, for
			// a COMMIT resolved before the server answered (capture.go).
			want := 5 + 1 + 64 // NAMEDATALEN-bounded name
			if want > total {
				want = total
			}
			prefix, err := fill(r, w, want)
			if err != nil {
				return err
			}
			s.track.describe(prefix[5:])
			if err := s.copyRecorded(r, w, total); err != nil {
				return err
			}
		case 'S', 'F':
			s.requestStarted()
			s.track.sync()
			if err := s.copyRecorded(r, w, total); err != nil {
				return err
			}
		case 'X':
			if err := copyMessage(r, w, total); err != nil {
				return err
			}
			return errTerminated
		default:
			// Flush, CopyData, CopyDone, CopyFail, and anything unknown
			// (the back end judges it).
			if err := s.copyRecorded(r, w, total); err != nil {
				return err
			}
		}
	}
}

// serverToClient forwards back-end messages to the client. mid reports an
// error in the middle of a message (the client got part of it).
func (s *session) serverToClient(be *backend) (mid bool, err error) {
	r, w := be.r, s.cw
	bytesOut := &s.l.bytesOut
	movable := !s.l.readOnly
	var scratch []byte
	// The start of an answer kept back while a fence's refusal may follow
	// (hidesFenceRejection): heldN whole messages in s.held, neither
	// forwarded nor tracked yet.
	s.held = s.held[:0]
	heldN, holding := 0, false
	release := func() error {
		for b := s.held; len(b) >= 5; {
			end := 1 + int(binary.BigEndian.Uint32(b[1:5]))
			if b[0] == '1' || b[0] == '2' {
				s.track.server(b[0], b[5:end])
			}
			b = b[end:]
		}
		s.sinceReady += heldN
		_, err := w.Write(s.held)
		s.held, heldN = s.held[:0], 0
		return err
	}
	s.sinceReady = 0
	for {
		if heldN > 0 && r.Buffered() < 5 {
			// About to wait for the server: what was kept back goes out
			// first (the client may be waiting for it, after a Flush).
			holding = false
			if err := release(); err != nil {
				return true, err
			}
		}
		hdr, err := fill(r, w, 5)
		if err != nil {
			if ferr := w.Flush(); ferr != nil {
				return false, ferr
			}
			return false, err
		}
		typ := hdr[0]
		n := int(binary.BigEndian.Uint32(hdr[1:5]))
		if n < 4 {
			w.Flush()
			return false, fmt.Errorf("invalid message length %d from back end", n)
		}
		total := 1 + n
		bytesOut.Add(int64(total))
		s.sinceReady++
		if s.sinceReady == 1 && heldN == 0 {
			// An answer starts.
			holding = movable && !s.track.capturing.Load() && s.track.refusableByFence()
		}
		if holding {
			switch typ {
			case '1', '2', 'n', 't', 'T':
				if len(s.held)+total <= maxHeldPrelude {
					msg, err := readMessage(r, w, total, &scratch)
					if err != nil {
						return false, err
					}
					s.held = append(s.held, msg...)
					heldN++
					s.sinceReady--
					continue
				}
			}
			holding = false
		}
		if heldN > 0 && (typ != 'E' || total > maxTrackedServerMessage) {
			if err := release(); err != nil {
				return true, err
			}
		}
		switch typ {
		case 'T', 'D':
			if !s.track.capturing.Load() || total > maxTrackedServerMessage {
				if err := copyMessage(r, w, total); err != nil {
					return true, err
				}
				continue
			}
			msg, err := readMessage(r, w, total, &scratch)
			if err != nil {
				return false, err
			}
			if swallow, _ := s.track.captured(typ, msg[5:]); swallow {
				s.sinceReady--
				continue
			}
			if _, err := w.Write(msg); err != nil {
				return true, err
			}
		case 'Z', 'S', 'E', 'C', '1', '2', '3', 'I', 's', 'G', 'H', 'W':
			if total > maxTrackedServerMessage {
				s.track.mu.Lock()
				s.track.loseTrack()
				s.track.mu.Unlock()
				if err := copyMessage(r, w, total); err != nil {
					return true, err
				}
				continue
			}
			msg, err := readMessage(r, w, total, &scratch)
			if err != nil {
				return false, err // nothing of it was written
			}
			if typ == 'E' && movable && s.hidesShutdown(be, msg[5:]) {
				// The server is shutting down or crashed: the session may
				// survive on the next primary, so the client does not see
				// this. recoverLost decides what it sees; this message was
				// not forwarded, so a read-only request it cut may still be
				// re-run.
				s.sinceReady--
				w.Flush()
				return false, errBackendShutdown
			}
			if typ == 'E' && movable {
				if refusal, hide := s.hidesFenceRejection(msg[5:]); hide {
					// A fenced primary refused a write that did nothing:
					// recoverLost sends it again once a primary serves
					// writes.
					s.fenceRefusal = refusal
					s.sinceReady--
					w.Flush()
					return false, errFenceRefusal
				}
			}
			if heldN > 0 {
				if err := release(); err != nil {
					return true, err
				}
			}
			if s.track.capturing.Load() {
				swallow, asNotice := s.track.captured(typ, msg[5:])
				if asNotice {
					msg[0] = 'N'
					if _, err := w.Write(msg); err != nil {
						return true, err
					}
				}
				if swallow {
					s.sinceReady--
					continue
				}
			}
			if typ == 'C' {
				if h := s.g.commitHook.Load(); h != nil && s.track.commitCaptured() && (*h)() {
					return false, io.ErrUnexpectedEOF
				}
			}
			s.track.server(typ, msg[5:])
			if typ == 'Z' {
				s.sinceReady = 0
				if s.movePending.Load() {
					// A move was asked for while the session was busy.
					s.interrupt(intrMove)
				}
				s.requestDone()
				if idle := s.g.cfg.IdleTimeout; idle > 0 && s.track.idle() {
					s.client.SetReadDeadline(time.Now().Add(idle))
				}
			}
			if _, err := w.Write(msg); err != nil {
				return true, err
			}
			if cap(scratch) > maxRetainedScratch {
				scratch = nil
			}
		default:
			if err := copyMessage(r, w, total); err != nil {
				return true, err
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

// requestSampleEvery spaces the latency samples a listener hands to
// go-metrics. One sample costs more than forwarding the request itself
// (about 2.4µs and 20 allocations with the agent's in-memory and Prometheus
// sinks, under a lock all sessions share), so a busy listener samples at
// most one request per interval: up to 200 a second, plenty for the
// summary's quantiles, and nothing on the per-request path but a clock
// read and an atomic load.
const requestSampleEvery = 5 * time.Millisecond

// requestSampleKey is the metric key of request latency samples.
var requestSampleKey = []string{"gateway", "request_ms"}

// requestDone samples the latency of the request ReadyForQuery answered
// (see requestSampleEvery).
func (s *session) requestDone() {
	s.latMu.Lock()
	start := s.reqStart
	s.reqStart = 0
	s.latMu.Unlock()
	if start == 0 {
		return
	}
	now := time.Now().UnixNano()
	last := s.l.lastSample.Load()
	if now-last < int64(requestSampleEvery) || !s.l.lastSample.CompareAndSwap(last, now) {
		return
	}
	s.g.cfg.Metrics.AddSampleWithLabels(requestSampleKey, float32(now-start)/1e6, s.l.labels)
}
