//! Set and map elements sent to nf_tables over netlink, without `nft`.
//!
//! Elements are the bulk of a sync (10,000 Services × 10 endpoints is
//! 130,000 of them) and `nft` parses and evaluates each at 7–10 µs, which
//! alone puts a full sync over a second. The kernel takes them as plain
//! bytes: a batch (`NFNL_MSG_BATCH_BEGIN` … `END`) of `NEWSETELEM` and
//! `DELSETELEM` messages, committed as one nf_tables transaction, all or
//! nothing. Chains, rules and set declarations stay with `nft` (few, and
//! its syntax is what people read).
//!
//! Encoding, as nft itself does it: each field of a concatenated key takes a
//! whole number of 32-bit words; addresses and ports are in network order,
//! protocols one byte, the `numgen` index a host-order u32.

use std::path::Path;

use std::os::fd::AsRawFd;

use nix::sys::socket::{recv, send, setsockopt, sockopt, MsgFlags};

use super::render::{Data, Key, TABLE};
use super::Family;
use crate::nfnetlink::{
    attrs, error_code, messages, nest_end, nest_start, put, put_str, HEADER_LEN, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};
use crate::{netns, nfnetlink, Error, Result};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NLM_F_CREATE: u16 = 0x400;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NF_DROP: i32 = 0;
const NFT_GOTO: i32 = -4;

/// A netlink attribute's length is a u16: a message's element list stays
/// below it, and a long list goes out as several messages of one batch.
const MAX_ELEMENTS_BYTES: usize = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Delete,
}

/// The message being written: where it and its element list start.
struct Open {
    op: Op,
    set: &'static str,
    msg: usize,
    elements: usize,
}

/// One nf_tables transaction of element changes for table `skiff` of a family.
pub(crate) struct Batch {
    family: Family,
    buf: Vec<u8>,
    seq: u32,
    /// Messages the kernel answers (all but the batch's begin and end).
    messages: u32,
    /// (sequence number, what the message does), to name a refused one.
    what: Vec<(u32, String)>,
    elements: usize,
    open: Option<Open>,
    /// What was queued, one line each in nft's words (for tests).
    #[cfg(test)]
    pub log: Vec<String>,
}

impl Batch {
    pub fn new(family: Family) -> Batch {
        let mut b = Batch {
            family,
            buf: Vec::with_capacity(1 << 16),
            seq: 1,
            messages: 0,
            what: Vec::new(),
            elements: 0,
            open: None,
            #[cfg(test)]
            log: Vec::new(),
        };
        b.control(NFNL_MSG_BATCH_BEGIN);
        b
    }

    /// Element changes queued (adds and deletes; a flush counts as none).
    pub fn elements(&self) -> usize {
        self.elements
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0 && self.open.is_none()
    }

    /// Remove every element of `set` (a `DELSETELEM` without a list).
    pub fn flush(&mut self, set: &str) {
        #[cfg(test)]
        self.log.push(format!("flush {set}"));
        self.close();
        self.what.push((self.seq, format!("flushing {set}")));
        let msg = self.header(NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK);
        put_str(&mut self.buf, NFTA_SET_ELEM_LIST_TABLE, TABLE);
        put_str(&mut self.buf, NFTA_SET_ELEM_LIST_SET, set);
        self.finish(msg);
    }

    pub fn add(&mut self, set: &'static str, key: &Key, data: Option<&Data>) {
        self.element(Op::Add, set, key, data);
    }

    pub fn delete(&mut self, set: &'static str, key: &Key) {
        self.element(Op::Delete, set, key, None);
    }

