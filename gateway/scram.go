package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// SCRAM-SHA-256 (RFC 5802, RFC 7677) on both sides of the gateway.
//
// Towards the client the gateway is the SCRAM server, checking the client's
// proof against the verifier stored in the primary's pg_authid:
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// A valid proof reveals ClientKey = ClientProof XOR HMAC(StoredKey,
// AuthMessage) — and a verifier alone never does. The gateway keeps that
// ClientKey in memory for the life of the session and uses it as the SCRAM
// client towards PostgreSQL: the back end holds the same verifier (same salt,
// iterations, StoredKey, ServerKey), so ClientProof = ClientKey XOR
// HMAC(StoredKey, AuthMessage') is a valid proof for any later exchange, and
// the back end's ServerSignature can be checked with ServerKey. This is the
// scheme PgBouncer uses for auth_query users; it lets the gateway open a new
// back-end connection for the session (after a failover) without ever seeing
// or storing the password.
//
// Limits: the ClientKey is as good as the password for logging in as that
// user while the session lives (it is never written anywhere). When the
// user's password changes, the salt changes, so re-authenticating the session
// on a new back end fails (reported as such) while the current back-end
// connection carries on, as it would directly on PostgreSQL.

const (
	scramMechanism     = "SCRAM-SHA-256"
	scramPlusMechanism = "SCRAM-SHA-256-PLUS"
	// scramMaxMessage bounds a SASL message, like PostgreSQL's
	// PG_MAX_AUTH_TOKEN_LENGTH.
	scramMaxMessage = 65535
)

var errSCRAMFailed = errors.New("SCRAM authentication failed")

// scramVerifier is a parsed pg_authid.rolpassword SCRAM secret.
type scramVerifier struct {
	iterations int
	salt       []byte
	storedKey  []byte
	serverKey  []byte
}

// parseSCRAMVerifier parses "SCRAM-SHA-256$iter:salt$StoredKey:ServerKey".
func parseSCRAMVerifier(s string) (*scramVerifier, error) {
	rest, ok := strings.CutPrefix(s, "SCRAM-SHA-256$")
	if !ok {
		return nil, errors.New("not a SCRAM-SHA-256 secret")
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, errors.New("malformed SCRAM secret")
	}
	iterStr, saltB64, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return nil, errors.New("malformed SCRAM secret iterations/salt")
	}
	storedB64, serverB64, ok := strings.Cut(keys, ":")
	if !ok {
		return nil, errors.New("malformed SCRAM secret keys")
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter < 1 {
		return nil, errors.New("malformed SCRAM secret iteration count")
	}
	v := &scramVerifier{iterations: iter}
	if v.salt, err = base64.StdEncoding.DecodeString(saltB64); err != nil || len(v.salt) == 0 {
		return nil, errors.New("malformed SCRAM secret salt")
	}
	if v.storedKey, err = base64.StdEncoding.DecodeString(storedB64); err != nil || len(v.storedKey) != sha256.Size {
		return nil, errors.New("malformed SCRAM secret StoredKey")
	}
	if v.serverKey, err = base64.StdEncoding.DecodeString(serverB64); err != nil || len(v.serverKey) != sha256.Size {
		return nil, errors.New("malformed SCRAM secret ServerKey")
	}
	return v, nil
}

// mockVerifier stands in for a user that does not exist (or has no SCRAM
// secret), so that the exchange looks the same as for a real user and fails
// only at the proof, as PostgreSQL does. The salt is derived from the user
// name and a per-gateway secret so it is stable across attempts; the keys
// are random so no proof can match.
func mockVerifier(secret []byte, user string) *scramVerifier {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("mock salt\x00" + user))
	salt := m.Sum(nil)[:16]
	v := &scramVerifier{iterations: 4096, salt: salt,
		storedKey: make([]byte, sha256.Size), serverKey: make([]byte, sha256.Size)}
	rand.Read(v.storedKey)
	rand.Read(v.serverKey)
	return v
}

