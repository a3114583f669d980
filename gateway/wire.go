package gateway

import (
	"encoding/binary"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes the gateway itself sends.
const (
	codeProtocolViolation  = "08P01"
	codeInvalidAuthSpec    = "28000"
	codeInvalidPassword    = "28P01"
	codeFeatureUnsupported = "0A000"
	codeTooManyConnections = "53300"
	codeCannotConnectNow   = "57P03"
	codeAdminShutdown      = "57P01"
	codeConnectionFailure  = "08006"
	codeIdleSessionTimeout = "57P05"
	codeCrashShutdown      = "57P02"

	codeSerializationFailure         = "40001"
	codeStatementCompletionUnknown   = "40003"
	codeTransactionResolutionUnknown = "08007"
	codeInFailedTransaction          = "25P02"
	codeReadOnlySQLTransaction       = "25006"
)

// errorMessage builds an ErrorResponse.
func errorMessage(severity, code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}
}

// writeMessages encodes msgs and writes them to w in one write.
func writeMessages(w io.Writer, msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	var err error
	for _, m := range msgs {
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	_, err = w.Write(buf)
	return err
}

// writeFatal sends a FATAL error; the caller closes the connection.
func writeFatal(w io.Writer, code, msg string) error {
	return writeMessages(w, errorMessage("FATAL", code, msg))
}

// negotiateProtocolVersion encodes a NegotiateProtocolVersion message ('v').
func negotiateProtocolVersion(minor uint16, unsupported []string) []byte {
	n := 4 + 4 + 4
	for _, o := range unsupported {
		n += len(o) + 1
	}
	b := make([]byte, 0, 1+n)
	b = append(b, 'v')
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = binary.BigEndian.AppendUint32(b, uint32(protocolMajor3)<<16|uint32(minor))
	b = binary.BigEndian.AppendUint32(b, uint32(len(unsupported)))
	for _, o := range unsupported {
		b = append(b, o...)
		b = append(b, 0)
	}
	return b
}

// backendKeyData encodes BackendKeyData ('K') with a secret of any length
// (4 bytes in protocol 3.0, up to 256 in 3.2).
func backendKeyData(pid uint32, secret []byte) []byte {
	b := make([]byte, 0, 9+len(secret))
	b = append(b, 'K')
	b = binary.BigEndian.AppendUint32(b, uint32(8+len(secret)))
	b = binary.BigEndian.AppendUint32(b, pid)
	return append(b, secret...)
}
