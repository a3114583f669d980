package fsm

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL write-ahead log position (pg_lsn), a byte offset into
// the WAL stream. It is rendered as PostgreSQL renders it: "16/B374D848".
type LSN uint64

// String renders the LSN the way PostgreSQL does.
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
