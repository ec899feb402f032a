//! Names outside the cluster zone: asked of the node's upstream resolvers
//! (UDP, then TCP when the answer comes back truncated), with a small cache
//! that keeps answers no longer than their TTLs (negative ones per RFC 2308).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Cache bounds.
const CACHE_ENTRIES: usize = 10_000;
const MAX_CACHE_TTL: u32 = 3600;
const MAX_NEGATIVE_TTL: u32 = 300;

/// An upstream's answer, as cached.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

struct Cached {
    answer: Upstream,
    stored: Instant,
    ttl: u32,
}

/// Forwards questions to upstreams, in order, and caches the answers.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<(Name, u16), Cached>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers configured")]
    NoUpstreams,
    #[error("upstream {0}: {1}")]
    Upstream(SocketAddr, String),
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder { upstreams, cache: Mutex::new(HashMap::new()) }
    }

    /// Resolve `name`/`qtype` (cache first). Owner names come back as the
    /// upstream wrote them.
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Result<Upstream, ForwardError> {
        let key = (name.to_lowercase(), u16::from(qtype));
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let mut last = None;
        for up in &self.upstreams {
            match ask(*up, name, qtype).await {
                Ok(m) => {
                    let answer = Upstream {
                        rcode: m.metadata.response_code,
                        answers: m.answers,
                        authorities: m.authorities,
                        additionals: m.additionals.into_iter().filter(|r| r.record_type() != RecordType::OPT).collect(),
                    };
                    self.store(key, &answer);
                    return Ok(answer);
                }
                Err(e) => {
                    tracing::debug!(upstream = %up, name = %name, error = %e, "upstream failed");
                    last = Some(ForwardError::Upstream(*up, e));
                }
            }
        }
        Err(last.unwrap_or(ForwardError::NoUpstreams))
    }

    fn cached(&self, key: &(Name, u16)) -> Option<Upstream> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let c = cache.get(key)?;
        let age = u32::try_from(c.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= c.ttl {
            return None;
        }
        let mut a = c.answer.clone();
        for r in a.answers.iter_mut().chain(a.authorities.iter_mut()).chain(a.additionals.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(a)
    }

    fn store(&self, key: (Name, u16), answer: &Upstream) {
        let ttl = match answer.rcode {
            ResponseCode::NoError if !answer.answers.is_empty() => {
                answer.answers.iter().map(|r| r.ttl).min().unwrap_or(0).min(MAX_CACHE_TTL)
            }
            // NODATA and NXDOMAIN: the SOA's TTL, capped by its minimum (RFC 2308)
            ResponseCode::NoError | ResponseCode::NXDomain => answer
                .authorities
                .iter()
                .find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .unwrap_or(0)
                .min(MAX_NEGATIVE_TTL),
            _ => 0,
        };
        if ttl == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, c| now.duration_since(c.stored).as_secs() < u64::from(c.ttl));
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, Cached { answer: answer.clone(), stored: Instant::now(), ttl });
    }

    /// Entries held (expired ones included until evicted).
    pub fn cache_len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn question(name: &Name, qtype: RecordType) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(crate::wire::OUR_UDP_PAYLOAD);
    m.set_edns(edns);
    m
}

fn matches(q: &Message, r: &Message) -> bool {
    r.metadata.id == q.metadata.id
        && r.metadata.message_type == MessageType::Response
        && r.queries.len() == 1
        && r.queries[0].name().eq_ignore_root(q.queries[0].name())
        && r.queries[0].query_type() == q.queries[0].query_type()
}

/// One upstream: UDP, and TCP if the answer was truncated.
async fn ask(up: SocketAddr, name: &Name, qtype: RecordType) -> Result<Message, String> {
    let q = question(name, qtype);
    let bytes = q.to_vec().map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(UPSTREAM_TIMEOUT, ask_udp(up, &q, &bytes))
        .await
        .map_err(|_| "no answer over UDP in time".to_string())??;
    if !r.metadata.truncation {
        return Ok(r);
    }
    tokio::time::timeout(UPSTREAM_TIMEOUT, ask_tcp(up, &q, &bytes))
        .await
        .map_err(|_| "no answer over TCP in time".to_string())?
}

async fn ask_udp(up: SocketAddr, q: &Message, bytes: &[u8]) -> Result<Message, String> {
    let local: SocketAddr = match up {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| format!("binding a UDP socket: {e}"))?;
    sock.connect(up).await.map_err(|e| e.to_string())?;
    sock.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // anything that is not the answer to this question is ignored
        if let Ok(r) = Message::from_vec(&buf[..n]) {
            if matches(q, &r) {
                return Ok(r);
            }
        }
    }
}

async fn ask_tcp(up: SocketAddr, q: &Message, bytes: &[u8]) -> Result<Message, String> {
    let mut s = TcpStream::connect(up).await.map_err(|e| format!("connecting over TCP: {e}"))?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.map_err(|e| e.to_string())?;
    let mut lenb = [0u8; 2];
    s.read_exact(&mut lenb).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    let r = Message::from_vec(&buf).map_err(|e| format!("bad answer over TCP: {e}"))?;
    if !matches(q, &r) {
        return Err("TCP answer does not match the question".into());
    }
    Ok(r)
}
