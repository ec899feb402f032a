//! The pod network and the service proxy on real kernel networking, as root,
//! entirely inside network namespaces these tests make (a "node", its
//! "pods", and an "external client" wired to the node by a veth). Nothing
//! touches the machine's own namespace; every namespace is removed by a
//! guard, also when a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_net::bridge::{BridgeConfig, BridgeNetwork, Ipv6Pods};
use skiff_net::netns;
use skiff_net::proxy::{self, Endpoint, HostPort, Protocol, Proxy, ProxyState, Service, ServicePort, SyncKind};
use skiff_net::{PodNetwork, PodRef};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Skip (or fail under CI=true) without root.
fn need_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "these tests need root (network namespaces)");
    eprintln!("skipped: needs root to create network namespaces");
    false
}

/// Namespaces and servers made by a test, removed on drop.
struct World {
    dir: tempfile::TempDir,
    namespaces: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new().prefix("skiff-test-net").tempdir().unwrap();
        World { dir, namespaces: Vec::new(), stop: Arc::new(AtomicBool::new(false)) }
    }

    fn netns(&mut self, name: &str) -> PathBuf {
        let p = self.dir.path().join("ns").join(name);
        netns::create(&p).unwrap();
        self.namespaces.push(p.clone());
        p
    }

    /// A TCP server in `ns` on `port`: greets each connection with
    /// "<name> <peer address>\n", then echoes what it receives.
    fn serve(&self, ns: &Path, name: &str, port: u16) {
        self.serve_on(ns, name, "0.0.0.0", port);
    }

    /// [`World::serve`] on `[::]` (IPv6, and IPv4 as mapped addresses).
    fn serve6(&self, ns: &Path, name: &str, port: u16) {
        self.serve_on(ns, name, "::", port);
    }

    /// [`World::serve`] on `bind`.
    fn serve_on(&self, ns: &Path, name: &str, bind: &'static str, port: u16) {
        let listener = netns::run_in(ns, move || TcpListener::bind((bind, port))).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, name) = (self.stop.clone(), name.to_string());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let name = name.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                            let _ = writeln!(conn, "{name} {}", peer.ip());
                            let mut buf = [0u8; 256];
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.namespaces.iter().rev() {
            let _ = netns::remove(p);
        }
        // netns::create makes the namespaces' directory a shared mount
        let _ = nix::mount::umount2(&self.dir.path().join("ns"), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `ip …` run inside `ns` (test setup only; the product uses netlink).
fn ip(ns: &Path, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = netns::run_in(ns, move || Command::new("ip").args(&args).output()).unwrap().unwrap();
    assert!(out.status.success(), "ip {:?}: {}", ns, String::from_utf8_lossy(&out.stderr));
}

fn ip_output(ns: &Path, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = netns::run_in(ns, move || Command::new("ip").args(&args).output()).unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connect from `ns` and read the greeting: (server name, the address the server saw).
fn greet(ns: &Path, addr: impl Into<SocketAddr>) -> std::io::Result<(String, String)> {
    let stream = netns::connect_tcp(ns, addr.into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    Ok((parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string()))
}

/// Which servers answered `n` connections.
fn spread(ns: &Path, addr: SocketAddrV4, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (name, _) = greet(ns, addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

fn pod(name: &str) -> PodRef {
    PodRef { namespace: "default".into(), name: name.into(), uid: format!("uid-{name}") }
}

fn v4(ip: std::net::IpAddr) -> Ipv4Addr {
    match ip {
        std::net::IpAddr::V4(v) => v,
        other => panic!("not IPv4: {other}"),
    }
}

fn svc(name: &str, vip: &str, port: u16, endpoints: &[(Ipv4Addr, bool)]) -> Service {
    Service {
        namespace: "default".into(),
        name: name.into(),
        cluster_ip: Some(vip.parse().unwrap()),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port,
            node_port: None,
            endpoints: endpoints
                .iter()
                .map(|(ip, local)| Endpoint { ip: (*ip).into(), port: 8080, local: *local })
                .collect(),
        }],
        ..Default::default()
    }
}

fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

struct Node {
    world: World,
    node: PathBuf,
    client: PathBuf,
    net: BridgeNetwork,
    status: skiff_net::bridge::NodeStatus,
}

/// A node namespace with the bridge network started and an external client
/// on a veth: node 198.18.0.1/24 (uplink0) — client 198.18.0.2/24.
async fn node() -> Node {
    let n = node_with(|_| {}).await;
    assert_eq!(n.status.mtu, 1500, "the uplink's MTU");
    n
}

/// [`node`], its bridge network's configuration changed by `adjust` first;
/// a dual-stack one adds 2001:2::1/64 (node) — 2001:2::2/64 (client).
async fn node_with(adjust: impl FnOnce(&mut BridgeConfig)) -> Node {
    let mut world = World::new();
    let node = world.netns("node");
    let client = world.netns("client");
    ip(&node, &["link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", client.to_str().unwrap()]);
    ip(&node, &["addr", "add", "198.18.0.1/24", "dev", "uplink0"]);
    ip(&node, &["link", "set", "uplink0", "up"]);
    ip(&node, &["route", "add", "default", "via", "198.18.0.2"]);
    ip(&client, &["addr", "add", "198.18.0.2/24", "dev", "eth0"]);
    ip(&client, &["link", "set", "eth0", "up"]);
    let mut cfg = BridgeConfig::new(
        "10.244.0.0/24".parse().unwrap(),
        "10.244.0.0/16".parse().unwrap(),
        world.dir.path().join("data"),
    );
    cfg.node_netns = Some(node.clone());
    adjust(&mut cfg);
    if cfg.ipv6.is_some() {
        ip(&node, &["addr", "add", "2001:2::1/64", "dev", "uplink0", "nodad"]);
        ip(&client, &["addr", "add", "2001:2::2/64", "dev", "eth0", "nodad"]);
    }
    let net = BridgeNetwork::new(cfg).unwrap();
    let status = net.start().await.unwrap();
    assert_eq!(status.gateway, GATEWAY);
    Node { world, node, client, net, status }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_bridge_and_services_through_nftables() {
    if !need_root() {
        return;
    }
    let Node { mut world, node, client, net, .. } = node().await;
    // forwarding is on in the node's namespace
    let fwd = netns::run_in(&node, || std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")).unwrap().unwrap();
    assert_eq!(fwd.trim(), "1");

    let (p1, p2, p3) = (world.netns("p1"), world.netns("p2"), world.netns("p3"));
    let a1 = v4(net.setup(&pod("p1"), &p1).await.unwrap().ips[0]);
    let a2 = v4(net.setup(&pod("p2"), &p2).await.unwrap().ips[0]);
    let a3 = v4(net.setup(&pod("p3"), &p3).await.unwrap().ips[0]);
    assert_eq!(HashSet::from([a1, a2, a3]).len(), 3);
    // setup is idempotent: an adopted pod keeps its address
    assert_eq!(v4(net.setup(&pod("p1"), &p1).await.unwrap().ips[0]), a1);
    let routes = ip_output(&p1, &["route"]);
    assert!(routes.contains("default via 10.244.0.1 dev eth0"), "{routes}");
    world.serve(&p1, "p1", 8080);
    world.serve(&p2, "p2", 8080);

    // pod to pod, and pod to the outside (masqueraded as the node)
    let (name, seen) = greet(&p3, SocketAddrV4::new(a1, 8080)).unwrap();
    assert_eq!((name.as_str(), seen), ("p1", a3.to_string()));
    world.serve(&client, "outside", 9000);
    let (_, seen) = greet(&p1, SocketAddrV4::new(CLIENT_IP, 9000)).unwrap();
    assert_eq!(seen, NODE_IP.to_string(), "pod egress is masqueraded");

    let web = svc("web", "10.96.0.10", 80, &[(a1, true), (a2, true)]);
    let empty = svc("empty", "10.96.0.11", 80, &[]);
    let only1 = svc("only1", "10.96.0.12", 80, &[(a1, true)]);
    let mut np = svc("np", "10.96.0.13", 80, &[(a1, true), (a2, true)]);
    np.ports[0].node_port = Some(30080);
    let mut local = svc("local", "10.96.0.14", 80, &[(a1, true), (Ipv4Addr::new(10, 244, 1, 9), false)]);
    local.ports[0].node_port = Some(30081);
    local.external_traffic_local = true;
    let mut sticky = svc("sticky", "10.96.0.15", 80, &[(a1, true), (a2, true)]);
    sticky.session_affinity_timeout = Some(60);
    let mut state = ProxyState {
        family: proxy::Family::V4,
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        pod_cidr: Some("10.244.0.0/24".parse().unwrap()),
        services: vec![web, empty, only1, np, local, sticky],
        host_ports: vec![HostPort {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 8081,
            pod_ip: a2.into(),
            container_port: 8080,
        }],
    };
    let mut proxy = Proxy::in_netns(&node);
    assert_eq!(proxy.sync(&state).unwrap().kind, SyncKind::Full);
    let table = proxy::list_table(Some(&node)).unwrap();
    assert!(table.contains("ip daddr . meta l4proto . th dport vmap @service-ips"), "{table}");

    // ClusterIP from a pod spreads over both endpoints
    let s = spread(&p3, addr("10.96.0.10", 80), 40);
    assert!(s.get("p1").copied().unwrap_or(0) > 0 && s.get("p2").copied().unwrap_or(0) > 0, "{s:?}");
    // ... and from the node itself
    let s = spread(&node, addr("10.96.0.10", 80), 40);
    assert!(s.len() == 2, "{s:?}");

    // no endpoints: refused at once; an unused port of a ClusterIP too
    for target in [addr("10.96.0.11", 80), addr("10.96.0.10", 81)] {
        let t = Instant::now();
        let e = netns::connect_tcp(&p3, SocketAddr::V4(target), Duration::from_secs(2)).unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{target}: {e}");
        assert!(took < Duration::from_millis(100), "{target}: refused after {took:?}");
    }

    // hairpin: a pod reaches itself through its Service
    let (name, seen) = greet(&p1, addr("10.96.0.12", 80)).unwrap();
    assert_eq!(name, "p1");
    assert_eq!(seen, GATEWAY.to_string(), "hairpin traffic is masqueraded");

    // NodePort from outside, externalTrafficPolicy Cluster: both pods, masqueraded
    let s = spread(&client, SocketAddrV4::new(NODE_IP, 30080), 40);
    assert!(s.len() == 2, "{s:?}");
    let (_, seen) = greet(&client, SocketAddrV4::new(NODE_IP, 30080)).unwrap();
    assert_eq!(seen, GATEWAY.to_string());
    // externalTrafficPolicy Local: only the local endpoint, client address kept
    for _ in 0..10 {
        let (name, seen) = greet(&client, SocketAddrV4::new(NODE_IP, 30081)).unwrap();
        assert_eq!((name.as_str(), seen), ("p1", CLIENT_IP.to_string()));
    }
    // HostPort on the node's address
    let (name, _) = greet(&client, SocketAddrV4::new(NODE_IP, 8081)).unwrap();
    assert_eq!(name, "p2");

    // ClientIP affinity: one client keeps its endpoint
    let s = spread(&p3, addr("10.96.0.15", 80), 20);
    assert_eq!(s.len(), 1, "{s:?}");

    // an open connection survives a full resync by a "restarted agent"
    let conn = netns::connect_tcp(&p3, SocketAddr::V4(addr("10.96.0.10", 80)), Duration::from_secs(2)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut restarted = Proxy::in_netns(&node);
    assert_eq!(restarted.sync(&state).unwrap().kind, SyncKind::Full);
    (&conn).write_all(b"still there\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "still there\n");
    drop((conn, reader));

    // incremental: p2 leaves web; the change is one small transaction
    state.services[0].ports[0].endpoints.retain(|e| e.ip != a2);
    let stats = restarted.sync(&state).unwrap();
    assert_eq!((stats.kind, stats.services_changed), (SyncKind::Incremental, 1));
    let s = spread(&p3, addr("10.96.0.10", 80), 20);
    assert_eq!(s.keys().collect::<Vec<_>>(), vec!["p1"], "{s:?}");
    // a Service removed: its address is no longer served (nor is it a ClusterIP to reject)
    state.services.retain(|s| s.name != "only1");
    assert_eq!(restarted.sync(&state).unwrap().kind, SyncKind::Incremental);
    assert!(!proxy::list_table(Some(&node)).unwrap().contains("10.96.0.12"));
    // nothing changed: nothing sent
    assert_eq!(restarted.sync(&state).unwrap().kind, SyncKind::Unchanged);
    // endpoints come back
    state.services[0].ports[0].endpoints.push(Endpoint { ip: a2.into(), port: 8080, local: true });
    restarted.sync(&state).unwrap();
    let s = spread(&p3, addr("10.96.0.10", 80), 40);
    assert!(s.len() == 2, "{s:?}");

    // teardown: the pod's interface and address go
    net.teardown(&pod("p3"), &p3).await.unwrap();
    assert!(!ip_output(&p3, &["link"]).contains("eth0"));
    assert_eq!(net.ipam().lookup("uid-p3").unwrap(), None);
    net.teardown(&pod("p3"), &p3).await.unwrap();
    // gc: pods the agent no longer knows lose their addresses and veths
    let released = net.gc(["uid-p1".to_string()].into()).await.unwrap();
    assert_eq!(released, vec![a2]);
    let links = ip_output(&node, &["link"]);
    assert!(!links.contains(&skiff_net::bridge::host_veth_name("uid-p2")), "{links}");
    assert!(links.contains(&skiff_net::bridge::host_veth_name("uid-p1")), "{links}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_routes_follow_the_nodes() {
    if !need_root() {
        return;
    }
    let Node { world: _world, node, net, .. } = node().await;
    let peer1: (ipnet::Ipv4Net, Ipv4Addr) = ("10.244.1.0/24".parse().unwrap(), CLIENT_IP);
    let peer2: (ipnet::Ipv4Net, Ipv4Addr) = ("10.244.2.0/24".parse().unwrap(), "198.18.0.3".parse().unwrap());
    let own: (ipnet::Ipv4Net, Ipv4Addr) = ("10.244.0.0/24".parse().unwrap(), NODE_IP);
    net.set_peer_routes(vec![peer1, peer2, own]).await.unwrap();
    let routes = ip_output(&node, &["route", "show", "proto", "99"]);
    assert!(routes.contains("10.244.1.0/24 via 198.18.0.2"), "{routes}");
    assert!(routes.contains("10.244.2.0/24 via 198.18.0.3"), "{routes}");
    assert!(!routes.contains("10.244.0.0/24"), "{routes}");
    // a node left, another moved
    let moved: (ipnet::Ipv4Net, Ipv4Addr) = ("10.244.1.0/24".parse().unwrap(), "198.18.0.4".parse().unwrap());
    net.set_peer_routes(vec![moved]).await.unwrap();
    let routes = ip_output(&node, &["route", "show", "proto", "99"]);
    assert_eq!(routes.trim(), "10.244.1.0/24 via 198.18.0.4 dev uplink0", "{routes}");
    net.set_peer_routes(Vec::<(ipnet::IpNet, std::net::IpAddr)>::new()).await.unwrap();
    assert_eq!(ip_output(&node, &["route", "show", "proto", "99"]).trim(), "");

    // a bridge with another MAC address (made by an older agent) gets its own at the next start
    ip(&node, &["link", "set", "skiff0", "address", "02:00:00:00:00:99"]);
    net.start().await.unwrap();
    let bridge = ip_output(&node, &["link", "show", "skiff0"]);
    assert!(bridge.contains("link/ether 02:6b:0a:f4:00:01 "), "{bridge}");
}

/// The VXLAN backend follows its peers: each gets a route, a neighbour
/// entry per family and a forwarding entry; a node that leaves takes all of
/// them along, and a peer whose VTEP MAC changed keeps only its new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_entries_follow_the_peers() {
    if !need_root() {
        return;
    }
    let Node { world: _world, node, net, .. } = node_with(|cfg| {
        cfg.vxlan = Some(skiff_net::vxlan::VxlanConfig::new(NODE_IP));
        cfg.ipv6 = Some(Ipv6Pods {
            pod_cidr: "fd00:10:244::/64".parse().unwrap(),
            cluster_cidr: "fd00:10:244::/56".parse().unwrap(),
        });
    })
    .await;
    let peer = |n: u8, last: u8| skiff_net::vxlan::VxlanPeer {
        pod_cidr: format!("10.244.{n}.0/24").parse().unwrap(),
        node_ip: Ipv4Addr::new(198, 18, 0, n + 1),
        mac: [0x02, 0, 0, 0, n, last],
        pod_cidr_v6: Some(format!("fd00:10:244:{n}::/64").parse().unwrap()),
    };
    let entries = || {
        let neigh = ip_output(&node, &["neigh", "show", "dev", "skiff.vxlan", "nud", "permanent"]);
        let fdb = netns::run_in(&node, || Command::new("bridge").args(["fdb", "show", "dev", "skiff.vxlan"]).output());
        let fdb = String::from_utf8_lossy(&fdb.unwrap().unwrap().stdout).into_owned();
        let mut lines: Vec<String> =
            neigh.lines().chain(fdb.lines().filter(|l| l.contains(" dst "))).map(|l| l.trim().to_string()).collect();
        lines.sort();
        lines
    };
    net.set_vxlan_peers(vec![peer(1, 1), peer(2, 1)]).await.unwrap();
    assert_eq!(
        entries(),
        [
            "02:00:00:00:01:01 dst 198.18.0.2 self permanent",
            "02:00:00:00:02:01 dst 198.18.0.3 self permanent",
            "10.244.1.0 lladdr 02:00:00:00:01:01 PERMANENT",
            "10.244.2.0 lladdr 02:00:00:00:02:01 PERMANENT",
            "fe80::ff:fe00:101 lladdr 02:00:00:00:01:01 PERMANENT",
            "fe80::ff:fe00:201 lladdr 02:00:00:00:02:01 PERMANENT",
        ]
    );
    // node 3 left; node 2's VTEP came back with another MAC
    net.set_vxlan_peers(vec![peer(1, 9)]).await.unwrap();
    assert_eq!(
        entries(),
        [
            "02:00:00:00:01:09 dst 198.18.0.2 self permanent",
            "10.244.1.0 lladdr 02:00:00:00:01:09 PERMANENT",
            "fe80::ff:fe00:109 lladdr 02:00:00:00:01:09 PERMANENT",
        ]
    );
    let routes = ip_output(&node, &["route", "show", "proto", "99"]);
    assert_eq!(routes.trim(), "10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink", "{routes}");
    net.set_vxlan_peers(vec![]).await.unwrap();
    assert_eq!(entries(), Vec::<String>::new());
}

/// `cargo test -p skiff-net --release --test kernel -- --ignored --nocapture proxy_figures`
#[test]
#[ignore = "a benchmark: run it on purpose"]
fn proxy_figures() {
    if !need_root() {
        return;
    }
    let services = std::env::var("SKIFF_BENCH_SERVICES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let figures = proxy::bench::measure(services, 10, 50).unwrap();
    println!("{figures}");
}

/// Write a sysctl of the namespace at `ns` (/proc/sys/net is the calling
/// thread's namespace's).
fn sysctl(ns: &Path, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    netns::run_in(ns, move || std::fs::write(&path, value)).unwrap().unwrap();
}

/// The IPv6 table (`ip6 skiff`) on real kernel networking: a node namespace
/// with a bridge and two pods holding IPv6 addresses, and an external
/// client on a veth. ClusterIP spreads over both pods, keeps a pod's source
/// address and masquerades the client's; a NodePort answers on the node's
/// address; a Service without endpoints refuses at once; an endpoint removed
/// stops receiving connections; the IPv4 table is not made.
#[test]
fn ipv6_services_through_the_ip6_table() {
    if !need_root() {
        return;
    }
    let mut w = World::new();
    let node = w.netns("v6-node");
    let client = w.netns("v6-client");
    let pods = [w.netns("v6-pod-a"), w.netns("v6-pod-b")];
    sysctl(&node, "net.ipv6.conf.all.forwarding", "1");
    ip(&node, &["link", "add", "br6", "type", "bridge"]);
    ip(&node, &["addr", "add", "fd00:10:244::1/64", "dev", "br6", "nodad"]);
    ip(&node, &["link", "set", "br6", "up"]);
    for (i, pod) in pods.iter().enumerate() {
        let host = format!("v6h{i}");
        ip(&node, &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", pod.to_str().unwrap()]);
        ip(&node, &["link", "set", &host, "master", "br6", "up"]);
        // as the agent's bridge does: a pod's connection to its own Service
        // leaves and re-enters through the same port
        ip(&node, &["link", "set", &host, "type", "bridge_slave", "hairpin", "on"]);
        ip(pod, &["addr", "add", &format!("fd00:10:244::{}/64", 10 + i), "dev", "eth0", "nodad"]);
        ip(pod, &["link", "set", "eth0", "up"]);
        ip(pod, &["-6", "route", "add", "default", "via", "fd00:10:244::1"]);
    }
    ip(&node, &["link", "add", "v6ext", "type", "veth", "peer", "name", "eth0", "netns", client.to_str().unwrap()]);
    ip(&node, &["addr", "add", "2001:2::1/64", "dev", "v6ext", "nodad"]);
    ip(&node, &["link", "set", "v6ext", "up"]);
    ip(&client, &["addr", "add", "2001:2::2/64", "dev", "eth0", "nodad"]);
    ip(&client, &["link", "set", "eth0", "up"]);
    ip(&client, &["-6", "route", "add", "default", "via", "2001:2::1"]);
    w.serve_on(&pods[0], "a", "::", 8080);
    w.serve_on(&pods[1], "b", "::", 8080);

    let pod_ip = |i: usize| -> std::net::IpAddr { format!("fd00:10:244::{}", 10 + i).parse().unwrap() };
    let mut web = svc("web6", "fd00:10:96::20", 80, &[]);
    web.ports[0].endpoints = (0..2).map(|i| Endpoint { ip: pod_ip(i), port: 8080, local: true }).collect();
    web.ports[0].node_port = Some(30080);
    let empty = svc("empty6", "fd00:10:96::21", 80, &[]);
    let mut state = ProxyState {
        family: proxy::Family::V6,
        cluster_cidr: Some("fd00:10:244::/56".parse().unwrap()),
        pod_cidr: Some("fd00:10:244::/64".parse().unwrap()),
        services: vec![web, empty],
        host_ports: vec![],
    };
    let mut v6 = Proxy::in_netns(&node).with_family(proxy::Family::V6);
    assert_eq!(v6.sync(&state).unwrap().kind, SyncKind::Full);
    let table = proxy::list_family_table(Some(&node), proxy::Family::V6).unwrap();
    assert!(table.contains("fd00:10:96::20 . tcp . 80 . 1 : fd00:10:244::11 . 8080"), "{table}");
    // the same element read straight from the kernel
    let lookup = proxy::Lookup::open(Some(&node)).unwrap();
    let vip6: std::net::IpAddr = "fd00:10:96::20".parse().unwrap();
    assert_eq!(lookup.cluster_endpoint(vip6, Protocol::Tcp, 80, 1).unwrap(), Some((pod_ip(1), 8080)));
    assert_eq!(lookup.cluster_endpoint(vip6, Protocol::Tcp, 80, 2).unwrap(), None);
    assert!(proxy::list_table(Some(&node)).is_err(), "no IPv4 table was asked for");
    // an IPv4 state is refused by the IPv6 proxy, not half applied
    assert!(v6.sync(&ProxyState::default()).is_err());

    let vip: SocketAddr = "[fd00:10:96::20]:80".parse().unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..40 {
        let (name, peer) = greet(&client, vip).unwrap_or_else(|e| panic!("client to {vip}: {e}"));
        assert_eq!(peer, "fd00:10:244::1", "the client, outside the cluster CIDR, is masqueraded");
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both pods serve the ClusterIP: {seen:?}");
    // pod a reaching the ClusterIP keeps its address where pod b answers,
    // and is masqueraded where it reaches itself (hairpin); each connection
    // is answered at once, without a SYN retransmission
    let mut from_a = BTreeMap::new();
    for _ in 0..40 {
        let t = Instant::now();
        let (name, peer) = greet(&pods[0], vip).unwrap_or_else(|e| panic!("pod a to {vip}: {e}"));
        assert!(t.elapsed() < Duration::from_millis(900), "pod a to {vip} ({name}) took {:?}", t.elapsed());
        from_a.insert(name, peer);
    }
    assert_eq!(from_a.get("b").map(String::as_str), Some("fd00:10:244::10"), "{from_a:?}");
    assert_eq!(from_a.get("a").map(String::as_str), Some("fd00:10:244::1"), "hairpin is masqueraded: {from_a:?}");
    let np: SocketAddr = "[2001:2::1]:30080".parse().unwrap();
    assert!(greet(&client, np).is_ok(), "the NodePort answers on the node's IPv6 address");
    let t = Instant::now();
    let refused = greet(&client, "[fd00:10:96::21]:80".parse::<SocketAddr>().unwrap()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    assert!(t.elapsed() < Duration::from_millis(100), "rejected at once, took {:?}", t.elapsed());

    // UDP through the IPv6 table, and its conntrack entry deleted by endpoint
    let echo = netns::run_in(&pods[0], || std::net::UdpSocket::bind("[::]:5353")).unwrap().unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        if let Ok((n, peer)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], peer);
        }
    });
    let mut dns = svc("dns6", "fd00:10:96::53", 53, &[]);
    dns.ports[0].protocol = Protocol::Udp;
    dns.ports[0].endpoints = vec![Endpoint { ip: pod_ip(0), port: 5353, local: true }];
    state.services.push(dns);
    v6.sync(&state).unwrap();
    let asker = netns::run_in(&client, || std::net::UdpSocket::bind("[::]:0")).unwrap().unwrap();
    asker.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    asker.send_to(b"ping", "[fd00:10:96::53]:53").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = asker.recv_from(&mut buf).expect("the UDP endpoint answers through the IPv6 ClusterIP");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from.to_string(), "[fd00:10:96::53]:53", "the answer comes back from the ClusterIP");
    echo_thread.join().unwrap();
    let ep = (pod_ip(0), 5353);
    let deleted = netns::run_in(&node, move || skiff_net::conntrack::delete_udp_to_endpoints(&[ep])).unwrap().unwrap();
    assert_eq!(deleted, 1, "the IPv6 UDP flow's conntrack entry");
    state.services.pop();

    // pod b's endpoint goes: incremental, and only pod a answers
    state.services[0].ports[0].endpoints.truncate(1);
    assert_eq!(v6.sync(&state).unwrap().kind, SyncKind::Incremental);
    for _ in 0..20 {
        assert_eq!(greet(&client, vip).unwrap().0, "a");
    }
    proxy::delete_family_table(Some(&node), proxy::Family::V6).unwrap();
}

fn v6(ip: std::net::IpAddr) -> Ipv6Addr {
    match ip {
        std::net::IpAddr::V6(v) => v,
        other => panic!("not IPv6: {other}"),
    }
}

/// A dual-stack node: pods get an IPv6 address (usable at once) and a
/// default IPv6 route via the bridge, talk to each other over IPv6, leave
/// the cluster masqueraded as the node's IPv6 address, and host-gw routes
/// cover the other nodes' IPv6 podCIDRs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pods_reach_each_other_and_the_outside_over_ipv6() {
    if !need_root() {
        return;
    }
    let Node { mut world, node, client, net, status } = node_with(|cfg| {
        cfg.ipv6 = Some(Ipv6Pods {
            pod_cidr: "fd00:10:244::/64".parse().unwrap(),
            cluster_cidr: "fd00:10:244::/56".parse().unwrap(),
        });
    })
    .await;
    let gw6: Ipv6Addr = "fd00:10:244::1".parse().unwrap();
    assert_eq!(status.gateway_v6, Some(gw6));
    let fwd = netns::run_in(&node, || std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding"));
    assert_eq!(fwd.unwrap().unwrap().trim(), "1");
    // start is idempotent
    net.start().await.unwrap();
    let bridge = ip_output(&node, &["-d", "link", "show", "skiff0"]);
    assert!(bridge.contains("mcast_snooping 0"), "{bridge}");
    // the bridge's MAC address is its own, whatever ports come and go
    let mac = "link/ether 02:6b:0a:f4:00:01 ";
    assert_eq!(skiff_net::bridge::bridge_mac(GATEWAY), [0x02, 0x6b, 10, 244, 0, 1]);
    assert!(bridge.contains(mac), "{bridge}");

    let (p1, p2) = (world.netns("p1"), world.netns("p2"));
    let ips1 = net.setup(&pod("p1"), &p1).await.unwrap().ips;
    let ips2 = net.setup(&pod("p2"), &p2).await.unwrap().ips;
    // its one link-local address is usable now that the pods gave it a
    // carrier: the first packet the node forwards to a pod that has not
    // spoken yet is not held for a neighbour solicitation's retry
    let link_local: Vec<String> = ip_output(&node, &["-6", "addr", "show", "dev", "skiff0", "scope", "link"])
        .lines()
        .filter(|l| l.contains("inet6"))
        .map(str::to_string)
        .collect();
    assert!(
        link_local.len() == 1 && link_local[0].contains("fe80::1/64") && !link_local[0].contains("tentative"),
        "{link_local:?}"
    );
    world.serve6(&p2, "p2", 8081);
    ip(&client, &["-6", "route", "add", "fd00:10:244::/64", "via", "2001:2::1"]);
    let t = Instant::now();
    let (name, _) = greet(&client, SocketAddr::new(ips2[1], 8081)).unwrap();
    assert_eq!(name, "p2");
    assert!(t.elapsed() < Duration::from_millis(900), "the first packet to p2 from outside took {:?}", t.elapsed());
    assert_eq!(ips1.len(), 2, "{ips1:?}");
    assert!(ips1[0].is_ipv4(), "the IPv4 address comes first: {ips1:?}");
    let (a1, a2) = (v6(ips1[1]), v6(ips2[1]));
    let range: ipnet::Ipv6Net = "fd00:10:244::/64".parse().unwrap();
    assert!(range.contains(&a1) && range.contains(&a2) && a1 != a2 && a1 != gw6, "{a1} {a2}");
    assert_eq!(net.setup(&pod("p1"), &p1).await.unwrap().ips, ips1, "an adopted pod keeps both addresses");
    let routes = ip_output(&p1, &["-6", "route"]);
    assert!(routes.contains("default via fd00:10:244::1 dev eth0"), "{routes}");
    let addrs = ip_output(&p1, &["-6", "addr", "show", "dev", "eth0"]);
    let line = addrs.lines().find(|l| l.contains(&format!("{a1}/64"))).unwrap_or_default();
    assert!(line.contains("nodad") && !line.contains("tentative"), "{addrs}");

    // pod to pod over IPv6, at once (no duplicate address detection to wait for)
    world.serve6(&p1, "p1", 8080);
    let (name, seen) = greet(&p2, SocketAddr::new(a1.into(), 8080)).unwrap();
    assert_eq!((name.as_str(), seen), ("p1", a2.to_string()));
    // to the outside: masqueraded as the node's IPv6 address
    world.serve6(&client, "outside", 9000);
    let (_, seen) = greet(&p1, SocketAddr::new("2001:2::2".parse().unwrap(), 9000)).unwrap();
    assert_eq!(seen, "2001:2::1", "IPv6 pod egress is masqueraded");
    let out = netns::run_in(&node, || Command::new("nft").args(["list", "table", "ip6", "skiff-podnet"]).output());
    let table = String::from_utf8_lossy(&out.unwrap().unwrap().stdout).into_owned();
    assert!(table.contains("ip6 saddr fd00:10:244::/56") && table.contains("masquerade"), "{table}");

    // host-gw: IPv6 podCIDRs via the nodes' IPv6 addresses; the node's own and mixed families are skipped
    let peers: Vec<(ipnet::IpNet, std::net::IpAddr)> = vec![
        ("10.244.1.0/24".parse().unwrap(), "198.18.0.3".parse().unwrap()),
        ("fd00:10:244:1::/64".parse().unwrap(), "2001:2::3".parse().unwrap()),
        ("fd00:10:244::/64".parse().unwrap(), "2001:2::1".parse().unwrap()),
        ("fd00:10:244:2::/64".parse().unwrap(), "198.18.0.4".parse().unwrap()),
    ];
    net.set_peer_routes(peers).await.unwrap();
    let routes = ip_output(&node, &["-6", "route", "show", "proto", "99"]);
    assert_eq!(routes.trim(), "fd00:10:244:1::/64 via 2001:2::3 dev uplink0 metric 1024 pref medium", "{routes}");
    assert!(ip_output(&node, &["route", "show", "proto", "99"]).contains("10.244.1.0/24 via 198.18.0.3"));
    net.set_peer_routes(vec![("10.244.1.0/24".parse::<ipnet::Ipv4Net>().unwrap(), NODE_IP)]).await.unwrap();
    assert_eq!(ip_output(&node, &["-6", "route", "show", "proto", "99"]).trim(), "");

    // both addresses go with the pod; gc collects both families
    net.teardown(&pod("p2"), &p2).await.unwrap();
    assert_eq!(net.ipam_v6().unwrap().lookup("uid-p2").unwrap(), None);
    let bridge = ip_output(&node, &["link", "show", "skiff0"]);
    assert!(bridge.contains(mac), "a port went, the bridge's address stays: {bridge}");
    let p3 = world.netns("p3");
    let ips3 = net.setup(&pod("p3"), &p3).await.unwrap().ips;
    assert_ne!(ips3[1], ips2[1], "a released IPv6 address is not reused at once");
    let mut released = net.gc(["uid-p1".to_string()].into()).await.unwrap();
    released.sort();
    assert_eq!(released, vec![ips3[0], ips3[1]]);
}

/// Someone deletes the table behind the proxy's back (`nft flush ruleset`):
/// the next incremental sync's element batch is refused by the kernel as a
/// whole, with an error naming what it refused, and the sync after it is a
/// full one that rebuilds the table.
#[test]
fn a_table_deleted_behind_the_proxys_back_is_rebuilt() {
    if !need_root() {
        return;
    }
    let mut w = World::new();
    let node = w.netns("gone-node");
    let a1 = Ipv4Addr::new(10, 244, 0, 2);
    let mut state = ProxyState {
        family: proxy::Family::V4,
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        pod_cidr: Some("10.244.0.0/24".parse().unwrap()),
        services: vec![svc("web", "10.96.0.20", 80, &[(a1, true)])],
        host_ports: vec![],
    };
    let mut p = Proxy::in_netns(&node);
    assert_eq!(p.sync(&state).unwrap().kind, SyncKind::Full);
    proxy::delete_table(Some(&node)).unwrap();
    state.services[0].ports[0].endpoints[0].ip = Ipv4Addr::new(10, 244, 0, 3).into();
    let e = p.sync(&state).unwrap_err().to_string();
    assert!(e.contains("refused the batch") && e.contains("cluster-endpoints-tcp"), "{e}");
    assert_eq!(p.sync(&state).unwrap().kind, SyncKind::Full, "the sync after a failure is a full one");
    let lookup = proxy::Lookup::open(Some(&node)).unwrap();
    let vip: std::net::IpAddr = "10.96.0.20".parse().unwrap();
    assert_eq!(
        lookup.cluster_endpoint(vip, Protocol::Tcp, 80, 0).unwrap(),
        Some(("10.244.0.3".parse().unwrap(), 8080))
    );
}
