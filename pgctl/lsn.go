package pgctl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL write-ahead log position (pg_lsn): a byte offset into
// the WAL stream. The zero LSN means "unknown" (PostgreSQL returned NULL).
type LSN uint64

// String renders the LSN the way PostgreSQL does, e.g. "0/3000060".
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xffffffff)
}

// ParseLSN parses PostgreSQL's "hi/lo" hexadecimal notation.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("parsing LSN %q: missing '/'", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parsing LSN %q: high part: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parsing LSN %q: low part: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// parseNullLSN parses an LSN that SQL may have returned as NULL.
func parseNullLSN(s *string) (LSN, error) {
	if s == nil {
		return 0, nil
	}
	return ParseLSN(*s)
}

// MarshalText renders the LSN as PostgreSQL does, so JSON and logs show
// "0/3000060" rather than a number.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses PostgreSQL's notation.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// UnmarshalJSON reads the text form MarshalText writes, and also a plain
// JSON number: agents before agent/fsm shared this type wrote LSNs as
// numbers into the Raft log, FSM snapshots and probe answers, and an
// upgraded agent must still replay its own log. null leaves l unchanged.
func (l *LSN) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("parsing LSN %s: %w", b, err)
		}
		return l.UnmarshalText([]byte(s))
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("parsing LSN %s: want \"hi/lo\" text or a non-negative integer", b)
	}
	*l = LSN(v)
	return nil
}
