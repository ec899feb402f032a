//! IP and CIDR checks as Kubernetes 1.33 applies them to legacy fields
//! (StrictIPCIDRValidation is off): Go's "sloppy" parser, which accepts
//! IPv4 octets with leading zeros.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::field::{self, Path};
use super::FieldError;

pub(crate) const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
pub(crate) const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

fn parse_v4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut n: u32 = 0;
        for c in p.bytes() {
            n = n * 10 + u32::from(c - b'0');
            if n > 255 {
                return None;
            }
        }
        *o = n as u8;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// netutils.ParseIPSloppy. An IPv4-mapped IPv6 address is IPv4, as Go's
/// `To4` sees it.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        let v6: Ipv6Addr = s.parse().ok()?;
        Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })
    } else {
        parse_v4_sloppy(s).map(IpAddr::V4)
    }
}

/// netutils.ParseCIDRSloppy: the address and prefix length.
pub(crate) fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    let (ip, bits) = s.split_once('/')?;
    let ip = if ip.contains(':') { IpAddr::V6(ip.parse().ok()?) } else { IpAddr::V4(parse_v4_sloppy(ip)?) };
    if bits.is_empty() || !bits.bytes().all(|c| c.is_ascii_digit()) || bits.len() > 3 {
        return None;
    }
    let n: u32 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (n <= max).then_some((ip, n))
}

/// IsValidIPForLegacyField with strict validation off.
pub(crate) fn validate_ip(p: &Path, value: &str, out: &mut Vec<FieldError>) -> bool {
    if parse_ip(value).is_none() {
        out.push(field::invalid(p, value, IP_MSG));
        return false;
    }
    true
}

/// IsValidCIDRForLegacyField with strict validation off.
pub(crate) fn validate_cidr(p: &Path, value: &str, out: &mut Vec<FieldError>) -> bool {
    if parse_cidr(value).is_none() {
        out.push(field::invalid(p, value, CIDR_MSG));
        return false;
    }
    true
}

/// ValidateNonSpecialIP: no unspecified, loopback or link-local addresses
/// as endpoints.
pub(crate) fn validate_non_special_ip(p: &Path, value: &str, out: &mut Vec<FieldError>) {
    let Some(ip) = parse_ip(value) else {
        out.push(field::invalid(p, value, "must be a valid IP address"));
        return;
    };
    if ip.is_unspecified() {
        out.push(field::invalid(p, value, &format!("may not be unspecified ({value})")));
    }
    if ip.is_loopback() {
        out.push(field::invalid(p, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    let (link_local_unicast, link_local_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 169 && o[1] == 254, o[0] == 224 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0 == 0xfe80, s[0] & 0xff0f == 0xff02)
        }
    };
    if link_local_unicast {
        out.push(field::invalid(p, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
    }
    if link_local_multicast {
        out.push(field::invalid(p, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_parsing_accepts_leading_zeros() {
        assert_eq!(parse_ip("010.0.0.1"), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert!(parse_ip("10.0.0.256").is_none());
        assert!(parse_ip("10.0.0").is_none());
        assert!(matches!(parse_ip("::ffff:1.2.3.4"), Some(IpAddr::V4(_))));
        assert!(matches!(parse_ip("2001:db8::1"), Some(IpAddr::V6(_))));
        assert!(parse_cidr("10.244.0.0/24").is_some());
        assert!(parse_cidr("10.244.0.0/33").is_none());
        assert!(parse_cidr("10.244.0.0").is_none());
        assert!(parse_cidr("fd00::/64").is_some());
    }

    #[test]
    fn special_addresses_are_named() {
        let p = Path::root("ip");
        let mut out = Vec::new();
        validate_non_special_ip(&p, "127.0.0.1", &mut out);
        validate_non_special_ip(&p, "169.254.1.1", &mut out);
        validate_non_special_ip(&p, "0.0.0.0", &mut out);
        let msgs: Vec<&str> = out.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
                "Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
                "Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
            ]
        );
    }
}
