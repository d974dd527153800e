//! The host a running IDE is reached at (the route's `host`): the address of the node its port is published on, as
//! the engine reports it (a Swarm node's advertised address). It comes from outside workspaced (the engine, and
//! through it whatever a node advertised), so it is checked before it is stored, logged or connected to.

use core::net::IpAddr;

/// The host of a route without one: the IDE's port is published on this machine's loopback.
pub const LOOPBACK: &str = "127.0.0.1";

/// Longest host accepted: a DNS name's limit (RFC 1035), and far more than any IP address needs.
pub const MAX_HOST_LEN: usize = 253;

/// Why an address is not one the proxy may forward to. The message is safe to log and to show: it never repeats the
/// address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a usable node address: {0}")]
pub struct InvalidHost(pub &'static str);

/// Checks a node's address and returns it in the form the route keeps: an IP address (v4 or v6, without brackets,
/// as Rust prints it) or a DNS name in lowercase. Refused: empty or longer than [`MAX_HOST_LEN`], a port or any
/// character a URL would read as something else, the unspecified, broadcast and multicast addresses, and
/// link-local ones (`169.254.0.0/16` holds the cloud's instance metadata service; `fe80::/10` needs a zone).
pub fn parse_upstream_host(raw: &str) -> Result<String, InvalidHost> {
    if raw.is_empty() {
        return Err(InvalidHost("empty"));
    }
    if raw.len() > MAX_HOST_LEN {
        return Err(InvalidHost("longer than 253 characters"));
    }
    let bare = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(raw);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return check_ip(ip).map(|()| ip.to_string());
    }
    check_dns_name(raw)?;
    Ok(raw.to_ascii_lowercase())
}

fn check_ip(ip: IpAddr) -> Result<(), InvalidHost> {
    if ip.is_unspecified() {
        return Err(InvalidHost("the unspecified address"));
    }
    if ip.is_multicast() {
        return Err(InvalidHost("a multicast address"));
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Err(InvalidHost("the broadcast address")),
        IpAddr::V4(v4) if v4.is_link_local() => Err(InvalidHost("a link-local address")),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Err(InvalidHost("a link-local address")),
        // `::ffff:169.254.169.254` is the metadata service too.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => check_ip(IpAddr::V4(v4)),
            None => Ok(()),
        },
        IpAddr::V4(_) => Ok(()),
    }
}

/// A DNS name: labels of 1 to 63 letters, digits and inner hyphens, joined by dots, the last one not all digits
/// (`1.2.3` is no name, and not an address either).
fn check_dns_name(raw: &str) -> Result<(), InvalidHost> {
    let mut last = "";
    for label in raw.split('.') {
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 {
            return Err(InvalidHost("neither an IP address nor a DNS name (a label is empty or too long)"));
        }
        if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
            return Err(InvalidHost("neither an IP address nor a DNS name (a character outside a-z 0-9 - .)"));
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return Err(InvalidHost("neither an IP address nor a DNS name (a label starts or ends with -)"));
        }
        last = label;
    }
    if last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(InvalidHost("neither an IP address nor a DNS name (all-numeric last label)"));
    }
    Ok(())
}

/// `host:port` for a URL or a connect: an IPv6 address in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_a_node_advertises_are_kept_in_one_form() {
        for (raw, kept) in [
            ("10.0.1.5", "10.0.1.5"),
            ("127.0.0.1", "127.0.0.1"),
            ("192.168.7.20", "192.168.7.20"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("::1", "::1"),
            ("localhost", "localhost"),
            ("Node-B.Cluster.Example.EDU", "node-b.cluster.example.edu"),
            ("ip-10-0-1-5.ec2.internal", "ip-10-0-1-5.ec2.internal"),
        ] {
            assert_eq!(parse_upstream_host(raw).as_deref(), Ok(kept), "{raw}");
        }
        let longest = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        assert_eq!(longest.len(), MAX_HOST_LEN);
        assert!(parse_upstream_host(&longest).is_ok());
    }

    #[test]
    fn anything_else_is_refused_without_being_repeated() {
        for raw in [
            "",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fe80::1%eth0",
            "10.0.1.5:2377",
            "[::1]:80",
            "node b",
            "node_b",
            "evil.example/x",
            "user@host",
            "a..b",
            ".a",
            "a.",
            "-a.example",
            "a-.example",
            "1.2.3",
            "999.1.1.1",
            "host\n",
            "h\u{e9}te",
        ] {
            let e = parse_upstream_host(raw).expect_err(raw);
            assert!(raw.is_empty() || !e.to_string().contains(raw), "{e} repeats {raw:?}");
        }
        let too_long = format!("{}.example", "a.".repeat(125));
        assert!(too_long.len() > MAX_HOST_LEN);
        assert_eq!(parse_upstream_host(&too_long), Err(InvalidHost("longer than 253 characters")));
        assert!(parse_upstream_host(&format!("{}.example", "a".repeat(64))).is_err(), "a label over 63");
    }

    #[test]
    fn an_ipv6_authority_has_brackets() {
        assert_eq!(authority("10.0.1.5", 30001), "10.0.1.5:30001");
        assert_eq!(authority("localhost", 30001), "localhost:30001");
        assert_eq!(authority("2001:db8::7", 30001), "[2001:db8::7]:30001");
    }
}
