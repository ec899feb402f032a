//! The hot path: the zone compiled into ready-made answers, and a query
//! reader that answers most questions without allocating. An answer is the
//! query's own question followed by pre-encoded records whose compressed
//! names point only into that question or into themselves; lowercasing
//! keeps every label's length, so any spelling of a name reuses the same
//! bytes, and the client gets its own spelling back in the question.
//! Anything unusual falls back to the general path in [`crate::server`].

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use rustc_hash::FxHashMap;

use crate::records::Records;

/// The UDP payload size we announce in EDNS (the DNS flag day 2020 value).
pub const OUR_UDP_PAYLOAD: u16 = 1232;

const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const TYPE_ANY: u16 = 255;

/// One pre-encoded answer: header fields and the sections after the question.
#[derive(Debug)]
struct Compiled {
    rcode: u8,
    an: u16,
    ns: u16,
    ar: u16,
    body: Box<[u8]>,
}

#[derive(Debug)]
struct Entry {
    by_type: Vec<(u16, Compiled)>,
    /// An ExternalName alias out of the zone: only CNAME queries are answered
    /// here; the rest need resolving the target.
    alias: bool,
}

/// An immutable, compiled view of the zone. Servers read the current one
/// through an `ArcSwap` and never lock.
#[derive(Debug)]
pub struct Snapshot {
    records: Records,
    /// False until the watchers have listed everything once: until then
    /// questions about the zone get SERVFAIL rather than a false NXDOMAIN.
    ready: bool,
    table: FxHashMap<Box<[u8]>, Entry>,
    /// The zone in lowercase wire form, root label included.
    zone_wire: Box<[u8]>,
    /// The label of `pod` followed by the zone, for the pod-name check.
    pod_zone_wire: Box<[u8]>,
    nodata: Compiled,
    nxdomain: Compiled,
}

/// Lowercase wire form of a normalized name (no trailing dot).
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend(label.as_bytes().iter().map(u8::to_ascii_lowercase));
        }
    }
    out.push(0);
    out
}

/// Encode `rec` with no name compression (so it can follow any question).
fn encode_uncompressed(rec: &Record) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_canonical_form(true);
    // a record built from our own names always encodes
    if rec.emit(&mut enc).is_err() {
        buf.clear();
    }
    buf
}