    fn element(&mut self, op: Op, set: &'static str, key: &Key, data: Option<&Data>) {
        #[cfg(test)]
        self.log.push(match (op, data) {
            (Op::Add, Some(d)) => format!("add {set} {} : {}", key.text(), d.text()),
            (Op::Add, None) => format!("add {set} {}", key.text()),
            (Op::Delete, _) => format!("delete {set} {}", key.text()),
        });
        let reuse = matches!(&self.open, Some(o) if o.op == op && o.set == set
            && self.buf.len() - o.elements < MAX_ELEMENTS_BYTES);
        if !reuse {
            self.close();
            let flags = match op {
                Op::Add => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
                Op::Delete => NLM_F_REQUEST | NLM_F_ACK,
            };
            let kind = if op == Op::Add { NFT_MSG_NEWSETELEM } else { NFT_MSG_DELSETELEM };
            let verb = if op == Op::Add { "adding elements to" } else { "deleting elements of" };
            self.what.push((self.seq, format!("{verb} {set} (first: {})", key.text())));
            let msg = self.header(kind, flags);
            put_str(&mut self.buf, NFTA_SET_ELEM_LIST_TABLE, TABLE);
            put_str(&mut self.buf, NFTA_SET_ELEM_LIST_SET, set);
            let elements = nest_start(&mut self.buf, NFTA_SET_ELEM_LIST_ELEMENTS);
            self.open = Some(Open { op, set, msg, elements });
        }
        let elem = nest_start(&mut self.buf, NFTA_LIST_ELEM);
        let k = nest_start(&mut self.buf, NFTA_SET_ELEM_KEY);
        let mut value = [0u8; KEY_MAX];
        let len = key_bytes(key, &mut value);
        put(&mut self.buf, NFTA_DATA_VALUE, &value[..len]);
        nest_end(&mut self.buf, k);
        if let Some(d) = data {
            let dn = nest_start(&mut self.buf, NFTA_SET_ELEM_DATA);
            match d {
                Data::AddrPort(a, port) => {
                    let mut v = [0u8; 20];
                    let at = addr(&mut v, 0, a);
                    v[at..at + 2].copy_from_slice(&port.to_be_bytes());
                    put(&mut self.buf, NFTA_DATA_VALUE, &v[..at + 4]);
                }
                Data::Goto(chain) => verdict(&mut self.buf, NFT_GOTO, Some(chain)),
                Data::Drop => verdict(&mut self.buf, NF_DROP, None),
            }
            nest_end(&mut self.buf, dn);
        }
        nest_end(&mut self.buf, elem);
        self.elements += 1;
    }

    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            nest_end(&mut self.buf, o.elements);
            self.finish(o.msg);
        }
    }

    /// A message header (nlmsghdr and nfgenmsg); returns where it starts.
    fn header(&mut self, kind: u16, flags: u16) -> usize {
        let start = nfnetlink::header(
            &mut self.buf,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags,
            self.seq,
            self.family.nfproto(),
            0,
        );
        self.seq += 1;
        start
    }

    fn finish(&mut self, start: usize) {
        nfnetlink::finish(&mut self.buf, start);
        self.messages += 1;
    }

    /// Batch begin/end: family unspecified, res_id the subsystem.
    fn control(&mut self, kind: u16) {
        let start = nfnetlink::header(&mut self.buf, kind, NLM_F_REQUEST, self.seq, 0, NFNL_SUBSYS_NFTABLES);
        nfnetlink::finish(&mut self.buf, start);
        self.seq += 1;
    }

    /// The batch as the kernel gets it (for tests).
    fn finished(mut self) -> (Vec<u8>, u32, Vec<(u32, String)>) {
        self.close();
        self.control(NFNL_MSG_BATCH_END);
        (self.buf, self.messages, self.what)
    }

    /// Send the batch on `conn` and wait for the kernel's answer: committed
    /// whole, or an error naming what the kernel refused and nothing changed.
    pub fn commit(self, conn: &Conn) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let (buf, messages, what) = self.finished();
        conn.exchange(&buf, messages, &what)
    }
}

/// A NETLINK_NETFILTER socket of one network namespace, kept for the
/// proxy's life: opening and closing one per sync costs the kernel about
/// 10 ms, far more than a one-element batch.
pub(crate) struct Conn {
    socket: netlink_sys::Socket,
}

impl Conn {
    /// A socket in the namespace pinned at `netns_path` (this one when `None`);
    /// it stays in that namespace whichever thread uses it.
    pub fn open(netns_path: Option<&Path>) -> Result<Conn> {
        match netns_path {
            Some(p) => netns::run_in(p, Conn::open_here)?,
            None => Conn::open_here(),
        }
    }

