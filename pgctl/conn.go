package pgctl

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Peer is another node's PostgreSQL, as reached over the network.
type Peer struct {
	Host string
	Port int
}

func (p Peer) String() string { return fmtHostPort(p.Host, p.Port) }

func fmtHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// defaultConnectTimeout bounds connection set-up when ctx has no deadline.
const defaultConnectTimeout = 10 * time.Second

// quoteConnValue quotes a libpq keyword/value connection string value.
func quoteConnValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// connString renders libpq keyword/value pairs in the given order.
func connString(kv ...string) string {
	var b strings.Builder
	for j := 0; j+1 < len(kv); j += 2 {
		if kv[j+1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[j] + "=" + quoteConnValue(kv[j+1]))
	}
	return b.String()
}

// timeoutSeconds renders a connect_timeout (libpq wants whole seconds, ≥ 2
// to be meaningful).
func timeoutSeconds(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	return strconv.Itoa(max(s, 2))
}

// PeerConnString builds a libpq/pgx keyword/value connection string to a
// peer's PostgreSQL with connect_timeout. It carries the password, so it
// is for handing to pgx.ParseConfig in memory only: never log it, never put
// it in a process's arguments.
func PeerConnString(peer Peer, creds Credentials, dbname string, connectTimeout time.Duration) string {
	if dbname == "" {
		dbname = "postgres"
	}
	if connectTimeout <= 0 {
		connectTimeout = defaultConnectTimeout
	}
	return connString(
		"host", peer.Host,
		"port", strconv.Itoa(peer.Port),
		"user", creds.User,
		"password", creds.Password,
		"dbname", dbname,
		"connect_timeout", timeoutSeconds(connectTimeout),
		"application_name", "pgbattery",
	)
}

// PeerConnConfig parses PeerConnString into a pgx configuration.
func PeerConnConfig(peer Peer, creds Credentials, dbname string, connectTimeout time.Duration) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(PeerConnString(peer, creds, dbname, connectTimeout))
	if err != nil {
		// The error may quote the string; keep the password out of it.
		return nil, fmt.Errorf("building a connection configuration for %s as %s: invalid parameters", peer, creds.User)
	}
	return cfg, nil
}

// passfileConnInfo is the conninfo for programs and the walreceiver: the
// password comes from the 0600 passfile, never from the string itself.
func (i *Instance) passfileConnInfo(peer Peer, user, dbname, appName string) string {
	return connString(
		"host", peer.Host,
		"port", strconv.Itoa(peer.Port),
		"user", user,
		"dbname", dbname,
		"passfile", i.cfg.PassFile,
		"application_name", appName,
		"connect_timeout", "5",
		// Notice a dead primary quickly (the walreceiver also has
		// wal_receiver_timeout).
		"keepalives_idle", "5",
		"keepalives_interval", "2",
		"keepalives_count", "3",
		"tcp_user_timeout", "10000",
	)
}

// Connect opens a connection to the local PostgreSQL as the agent's control
// role over the unix socket.
func (i *Instance) Connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connString(
		"host", i.cfg.SocketDir,
		"port", strconv.Itoa(i.cfg.Port),
		"user", i.cfg.Superuser.User,
		"dbname", "postgres",
		"sslmode", "disable",
		"application_name", "pgbattery",
	))
	if err != nil {
		return nil, fmt.Errorf("building the local connection configuration: %w", err)
	}
	cfg.Password = i.cfg.Superuser.Password
	if _, ok := ctx.Deadline(); !ok {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL at %s: %w", i.cfg.SocketDir, err)
	}
	return conn, nil
}

// NotYetAccepting reports whether err is PostgreSQL refusing connections
// for now (SQLSTATE 57P03): starting up, in crash recovery, shutting down,
// or a standby that has not reached a consistent state. The server runs;
// it just answers no query yet.
func NotYetAccepting(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57P03" // cannot_connect_now
}

// ConnectPeer opens a connection to a peer's PostgreSQL as the agent's
// control role (to ask a candidate for its LSNs, say).
func (i *Instance) ConnectPeer(ctx context.Context, peer Peer) (*pgx.Conn, error) {
	cfg, err := PeerConnConfig(peer, i.cfg.Superuser, "postgres", defaultConnectTimeout)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL at %s: %w", peer, err)
	}
	return conn, nil
}