impl Snapshot {
    /// Compile `records`. `ready` says whether the API has been listed.
    pub fn new(records: Records, ready: bool) -> Snapshot {
        let soa = encode_uncompressed(&records.soa());
        let negative = |rcode: ResponseCode| Compiled {
            rcode: u16::from(rcode) as u8,
            an: 0,
            ns: 1,
            ar: 0,
            body: soa.clone().into_boxed_slice(),
        };
        let zone_wire = wire_name(records.zone()).into_boxed_slice();
        let pod_zone_wire = wire_name(&format!("pod.{}", records.zone())).into_boxed_slice();
        let mut table = FxHashMap::default();
        table.reserve(records.names().count());
        for (name, data) in records.names() {
            let Ok(qname) = Name::from_ascii(format!("{name}.")) else { continue };
            let wire = wire_name(name);
            let mut types = data.types();
            if name == records.zone() {
                types.push(RecordType::SOA);
            }
            let alias = data.cname.is_some();
            if !types.is_empty() {
                types.push(RecordType::ANY);
            }
            let mut by_type = Vec::with_capacity(types.len());
            for t in types {
                if let Some(c) = compile(&records, &qname, wire.len(), t) {
                    by_type.push((u16::from(t), c));
                }
            }
            table.insert(wire.into_boxed_slice(), Entry { by_type, alias });
        }
        Snapshot {
            records,
            ready,
            table,
            zone_wire,
            pod_zone_wire,
            nodata: negative(ResponseCode::NoError),
            nxdomain: negative(ResponseCode::NXDomain),
        }
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    /// How many names the fast path knows.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Encode the answer to `qname`/`qtype` and keep what follows the question.
fn compile(records: &Records, qname: &Name, wire_len: usize, qtype: RecordType) -> Option<Compiled> {
    let crate::records::Lookup::Authoritative { rcode, answers, authorities, additionals } =
        records.lookup(qname, qtype)
    else {
        return None;
    };
    let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
    msg.add_query(Query::query(qname.clone(), qtype));
    msg.metadata.authoritative = true;
    msg.metadata.response_code = rcode;
    let (an, ns, ar) = (answers.len() as u16, authorities.len() as u16, additionals.len() as u16);
    msg.insert_answers(answers);
    msg.insert_authorities(authorities);
    msg.insert_additionals(additionals);
    let bytes = msg.to_vec().ok()?;
    let body_start = 12 + wire_len + 4;
    if bytes.len() < body_start {
        return None;
    }
    Some(Compiled { rcode: u16::from(rcode) as u8, an, ns, ar, body: bytes[body_start..].into() })
}

/// What the fast path did with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Fast {
    /// `out` holds the response.
    Answered,
    /// Needs the general path (forwarding, aliases, pod names, odd queries).
    Fallback,
}

/// The parts of a query the fast path needs.
struct Parsed {
    id: [u8; 2],
    rd: bool,
    cd: bool,
    question_end: usize,
    qname_len: usize,
    qtype: u16,
    edns: Option<u16>,
}

fn parse(query: &[u8], key: &mut [u8; 256]) -> Option<Parsed> {
    if query.len() < 12 {
        return None;
    }
    let flags = query[2];
    // QR=0, OPCODE=QUERY, TC=0
    if flags & 0x80 != 0 || flags & 0x78 != 0 || flags & 0x02 != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([query[i], query[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut pos = 12;
    let mut klen = 0;
    loop {
        let len = *query.get(pos)? as usize;
        if len & 0xc0 != 0 {
            return None; // no compression in questions on the fast path
        }
        if klen + len + 1 > 255 {
            return None;
        }
        key[klen] = len as u8;
        let label = query.get(pos + 1..pos + 1 + len)?;
        for (k, b) in key[klen + 1..klen + 1 + len].iter_mut().zip(label) {
            *k = b.to_ascii_lowercase();
        }
        klen += len + 1;
        pos += len + 1;
        if len == 0 {
            break;
        }
    }
    let tail = query.get(pos..pos + 4)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    if qclass != CLASS_IN {
        return None;
    }
    let question_end = pos + 4;
    let mut edns = None;
    if ar == 1 {
        // exactly one OPT record, owned by the root, version 0
        let opt = query.get(question_end..question_end + 11)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT || opt[6] != 0 {
            return None;
        }
        let rdlen = u16::from_be_bytes([opt[9], opt[10]]) as usize;
        if question_end + 11 + rdlen != query.len() {
            return None;
        }
        edns = Some(u16::from_be_bytes([opt[3], opt[4]]));
    } else if question_end != query.len() {
        return None;
    }
    Some(Parsed {
        id: [query[0], query[1]],
        rd: flags & 0x01 != 0,
        cd: query[3] & 0x10 != 0,
        question_end,
        qname_len: klen,
        qtype,
        edns,
    })
}

/// The largest UDP response a client takes: 512 bytes, or its EDNS size.
pub fn udp_limit(edns_payload: Option<u16>) -> usize {
    match edns_payload {
        Some(p) => usize::from(p.max(512)),
        None => 512,
    }
}

/// Answer `query` from the snapshot into `out` if it can be done here.
/// `udp` says the answer goes over UDP (and so may need truncating).
pub fn answer(snap: &Snapshot, query: &[u8], out: &mut Vec<u8>, udp: bool) -> Fast {
    let mut key = [0u8; 256];
    let Some(p) = parse(query, &mut key) else { return Fast::Fallback };
    let key = &key[..p.qname_len];
    let compiled = match snap.table.get(key) {
        Some(entry) => {
            if entry.alias && p.qtype != u16::from(RecordType::CNAME) && p.qtype != TYPE_ANY {
                return Fast::Fallback;
            }
            match entry.by_type.iter().find(|(t, _)| *t == p.qtype) {
                Some((_, c)) => c,
                None => &snap.nodata,
            }
        }
        None => {
            if !key.ends_with(&snap.zone_wire) || !label_boundary(key, snap.zone_wire.len()) {
                return Fast::Fallback; // not ours: forward (or a reverse name we do not own)
            }
            if is_pod_name(key, &snap.pod_zone_wire) {
                return Fast::Fallback;
            }
            &snap.nxdomain
        }
    };
    if !snap.ready {
        return Fast::Fallback;
    }
    write(out, &p, query, compiled, udp);
    Fast::Answered
}

/// Does the zone suffix of length `suffix` start at a label boundary of `key`?
fn label_boundary(key: &[u8], suffix: usize) -> bool {
    let start = key.len() - suffix;
    let mut pos = 0;
    while pos < start {
        pos += key[pos] as usize + 1;
    }
    pos == start
}

/// `<label>.<ns>.pod.<zone>` or `<ns>.pod.<zone>` (names the model synthesizes).
fn is_pod_name(key: &[u8], pod_zone: &[u8]) -> bool {
    if !key.ends_with(pod_zone) {
        return false;
    }
    let prefix = key.len() - pod_zone.len();
    // count the labels before `pod`
    let mut pos = 0;
    let mut labels = 0;
    while pos < prefix {
        pos += key[pos] as usize + 1;
        labels += 1;
    }
    pos == prefix && (1..=2).contains(&labels)
}

fn write(out: &mut Vec<u8>, p: &Parsed, query: &[u8], c: &Compiled, udp: bool) {
    let opt_len = if p.edns.is_some() { 11 } else { 0 };
    let full = 12 + (p.question_end - 12) + c.body.len() + opt_len;
    let truncated = udp && full > udp_limit(p.edns);
    out.clear();
    out.extend_from_slice(&p.id);
    // QR, OPCODE 0, AA, TC, RD as asked
    out.push(0x80 | 0x04 | if truncated { 0x02 } else { 0 } | u8::from(p.rd));
    // RA (we recurse for names outside the zone), CD echoed
    out.push(0x80 | if p.cd { 0x10 } else { 0 } | (c.rcode & 0x0f));
    let ar = if truncated { 0 } else { c.ar } + u16::from(p.edns.is_some());
    let (an, ns) = if truncated { (0, 0) } else { (c.an, c.ns) };
    for n in [1u16, an, ns, ar] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&query[12..p.question_end]);
    if !truncated {
        out.extend_from_slice(&c.body);
    }
    if p.edns.is_some() {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&OUR_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::op::Edns;
    use hickory_proto::rr::RData;

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn snap() -> Snapshot {
        Snapshot::new(crate::records::tests_support::fixture(), true)
    }

    fn ask(s: &Snapshot, name: &str, t: RecordType, edns: Option<u16>) -> Option<Message> {
        let mut out = Vec::new();
        match answer(s, &query(name, t, edns), &mut out, true) {
            Fast::Answered => Some(Message::from_vec(&out).unwrap()),
            Fast::Fallback => None,
        }
    }

    #[test]
    fn fast_answers_match_the_model_in_any_case() {
        let s = snap();
        let m = ask(&s, "SERVICE-test.default.svc.Cluster.Local.", RecordType::A, None).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "SERVICE-test.default.svc.Cluster.Local.");
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name.to_ascii(), "SERVICE-test.default.svc.Cluster.Local.");
        assert_eq!(m.answers[0].ttl, 5);
        assert_eq!(m.answers[0].data, RData::A(hickory_proto::rr::rdata::A([10, 96, 0, 20].into())));

        let m = ask(&s, "_http._tcp.service-test.default.svc.cluster.local.", RecordType::SRV, Some(4096)).unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.additionals.len(), 1);
        assert!(m.edns.is_some());
    }

    #[test]
    fn fast_negative_answers_carry_the_soa() {
        let s = snap();
        let m = ask(&s, "service-test.default.svc.cluster.local.", RecordType::AAAA, None).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        let m = ask(&s, "www.google.com.default.svc.cluster.local.", RecordType::A, None).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].name.to_ascii(), "cluster.local.");
    }

    #[test]
    fn fallback_for_what_the_fast_path_does_not_know() {
        let s = snap();
        assert!(ask(&s, "example.com.", RecordType::A, None).is_none());
        assert!(ask(&s, "1-2-3-4.default.pod.cluster.local.", RecordType::A, None).is_none());
        assert!(ask(&s, "ext.default.svc.cluster.local.", RecordType::A, None).is_none());
        assert!(ask(&s, "ext.default.svc.cluster.local.", RecordType::CNAME, None).is_some());
        assert!(ask(&s, "xcluster.local.", RecordType::A, None).is_none());
        let not_ready = Snapshot::new(crate::records::tests_support::fixture(), false);
        assert!(ask(&not_ready, "service-test.default.svc.cluster.local.", RecordType::A, None).is_none());
    }

    #[test]
    fn udp_answers_over_the_limit_are_truncated() {
        // forty addresses on one name (as forty services of one name would give)
        let services: Vec<_> = (0..40)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "big", "namespace": "default"},
                    "spec": {"clusterIP": format!("10.96.1.{i}"), "clusterIPs": [format!("10.96.1.{i}")]}
                }))
                .unwrap()
            })
            .collect();
        let s = Snapshot::new(Records::build("cluster.local", 5, &services, &[], &[]), true);
        let m = ask(&s, "big.default.svc.cluster.local.", RecordType::A, None).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = ask(&s, "big.default.svc.cluster.local.", RecordType::A, Some(4096)).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 40);
    }
}