    fn open_here() -> Result<Conn> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)
            .map_err(|e| err(format!("netlink socket: {e}")))?;
        socket.bind_auto().map_err(|e| err(format!("bind: {e}")))?;
        // answers carry the refused message's header only
        socket.set_cap_ack(true).map_err(|e| err(format!("NETLINK_CAP_ACK: {e}")))?;
        setsockopt(&socket, sockopt::RcvBufForce, &(1 << 20)).map_err(|e| err(format!("SO_RCVBUFFORCE: {e}")))?;
        Ok(Conn { socket })
    }

    /// The data of element `key` of `set` in table `skiff` of `family`, as
    /// the kernel holds it now (`None` when there is no such element). One
    /// `GETSETELEM` request, no batch: for benchmarks that watch a change land.
    pub fn element_data(&self, family: Family, set: &str, key: &Key) -> Result<Option<Vec<u8>>> {
        let raw = self.socket.as_raw_fd();
        let mut rbuf = vec![0u8; 1 << 16];
        while recv(raw, &mut rbuf, MsgFlags::MSG_DONTWAIT).is_ok() {}
        let mut req = Vec::with_capacity(128);
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM;
        let msg = nfnetlink::header(&mut req, kind, NLM_F_REQUEST | NLM_F_ACK, 1, family.nfproto(), 0);
        put_str(&mut req, NFTA_SET_ELEM_LIST_TABLE, TABLE);
        put_str(&mut req, NFTA_SET_ELEM_LIST_SET, set);
        let elements = nest_start(&mut req, NFTA_SET_ELEM_LIST_ELEMENTS);
        let elem = nest_start(&mut req, NFTA_LIST_ELEM);
        let k = nest_start(&mut req, NFTA_SET_ELEM_KEY);
        let mut value = [0u8; KEY_MAX];
        let len = key_bytes(key, &mut value);
        put(&mut req, NFTA_DATA_VALUE, &value[..len]);
        nest_end(&mut req, k);
        nest_end(&mut req, elem);
        nest_end(&mut req, elements);
        nfnetlink::finish(&mut req, msg);
        send(raw, &req, MsgFlags::empty()).map_err(|e| err(format!("send: {e}")))?;
        // the element (NEWSETELEM), then the ack; or an error (ENOENT: not there)
        let mut data = None;
        loop {
            let n = recv(raw, &mut rbuf, MsgFlags::empty()).map_err(|e| err(format!("recv: {e}")))?;
            for (kind, payload) in messages(&rbuf[..n]) {
                if kind == NLMSG_ERROR {
                    return match error_code(payload) {
                        0 => Ok(data),
                        c if c == -(nix::errno::Errno::ENOENT as i32) => Ok(None),
                        c => Err(err(format!("get element: {}", nix::errno::Errno::from_raw(-c)))),
                    };
                }
                if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                    // after the nfgenmsg
                    data = payload.get(HEADER_LEN - 16..).and_then(element_value).or(data);
                }
            }
        }
    }

    /// Send `buf` and read the answers. The kernel handles a batch while
    /// `send` runs, so its answers are queued by the time it returns.
    fn exchange(&self, buf: &[u8], messages: u32, what: &[(u32, String)]) -> Result<()> {
        let raw = self.socket.as_raw_fd();
        let mut rbuf = vec![0u8; 1 << 16];
        // answers a failed exchange left unread
        while recv(raw, &mut rbuf, MsgFlags::MSG_DONTWAIT).is_ok() {}
        // a batch is one datagram: the send buffer must hold it (root may force it)
        setsockopt(&self.socket, sockopt::SndBufForce, &(buf.len() + 4096))
            .map_err(|e| err(format!("SO_SNDBUFFORCE: {e}")))?;
        let sent = send(raw, buf, MsgFlags::empty()).map_err(|e| err(format!("send ({} bytes): {e}", buf.len())))?;
        if sent != buf.len() {
            return Err(err(format!("sent {sent} of {} bytes", buf.len())));
        }
        read_answers(raw, &mut rbuf, messages, what)
    }
}

fn err(message: impl std::fmt::Display) -> Error {
    Error::Nftables { message: format!("table {TABLE}: elements over netlink: {message}") }
}

fn read_answers(raw: std::os::fd::RawFd, rbuf: &mut [u8], expected: u32, what: &[(u32, String)]) -> Result<()> {
    let mut answers = 0u32;
    let mut first_error: Option<(i32, u32)> = None;
    while answers < expected {
        let n = match recv(raw, rbuf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => return Err(err(format!("reading the kernel's answer: {e}"))),
        };
        for (kind, payload) in messages(&rbuf[..n]) {
            if kind != NLMSG_ERROR {
                continue;
            }
            answers += 1;
            let code = error_code(payload);
            // the refused request's header follows the code: its sequence number
            let seq = payload.get(12..16).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            if code != 0 && first_error.is_none() {
                first_error = Some((code, seq));
            }
        }
    }
    if let Some((code, seq)) = first_error {
        let errno = nix::errno::Errno::from_raw(-code);
        let doing = what.iter().find(|(s, _)| *s == seq).map_or("a message of the batch", |(_, w)| w.as_str());
        return Err(err(format!("the kernel refused the batch while {doing}: {errno} ({})", errno.desc())));
    }
    if answers < expected {
        return Err(err(format!("the kernel answered {answers} of {expected} messages")));
    }
    Ok(())
}

/// The data value of the first element in a NEWSETELEM message's attributes.
fn element_value(msg: &[u8]) -> Option<Vec<u8>> {
    let (_, list) = attrs(msg).into_iter().find(|(k, _)| *k == NFTA_SET_ELEM_LIST_ELEMENTS)?;
    let (_, elem) = attrs(list).into_iter().find(|(k, _)| *k == NFTA_LIST_ELEM)?;
    let (_, data) = attrs(elem).into_iter().find(|(k, _)| *k == NFTA_SET_ELEM_DATA)?;
    let (_, value) = attrs(data).into_iter().find(|(k, _)| *k == NFTA_DATA_VALUE)?;
    Some(value.to_vec())
}

