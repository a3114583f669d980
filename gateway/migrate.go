package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-metrics"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgbattery/pgbattery/gateway/sqlclass"
)

// Session migration (issue 6, phase 1).
//
// The gateway watches the Router (watchRouter) and keeps its view in an
// atomic pointer the per-request path reads. A session checks the view when
// a new request arrives at a quiet boundary (outside a transaction, nothing
// in flight): while the primary is in doubt (stale view, or a new epoch) the
// request stays unread in the client's socket (hold); when the view is fresh
// again with the same epoch the session continues on its back end
// (suspicion refuted), with a new epoch it moves. Quiet sessions that send
// nothing are moved too: watchRouter pokes them when a new epoch is named.
//
// A move opens a back end on the new primary with the session's start-up
// parameters and its SCRAM ClientKey, checks it is not a hot standby,
// replays the SETs, SQL PREPAREs, LISTENs and protocol-level prepared
// statements (Parse with the same name, text and parameter types), tells the
// client about ParameterStatus values that differ, and resumes forwarding.
//
// A lost back end (EOF, reset, or a FATAL admin/crash shutdown message,
// which the client does not see) is answered as design.md §6 says; see
// recoverLost.

var (
	errMove            = errors.New("session moves to a new primary")
	errLost            = errors.New("back end lost")
	errHoldTimeout     = errors.New("hold timeout")
	errBackendShutdown = errors.New("back end is shutting down")
	errFenceRefusal    = errors.New("back end refused a write: read-only (fenced)")
)

// Interrupt reasons, set on the session by other goroutines.
const (
	intrLost uint8 = 1 << iota // the back end is gone
	intrMove                   // a new primary is named: move when quiet
	intrEnd                    // the client is gone
)

// maxRerunRequest caps the recorded copy of an autocommit request that may be
// sent again after a lost back end; bigger requests are not re-run.
const maxRerunRequest = 64 << 10

// Retry pacing while waiting for a new primary to accept connections.
const (
	reattachRetryMin = 50 * time.Millisecond
	reattachRetryMax = time.Second
)

// routeView is one snapshot of the Router.
type routeView struct {
	target  Target
	fresh   bool
	changed <-chan struct{}
}

// writable reports a view that names a primary new transactions may go
// to: fresh, and not draining for a switchover.
func (v *routeView) writable() bool { return v.fresh && !v.target.Draining }

// MigrationStats counts what failovers did to sessions on this gateway.
type MigrationStats struct {
	// Migrated counts sessions re-attached to a new back end.
	Migrated int64
	// Held counts requests that waited for a primary.
	Held int64
	// PinnedClosed counts sessions closed with 57P01 because they could
	// not be moved.
	PinnedClosed int64
	// Rerun counts requests sent again on the new primary: read-only ones
	// cut by a lost back end, and writes a fenced primary refused.
	Rerun int64
	// Aborted (40001) and Unknown (40003) count the errors given for work
	// in flight on a lost back end, COMMITs excepted.
	Aborted, Unknown int64
	// COMMITs in flight on a lost back end, by how they were resolved on
	// the new primary: CommitCommitted were answered with success (they
	// committed, or the transaction had no transaction id and so nothing
	// to commit); CommitAborted certainly did not commit (40001, or
	// ROLLBACK for a transaction that had already failed); CommitUnknown
	// got 08007.
	CommitCommitted, CommitAborted, CommitUnknown int64
	// Failed counts sessions that could not be re-attached in time.
	Failed int64
	// MaxHold is the longest a request or a move waited for a writable
	// primary since the gateway started.
	MaxHold time.Duration
}

// MigrationStats returns the migration counters.
func (g *Gateway) MigrationStats() MigrationStats {
	return MigrationStats{
		Migrated: g.stats.migrated.Load(), Held: g.stats.held.Load(), PinnedClosed: g.stats.pinned.Load(),
		Rerun: g.stats.rerun.Load(), Aborted: g.stats.aborted.Load(), Unknown: g.stats.unknown.Load(),
		CommitCommitted: g.stats.commitCommitted.Load(), CommitAborted: g.stats.commitAborted.Load(),
		CommitUnknown: g.stats.commitUnknown.Load(), Failed: g.stats.failed.Load(),
		MaxHold: time.Duration(g.stats.maxHold.Load()),
	}
}

// sub returns the counters' growth since base (MaxHold is kept).
func (m MigrationStats) sub(base MigrationStats) MigrationStats {
	return MigrationStats{
		Migrated: m.Migrated - base.Migrated, Held: m.Held - base.Held, PinnedClosed: m.PinnedClosed - base.PinnedClosed,
		Rerun: m.Rerun - base.Rerun, Aborted: m.Aborted - base.Aborted, Unknown: m.Unknown - base.Unknown,
		CommitCommitted: m.CommitCommitted - base.CommitCommitted, CommitAborted: m.CommitAborted - base.CommitAborted,
		CommitUnknown: m.CommitUnknown - base.CommitUnknown, Failed: m.Failed - base.Failed, MaxHold: m.MaxHold,
	}
}

