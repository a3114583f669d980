package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoVerifier is returned by a VerifierSource for a user that does not
// exist, cannot log in, has expired, or has no SCRAM secret. The client sees
// the same 28P01 as for a wrong password.
var ErrNoVerifier = errors.New("no usable SCRAM verifier for user")

// VerifierSource returns a user's SCRAM verifier, the pg_authid.rolpassword
// text "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>".
type VerifierSource interface {
	Verifier(ctx context.Context, user string) (string, error)
}

// AuthidVerifiers reads verifiers from the current primary's pg_authid with
// the agent's control role, and caches each answer (found or not) briefly so
// a connection storm costs one query per user.
type AuthidVerifiers struct {
	router Router
	creds  func() Credentials
	ttl    time.Duration
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	logger hclog.Logger

	mu    sync.Mutex
	cache map[string]cachedVerifier
	conn  *pgconn.PgConn
	addr  string // where conn points
}

type cachedVerifier struct {
	verifier string
	err      error
	expires  time.Time
}

// maxCachedVerifiers caps the cache; it is flushed when full (a flood of
// made-up user names must not grow memory).
const maxCachedVerifiers = 10000

// NewAuthidVerifiers returns a VerifierSource reading pg_authid on the
// router's primary as the role creds returns. ttl is how long an answer is
// cached (default 5s when zero).
func NewAuthidVerifiers(router Router, creds func() Credentials, ttl time.Duration, logger hclog.Logger) *AuthidVerifiers {
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	d := &net.Dialer{}
	return &AuthidVerifiers{router: router, creds: creds, ttl: ttl, dial: d.DialContext,
		logger: logger, cache: map[string]cachedVerifier{}}
}

// Verifier implements VerifierSource.
func (a *AuthidVerifiers) Verifier(ctx context.Context, user string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if c, ok := a.cache[user]; ok && now.Before(c.expires) {
		return c.verifier, c.err
	}
	v, err := a.lookup(ctx, user)
	if err != nil && !errors.Is(err, ErrNoVerifier) {
		return "", err // do not cache outages
	}
	if len(a.cache) >= maxCachedVerifiers {
		a.cache = map[string]cachedVerifier{}
	}
	a.cache[user] = cachedVerifier{verifier: v, err: err, expires: now.Add(a.ttl)}
	return v, err
}

// Close closes the lookup connection.
func (a *AuthidVerifiers) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		a.conn.Close(ctx)
		a.conn = nil
	}
	return nil
}

const authidQuery = `SELECT rolpassword FROM pg_catalog.pg_authid
 WHERE rolname = $1 AND rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now())`

func (a *AuthidVerifiers) lookup(ctx context.Context, user string) (string, error) {
	// Any member has the same pg_authid; prefer the primary (a slightly
	// stale view is fine), else a standby, so clients can still log in
	// while a failover is underway.
	target, _ := a.router.Primary()
	if target.Addr == "" {
		if sb := a.router.Standbys(); len(sb) > 0 {
			target = sb[0]
		}
	}
	if target.Addr == "" {
		return "", errors.New("looking up SCRAM verifier: no primary or standby known")
	}
	if a.conn != nil && (a.addr != target.Addr || a.conn.IsClosed()) {
		a.conn.Close(ctx)
		a.conn = nil
	}
	if a.conn == nil {
		cr := a.creds()
		host, port, err := net.SplitHostPort(target.Addr)
		if err != nil {
			return "", fmt.Errorf("looking up SCRAM verifier: bad address %q: %w", target.Addr, err)
		}
		db := cr.Database
		if db == "" {
			db = "postgres"
		}
		cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s sslmode=disable connect_timeout=5", host, port))
		if err != nil {
			return "", fmt.Errorf("looking up SCRAM verifier: %w", err)
		}
		cfg.User, cfg.Password, cfg.Database = cr.User, cr.Password, db
		cfg.DialFunc = a.dial
		cfg.RuntimeParams["application_name"] = "pgbattery-gateway"
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return "", fmt.Errorf("looking up SCRAM verifier: connecting to %s as %s: %w", target.Addr, cr.User, err)
		}
		a.conn, a.addr = conn, target.Addr
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res := a.conn.ExecParams(qctx, authidQuery, [][]byte{[]byte(user)}, nil, nil, nil).Read()
	if res.Err != nil {
		a.conn.Close(ctx)
		a.conn = nil
		return "", fmt.Errorf("looking up SCRAM verifier for %q on %s: %w", user, target.Addr, res.Err)
	}
	if len(res.Rows) == 0 || res.Rows[0][0] == nil {
		return "", ErrNoVerifier
	}
	return string(res.Rows[0][0]), nil
}
