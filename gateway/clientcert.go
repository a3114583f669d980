package gateway

import (
	"crypto/tls"
	"fmt"
)

// checkClientCert enforces Config.ClientCert on a session whose start-up
// packet has been read (s.user is known) and whose TLS state, if any, is st.
// It runs before password authentication, as PostgreSQL checks a
// clientcert requirement first: a client without the right certificate
// learns nothing about the password.
func (s *session) checkClientCert(st *tls.ConnectionState) error {
	mode := s.g.cfg.ClientCert
	if mode == ClientCertOff || mode == "" {
		return nil
	}
	if st == nil || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return s.fatal(codeInvalidAuthSpec, "connection requires a valid client certificate")
	}
	if mode == ClientCertVerifyFull {
		if cn := st.PeerCertificates[0].Subject.CommonName; cn != s.user {
			s.logger.Debug("client certificate CN does not match the user", "cn", cn)
			return s.fatal(codeInvalidAuthSpec,
				fmt.Sprintf("certificate authentication failed for user %q: the client certificate's CN is not the user name (clientcert=verify-full)", s.user))
		}
	}
	return nil
}