// noteHold records how long a request or a move waited for a primary.
func (g *Gateway) noteHold(d time.Duration, labels []metrics.Label) {
	g.cfg.Metrics.AddSampleWithLabels([]string{"gateway", "hold_ms"}, float32(d)/1e6, labels)
	for {
		cur := g.stats.maxHold.Load()
		if int64(d) <= cur || g.stats.maxHold.CompareAndSwap(cur, int64(d)) {
			break
		}
	}
	for {
		cur := g.stats.windowMaxHold.Load()
		if int64(d) <= cur || g.stats.windowMaxHold.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

func (g *Gateway) loadView() *routeView {
	changed := g.router.Changed()
	t, fresh := g.router.Primary()
	return &routeView{target: t, fresh: fresh && t.Addr != "", changed: changed}
}

// currentView returns the router's view, reloading it if it changed since
// watchRouter last stored it (so a request right after a change sees it).
func (g *Gateway) currentView() *routeView {
	v := g.view.Load()
	if v == nil {
		return nil
	}
	select {
	case <-v.changed:
		nv := g.loadView()
		if g.view.CompareAndSwap(v, nv) {
			return nv
		}
		return g.view.Load()
	default:
		return v
	}
}

// watchRouter keeps g.view current and pokes quiet sessions when a new
// primary is named. It also delimits failovers for the summary log line: a
// window opens when the view stops being writable (stale, or draining for
// a switchover) and closes with the next epoch (summarizeFailover) or when
// the same primary is writable again.
func (g *Gateway) watchRouter() {
	lastEpoch := g.view.Load().target.Epoch
	var base MigrationStats
	inWindow := false
	openWindow := func() {
		inWindow = true
		base = g.MigrationStats()
		g.stats.windowMaxHold.Store(0)
	}
	for {
		v := g.loadView()
		g.view.Store(v)
		if !v.writable() && !inWindow {
			openWindow()
			g.logger.Debug("primary in doubt: holding new transactions", "epoch", v.target.Epoch,
				"node", v.target.Node, "draining", v.target.Draining)
		}
		if v.fresh {
			n := g.pokeSessions(v.target.Epoch)
			switch {
			case v.target.Epoch != lastEpoch:
				if !inWindow {
					openWindow()
				}
				g.logger.Debug("new primary: moving sessions", "epoch", v.target.Epoch, "node", v.target.Node, "sessions_to_move", n)
				if g.track(1) {
					go func(t Target, base MigrationStats) {
						defer g.wg.Done()
						g.summarizeFailover(t, base)
					}(v.target, base)
				}
				lastEpoch = v.target.Epoch
				inWindow = v.target.Draining
				if inWindow {
					openWindow()
				}
			case v.writable() && inWindow:
				inWindow = false
				g.logger.Debug("primary confirmed: held requests released", "epoch", v.target.Epoch,
					"held", g.MigrationStats().sub(base).Held)
			}
		}
		select {
		case <-v.changed:
		case <-g.ctx.Done():
			return
		}
	}
}

// summaryPoll paces summarizeFailover.
const summaryPoll = 100 * time.Millisecond

// summarizeFailover logs one line per change of primary, once every
// read-write session has left the old primary (or HoldTimeout passed): what
// the change did to this gateway's sessions.
func (g *Gateway) summarizeFailover(t Target, base MigrationStats) {
	start := time.Now()
	deadline := start.Add(g.cfg.HoldTimeout + 5*time.Second)
	left := 0
	for {
		left = g.sessionsNotOn(t.Epoch)
		if left == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-g.ctx.Done():
			return
		case <-time.After(summaryPoll):
		}
	}
	d := g.MigrationStats().sub(base)
	g.logger.Info("sessions moved to the new primary", "epoch", t.Epoch, "node", t.Node,
		"moved", d.Migrated, "held", d.Held, "pinned_closed", d.PinnedClosed, "rerun", d.Rerun,
		"commits_committed", d.CommitCommitted, "commits_aborted", d.CommitAborted, "commits_unknown", d.CommitUnknown,
		"errors_40001", d.Aborted, "errors_40003", d.Unknown, "failed", d.Failed,
		"max_hold", time.Duration(g.stats.windowMaxHold.Load()).Round(time.Millisecond),
		"not_moved_yet", left, "took", time.Since(start).Round(time.Millisecond))
}

// sessionsNotOn counts read-write sessions whose back end is not on epoch.
func (g *Gateway) sessionsNotOn(epoch uint64) int {
	g.mu.Lock()
	list := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		if !s.l.readOnly {
			list = append(list, s)
		}
	}
	g.mu.Unlock()
	n := 0
	for _, s := range list {
		s.mu.Lock()
		if s.be != nil && s.be.target.Epoch != epoch {
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// pokeSessions asks every read-write session not on epoch to move, and
// returns how many were asked.
func (g *Gateway) pokeSessions(epoch uint64) int {
	g.mu.Lock()
	list := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		if !s.l.readOnly {
			list = append(list, s)
		}
	}
	g.mu.Unlock()
	n := 0
	for _, s := range list {
		s.mu.Lock()
		be := s.be
		stale := be != nil && be.target.Epoch != epoch
		s.mu.Unlock()
		if !stale {
			continue
		}
		s.interrupt(intrMove)
		n++
		if !s.track.quiet() {
			// Work in flight on the old primary: a new epoch is named only
			// once the old primary's lease has ended, so it can no longer
			// commit, and its back ends were ended when it fenced; one that
			// has not answered is behind a partition and may never. Treat it
			// as lost now (design.md §6 answers for what was in flight)
			// rather than wait for a TCP timeout.
			be.conn.SetReadDeadline(aLongTimeAgo)
		}
	}
	return n
}

// moveBackendCount moves a session between per-backend counts.
func (g *Gateway) moveBackendCount(from, to string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perBackend[from]--; g.perBackend[from] <= 0 {
		delete(g.perBackend, from)
	}
	g.perBackend[to]++
}

// --- interrupting the forwarding loops ---

func (s *session) resetInterrupt() {
	s.ctl.Lock()
	s.intr, s.waiting = 0, false
	s.movePending.Store(false)
	s.ctl.Unlock()
}

func (s *session) interruptReason() uint8 {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	return s.intr
}

// interrupt records reason and wakes clientToServer if it is waiting for
// the client at a point where the reason applies.
func (s *session) interrupt(reason uint8) {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.intr |= reason
	if reason == intrMove {
		s.movePending.Store(true)
	}
	if s.waiting && (reason != intrMove || s.track.quiet()) {
		s.client.SetReadDeadline(aLongTimeAgo)
	}
}

// enterWait is called before clientToServer blocks for the next message.
func (s *session) enterWait() error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	switch {
	case s.intr&(intrLost|intrEnd) != 0:
		return errLost
	case s.intr&intrMove != 0 && s.track.quiet():
		return errMove
	}
	s.waiting = true
	return nil
}

// leaveWait is called when clientToServer has a message header (or an
// error). The header is only peeked, so returning here loses nothing.
func (s *session) leaveWait() error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.waiting = false
	switch {
	case s.intr&(intrLost|intrEnd) != 0:
		return errLost
	case s.intr&intrMove != 0 && s.track.quiet():
		return errMove
	}
	return nil
}

