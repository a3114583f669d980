package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The gateway hands every client its own BackendKeyData, never the back
// end's: the back end changes when a session moves, and the client's key must
// keep working.
//
// The process id is laid out so any gateway can tell whose key it is:
//
//	bit 31     0 (keeps the pid positive for clients that store it as int32)
//	bits 30-23 the issuing gateway's Config.NodeIndex
//	bits 22-0  a random session number, unique on that gateway
//
// The secret is random: 4 bytes for protocol 3.0 clients, 32 bytes for 3.2
// clients (which allow up to 256). A CancelRequest for another node index is
// handed to Config.ForwardCancel; the receiving gateway checks the secret.

const (
	keyNodeShift   = 23
	keySessionMask = 1<<keyNodeShift - 1
	secretLen30    = 4
	secretLen32    = 32
	// cancelTimeout bounds delivering a cancel to a back end or peer.
	cancelTimeout = 5 * time.Second
)

// keyNodeIndex extracts the node index from a gateway-issued pid.
func keyNodeIndex(pid uint32) uint8 { return uint8(pid >> keyNodeShift) }

// cancelKey is a session's client-facing key.
type cancelKey struct {
	pid    uint32
	secret []byte
}

// cancelRegistry maps issued keys to sessions.
type cancelRegistry struct {
	node     uint8
	mu       sync.Mutex
	sessions map[uint32]*session
}

func newCancelRegistry(node uint8) *cancelRegistry {
	return &cancelRegistry{node: node, sessions: map[uint32]*session{}}
}

// register issues a fresh key for s, sets s.key and records it.
func (r *cancelRegistry) register(s *session, secretLen int) (cancelKey, error) {
	secret := make([]byte, secretLen)
	if _, err := rand.Read(secret); err != nil {
		return cancelKey{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for tries := 0; tries < 64; tries++ {
		var b [4]byte
		rand.Read(b[:])
		n := binary.BigEndian.Uint32(b[:]) & keySessionMask
		if n == 0 {
			continue
		}
		pid := uint32(r.node)<<keyNodeShift | n
		if _, taken := r.sessions[pid]; taken {
			continue
		}
		// The key is the session's before lookup can find it there.
		s.key = cancelKey{pid: pid, secret: secret}
		r.sessions[pid] = s
		return s.key, nil
	}
	return cancelKey{}, errors.New("no free cancel key")
}

func (r *cancelRegistry) unregister(pid uint32) {
	r.mu.Lock()
	delete(r.sessions, pid)
	r.mu.Unlock()
}

// lookup returns the session whose key matches, or nil.
func (r *cancelRegistry) lookup(pid uint32, secret []byte) *session {
	r.mu.Lock()
	s := r.sessions[pid]
	r.mu.Unlock()
	if s == nil || subtle.ConstantTimeCompare(s.key.secret, secret) != 1 {
		return nil
	}
	return s
}

// handleCancel serves a CancelRequest: for a session of this gateway it
// cancels whatever the session's current back end runs; for another node's
// key it forwards the request. Like PostgreSQL it answers nothing either way.
func (g *Gateway) handleCancel(ctx context.Context, p *startupPacket) {
	ctx, cancel := context.WithTimeout(ctx, cancelTimeout)
	defer cancel()
	if node := keyNodeIndex(p.cancelPID); node != g.cfg.NodeIndex {
		if g.cfg.ForwardCancel == nil {
			g.logger.Debug("cancel request for another node's session, and no forwarder", "node_index", node)
			return
		}
		if err := g.cfg.ForwardCancel(ctx, node, p.raw); err != nil {
			g.logger.Warn("forwarding cancel request", "node_index", node, "error", err)
		}
		return
	}
	s := g.cancels.lookup(p.cancelPID, p.cancelSecret)
	if s == nil {
		g.logger.Debug("cancel request with an unknown key", "pid", p.cancelPID)
		return
	}
	if err := s.cancelBackend(ctx); err != nil {
		g.logger.Warn("cancelling back-end query", "session", s.id, "error", err)
	}
}

// HandleCancelRequest serves a CancelRequest forwarded by a peer gateway
// (the bytes given to that peer's Config.ForwardCancel).
func (g *Gateway) HandleCancelRequest(ctx context.Context, request []byte) error {
	if len(request) < 4 {
		return errors.New("cancel request too short")
	}
	p, err := parseStartupPacket(request[4:])
	if err != nil {
		return fmt.Errorf("parsing forwarded cancel request: %w", err)
	}
	if p.kind != startupCancel {
		return errors.New("forwarded packet is not a cancel request")
	}
	if keyNodeIndex(p.cancelPID) != g.cfg.NodeIndex {
		return fmt.Errorf("cancel request for node index %d reached node index %d", keyNodeIndex(p.cancelPID), g.cfg.NodeIndex)
	}
	g.handleCancel(ctx, p)
	return nil
}

// sendCancel delivers a protocol 3.0 CancelRequest to a PostgreSQL server.
func (g *Gateway) sendCancel(ctx context.Context, addr string, pid, secret uint32) error {
	conn, err := g.cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dialing %s to cancel: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var b [16]byte
	binary.BigEndian.PutUint32(b[0:], 16)
	binary.BigEndian.PutUint32(b[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(b[8:], pid)
	binary.BigEndian.PutUint32(b[12:], secret)
	if _, err := conn.Write(b[:]); err != nil {
		return fmt.Errorf("sending cancel to %s: %w", addr, err)
	}
	// PostgreSQL closes the connection once it has handled the request;
	// wait for that so the cancel has happened when we return.
	var one [1]byte
	conn.Read(one[:])
	return nil
}

// lookupPID returns the session holding pid, without checking a secret
// (for status and tests).
func (r *cancelRegistry) lookupPID(pid uint32) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[pid]
}