fn verdict(buf: &mut Vec<u8>, code: i32, chain: Option<&str>) {
    let v = nest_start(buf, NFTA_DATA_VERDICT);
    put(buf, NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(c) = chain {
        put_str(buf, NFTA_VERDICT_CHAIN, c);
    }
    nest_end(buf, v);
}

/// The longest key: two IPv6 addresses (the hairpin set).
const KEY_MAX: usize = 32;

/// An address at `at` (a whole number of words either way); returns where
/// the next field starts.
fn addr(out: &mut [u8], at: usize, a: &std::net::IpAddr) -> usize {
    match a {
        std::net::IpAddr::V4(v4) => word(out, at, &v4.octets()),
        std::net::IpAddr::V6(v6) => {
            out[at..at + 16].copy_from_slice(&v6.octets());
            at + 16
        }
    }
}

/// A field of at most four bytes in a word of its own, zero-padded.
fn word(out: &mut [u8], at: usize, bytes: &[u8]) -> usize {
    out[at..at + 4].fill(0);
    out[at..at + bytes.len()].copy_from_slice(bytes);
    at + 4
}

/// The key's bytes as the set stores them; returns the length used.
fn key_bytes(key: &Key, out: &mut [u8; KEY_MAX]) -> usize {
    let proto = |p: super::Protocol| [p.number()];
    match *key {
        Key::Addr(a) => addr(out, 0, &a),
        Key::AddrAddr(a, b) => {
            let at = addr(out, 0, &a);
            addr(out, at, &b)
        }
        Key::AddrProtoPort(a, p, n) => {
            let at = addr(out, 0, &a);
            let at = word(out, at, &proto(p));
            word(out, at, &n.to_be_bytes())
        }
        Key::ProtoPort(p, n) => {
            let at = word(out, 0, &proto(p));
            word(out, at, &n.to_be_bytes())
        }
        Key::AddrProtoPortIndex(a, p, n, i) => {
            let at = addr(out, 0, &a);
            let at = word(out, at, &proto(p));
            let at = word(out, at, &n.to_be_bytes());
            word(out, at, &i.to_ne_bytes())
        }
        Key::ProtoPortIndex(p, n, i) => {
            let at = word(out, 0, &proto(p));
            let at = word(out, at, &n.to_be_bytes());
            word(out, at, &i.to_ne_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Protocol;

    #[test]
    fn keys_take_whole_words_in_nfts_byte_order() {
        let mut out = [0u8; KEY_MAX];
        let n = key_bytes(&Key::AddrProtoPortIndex("10.0.0.1".parse().unwrap(), Protocol::Udp, 53, 4), &mut out);
        // as `nft --debug=netlink` shows it: 0100000a 00000011 00003500 00000004 (host-order words)
        assert_eq!(n, 16);
        assert_eq!(&out[..12], &[10, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(&out[12..16], &4u32.to_ne_bytes());
        let n = key_bytes(&Key::ProtoPort(Protocol::Tcp, 30080), &mut out);
        assert_eq!(&out[..n], &[6, 0, 0, 0, 0x75, 0x80, 0, 0]);
        // an IPv6 address takes four words
        let n = key_bytes(&Key::AddrProtoPort("fd00::a".parse().unwrap(), Protocol::Tcp, 80), &mut out);
        assert_eq!(n, 24);
        assert_eq!(&out[..2], &[0xfd, 0]);
        assert_eq!(&out[15..24], &[0xa, 6, 0, 0, 0, 0, 80, 0, 0]);
    }

    #[test]
    fn a_long_element_list_is_split_into_messages_of_one_batch() {
        let mut b = Batch::new(Family::V4);
        b.flush("cluster-ips");
        for i in 0..5000u32 {
            b.add("cluster-ips", &Key::Addr(std::net::Ipv4Addr::from(0x0a60_0000 + i).into()), None);
        }
        let (buf, messages, _) = b.finished();
        // each element: list elem (4) + key nest (4) + value (8) = 16 bytes
        assert!(messages >= 3, "{messages}");
        // walk the messages: lengths add up, every attribute list below 64 KiB
        let (mut at, mut seen) = (0, 0);
        while at < buf.len() {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            assert!(len < 65_536 + 64, "{len}");
            at += len;
            seen += 1;
        }
        assert_eq!(at, buf.len());
        assert_eq!(seen, messages + 2, "begin and end around the answered messages");
    }
}