// --- holding ---

// hold waits, with the client's request unread, until the router names a
// fresh primary. It returns nil to go on with be (same epoch: the suspicion
// was refuted), errMove for a new epoch, errHoldTimeout, or errLost when be
// is lost meanwhile.
func (s *session) hold(be *backend) error {
	g := s.g
	g.stats.held.Add(1)
	g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "sessions_held"}, 1, s.l.labels)
	start := time.Now()
	defer func() { g.noteHold(time.Since(start), s.l.labels) }()
	s.ctl.Lock()
	lost := s.s2cDone
	s.ctl.Unlock()
	var timeout <-chan time.Time
	if g.cfg.HoldTimeout > 0 {
		t := time.NewTimer(g.cfg.HoldTimeout)
		defer t.Stop()
		timeout = t.C
	}
	for {
		v := g.currentView()
		if v.writable() {
			if v.target.Epoch == be.target.Epoch {
				return nil
			}
			return errMove
		}
		if timeout == nil {
			return errHoldTimeout
		}
		select {
		case <-v.changed:
		case <-timeout:
			return errHoldTimeout
		case <-lost:
			return errLost
		case <-g.ctx.Done():
			return g.ctx.Err()
		}
	}
}

// rejectRequest consumes the client's next request (up to its Sync or
// Query) and answers it with an error, leaving the session idle.
func (s *session) rejectRequest(code, msg string) error {
	for {
		typ, _, err := s.nextClientMessage(0)
		if err != nil {
			return err
		}
		if typ == 'X' {
			return errTerminated
		}
		if typ == 'Q' || typ == 'S' || typ == 'F' {
			break
		}
	}
	writeMessages(s.cw, errorMessage("ERROR", code, msg), &pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.cw.Flush()
}

// nextClientMessage reads one whole client message. Bodies up to keep bytes
// are returned (valid until the next read); larger ones are discarded.
func (s *session) nextClientMessage(keep int) (byte, []byte, error) {
	if err := s.cw.Flush(); err != nil {
		return 0, nil, err
	}
	hdr, err := s.cr.Peek(5)
	if err != nil {
		return 0, nil, err
	}
	typ := hdr[0]
	n := int(binary.BigEndian.Uint32(hdr[1:5]))
	if n < 4 {
		return 0, nil, fmt.Errorf("invalid message length %d", n)
	}
	if n-4 > s.g.cfg.MaxMessageSize {
		return 0, nil, errMessageTooLarge
	}
	if n-4 > keep {
		_, err := s.cr.Discard(1 + n)
		return typ, nil, err
	}
	msg, err := readMessage(s.cr, s.cw, 1+n, &s.scratch)
	if err != nil {
		return 0, nil, err
	}
	return typ, msg[5:], nil
}

// --- recording requests for a re-run ---

// resetRecord starts recording a new request.
func (s *session) resetRecord() {
	if cap(s.rec) > maxRetainedScratch {
		s.rec = nil
	}
	if s.recBig != nil {
		// The set-aside scratch buffer is free again.
		if s.spare == nil && cap(s.recBig) <= maxRetainedScratch {
			s.spare = s.recBig[:0]
		}
		s.recBig = nil
	}
	s.rec, s.recOK = s.rec[:0], true
}

// record adds msg, a whole client message, to the request being recorded.
// A message readMessage put in the scratch buffer (larger than the read
// buffer, up to maxRerunRequest) is not copied: the buffer is set aside
// and the next large message goes to the spare one. So recording costs a
// copy of at most a read buffer's worth of small messages per request;
// the large ones are copied only by recorded, after a lost back end.
func (s *session) record(msg []byte) {
	if !s.recOK {
		return
	}
	if len(s.rec)+len(s.recBig)+len(msg) > maxRerunRequest {
		s.recOK = false
		return
	}
	if s.recBig == nil && len(msg) > 0 && cap(s.scratch) > 0 && &msg[0] == &s.scratch[:1][0] {
		s.recBig, s.recBigAt = msg, len(s.rec)
		s.scratch, s.spare = s.spare, nil
		return
	}
	s.rec = append(s.rec, msg...)
}

// recorded returns the recorded request's bytes in order.
func (s *session) recorded() []byte {
	if s.recBig == nil {
		return s.rec
	}
	all := make([]byte, 0, len(s.rec)+len(s.recBig))
	all = append(all, s.rec[:s.recBigAt]...)
	all = append(all, s.recBig...)
	return append(all, s.rec[s.recBigAt:]...)
}

// copyRecorded is copyMessage that also records the message.
func (s *session) copyRecorded(r *bufio.Reader, w *bufio.Writer, total int) error {
	if s.recOK {
		if total <= r.Size() && len(s.rec)+len(s.recBig)+total <= maxRerunRequest {
			b, err := fill(r, w, total)
			if err != nil {
				return err
			}
			s.rec = append(s.rec, b...)
			_, err = w.Write(b)
			r.Discard(total)
			return err
		}
		s.recOK = false
	}
	return copyMessage(r, w, total)
}

// lastRequest returns the last whole request (the messages after the
// previous Sync, Query or FunctionCall, through the last one) in rec, a
// sequence of recorded client messages, or nil if rec does not end with
// one.
func lastRequest(rec []byte) []byte {
	start, prev := -1, 0
	for off := 0; off < len(rec); {
		if len(rec)-off < 5 {
			return nil
		}
		n := int(binary.BigEndian.Uint32(rec[off+1:]))
		if n < 4 || off+1+n > len(rec) {
			return nil
		}
		typ := rec[off]
		off += 1 + n
		if typ == 'S' || typ == 'Q' || typ == 'F' {
			start, prev = prev, off
		}
	}
	if start < 0 || prev != len(rec) {
		return nil
	}
	return rec[start:]
}

// isShutdownFatal reports an ErrorResponse body that announces the server
// shutting down or crashing (FATAL or PANIC, 57P01 / 57P02), and whether it
// could also be an administrator's pg_terminate_backend (which PostgreSQL
// words exactly like a fast shutdown).
func isShutdownFatal(body []byte) (shutdown, maybeTerminate bool) {
	severity, code, msg := errorFields(body)
	fatal := string(severity) == "FATAL" || string(severity) == "PANIC"
	shutdown = fatal && (string(code) == codeAdminShutdown || string(code) == codeCrashShutdown)
	return shutdown, shutdown && string(msg) == "terminating connection due to administrator command"
}

// errorFields returns the unlocalized severity (the localized one if the
// server sends no other), the SQLSTATE and the message of an ErrorResponse
// body; nil for what it does not have or a malformed body.
func errorFields(body []byte) (severity, code, msg []byte) {
	for len(body) > 0 && body[0] != 0 {
		field := body[0]
		v, rest, ok := cutCStringBytes(body[1:])
		if !ok {
			return nil, nil, nil
		}
		switch field {
		case 'V':
			severity = v
		case 'S':
			if severity == nil {
				severity = v
			}
		case 'C':
			code = v
		case 'M':
			msg = v
		}
		body = rest
	}
	return severity, code, msg
}

// hidesShutdown decides whether a back end's shutdown FATAL is kept from
// the client so the session can move: always for a crash or an immediate
// shutdown; for "administrator command" (fast shutdown or
// pg_terminate_backend) while the primary is in doubt or changed, or when
// the server turns out to be fenced or shutting down (stoppedServing), so
// an administrator's terminate on a healthy primary still ends the session.
func (s *session) hidesShutdown(be *backend, body []byte) bool {
	shutdown, maybeTerminate := isShutdownFatal(body)
	if !shutdown {
		return false
	}
	if !maybeTerminate {
		return true
	}
	v := s.g.currentView()
	if v == nil || !v.writable() || v.target.Epoch != be.target.Epoch {
		return true
	}
	return s.stoppedServing(be.target)
}

// fenceProbeTimeout bounds stoppedServing's connection attempt.
const fenceProbeTimeout = 2 * time.Second

// stoppedServing tells a primary's own fence, or a fast shutdown, from an
// administrator's pg_terminate_backend, which PostgreSQL words alike, while
// this gateway still sees the primary as healthy: its lease lapsed behind a
// partition that leaves this gateway connected to it (the agent's fence
// turns the server read-only before it ends the sessions), or the agent is
// restarting it. It opens a connection as the session: refused (shutting
// down), or one notServing turns down (fenced, or a standby now), means the
// server stopped serving writes. Called only for such a FATAL, so the extra
// connection is rare.
func (s *session) stoppedServing(t Target) bool {
	if s.g.ctx.Err() != nil {
		return false // this gateway is closing: the session ends anyway, with the server's word
	}
	ctx, cancel := context.WithTimeout(s.g.ctx, fenceProbeTimeout)
	defer cancel()
	be, err := s.g.dialBackend(ctx, t, s.params, s.auth)
	if err != nil {
		var berr *backendError
		return !errors.As(err, &berr) || berr.msg.Code == codeCannotConnectNow || berr.msg.Code == codeAdminShutdown
	}
	defer be.conn.Close()
	return s.notServing(be) != nil
}

// hidesFenceRejection decides whether a write refused with 25006 (read-only
// transaction) is kept from the client, to be held and sent again to a
// primary that serves writes (recoverLost); it returns the refusal's
// message for that. A primary that loses its lease
// turns read-only before it ends its sessions (the fence), and a write that
// arrives in between is refused although nothing about it was wrong. Only
// when the refusal can be the fence's and the request can be re-run whole:
//   - the client did not ask for read-only transactions (startup options,
//     or a SET of default_transaction_read_only or of the session
//     characteristics), so the server turned read-only under it: no
//     session starts on a read-only primary (notServing);
//   - the request is one Query or one batch up to a Sync, outside a
//     transaction block, and nothing of its answer reached the client:
//     nothing ran before the refused statement (it would have answered
//     CommandComplete or rows first), the refused statement had no effect
//     (PostgreSQL checks for a read-only transaction before it writes), and
//     the implicit transaction is aborted.
//
// The answer's ParseComplete, BindComplete and descriptions, which come
// before the refusal in the extended protocol, are kept back meanwhile
// (serverToClient, heldPrelude).
func (s *session) hidesFenceRejection(body []byte) (refusal string, hide bool) {
	if s.sinceReady != 1 || s.asksReadOnly() {
		return "", false
	}
	severity, code, msg := errorFields(body)
	if string(code) != codeReadOnlySQLTransaction || string(severity) != "ERROR" || len(msg) == 0 ||
		!s.track.refusableByFence() {
		return "", false
	}
	return string(msg), true
}

// --- moving ---

// idleMoveConcurrency is how many sessions with nothing to send may move
// at the same time on one gateway.
const idleMoveConcurrency = 4

// moveIdle moves a quiet session whose primary changed. A session whose
// client has a request waiting (held) moves at once; the others take turns
// (idleMoveConcurrency at a time), so that the new primary's first
// connections, and the CPU they cost, go to the sessions that wait for
// them: with every session dialling at once, a held writer waited for
// twenty idle sessions' start-ups.
func (s *session) moveIdle(old *backend) bool {
	w := s.track.inFlightWork()
	if w.pins != 0 || w.lost {
		s.closePinned(w)
		return false
	}
	if s.cr.Buffered() == 0 {
		select {
		case s.g.idleMoves <- struct{}{}:
			defer func() { <-s.g.idleMoves }()
		case <-s.g.ctx.Done():
			return false
		}
	}
	if err := s.reattach(old, nil); err != nil {
		s.reattachFailed(err)
		return false
	}
	return true
}

// recoverLost answers what was in flight on a lost back end, as design.md
// §6 says, and moves the session when it can be moved. rerun reports that
// the request in flight was recorded whole.
func (s *session) recoverLost(old *backend, rerun bool) bool {
	refusal := s.fenceRefusal
	refused := refusal != ""
	s.fenceRefusal = ""
	if s.l.readOnly {
		writeMessages(s.cw, errorMessage("FATAL", codeConnectionFailure,
			fmt.Sprintf("the pgbattery gateway lost its connection to PostgreSQL on %s", old.target.Node)))
		s.l.errors.Add(1)
		return false
	}
	w := s.track.inFlightWork()
	if w.pins != 0 || w.lost {
		s.closePinned(w)
		return false
	}
	g := s.g
	inTx := w.txStatus == 'T' || w.txStatus == 'E'
	busy := w.requests > 0 || w.partial || w.copy
	if !busy {
		if inTx {
			// Idle in a transaction: the transaction is gone; the client
			// learns it at its next statement.
			s.track.resetAfterLoss('E')
			if err := s.orphanTx(w.txStatus == 'E'); err != nil {
				return false
			}
			s.track.resetAfterLoss('I')
		}
		if err := s.reattach(old, nil); err != nil {
			s.reattachFailed(err)
			return false
		}
		return true
	}

	status := byte('I')
	var code, msg string
	switch {
	case w.commit && w.commitOnly && (w.txStatus == 'E' || w.txStatus == 'T' && w.xidState != xidNone):
		return s.resolveCommit(old, w)
	case w.commitAcked || w.autocommitDone:
		// Only ReadyForQuery was lost; the work is committed. Either the
		// COMMIT's CommandComplete reached the client (the server answers
		// only after the commit record is flushed, and replicated when
		// replication is synchronous), or every statement of an
		// autocommit simple Query completed (the server commits before
		// its last CommandComplete).
		writeMessages(s.cw, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		if err := s.cw.Flush(); err != nil {
			return false
		}
		s.track.resetAfterLoss('I')
		if err := s.reattach(old, nil); err != nil {
			s.reattachFailed(err)
			return false
		}
		return true
	case w.commit:
		code, msg = codeTransactionResolutionUnknown,
			"the connection to the primary was lost while COMMIT was in flight; whether the transaction committed is unknown (pgbattery failover)"
		g.stats.commitUnknown.Add(1)
		g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "commits_resolved"}, 1,
			append(s.l.labels[:len(s.l.labels):len(s.l.labels)], metricsLabel("outcome", outcomeUnknown)))
	case w.copy || inTx:
		if inTx {
			status = 'E'
		}
		code, msg = codeSerializationFailure,
			"the primary was lost during the transaction, which was rolled back; retry it (pgbattery failover)"
		g.stats.aborted.Add(1)
	case (w.readOnly || refused) && rerun && w.requests == 1 && !w.partial && s.sinceReady == 0 && lastRequest(s.recorded()) != nil:
		// Nothing of the answer reached the client: ask the new primary.
		// A write a fenced primary refused did nothing either: it waits
		// (holdForPrimary) for a primary that serves writes.
		req := append([]byte(nil), lastRequest(s.recorded())...)
		if err := s.reattach(old, req); err != nil {
			s.reattachFailed(err)
			return false
		}
		g.stats.rerun.Add(1)
		return true
	case refused:
		// Not re-runnable after all (a request too large to keep, or one
		// pipelined behind it): the client gets the refusal.
		code, msg = codeReadOnlySQLTransaction, refusal
	case w.readOnly:
		code, msg = codeSerializationFailure,
			"the primary was lost while the statement was running; retry it (pgbattery failover)"
		g.stats.aborted.Add(1)
	default:
		code, msg = codeStatementCompletionUnknown,
			"the primary was lost while the statement was running; it may or may not have taken effect (pgbattery failover)"
		g.stats.unknown.Add(1)
	}
	g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "failover_errors"}, 1,
		append(s.l.labels[:len(s.l.labels):len(s.l.labels)], metricsLabel("sqlstate", code)))
	if err := s.answerLost(w, code, msg, status); err != nil {
		return false
	}
	s.track.resetAfterLoss(status)
	if status == 'E' {
		if err := s.orphanTx(true); err != nil {
			return false
		}
		s.track.resetAfterLoss('I')
	}
	if err := s.reattach(old, nil); err != nil {
		s.reattachFailed(err)
		return false
	}
	return true
}

