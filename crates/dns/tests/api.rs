//! skiff-dns following a real API server (in this process, on loopback,
//! over a sled store in a temp dir): a new Service answers within a second,
//! endpoint changes of a headless Service too, and a deleted Service is
//! NXDOMAIN within a second.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{Message, ResponseCode};
use hickory_net::proto::rr::{DNSClass, Name, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_dns::{DnsConfig, Server};
use tokio_util::sync::CancellationToken;

async fn api_server(dir: &std::path::Path) -> (skiff_apiserver::Running, kube::Client) {
    let store = skiff_store::SledStore::open(skiff_store::SledOptions::new(dir.join("db"))).unwrap();
    let config = skiff_apiserver::Config {
        tls_dir: dir.join("tls"),
        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        extra_sans: Vec::new(),
        advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        node_port_range: (30000, 32767),
        node_token: "skiff-test-dns".into(),
    };
    let dyn_store: skiff_store::DynStore = store;
    let running = skiff_apiserver::start(config, dyn_store).await.unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let tls = &running.tls;
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\ncurrent-context: skiff\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        running.addr.port(),
        b64(&tls.ca_cert_pem),
        b64(&tls.admin_cert_pem),
        b64(&tls.admin_key_pem),
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    (running, kube::Client::try_from(config).unwrap())
}

async fn ask(c: &mut Client<TokioRuntimeProvider>, name: &str, t: RecordType) -> Message {
    let r = tokio::time::timeout(Duration::from_secs(5), c.query(Name::from_str(name).unwrap(), DNSClass::IN, t))
        .await
        .unwrap()
        .unwrap();
    (*r).clone()
}

/// Ask every 10 ms until `ok` holds; the time it took (panics after `limit`).
async fn until(
    c: &mut Client<TokioRuntimeProvider>,
    name: &str,
    t: RecordType,
    limit: Duration,
    ok: impl Fn(&Message) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let m = ask(c, name, t).await;
        if ok(&m) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{name} {t}: still {m:?} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_the_api_within_a_second() {
    let dir = tempfile::Builder::new().prefix("skiff-test-dns-").tempdir().unwrap();
    let (running, client) = api_server(dir.path()).await;
    let config = DnsConfig { listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)], ..Default::default() };
    let server = Server::bind(&config).unwrap();
    let addr = server.local_addrs()[0];
    let stop = CancellationToken::new();
    let dns = tokio::spawn(skiff_dns::run_bound(client.clone(), config, server, stop.clone()));

    let stream =
        UdpClientStream::builder(addr, TokioRuntimeProvider::new()).with_timeout(Some(Duration::from_secs(2))).build();
    let (mut c, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);

    // synced with the API once a missing name is NXDOMAIN (SERVFAIL before)
    let name = "web.default.svc.cluster.local.";
    until(&mut c, name, RecordType::A, Duration::from_secs(10), |m| m.metadata.response_code == ResponseCode::NXDomain)
        .await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    let ip = created.spec.unwrap().cluster_ip.unwrap();
    let took = until(&mut c, name, RecordType::A, Duration::from_secs(1), |m| addrs(m) == vec![ip.clone()]).await;
    eprintln!("new service answered after {took:?}");
    let m = ask(&mut c, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(addrs(&m), vec!["0 100 80 web.default.svc.cluster.local."]);

    // a headless service follows its endpoints
    let headless: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &headless).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = |ready: bool| -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": ready}}
            ],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
        }))
        .unwrap()
    };
    slices.create(&PostParams::default(), &slice(true)).await.unwrap();
    let db = "db.default.svc.cluster.local.";
    let took = until(&mut c, db, RecordType::A, Duration::from_secs(1), |m| {
        addrs(m) == vec!["10.244.0.5".to_string(), "10.244.0.6".to_string()]
    })
    .await;
    eprintln!("headless endpoints answered after {took:?}");
    let m = ask(&mut c, "db-0.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["10.244.0.5"]);
    slices.patch("db-1", &PatchParams::apply("skiff-test-dns").force(), &Patch::Apply(slice(false))).await.unwrap();
    let took =
        until(&mut c, db, RecordType::A, Duration::from_secs(1), |m| addrs(m) == vec!["10.244.0.5".to_string()]).await;
    eprintln!("an endpoint turning unready was followed after {took:?}");

    services.delete("web", &DeleteParams::default()).await.unwrap();
    let took = until(&mut c, name, RecordType::A, Duration::from_secs(1), |m| {
        m.metadata.response_code == ResponseCode::NXDomain
    })
    .await;
    eprintln!("deleted service NXDOMAIN after {took:?}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), dns).await.unwrap().unwrap().unwrap();
    running.shutdown().await;
}
