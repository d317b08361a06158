package auth

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
)

// Identity is who is on the other end of a connection, as far as the
// server can tell. Gearman has no authentication packet, so an identity
// comes from the transport: the verified client certificate of a mutual
// TLS connection, and the source address.
type Identity struct {
	// Addr is the peer's IP address; the zero Addr when it is unknown (a
	// connection that is not TCP), which no address rule matches.
	Addr netip.Addr
	// Verified is true when the peer presented a client certificate that
	// verified against the configured client CA. CommonName and Names are
	// empty unless Verified is true: an unverified certificate says
	// nothing.
	Verified bool
	// CommonName is the verified certificate's subject common name.
	CommonName string
	// Names are the verified certificate's subject alternative names: DNS
	// names, e-mail addresses, URIs and IP addresses, in text form.
	Names []string
}

// FromConn returns the identity of a connection: its source address and,
// when cs is not nil and the peer's certificate chain was verified, the
// names in the peer's leaf certificate.
func FromConn(remote net.Addr, cs *tls.ConnectionState) Identity {
	var id Identity
	switch a := remote.(type) {
	case *net.TCPAddr:
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			id.Addr = ip.Unmap()
		}
	case nil:
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			id.Addr = ap.Addr().Unmap()
		}
	}
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return id
	}
	leaf := cs.PeerCertificates[0]
	id.Verified = true
	id.CommonName = leaf.Subject.CommonName
	id.Names = append(id.Names, leaf.DNSNames...)
	id.Names = append(id.Names, leaf.EmailAddresses...)
	for _, u := range leaf.URIs {
		id.Names = append(id.Names, u.String())
	}
	for _, ip := range leaf.IPAddresses {
		id.Names = append(id.Names, ip.String())
	}
	return id
}

// String describes the identity for logs and error messages, such as
// "cn=worker-1 addr=10.0.0.7" or "addr=192.0.2.1". It contains no secret.
func (id Identity) String() string {
	var sb strings.Builder
	if id.Verified {
		sb.WriteString("cn=")
		sb.WriteString(id.CommonName)
		sb.WriteByte(' ')
	}
	sb.WriteString("addr=")
	if id.Addr.IsValid() {
		sb.WriteString(id.Addr.String())
	} else {
		sb.WriteString("unknown")
	}
	return sb.String()
}