// answerLost answers the unanswered requests of a lost back end with one
// error, consuming the rest of a COPY or of an unfinished extended-protocol
// batch first, as the server would.
func (s *session) answerLost(w inFlightWork, code, msg string, status byte) error {
	writeMessages(s.cw, errorMessage("ERROR", code, msg))
	zs := w.requests
	if w.copyIn || w.partial {
		for {
			typ, _, err := s.nextClientMessage(0)
			if err != nil {
				return err
			}
			if typ == 'X' {
				return errTerminated
			}
			if w.copyIn && (typ == 'c' || typ == 'f') {
				if zs == 0 {
					zs = 1
				}
				break
			}
			if typ == 'S' || typ == 'F' || typ == 'Q' {
				zs++
				break
			}
		}
	}
	for i := 0; i < zs; i++ {
		writeMessages(s.cw, &pgproto3.ReadyForQuery{TxStatus: status})
	}
	return s.cw.Flush()
}

// orphanTx serves a session whose transaction died with its back end, with
// no back end at all, until the client ends the transaction. Statements
// get 40001 (the first, if the client has not yet been told) or 25P02;
// ROLLBACK (and COMMIT once the client was told) is answered "ROLLBACK", in
// a simple Query or in an extended-protocol batch (Parse/Bind/Describe/
// Execute of the ROLLBACK, as JDBC sends it).
func (s *session) orphanTx(errorSent bool) error {
	const keep = 4 << 10
	txError := func() pgproto3.BackendMessage {
		if !errorSent {
			errorSent = true
			s.g.stats.aborted.Add(1)
			return errorMessage("ERROR", codeSerializationFailure,
				"the primary was lost during the transaction, which was rolled back; end it with ROLLBACK and retry (pgbattery failover)")
		}
		return errorMessage("ERROR", codeInFailedTransaction,
			"current transaction is aborted, commands ignored until end of transaction block")
	}
	// ends reports whether sql ends the dead transaction without an error.
	ends := func(sql string) bool {
		sts := sqlclass.Split(sql, nil)
		return len(sts) == 1 && (sts[0].Kind == sqlclass.Rollback || sts[0].Kind == sqlclass.Commit && errorSent)
	}
	prepared := s.track.State().Prepared
	// The extended-protocol batch in progress (up to Sync).
	var (
		failed     bool            // got its error; the rest is skipped
		stmts      map[string]bool // statements parsed in this batch: ends the transaction?
		portals    map[string]bool // portals bound in this batch
		rolledBack bool
	)
	fail := func() {
		if !failed {
			failed = true
			writeMessages(s.cw, txError())
		}
	}
	for {
		typ, body, err := s.nextClientMessage(keep)
		if err != nil {
			return err
		}
		if body == nil && typ != 'X' && typ != 'S' && typ != 'H' {
			// Too large to be a ROLLBACK, or malformed.
			if typ == 'Q' {
				writeMessages(s.cw, txError(), &pgproto3.ReadyForQuery{TxStatus: 'E'})
			} else {
				fail()
			}
			continue
		}
		switch typ {
		case 'X':
			return errTerminated
		case 'Q':
			q := unsafeString(body[:max(0, len(body)-1)])
			kind := sqlclass.Other
			if sts := sqlclass.Split(q, nil); len(sts) == 1 {
				kind = sts[0].Kind
			}
			switch {
			case ends(q):
				writeMessages(s.cw, &pgproto3.CommandComplete{CommandTag: []byte("ROLLBACK")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
				return s.cw.Flush()
			case kind == sqlclass.Commit:
				// The client believes its transaction is fine and commits:
				// it did not, and it is over.
				s.g.stats.aborted.Add(1)
				writeMessages(s.cw, errorMessage("ERROR", codeSerializationFailure,
					"the primary was lost during the transaction, which was rolled back; retry it (pgbattery failover)"),
					&pgproto3.ReadyForQuery{TxStatus: 'I'})
				return s.cw.Flush()
			}
			writeMessages(s.cw, txError(), &pgproto3.ReadyForQuery{TxStatus: 'E'})
		case 'P':
			name, rest, ok := cutCStringBytes(body)
			query, _, ok2 := cutCStringBytes(rest)
			if failed || !ok || !ok2 || !ends(unsafeString(query)) {
				fail()
				continue
			}
			if stmts == nil {
				stmts = map[string]bool{}
			}
			stmts[string(name)] = true
			writeMessages(s.cw, &pgproto3.ParseComplete{})
		case 'B':
			portal, rest, ok := cutCStringBytes(body)
			stmt, _, ok2 := cutCStringBytes(rest)
			endsTx := stmts[string(stmt)]
			if ps, known := prepared[string(stmt)]; !endsTx && known && len(stmt) > 0 {
				endsTx = ends(ps.Query)
			}
			if failed || !ok || !ok2 || !endsTx {
				fail()
				continue
			}
			if portals == nil {
				portals = map[string]bool{}
			}
			portals[string(portal)] = true
			writeMessages(s.cw, &pgproto3.BindComplete{})
		case 'D':
			if failed || len(body) < 2 {
				fail()
				continue
			}
			if body[0] == 'S' {
				writeMessages(s.cw, &pgproto3.ParameterDescription{})
			}
			writeMessages(s.cw, &pgproto3.NoData{})
		case 'E':
			portal, _, _ := cutCStringBytes(body)
			if failed || !portals[string(portal)] {
				fail()
				continue
			}
			rolledBack = true
			writeMessages(s.cw, &pgproto3.CommandComplete{CommandTag: []byte("ROLLBACK")})
		case 'C':
			if !failed {
				writeMessages(s.cw, &pgproto3.CloseComplete{})
			}
		case 'S':
			if rolledBack && !failed {
				writeMessages(s.cw, &pgproto3.ReadyForQuery{TxStatus: 'I'})
				return s.cw.Flush()
			}
			failed, stmts, portals, rolledBack = false, nil, nil, false
			writeMessages(s.cw, &pgproto3.ReadyForQuery{TxStatus: 'E'})
		case 'F':
			fail()
			failed = false
			writeMessages(s.cw, &pgproto3.ReadyForQuery{TxStatus: 'E'})
		case 'H':
			// Flush: nextClientMessage flushes before reading.
		default:
			// Stray COPY messages: ignored, as the server does outside COPY.
		}
	}
}

// closePinned ends a session that cannot be moved.
func (s *session) closePinned(w inFlightWork) {
	s.g.stats.pinned.Add(1)
	s.g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "sessions_pinned_closed"}, 1, s.l.labels)
	var why string
	switch {
	case w.pins&sqlclass.PinTemp != 0:
		why = "the session holds a temporary table or other temporary object"
	case w.pins&sqlclass.PinAdvisoryLock != 0:
		why = "the session holds a session-level advisory lock"
	case w.pins&sqlclass.PinHoldCursor != 0:
		why = "the session holds a WITH HOLD cursor"
	default:
		why = "the session has server-side state the gateway cannot rebuild (" + w.pins.String() + ")"
	}
	s.logger.Info("closing a session that cannot move to the new primary", "pins", w.pins.String())
	writeMessages(s.cw, errorMessage("FATAL", codeAdminShutdown,
		"terminating connection because the primary changed: "+why+"; it cannot be moved to the new primary (pgbattery failover)"))
	s.cw.Flush()
}

