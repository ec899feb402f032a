//! skiff-dns served on loopback and asked with hickory's client over UDP and
//! TCP; names outside the zone go to a fake upstream on loopback that the
//! test runs (and counts queries at).

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_net::proto::rr::rdata::{A, CNAME, SOA};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use serde_json::json;
use skiff_dns::{DnsConfig, Forwarder, Records, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Dns {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    async fn start(records: Records, upstreams: Vec<SocketAddr>) -> Dns {
        let config = DnsConfig {
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)],
            upstreams: upstreams.clone(),
            ..Default::default()
        };
        let server = Server::bind(&config).unwrap();
        let addr = server.local_addrs()[0];
        let stop = CancellationToken::new();
        let zone = skiff_dns::zone_handle(records);
        let fwd = Arc::new(Forwarder::new(upstreams));
        let s = stop.clone();
        let task = tokio::spawn(async move { server.run(zone, fwd, s).await.unwrap() });
        Dns { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
    }
}

async fn udp_client(addr: SocketAddr, edns: bool) -> Client<TokioRuntimeProvider> {
    let stream =
        UdpClientStream::builder(addr, TokioRuntimeProvider::new()).with_timeout(Some(Duration::from_secs(2))).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    if !edns {
        client.disable_edns();
    }
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(addr, None, Some(Duration::from_secs(2)), TokioRuntimeProvider::new());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

async fn ask(c: &mut Client<TokioRuntimeProvider>, name: &str, t: RecordType) -> Message {
    let r = tokio::time::timeout(Duration::from_secs(5), c.query(Name::from_str(name).unwrap(), DNSClass::IN, t))
        .await
        .unwrap_or_else(|_| panic!("{name} {t}: no answer in 5 s"))
        .unwrap_or_else(|e| panic!("{name} {t}: {e}"));
    (*r).clone()
}

fn datas(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

fn zone() -> Records {
    let services: Vec<k8s_openapi::api::core::v1::Service> = vec![
        serde_json::from_value(json!({"metadata": {"name": "service-test", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
        .unwrap(),
        serde_json::from_value(json!({"metadata": {"name": "big", "namespace": "default"},
            "spec": {"clusterIP": "None"}}))
        .unwrap(),
        serde_json::from_value(json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "www.example.com"}}))
        .unwrap(),
    ];
    // a headless service with 60 ready endpoints: more than 512 bytes of A records
    let endpoints: Vec<_> = (1..=60).map(|i| json!({"addresses": [format!("10.244.3.{i}")]})).collect();
    let slices = vec![serde_json::from_value(json!({
        "metadata": {"name": "big-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4", "endpoints": endpoints
    }))
    .unwrap()];
    let pods = vec![serde_json::from_value(json!({
        "metadata": {"name": "client", "namespace": "default"}, "spec": {"containers": []},
        "status": {"podIP": "10.244.1.9", "podIPs": [{"ip": "10.244.1.9"}]}
    }))
    .unwrap()];
    Records::build("cluster.local", 5, &services, &slices, &pods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_records_over_udp_and_tcp() {
    let dns = Dns::start(zone(), vec![]).await;
    for mut c in [udp_client(dns.addr, true).await, udp_client(dns.addr, false).await, tcp_client(dns.addr).await] {
        let m = ask(&mut c, "service-test.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative, "the cluster zone is answered with AA");
        assert_eq!(datas(&m), vec!["10.96.0.20"]);
        assert_eq!(m.answers[0].ttl, 5);

        // case is ignored, and kept in the answer
        let m = ask(&mut c, "Service-Test.DEFAULT.svc.cluster.local.", RecordType::A).await;
        assert_eq!(datas(&m), vec!["10.96.0.20"]);
        assert!(m.answers[0].name.eq_case(m.queries[0].name()), "the owner name is spelled as asked");

        let m = ask(&mut c, "_http._tcp.service-test.default.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(datas(&m), vec!["0 100 80 service-test.default.svc.cluster.local."]);
        assert_eq!(m.additionals.iter().filter(|r| r.record_type() == RecordType::A).count(), 1);

        let m = ask(&mut c, "20.0.96.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(datas(&m), vec!["service-test.default.svc.cluster.local."]);
        let m = ask(&mut c, "9.1.244.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(datas(&m), vec!["10-244-1-9.default.pod.cluster.local."]);

        let m = ask(&mut c, "10-244-1-9.default.pod.cluster.local.", RecordType::A).await;
        assert_eq!(datas(&m), vec!["10.244.1.9"]);
        let m = ask(&mut c, "1-2-3-4.elsewhere.pod.cluster.local.", RecordType::A).await;
        assert_eq!(datas(&m), vec!["1.2.3.4"]);

        let m = ask(&mut c, "dns-version.cluster.local.", RecordType::TXT).await;
        assert_eq!(datas(&m), vec!["1.1.0"]);

        let m = ask(&mut c, "ext.default.svc.cluster.local.", RecordType::CNAME).await;
        assert_eq!(datas(&m), vec!["www.example.com."]);

        // NODATA: the name exists, no AAAA; NXDOMAIN: a search-path miss; both with the SOA
        let m = ask(&mut c, "service-test.default.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty() && m.metadata.authoritative);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        let m = ask(&mut c, "service-test.default.svc.cluster.local.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].name.to_ascii(), "cluster.local.");
        // nothing upstream: a name outside the zone fails, it is not invented
        let m = ask(&mut c, "example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let dns = Dns::start(zone(), vec![]).await;
    let name = "big.default.svc.cluster.local.";
    let mut plain = udp_client(dns.addr, false).await;
    let m = ask(&mut plain, name, RecordType::A).await;
    assert!(m.metadata.truncation, "60 A records do not fit in 512 bytes");
    assert!(m.answers.is_empty());
    // an EDNS client announcing hickory's default payload gets them all
    let mut edns = udp_client(dns.addr, true).await;
    let m = ask(&mut edns, name, RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    let mut tcp = tcp_client(dns.addr).await;
    let m = ask(&mut tcp, name, RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    dns.stop().await;
}

/// A fake upstream on loopback: `www.example.com` and `example.com` have an
/// address; `huge.example.com` has 100 (truncated over UDP); others NXDOMAIN.
struct Upstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn upstream_answer(query: &[u8], udp: bool) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    let question = q.queries[0].clone();
    let name = question.name().clone();
    r.add_query(question.clone());
    let lower = name.to_lowercase().to_ascii();
    match (lower.as_str(), question.query_type()) {
        ("www.example.com." | "example.com.", RecordType::A) => {
            r.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 53))));
        }
        ("huge.example.com.", RecordType::A) => {
            if udp {
                r.metadata.truncation = true;
            } else {
                for i in 0..100u8 {
                    r.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A::new(192, 0, 2, i))));
                }
            }
        }
        ("alias.example.com.", RecordType::A) => {
            r.add_answer(Record::from_rdata(
                name,
                60,
                RData::CNAME(CNAME(Name::from_str("www.example.com.").unwrap())),
            ));
        }
        _ => {
            r.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(
                Name::from_str("ns.example.com.").unwrap(),
                Name::from_str("hostmaster.example.com.").unwrap(),
                1,
                3600,
                600,
                86400,
                30,
            );
            r.add_authority(Record::from_rdata(Name::from_str("example.com.").unwrap(), 30, RData::SOA(soa)));
        }
    }
    r.to_vec().unwrap()
}

impl Upstream {
    async fn start() -> Upstream {
        let udp = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (uq, tq) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let count = uq.clone();
        let u = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                udp.send_to(&upstream_answer(&buf[..n], true), peer).await.unwrap();
            }
        });
        let count = tq.clone();
        let t = tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    s.read_exact(&mut len).await.unwrap();
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    s.read_exact(&mut q).await.unwrap();
                    let r = upstream_answer(&q, false);
                    s.write_all(&(r.len() as u16).to_be_bytes()).await.unwrap();
                    s.write_all(&r).await.unwrap();
                });
            }
        });
        Upstream { addr, udp_queries: uq, tcp_queries: tq, tasks: vec![u, t] }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_forwarded_and_cached() {
    let up = Upstream::start().await;
    let dns = Dns::start(zone(), vec![up.addr]).await;
    let mut c = udp_client(dns.addr, true).await;

    let m = ask(&mut c, "www.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.authoritative && m.metadata.recursion_available);
    assert_eq!(datas(&m), vec!["192.0.2.53"]);
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 1);
    // the second time from the cache, TTL not above what upstream gave
    let m = ask(&mut c, "WWW.example.com.", RecordType::A).await;
    assert_eq!(datas(&m), vec!["192.0.2.53"]);
    assert!(m.answers[0].ttl <= 60);
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 1, "answered from the cache");

    // negative answers are cached too (SOA minimum), and keep their SOA
    let m = ask(&mut c, "nope.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let _ = ask(&mut c, "nope.example.com.", RecordType::A).await;
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 2);

    // truncated upstream answer: we retry over TCP, then truncate towards a
    // plain UDP client, which gets it whole over TCP
    let mut plain = udp_client(dns.addr, false).await;
    let m = ask(&mut plain, "huge.example.com.", RecordType::A).await;
    assert_eq!(up.tcp_queries.load(Ordering::SeqCst), 1, "upstream asked over TCP after TC");
    assert!(m.metadata.truncation);
    let mut tcp = tcp_client(dns.addr).await;
    let m = ask(&mut tcp, "huge.example.com.", RecordType::A).await;
    assert_eq!(m.answers.len(), 100);

    // an ExternalName service: CNAME from the zone, the target's address from upstream
    let m = ask(&mut c, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(datas(&m), vec!["www.example.com.", "192.0.2.53"]);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_gives_servfail_and_the_next_one_is_tried() {
    // a port nobody listens on (bound, then closed)
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
        s.local_addr().unwrap()
    };
    let up = Upstream::start().await;
    let dns = Dns::start(zone(), vec![dead, up.addr]).await;
    let mut c = udp_client(dns.addr, true).await;
    let m = ask(&mut c, "example.com.", RecordType::A).await;
    assert_eq!(datas(&m), vec!["192.0.2.53"]);
    dns.stop().await;

    let dns = Dns::start(zone(), vec![dead]).await;
    let mut c = udp_client(dns.addr, true).await;
    let m = ask(&mut c, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    dns.stop().await;
}
