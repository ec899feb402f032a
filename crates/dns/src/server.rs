//! Serving: UDP on a few `SO_REUSEPORT` sockets, each read by its own
//! thread that answers from the current snapshot without locks or
//! allocation; TCP on a tokio listener; and the general path (forwarding,
//! aliases, synthesized names, odd queries) on the tokio runtime.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::forward::Forwarder;
use crate::records::Lookup;
use crate::wire::{self, Fast, Snapshot};
use crate::{DnsConfig, DnsError};

/// The zone as servers see it: swapped whole on every change.
pub type ZoneHandle = Arc<ArcSwap<Snapshot>>;

/// How often blocked UDP readers look at the shutdown token.
const UDP_POLL: Duration = Duration::from_millis(200);
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_MAX_CONNECTIONS: usize = 256;
/// UDP queries on the general path (mostly forwarding) at once; more are dropped
/// (the client retries), so a flood of outside names cannot pile up tasks.
const UDP_MAX_SLOW: usize = 1024;

/// Sockets bound and ready to serve.
pub struct Server {
    udp: Vec<(SocketAddr, Vec<UdpSocket>)>,
    tcp: Vec<std::net::TcpListener>,
    workers: usize,
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    // room for bursts while a reader is busy
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(UDP_POLL))?;
    Ok(s)
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl Server {
    /// Bind UDP and TCP on every `config.listen` address. Port 0 picks one
    /// port for both protocols.
    pub fn bind(config: &DnsConfig) -> Result<Server, DnsError> {
        if config.listen.is_empty() {
            return Err(DnsError::Config("no listen address given".into()));
        }
        let workers = config.udp_workers.max(1);
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for want in &config.listen {
            let bind_err =
                |proto: &str, e: std::io::Error| DnsError::Bind { addr: *want, proto: proto.into(), source: e };
            // port 0: the port the kernel picks for UDP may be taken for TCP; pick again
            let tries = if want.port() == 0 { 20 } else { 1 };
            let mut bound = None;
            for attempt in 1..=tries {
                let first = bind_udp(*want).map_err(|e| bind_err("UDP", e))?;
                let addr = first.local_addr().map_err(|e| bind_err("UDP", e))?;
                match bind_tcp(addr) {
                    Ok(l) => {
                        bound = Some((first, addr, l));
                        break;
                    }
                    Err(e) if attempt < tries && e.kind() == std::io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(bind_err("TCP", e)),
                }
            }
            let Some((first, addr, listener)) = bound else {
                return Err(DnsError::Config(format!("no free port for UDP and TCP on {}", want.ip())));
            };
            let mut socks = vec![first];
            for _ in 1..workers {
                socks.push(bind_udp(addr).map_err(|e| bind_err("UDP", e))?);
            }
            tcp.push(listener);
            udp.push((addr, socks));
        }
        Ok(Server { udp, tcp, workers })
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|(a, _)| *a).collect()
    }

    /// Serve until `shutdown` is cancelled.
    pub async fn run(
        self,
        zone: ZoneHandle,
        forwarder: Arc<Forwarder>,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        let rt = tokio::runtime::Handle::current();
        let slow = Arc::new(tokio::sync::Semaphore::new(UDP_MAX_SLOW));
        let mut threads = Vec::new();
        for (addr, socks) in self.udp {
            for (i, sock) in socks.into_iter().enumerate() {
                let (zone, fwd, stop, rt) = (zone.clone(), forwarder.clone(), shutdown.clone(), rt.clone());
                let slow = slow.clone();
                let t = std::thread::Builder::new()
                    .name(format!("skiff-dns-udp{i}"))
                    .spawn(move || udp_worker(Arc::new(sock), zone, fwd, stop, rt, slow))
                    .map_err(|e| DnsError::Bind { addr, proto: "UDP".into(), source: e })?;
                threads.push(t);
            }
        }
        tracing::info!(workers = self.workers, "cluster DNS serving");
        let limit = Arc::new(tokio::sync::Semaphore::new(TCP_MAX_CONNECTIONS));
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.tcp {
            let l = TcpListener::from_std(l).map_err(DnsError::Io)?;
            let (zone, fwd, stop, limit) = (zone.clone(), forwarder.clone(), shutdown.clone(), limit.clone());
            tasks.spawn(tcp_accept(l, zone, fwd, stop, limit));
        }
        shutdown.cancelled().await;
        tasks.abort_all();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        Ok(())
    }
}