func (s *session) reattachFailed(err error) {
	if errors.Is(err, errTerminated) || isDisconnect(err) || s.g.ctx.Err() != nil {
		return
	}
	s.g.stats.failed.Add(1)
	s.logger.Warn("could not move session to a new primary", "error", err)
	var rerr *replayError
	if errors.As(err, &rerr) {
		writeMessages(s.cw, errorMessage("FATAL", codeAdminShutdown,
			fmt.Sprintf("terminating connection because the primary changed and the session could not be rebuilt on the new one: %v", err)))
	} else {
		writeMessages(s.cw, errorMessage("FATAL", codeCannotConnectNow,
			fmt.Sprintf("terminating connection because the primary changed and no new primary accepted the session: %v", err)))
	}
	s.cw.Flush()
}

// replayError is a session-state statement the new primary refused.
type replayError struct {
	what string
	msg  *pgproto3.ErrorResponse
}

func (e *replayError) Error() string {
	return fmt.Sprintf("replaying %s: %s %s: %s", e.what, e.msg.Severity, e.msg.Code, e.msg.Message)
}

// reattach opens a back end on the router's fresh primary (waiting for one
// up to HoldTimeout, retrying while it refuses connections), replays the
// session's state there, and makes it the session's back end. rerun, if
// set, is a request to send on it before forwarding resumes.
func (s *session) reattach(old *backend, rerun []byte) error {
	return s.reattachWith(old, rerun, nil)
}

