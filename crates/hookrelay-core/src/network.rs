//! Which addresses an endpoint may resolve to. Private, loopback, link-local and
//! other non-public addresses are refused (SSRF into the operator's network) unless
//! a CIDR in `dispatch.allow_networks` covers them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// True for addresses that are not on the public internet.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_non_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link local fe80::/10
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || seg0 == 0x2002 // 6to4: tunnels to an arbitrary IPv4 address
                || (seg0 & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        }
    }
}

/// The IPv4 address an IPv6 address stands for: v4-mapped (`::ffff:a.b.c.d`),
/// v4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) forms.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let high_zero = s[..6].iter().all(|x| *x == 0);
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0);
    if nat64 || (high_zero && !v6.is_loopback() && !v6.is_unspecified()) {
        return Some(low);
    }
    None
}

fn is_non_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240 // reserved
}

/// May hookrelay send to `ip`?
pub fn is_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    let canonical = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    !is_non_public(ip)
        || allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        let cases = [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("::1", true),
            ("fd00::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("64:ff9b::a00:1", true),
            ("64:ff9b::808:808", false),
            ("::127.0.0.1", true),
            ("2002:7f00:1::1", true),
            ("fec0::1", true),
            ("93.184.216.34", false),
            ("2606:2800:220:1:248:1893:25c8:1946", false),
            ("8.8.8.8", false),
        ];
        for (ip, non_public) in cases {
            assert_eq!(is_non_public(ip.parse().unwrap()), non_public, "{ip}");
        }
    }

    #[test]
    fn allow_networks_exempt_addresses() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(is_allowed("127.0.0.1".parse().unwrap(), &allow));
        assert!(!is_allowed("10.0.0.1".parse().unwrap(), &allow));
        assert!(is_allowed("8.8.8.8".parse().unwrap(), &[]));
        assert!(
            is_allowed("::ffff:127.0.0.1".parse().unwrap(), &allow),
            "v4-mapped matches a v4 CIDR"
        );
    }
}
