package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Start-up packet codes (the first int32 after the length).
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102

	protocolMajor3 = 3
	// protocolMinorLatest is the newest protocol minor version the gateway
	// speaks with clients. 3.2 (PostgreSQL 18) differs from 3.0 only in the
	// length of the cancel key, which the gateway issues itself, so it can
	// offer 3.2 to clients whatever the back end speaks.
	protocolMinorLatest = 2

	minStartupPacket = 8
	maxStartupPacket = 10000 // MAX_STARTUP_PACKET_LENGTH in PostgreSQL
	// maxCancelKey is the longest secret a 3.2 CancelRequest may carry.
	maxCancelKey = 256
)

// startupKind tells what a start-up packet asked for.
type startupKind uint8

const (
	startupMessage startupKind = iota + 1
	startupSSLRequest
	startupGSSENCRequest
	startupCancel
)

// startupPacket is a parsed start-up packet.
type startupPacket struct {
	kind startupKind

	// For a StartupMessage:
	major, minor uint16
	params       map[string]string
	// pqOptions are the "_pq_." protocol options the client asked for, which
	// the gateway reports as unsupported in NegotiateProtocolVersion.
	pqOptions []string

	// For a CancelRequest:
	cancelPID    uint32
	cancelSecret []byte
	raw          []byte // the whole cancel packet, for forwarding to a peer
}

var errStartupTooShort = errors.New("invalid length of startup packet")

// readStartupPacket reads one start-up packet straight from r (no read-ahead:
// bytes after an SSLRequest must reach the TLS layer, not a buffer).
func readStartupPacket(r io.Reader) (*startupPacket, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	return readStartupPacketRest(r, hdr)
}

// readStartupPacketRest reads a start-up packet whose length bytes are hdr.
func readStartupPacketRest(r io.Reader, hdr [4]byte) (*startupPacket, error) {
	n := binary.BigEndian.Uint32(hdr[:])
	if n < minStartupPacket || n > maxStartupPacket {
		return nil, fmt.Errorf("invalid length of startup packet: %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("incomplete startup packet: %w", err)
	}
	return parseStartupPacket(body)
}

// parseStartupPacket parses a start-up packet body (after the length word).
func parseStartupPacket(body []byte) (*startupPacket, error) {
	if len(body) < 4 {
		return nil, errStartupTooShort
	}
	code := binary.BigEndian.Uint32(body)
	switch code {
	case sslRequestCode:
		if len(body) != 4 {
			return nil, errors.New("invalid length of SSLRequest")
		}
		return &startupPacket{kind: startupSSLRequest}, nil
	case gssEncRequestCode:
		if len(body) != 4 {
			return nil, errors.New("invalid length of GSSENCRequest")
		}
		return &startupPacket{kind: startupGSSENCRequest}, nil
	case cancelRequestCode:
		// 3.0: 4-byte secret; 3.2: 4 to 256 bytes.
		if len(body) < 12 || len(body) > 8+maxCancelKey {
			return nil, errors.New("invalid length of CancelRequest")
		}
		raw := make([]byte, 4+len(body))
		binary.BigEndian.PutUint32(raw, uint32(len(raw)))
		copy(raw[4:], body)
		return &startupPacket{kind: startupCancel,
			cancelPID:    binary.BigEndian.Uint32(body[4:]),
			cancelSecret: raw[12:], raw: raw}, nil
	}
	p := &startupPacket{kind: startupMessage, major: uint16(code >> 16), minor: uint16(code), params: map[string]string{}}
	if p.major != protocolMajor3 {
		return nil, fmt.Errorf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.%d",
			p.major, p.minor, protocolMinorLatest)
	}
	rest := body[4:]
	for {
		if len(rest) == 0 {
			return nil, errors.New("invalid startup packet layout: expected terminator as last byte")
		}
		if rest[0] == 0 {
			if len(rest) != 1 {
				return nil, errors.New("invalid startup packet layout: data after the terminator")
			}
			break
		}
		name, tail, ok := cutCString(rest)
		if !ok {
			return nil, errors.New("invalid startup packet layout: unterminated parameter name")
		}
		value, tail, ok := cutCString(tail)
		if !ok {
			return nil, fmt.Errorf("invalid startup packet layout: no value for parameter %q", name)
		}
		rest = tail
		if strings.HasPrefix(name, "_pq_.") {
			p.pqOptions = append(p.pqOptions, name)
			continue
		}
		p.params[name] = value
	}
	if p.params["user"] == "" {
		return nil, errors.New("no PostgreSQL user name specified in startup packet")
	}
	return p, nil
}

// cutCString splits a NUL-terminated string off b.
func cutCString(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// isReplication reports whether the start-up parameters ask for a
// replication connection: any "replication" value other than false.
func isReplication(params map[string]string) bool {
	v, ok := params["replication"]
	if !ok {
		return false
	}
	switch strings.ToLower(v) {
	case "false", "0", "no", "off", "f", "n":
		return false
	}
	return true
}
