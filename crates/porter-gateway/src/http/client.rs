//! Who the peer is, as far as the request says: the client IP (behind trusted proxies), the
//! client id header, and the credentials presented for identification.

use std::net::IpAddr;
use std::str::FromStr;

use actix_web::HttpRequest;
use ipnet::IpNet;
use porter_identity::Presented;

/// Peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        // IPv4-mapped IPv6 peers count as the IPv4 address they carry.
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's IP: the peer, or, when the peer is a trusted proxy, the nearest
    /// untrusted hop of `X-Forwarded-For` (read from the right, as proxies append).
    pub fn client_ip(&self, request: &HttpRequest) -> Option<IpAddr> {
        let peer = request.peer_addr()?.ip().to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

/// A trusted-proxy entry as configured: a network in CIDR notation (`10.0.0.0/8`) or a bare
/// address (`::1`); IPv4-mapped IPv6 forms read as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(pub IpNet);

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(text: &str) -> Result<ProxyNet, String> {
        let text = text.trim();
        let error =
            || format!("invalid network `{text}`: use an address or CIDR, e.g. 10.0.0.0/8 or ::1");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address = address
            .parse::<IpAddr>()
            .map_err(|_| error())?
            .to_canonical();
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| error())?,
            None if address.is_ipv4() => 32,
            None => 128,
        };
        IpNet::new(address, prefix)
            .map(|net| ProxyNet(net.trunc()))
            .map_err(|_| error())
    }
}

/// The caller's `X-Client-ID`: non-empty, at most 200 bytes, else none.
pub fn client_id_of(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get("x-client-id")
        .and_then(|v| v.to_str().ok())
        .filter(|c| !c.is_empty() && c.len() <= 200)
}

/// Whether a request carries a credential (a token or a session), i.e. names a user.
pub fn carries_credential(request: &HttpRequest) -> bool {
    let headers = request.headers();
    headers.contains_key("authorization") || headers.contains_key("x-session-id")
}

/// The credentials a request presents, as its headers hold them.
pub fn presented(request: &HttpRequest) -> Presented<'_> {
    let headers = request.headers();
    Presented {
        authorization: headers.get("authorization").map(|v| v.as_bytes()),
        session_id: headers.get("x-session-id").map(|v| v.as_bytes()),
        client_id: client_id_of(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn proxies(trusted: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            trusted
                .iter()
                .map(|t| t.parse::<ProxyNet>().unwrap().0)
                .collect(),
        )
    }

    #[test]
    fn networks_parse_and_match() {
        let net = proxies(&["10.0.0.0/8"]);
        assert!(net.trusts("10.1.2.3".parse().unwrap()));
        assert!(!net.trusts("11.0.0.1".parse().unwrap()));
        assert!(net.trusts("::ffff:10.9.9.9".parse().unwrap()));
        let host = proxies(&["::1"]);
        assert!(host.trusts("::1".parse().unwrap()));
        assert!(!host.trusts("::2".parse().unwrap()));
        let all = proxies(&["0.0.0.0/0"]);
        assert!(all.trusts("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let request = TestRequest::default()
            .peer_addr("10.0.0.5:1234".parse().unwrap())
            .insert_header(("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.9"))
            .to_http_request();
        // Untrusted peer: its own address, whatever the header says.
        assert_eq!(
            proxies(&[]).client_ip(&request),
            Some("10.0.0.5".parse().unwrap())
        );
        // Trusted proxies: the nearest untrusted hop, not the spoofable leftmost one.
        assert_eq!(
            proxies(&["10.0.0.0/8"]).client_ip(&request),
            Some("203.0.113.7".parse().unwrap())
        );
        // Garbage in the chain stops the walk at the last good hop.
        let garbage = TestRequest::default()
            .peer_addr("10.0.0.5:1234".parse().unwrap())
            .insert_header(("X-Forwarded-For", "203.0.113.7, junk"))
            .to_http_request();
        assert_eq!(
            proxies(&["10.0.0.0/8"]).client_ip(&garbage),
            Some("10.0.0.5".parse().unwrap())
        );
    }
}