func hmacSHA256(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for i, p := range parts {
		if i > 0 {
			m.Write([]byte{','})
		}
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

func scramNonce() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// tlsServerEndPoint computes the tls-server-end-point channel binding data
// (RFC 5929) for a certificate: its hash with the certificate's signature
// hash, where MD5 and SHA-1 are replaced by SHA-256. ok is false when the
// signature algorithm has no single hash (Ed25519), as in PostgreSQL.
func tlsServerEndPoint(cert *tls.Certificate) ([]byte, bool) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, false
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, false
		}
	}
	var h hash.Hash
	switch leaf.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil, false
	}
	h.Write(leaf.Raw)
	return h.Sum(nil), true
}

// scramServer runs the server side of one exchange. It does no I/O, so the
// protocol logic can be tested and fuzzed on its own.
type scramServer struct {
	v *scramVerifier
	// cbData is the tls-server-end-point data of the connection, nil on a
	// plaintext connection (SCRAM-SHA-256-PLUS is then not offered).
	cbData []byte

	gs2Header       string
	clientFirstBare string
	serverFirst     string
	nonce           string
	serverSignature []byte

	// clientKey is recovered from a valid proof.
	clientKey []byte
}

// mechanisms lists what the gateway offers, best first.
func (s *scramServer) mechanisms() []string {
	if s.cbData != nil {
		return []string{scramPlusMechanism, scramMechanism}
	}
	return []string{scramMechanism}
}

// clientFirst handles the SASLInitialResponse and returns the server-first
// message.
func (s *scramServer) clientFirst(mechanism string, data []byte) ([]byte, error) {
	msg := string(data)
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return nil, errors.New("malformed SCRAM client-first message")
	}
	authzid, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, errors.New("malformed SCRAM client-first message")
	}
	if authzid != "" {
		return nil, errors.New("client uses authorization identity, but it is not supported")
	}
	switch {
	case mechanism == scramPlusMechanism:
		if s.cbData == nil {
			return nil, errors.New("channel binding is only offered over TLS")
		}
		if flag != "p=tls-server-end-point" {
			return nil, fmt.Errorf("unsupported SCRAM channel-binding type %q", strings.TrimPrefix(flag, "p="))
		}
	case mechanism == scramMechanism:
		switch flag {
		case "n":
		case "y":
			// The client could bind but thinks we cannot: if we
			// offered PLUS, someone removed it on the way.
			if s.cbData != nil {
				return nil, errors.New("SCRAM channel binding negotiation error")
			}
		default:
			return nil, errors.New("SCRAM channel binding requested with SCRAM-SHA-256; use SCRAM-SHA-256-PLUS")
		}
	default:
		return nil, fmt.Errorf("SASL authentication mechanism %q is not supported", mechanism)
	}
	s.gs2Header = flag + "," + authzid + ","

	// client-first-bare: n=user,r=nonce[,ext...]. The user name is ignored
	// (the start-up packet's user counts), as in PostgreSQL.
	attrs := strings.Split(bare, ",")
	if strings.HasPrefix(attrs[0], "m=") {
		return nil, errors.New("SCRAM mandatory extensions are not supported")
	}
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, errors.New("malformed SCRAM client-first message")
	}
	clientNonce := attrs[1][2:]
	if clientNonce == "" || !printableNonce(clientNonce) {
		return nil, errors.New("malformed SCRAM client nonce")
	}
	s.clientFirstBare = bare
	s.nonce = clientNonce + scramNonce()
	s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.v.salt) +
		",i=" + strconv.Itoa(s.v.iterations)
	return []byte(s.serverFirst), nil
}

func printableNonce(n string) bool {
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7e || n[i] == ',' {
			return false
		}
	}
	return true
}

