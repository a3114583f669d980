package gateway

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// makeVerifier builds a pg_authid-style SCRAM secret, as PostgreSQL does.
func makeVerifier(t testing.TB, password string, salt []byte, iter int) (string, []byte) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(serverKey)), clientKey
}

// testClient is a minimal SCRAM client that knows the password.
type testClient struct {
	password, nonce, bare, gs2 string
	cb                         []byte
}

func (c *testClient) first() string {
	c.nonce = "clientnonce123"
	c.bare = "n=,r=" + c.nonce
	return c.gs2 + c.bare
}

func (c *testClient) final(serverFirst string) string {
	attrs := strings.Split(serverFirst, ",")
	salt, _ := base64.StdEncoding.DecodeString(attrs[1][2:])
	var iter int
	fmt.Sscanf(attrs[2][2:], "%d", &iter)
	salted, _ := pbkdf2.Key(sha256.New, c.password, salt, iter, 32)
	clientKey := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(append([]byte(c.gs2), c.cb...)) + "," + attrs[0]
	sig := hmacSHA256(stored[:], c.bare+","+serverFirst+","+withoutProof)
	proof := make([]byte, 32)
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)
}

func TestSCRAMServer(t *testing.T) {
	secret, clientKey := makeVerifier(t, "pencil", []byte("0123456789abcdef"), 4096)
	v, err := parseSCRAMVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}

	run := func(password, mech, gs2 string, serverCB, clientCB []byte) (*scramServer, error) {
		srv := &scramServer{v: v, cbData: serverCB}
		c := &testClient{password: password, gs2: gs2, cb: clientCB}
		sf, err := srv.clientFirst(mech, []byte(c.first()))
		if err != nil {
			return nil, err
		}
		final, err := srv.clientFinal([]byte(c.final(string(sf))))
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(string(final), "v=") {
			t.Fatalf("server final %q", final)
		}
		return srv, nil
	}

	srv, err := run("pencil", scramMechanism, "n,,", nil, nil)
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	if !hmac.Equal(srv.clientKey, clientKey) {
		t.Fatal("recovered ClientKey differs")
	}
	if _, err := run("pen", scramMechanism, "n,,", nil, nil); !errors.Is(err, errSCRAMFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	cb := []byte("endpoint-hash")
	if _, err := run("pencil", scramPlusMechanism, "p=tls-server-end-point,,", cb, cb); err != nil {
		t.Fatalf("channel binding: %v", err)
	}
	if _, err := run("pencil", scramPlusMechanism, "p=tls-server-end-point,,", cb, []byte("other")); err == nil {
		t.Fatal("channel binding with the wrong certificate hash succeeded")
	}
	if _, err := run("pencil", scramPlusMechanism, "p=tls-server-end-point,,", nil, nil); err == nil {
		t.Fatal("PLUS without TLS succeeded")
	}
	if _, err := run("pencil", scramMechanism, "y,,", cb, nil); err == nil {
		t.Fatal("downgrade (y flag while PLUS offered) succeeded")
	}
	if _, err := run("pencil", scramMechanism, "y,,", nil, nil); err != nil {
		t.Fatalf("y flag without TLS: %v", err)
	}
	if _, err := run("pencil", scramMechanism, "n,a=bob,", nil, nil); err == nil {
		t.Fatal("authzid accepted")
	}
	// A mock verifier never accepts.
	mv := mockVerifier([]byte("k"), "ghost")
	srv = &scramServer{v: mv}
	c := &testClient{password: "", gs2: "n,,"}
	sf, _ := srv.clientFirst(scramMechanism, []byte(c.first()))
	if _, err := srv.clientFinal([]byte(c.final(string(sf)))); !errors.Is(err, errSCRAMFailed) {
		t.Fatalf("mock verifier: %v", err)
	}
	// Same user, same mock salt (no user enumeration through salts).
	if string(mockVerifier([]byte("k"), "ghost").salt) != string(mv.salt) {
		t.Fatal("mock salt not stable")
	}
}

// The gateway's client side, given the recovered ClientKey, passes the
// gateway's own server side with the same verifier: what a back end does.
func TestSCRAMClientWithClientKey(t *testing.T) {
	secret, clientKey := makeVerifier(t, "pencil", []byte("saltsaltsaltsalt"), 4096)
	v, _ := parseSCRAMVerifier(secret)
	srv := &scramServer{v: v}
	cl := &scramClient{clientKey: clientKey, v: v}
	sf, err := srv.clientFirst(scramMechanism, cl.clientFirst())
	if err != nil {
		t.Fatal(err)
	}
	final, err := cl.serverFirst(sf)
	if err != nil {
		t.Fatal(err)
	}
	sfinal, err := srv.clientFinal(final)
	if err != nil {
		t.Fatalf("back end rejected the ClientKey proof: %v", err)
	}
	if err := cl.serverFinal(sfinal); err != nil {
		t.Fatalf("server signature: %v", err)
	}
	if err := cl.serverFinal([]byte("v=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))); err == nil {
		t.Fatal("forged server signature accepted")
	}
	// A changed password (new salt) is reported as such.
	secret2, _ := makeVerifier(t, "new", []byte("othersaltothersa"), 4096)
	v2, _ := parseSCRAMVerifier(secret2)
	srv2 := &scramServer{v: v2}
	cl2 := &scramClient{clientKey: clientKey, v: v}
	sf2, _ := srv2.clientFirst(scramMechanism, cl2.clientFirst())
	if _, err := cl2.serverFirst(sf2); !errors.Is(err, errPasswordChanged) {
		t.Fatalf("password change: %v", err)
	}
}

func TestParseSCRAMVerifier(t *testing.T) {
	for _, bad := range []string{"", "md5abc", "SCRAM-SHA-256$", "SCRAM-SHA-256$4096:c2FsdA==$x:y",
		"SCRAM-SHA-256$0:c2FsdA==$" + strings.Repeat("A", 44) + ":" + strings.Repeat("A", 44)} {
		if _, err := parseSCRAMVerifier(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func FuzzSCRAMServer(f *testing.F) {
	f.Add("SCRAM-SHA-256", "n,,n=,r=abc", "c=biws,r=abc,p=AAAA")
	f.Add("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=x", "c=,r=,p=")
	f.Add("SCRAM-SHA-256", "y,,n=u,r=r,e=1", ",p=")
	secret, _ := makeVerifier(f, "pw", []byte("0123456789abcdef"), 1)
	v, _ := parseSCRAMVerifier(secret)
	f.Fuzz(func(t *testing.T, mech, first, final string) {
		srv := &scramServer{v: v, cbData: []byte("cb")}
		if _, err := srv.clientFirst(mech, []byte(first)); err != nil {
			return
		}
		srv.clientFinal([]byte(final))
		cl := &scramClient{clientKey: make([]byte, 32), v: v}
		cl.clientFirst()
		cl.serverFirst([]byte(first))
		cl.serverFinal([]byte(final))
		parseSCRAMVerifier(first)
	})
}
