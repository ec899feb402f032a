//! Deleting stale UDP conntrack entries, as kube-proxy does when a UDP
//! Service loses an endpoint: without it, a client that keeps sending from
//! the same socket stays pinned by its conntrack entry to the endpoint that
//! is gone, and its datagrams never reach the new one.
//!
//! Speaks ctnetlink (NETLINK_NETFILTER) directly: one dump of the table
//! (IPv4 and IPv6 entries), then one delete per matching entry by its
//! original tuple. Runs in the caller's network namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::nfnetlink::{
    attrs, error_code, finish, messages, nest_end, nest_start, put, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_DUMP: u16 = 0x300;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;
const ENOENT: i32 = 2;

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A conntrack entry: what the client sent to, and what answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
}

impl Entry {
    /// A UDP flow that was DNATed to `ip:port` (a Service's endpoint), as
    /// opposed to traffic addressed to the pod directly.
    fn nat_to_udp_endpoint(&self, ip: IpAddr, port: u16) -> bool {
        self.orig.protocol == IPPROTO_UDP
            && self.reply.src == ip
            && self.reply.src_port == port
            && (self.orig.dst != ip || self.orig.dst_port != port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("conntrack netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("conntrack {op}: kernel error {errno}")]
    Kernel { op: &'static str, errno: i32 },
}

/// Delete the UDP conntrack entries of flows DNATed to any of `endpoints`
/// (ip, port). Returns how many were deleted.
pub fn delete_udp_to_endpoints(endpoints: &[(IpAddr, u16)]) -> Result<usize, ConntrackError> {
    if endpoints.is_empty() {
        return Ok(0);
    }
    delete_where(|e| endpoints.iter().any(|(ip, port)| e.nat_to_udp_endpoint(*ip, *port)))
}

/// Delete the UDP conntrack entries of flows a client sent to any of
/// `destinations`: (address, port), or (None, port) for a NodePort on any of
/// the node's addresses. kube-proxy does this when a UDP Service goes from
/// no endpoints to some: the flows made while it rejected are not NATed, and
/// their entries would keep the client's datagrams from reaching the new
/// endpoints. Returns how many were deleted.
pub fn delete_udp_to_destinations(destinations: &[(Option<IpAddr>, u16)]) -> Result<usize, ConntrackError> {
    if destinations.is_empty() {
        return Ok(0);
    }
    delete_where(|e| {
        e.orig.protocol == IPPROTO_UDP
            && destinations.iter().any(|(ip, port)| e.orig.dst_port == *port && ip.is_none_or(|ip| e.orig.dst == ip))
    })
}

fn delete_where(stale: impl Fn(&Entry) -> bool) -> Result<usize, ConntrackError> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let stale: Vec<Entry> = dump(&socket)?.into_iter().filter(|e| stale(e)).collect();
    let mut deleted = 0;
    for (seq, entry) in stale.iter().enumerate() {
        let seq = u32::try_from(seq).unwrap_or(u32::MAX).wrapping_add(2);
        let family = if entry.orig.src.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut msg = header(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family);
        push_tuple(&mut msg, CTA_TUPLE_ORIG, &entry.orig);
        finish(&mut msg, 0);
        socket.send(&msg, 0)?;
        match ack(&socket)? {
            0 => deleted += 1,
            // gone meanwhile
            e if e == -ENOENT => {}
            errno => return Err(ConntrackError::Kernel { op: "delete", errno }),
        }
    }
    Ok(deleted)
}

/// Every conntrack entry, IPv4 and IPv6.
pub fn dump(socket: &Socket) -> Result<Vec<Entry>, ConntrackError> {
    let mut msg = header(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, AF_UNSPEC);
    finish(&mut msg, 0);
    socket.send(&msg, 0)?;
    let mut out = Vec::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        for (ty, payload) in messages(&buf) {
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = error_code(payload);
                    if errno != 0 {
                        return Err(ConntrackError::Kernel { op: "dump", errno });
                    }
                }
                t if t == (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW) => {
                    if let Some(e) = payload.get(4..).and_then(parse_entry) {
                        out.push(e);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The errno of the kernel's answer to one request (0 = done).
fn ack(socket: &Socket) -> Result<i32, ConntrackError> {
    loop {
        let (buf, _) = socket.recv_from_full()?;
        for (ty, payload) in messages(&buf) {
            if ty == NLMSG_ERROR {
                return Ok(error_code(payload));
            }
        }
    }
}

/// A request with its header; [`finish`] sets its length.
fn header(msg: u16, flags: u16, seq: u32, family: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    crate::nfnetlink::header(&mut v, NFNL_SUBSYS_CTNETLINK << 8 | msg, flags, seq, family, 0);
    v
}

fn push_tuple(msg: &mut Vec<u8>, which: u16, t: &Tuple) {
    let tuple = nest_start(msg, which);
    let ip = nest_start(msg, CTA_TUPLE_IP);
    match (t.src, t.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            put(msg, CTA_IP_V4_SRC, &src.octets());
            put(msg, CTA_IP_V4_DST, &dst.octets());
        }
        (src, dst) => {
            put(msg, CTA_IP_V6_SRC, &v6_octets(src));
            put(msg, CTA_IP_V6_DST, &v6_octets(dst));
        }
    }
    nest_end(msg, ip);
    let proto = nest_start(msg, CTA_TUPLE_PROTO);
    put(msg, CTA_PROTO_NUM, &[t.protocol]);
    put(msg, CTA_PROTO_SRC_PORT, &t.src_port.to_be_bytes());
    put(msg, CTA_PROTO_DST_PORT, &t.dst_port.to_be_bytes());
    nest_end(msg, proto);
    nest_end(msg, tuple);
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

fn parse_tuple(buf: &[u8]) -> Option<Tuple> {
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let mut t = Tuple { src: unspecified, dst: unspecified, protocol: 0, src_port: 0, dst_port: 0 };
    let v4 =
        |b: &[u8]| -> Option<IpAddr> { Some(Ipv4Addr::new(*b.first()?, *b.get(1)?, *b.get(2)?, *b.get(3)?).into()) };
    let v6 = |b: &[u8]| -> Option<IpAddr> { Some(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?).into()) };
    let port = |b: &[u8]| -> Option<u16> { Some(u16::from_be_bytes([*b.first()?, *b.get(1)?])) };
    for (ty, body) in attrs(buf) {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, b) in attrs(body) {
                    match ty {
                        CTA_IP_V4_SRC => t.src = v4(b)?,
                        CTA_IP_V4_DST => t.dst = v4(b)?,
                        CTA_IP_V6_SRC => t.src = v6(b)?,
                        CTA_IP_V6_DST => t.dst = v6(b)?,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, b) in attrs(body) {
                    match ty {
                        CTA_PROTO_NUM => t.protocol = *b.first()?,
                        CTA_PROTO_SRC_PORT => t.src_port = port(b)?,
                        CTA_PROTO_DST_PORT => t.dst_port = port(b)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(t)
}

fn parse_entry(buf: &[u8]) -> Option<Entry> {
    let (mut orig, mut reply) = (None, None);
    for (ty, body) in attrs(buf) {
        match ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(body),
            CTA_TUPLE_REPLY => reply = parse_tuple(body),
            _ => {}
        }
    }
    Some(Entry { orig: orig?, reply: reply? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Tuple {
        Tuple {
            src: Ipv4Addr::from(src).into(),
            dst: Ipv4Addr::from(dst).into(),
            protocol: IPPROTO_UDP,
            src_port: sport,
            dst_port: dport,
        }
    }

    #[test]
    fn an_ipv6_tuple_survives_encoding_and_parsing() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let t = Tuple {
            src: ip("fd00:10:244::5"),
            dst: ip("fd00:10:96::a"),
            protocol: IPPROTO_UDP,
            src_port: 40000,
            dst_port: 53,
        };
        let reply =
            Tuple { src: ip("fd00:10:244:1::9"), dst: t.src, protocol: IPPROTO_UDP, src_port: 5353, dst_port: 40000 };
        let mut msg = Vec::new();
        push_tuple(&mut msg, CTA_TUPLE_ORIG, &t);
        push_tuple(&mut msg, CTA_TUPLE_REPLY, &reply);
        let e = parse_entry(&msg).unwrap();
        assert_eq!(e, Entry { orig: t, reply });
        assert!(e.nat_to_udp_endpoint(ip("fd00:10:244:1::9"), 5353));
    }

    #[test]
    fn a_tuple_survives_encoding_and_parsing() {
        let t = tuple([10, 244, 1, 5], 40000, [10, 96, 0, 7], 53);
        let mut msg = Vec::new();
        push_tuple(&mut msg, CTA_TUPLE_ORIG, &t);
        let reply = tuple([10, 244, 2, 9], 5353, [10, 244, 1, 5], 40000);
        push_tuple(&mut msg, CTA_TUPLE_REPLY, &reply);
        assert_eq!(parse_entry(&msg), Some(Entry { orig: t, reply }));
    }

    #[test]
    fn only_flows_nated_to_the_endpoint_match() {
        let ep = (IpAddr::from(Ipv4Addr::new(10, 244, 2, 9)), 5353);
        let via_service = Entry {
            orig: tuple([10, 244, 1, 5], 40000, [10, 96, 0, 7], 53),
            reply: tuple([10, 244, 2, 9], 5353, [10, 244, 1, 5], 40000),
        };
        let direct = Entry {
            orig: tuple([10, 244, 1, 5], 40000, [10, 244, 2, 9], 5353),
            reply: tuple([10, 244, 2, 9], 5353, [10, 244, 1, 5], 40000),
        };
        assert!(via_service.nat_to_udp_endpoint(ep.0, ep.1));
        assert!(!direct.nat_to_udp_endpoint(ep.0, ep.1));
        assert!(!via_service.nat_to_udp_endpoint(ep.0, 5354));
    }
}