// clientFinal handles the client-final message and returns the server-final
// message. errSCRAMFailed means a wrong password (or unknown user); other
// errors are protocol violations.
func (s *scramServer) clientFinal(data []byte) ([]byte, error) {
	msg := string(data)
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, errors.New("malformed SCRAM client-final message: no proof")
	}
	withoutProof, proofB64 := msg[:i], msg[i+3:]
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, errors.New("malformed SCRAM client-final message")
	}
	cb, err := base64.StdEncoding.DecodeString(attrs[0][2:])
	if err != nil {
		return nil, errors.New("malformed SCRAM channel-binding data")
	}
	want := []byte(s.gs2Header)
	if strings.HasPrefix(s.gs2Header, "p=") {
		want = append(want, s.cbData...)
	}
	if !bytes.Equal(cb, want) {
		return nil, errors.New("SCRAM channel binding check failed")
	}
	if attrs[1][2:] != s.nonce {
		return nil, errors.New("SCRAM nonce mismatch")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != sha256.Size {
		return nil, errors.New("malformed SCRAM proof")
	}

	authMessage := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	clientSignature := hmacSHA256(s.v.storedKey, authMessage)
	clientKey := make([]byte, sha256.Size)
	for i := range clientKey {
		clientKey[i] = proof[i] ^ clientSignature[i]
	}
	stored := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(stored[:], s.v.storedKey) != 1 {
		return nil, errSCRAMFailed
	}
	s.clientKey = clientKey
	s.serverSignature = hmacSHA256(s.v.serverKey, authMessage)
	return []byte("v=" + base64.StdEncoding.EncodeToString(s.serverSignature)), nil
}

// scramClient runs the client side towards a back end, proving knowledge of
// ClientKey instead of the password.
type scramClient struct {
	clientKey []byte
	v         *scramVerifier // the verifier the ClientKey was recovered with

	nonce           string
	clientFirstBare string
	authMessage     string
}

func (c *scramClient) clientFirst() []byte {
	c.nonce = scramNonce()
	c.clientFirstBare = "n=,r=" + c.nonce
	return []byte("n,," + c.clientFirstBare)
}

// serverFirst answers the back end's server-first message with the
// client-final message.
func (c *scramClient) serverFirst(data []byte) ([]byte, error) {
	msg := string(data)
	attrs := strings.Split(msg, ",")
	if len(attrs) < 3 || !strings.HasPrefix(attrs[0], "r=") || !strings.HasPrefix(attrs[1], "s=") ||
		!strings.HasPrefix(attrs[2], "i=") {
		return nil, errors.New("malformed SCRAM server-first message from back end")
	}
	nonce := attrs[0][2:]
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return nil, errors.New("back end's SCRAM nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(attrs[1][2:])
	if err != nil {
		return nil, errors.New("malformed SCRAM salt from back end")
	}
	iter, err := strconv.Atoi(attrs[2][2:])
	if err != nil {
		return nil, errors.New("malformed SCRAM iteration count from back end")
	}
	if !bytes.Equal(salt, c.v.salt) || iter != c.v.iterations {
		return nil, errPasswordChanged
	}
	withoutProof := "c=biws,r=" + nonce
	c.authMessage = c.clientFirstBare + "," + msg + "," + withoutProof
	sig := hmacSHA256(c.v.storedKey, c.authMessage)
	proof := make([]byte, len(sig))
	for i := range proof {
		proof[i] = c.clientKey[i] ^ sig[i]
	}
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// serverFinal checks the back end's signature: it proves the back end holds
// the same verifier.
func (c *scramClient) serverFinal(data []byte) error {
	msg := string(data)
	if strings.HasPrefix(msg, "e=") {
		return fmt.Errorf("back end rejected SCRAM: %s", msg[2:])
	}
	v, ok := strings.CutPrefix(msg, "v=")
	if !ok {
		return errors.New("malformed SCRAM server-final message from back end")
	}
	got, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return errors.New("malformed SCRAM server signature from back end")
	}
	want := hmacSHA256(c.v.serverKey, c.authMessage)
	if !hmac.Equal(got, want) {
		return errors.New("back end's SCRAM server signature does not match the verifier")
	}
	return nil
}

// errPasswordChanged reports that the back end's verifier has another salt
// than the one the session authenticated with: the password was changed.
var errPasswordChanged = errors.New("the user's password changed since the session authenticated; the session cannot be re-authenticated on a new server")