// reattachWith is reattach with a step run on the new back end before the
// session's state is replayed there (commit resolution: its outcome decides
// which state there is to replay).
func (s *session) reattachWith(old *backend, rerun []byte, prepare func(*backend)) error {
	g := s.g
	start := time.Now()
	waited := false
	be, err := s.holdForPrimary(start, func(t Target) (*backend, error) { return s.attempt(t, prepare) }, func() {
		// Counted once per move that has to wait for a primary.
		waited = true
		g.stats.held.Add(1)
		g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "sessions_held"}, 1, s.l.labels)
	})
	if waited {
		g.noteHold(time.Since(start), s.l.labels)
	}
	if err != nil {
		return err
	}
	s.install(old, be)
	if len(rerun) > 0 {
		be.w.Write(rerun)
		be.w.Flush()
	}
	g.cfg.Metrics.AddSampleWithLabels([]string{"gateway", "migrate_ms"}, float32(time.Since(start))/1e6, s.l.labels)
	s.logger.Debug("session moved", "from", old.target.Node, "to", be.target.Node, "epoch", be.target.Epoch,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// holdForPrimary opens a back end with dial on the router's fresh primary,
// waiting for one up to HoldTimeout from start and retrying while dial
// fails for "not yet" reasons: unreachable, refusing connections for now,
// fenced or still a standby (notServing). A replay the new primary refused,
// or another answer of the server, ends it at once. onWait runs when it
// first has to wait.
func (s *session) holdForPrimary(start time.Time, dial func(Target) (*backend, error), onWait func()) (*backend, error) {
	g := s.g
	deadline := start.Add(g.cfg.HoldTimeout)
	retry := reattachRetryMin
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt == 1 && onWait != nil {
			onWait()
		}
		v := g.currentView()
		if v.writable() {
			be, err := dial(v.target)
			if err == nil {
				return be, nil
			}
			var rerr *replayError
			if errors.As(err, &rerr) {
				return nil, err
			}
			var berr *backendError
			if errors.As(err, &berr) && !retryableStartupError(berr.msg.Code) {
				return nil, err
			}
			lastErr = err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			if lastErr == nil {
				lastErr = errors.New("no writable primary is known")
			}
			return nil, fmt.Errorf("within the hold timeout of %s: %w", g.cfg.HoldTimeout, lastErr)
		}
		t := time.NewTimer(min(wait, retry))
		select {
		case <-v.changed:
		case <-t.C:
		case <-g.ctx.Done():
			t.Stop()
			return nil, g.ctx.Err()
		}
		t.Stop()
		retry = min(2*retry, reattachRetryMax)
	}
}