fn udp_worker(
    sock: Arc<UdpSocket>,
    zone: ZoneHandle,
    forwarder: Arc<Forwarder>,
    stop: CancellationToken,
    rt: tokio::runtime::Handle,
    slow: Arc<tokio::sync::Semaphore>,
) {
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    while !stop.is_cancelled() {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        let query = &buf[..n];
        let fast = {
            let snap = zone.load();
            wire::answer(&snap, query, &mut out, true)
        };
        match fast {
            Fast::Answered => {
                if let Err(e) = sock.send_to(&out, peer) {
                    tracing::debug!(error = %e, %peer, "UDP send failed");
                }
            }
            Fast::Fallback => {
                let Ok(permit) = slow.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "too many queries in progress; dropped one");
                    continue;
                };
                let (query, sock, zone, fwd) = (query.to_vec(), sock.clone(), zone.clone(), forwarder.clone());
                rt.spawn(async move {
                    let _permit = permit;
                    if let Some(resp) = respond(&zone, &fwd, &query, true).await {
                        if let Err(e) = sock.send_to(&resp, peer) {
                            tracing::debug!(error = %e, %peer, "UDP send failed");
                        }
                    }
                });
            }
        }
    }
}

async fn tcp_accept(
    l: TcpListener,
    zone: ZoneHandle,
    forwarder: Arc<Forwarder>,
    stop: CancellationToken,
    limit: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            got = l.accept() => match got {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (zone, fwd, stop) = (zone.clone(), forwarder.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = stop.cancelled() => {}
                r = tcp_conn(stream, &zone, &fwd) => if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "DNS TCP connection ended");
                },
            }
        });
    }
}

/// Answer length-prefixed queries on one connection until it idles or closes.
async fn tcp_conn(mut s: tokio::net::TcpStream, zone: &ZoneHandle, fwd: &Forwarder) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut lenb = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut lenb)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query)).await.map_err(std::io::Error::other)??;
        let fast = {
            let snap = zone.load();
            wire::answer(&snap, &query, &mut out, false)
        };
        let resp = match fast {
            Fast::Answered => std::mem::take(&mut out),
            Fast::Fallback => match respond(zone, fwd, &query, false).await {
                Some(r) => r,
                None => continue,
            },
        };
        let Ok(len) = u16::try_from(resp.len()) else { continue };
        let mut framed = Vec::with_capacity(resp.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&resp);
        s.write_all(&framed).await?;
        out = resp;
    }
}

/// The general path: any query, any answer. `None` drops the packet
/// (responses, garbage shorter than a header).
pub async fn respond(zone: &ZoneHandle, fwd: &Forwarder, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            if query.len() < 12 || query[2] & 0x80 != 0 {
                return None;
            }
            let mut m = Message::new(u16::from_be_bytes([query[0], query[1]]), MessageType::Response, OpCode::Query);
            m.metadata.response_code = ResponseCode::FormErr;
            return m.to_vec().ok();
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(wire::OUR_UDP_PAYLOAD);
        resp.set_edns(edns);
    }
    let limit = wire::udp_limit(req.edns.as_ref().map(|e| e.max_payload()));
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return finish(resp, udp, limit);
    }
    if req.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::FormErr;
        return finish(resp, udp, limit);
    }
    let q = req.queries[0].clone();
    resp.add_query(q.clone());
    if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
        resp.metadata.response_code = ResponseCode::Refused; // no zone transfers
        return finish(resp, udp, limit);
    }
    let snap = zone.load_full();
    let lookup = if q.query_class() == hickory_proto::rr::DNSClass::IN {
        snap.records().lookup(q.name(), q.query_type())
    } else {
        Lookup::NotOurs
    };
    match lookup {
        Lookup::Authoritative { .. } | Lookup::Alias { .. } if !snap.ready() => {
            resp.metadata.response_code = ResponseCode::ServFail;
        }
        Lookup::Authoritative { rcode, answers, authorities, additionals } => {
            resp.metadata.authoritative = true;
            resp.metadata.response_code = rcode;
            resp.add_answers(answers);
            resp.add_authorities(authorities);
            resp.add_additionals(additionals);
        }
        Lookup::Alias { cname, target } => {
            resp.metadata.authoritative = true;
            resp.add_answer(*cname);
            if let Ok(up) = fwd.resolve(&target, q.query_type()).await {
                resp.metadata.response_code = up.rcode;
                resp.add_answers(up.answers);
            }
        }
        Lookup::NotOurs => match fwd.resolve(q.name(), q.query_type()).await {
            Ok(up) => {
                resp.metadata.response_code = up.rcode;
                resp.add_answers(up.answers);
                resp.add_authorities(up.authorities);
                resp.add_additionals(up.additionals);
            }
            Err(e) => {
                tracing::debug!(name = %q.name(), error = %e, "forwarding failed");
                resp.metadata.response_code = ResponseCode::ServFail;
            }
        },
    }
    finish(resp, udp, limit)
}

fn finish(resp: Message, udp: bool, limit: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if udp && bytes.len() > limit {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
}