// retryableStartupError reports start-up errors that mean "not yet": the
// server is starting, shutting down, or in recovery.
func retryableStartupError(code string) bool {
	return code == codeCannotConnectNow || code == codeAdminShutdown || code == codeCrashShutdown || code == codeTooManyConnections
}

// attempt connects to target and replays the session's state.
func (s *session) attempt(target Target, prepare func(*backend)) (*backend, error) {
	be, err := s.g.dialBackend(s.g.ctx, target, s.params, s.auth)
	if err != nil {
		return nil, err
	}
	if err := s.notServing(be); err != nil {
		// A fenced primary (its lease lapsed, the raft majority is gone)
		// or a standby: wait for it to serve, or for a new primary.
		be.conn.Close()
		return nil, err
	}
	if prepare != nil {
		prepare(be)
	}
	if err := s.replay(be); err != nil {
		be.conn.Close()
		return nil, err
	}
	return be, nil
}

// asksReadOnly reports that the session is read-only by its own choice:
// the client's start-up parameters, or its role's or database's setting
// (roleReadOnly).
func (s *session) asksReadOnly() bool {
	return s.roleReadOnly || s.clientAsksReadOnly()
}

// clientAsksReadOnly reports that the client itself asked for read-only
// transactions in its start-up parameters.
func (s *session) clientAsksReadOnly() bool {
	return s.params["default_transaction_read_only"] != "" ||
		strings.Contains(s.params["options"], "default_transaction_read_only")
}

// install makes be the session's back end and tells the client about
// reported parameters whose values differ.
func (s *session) install(old, be *backend) {
	s.mu.Lock()
	s.be = be
	s.mu.Unlock()
	s.g.moveBackendCount(old.target.Addr, be.target.Addr)
	s.g.stats.migrated.Add(1)
	s.g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "sessions_migrated"}, 1, s.l.labels)

	reported := s.track.State().Reported
	names := make([]string, 0, len(be.params))
	for name := range be.params {
		names = append(names, name)
	}
	sort.Strings(names)
	var buf []byte
	for _, name := range names {
		value := be.params[name]
		if old, ok := reported[name]; ok && old == value {
			continue
		}
		buf, _ = (&pgproto3.ParameterStatus{Name: name, Value: value}).Encode(buf[:0])
		s.cw.Write(buf)
		s.track.server('S', buf[5:])
	}
	s.cw.Flush()
}

// replay rebuilds the session's state on a fresh back end: SETs, SQL-level
// PREPAREs, LISTENs, then protocol-level prepared statements. Every statement
// is its own request, so one failure is reported as what it is.
func (s *session) replay(be *backend) error {
	st := s.track.State()
	var buf []byte
	var whats []string // one per ReadyForQuery expected
	query := func(what, q string) {
		buf, _ = (&pgproto3.Query{String: q}).Encode(buf)
		whats = append(whats, what)
	}
	for _, name := range sortedKeys(st.Settings) {
		query("SET "+name, st.Settings[name])
	}
	for _, name := range sortedKeys(st.SQLPrepared) {
		query("PREPARE "+name, st.SQLPrepared[name])
	}
	for _, ch := range st.Listen {
		query("LISTEN "+ch, "LISTEN "+quoteIdent(ch))
	}
	if len(st.Prepared) > 0 {
		for _, name := range sortedKeys(st.Prepared) {
			ps := st.Prepared[name]
			buf, _ = (&pgproto3.Parse{Name: name, Query: ps.Query, ParameterOIDs: ps.ParamOIDs}).Encode(buf)
		}
		buf, _ = (&pgproto3.Sync{}).Encode(buf)
		whats = append(whats, "prepared statements")
	}
	if len(whats) == 0 {
		return nil
	}
	be.conn.SetDeadline(time.Now().Add(s.g.cfg.DialTimeout))
	defer be.conn.SetDeadline(noDeadline)
	stop := context.AfterFunc(s.g.ctx, func() { be.conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	if _, err := be.conn.Write(buf); err != nil {
		return fmt.Errorf("replaying session state on %s: %w", be.target.Addr, err)
	}
	var first error
	for i := 0; i < len(whats); {
		typ, body, err := readStartupReply(be.r)
		if err != nil {
			return fmt.Errorf("replaying session state on %s: %w", be.target.Addr, err)
		}
		switch typ {
		case 'S':
			name, rest, ok := cutCStringBytes(body)
			value, _, ok2 := cutCStringBytes(rest)
			if ok && ok2 {
				be.params[string(name)] = string(value)
			}
		case 'E':
			if first == nil {
				var m pgproto3.ErrorResponse
				if err := m.Decode(body); err != nil {
					return fmt.Errorf("decoding error from %s: %w", be.target.Addr, err)
				}
				first = &replayError{what: whats[i], msg: &m}
			}
		case 'Z':
			i++
		}
	}
	return first
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// quoteIdent quotes a (normalised) identifier for SQL.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
