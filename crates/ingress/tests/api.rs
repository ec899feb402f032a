//! The proxy following a real API server (skiff-apiserver over a sled
//! store, in-process): an Ingress, Service, EndpointSlice and TLS Secret
//! created through the API are served, the Secret's renewal is picked up,
//! and the Ingress' status gets the node address.
//!
//! EndpointSlices may not hold loopback addresses, so the test runs in a
//! private network namespace (unshare, root needed) whose `lo` also carries
//! 10.250.0.2, where the backend listens. The namespace goes away with the
//! test's threads.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Backend;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_ingress::IngressConfig;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Run `f` on a thread in a fresh network namespace with `lo` up and
/// carrying NODE_IP; threads it starts stay in that namespace.
fn in_private_netns(f: impl FnOnce() + Send + 'static) {
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): this test needs root (CAP_SYS_ADMIN) for a private network namespace");
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]);
        f();
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

fn cert(name: &str) -> (String, String, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem(), c.cert.der().to_vec())
}

fn tls_secret(crt: &str, key: &str) -> Secret {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "testhost-tls", "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(crt), "tls.key": b64(key)}
    }))
    .unwrap()
}

/// GET https://testhost.com/ through the proxy, trusting `der`: the
/// certificate served and the body.
async fn get_tls(proxy: SocketAddr, der: &[u8], path: &str) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(der.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from("testhost.com").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "testhost.com")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("waited 20 s for {what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[test]
fn ingress_created_through_the_api_is_served_over_tls_and_gets_an_address() {
    in_private_netns(|| {
        let cluster = skiff_tests::Cluster::start();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let client = cluster.client().await;
            let backend = Backend::start(&NODE_IP.to_string(), "web").await;
            let pp = PostParams::default();
            let svc: Service = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
            }))
            .unwrap();
            Api::<Service>::namespaced(client.clone(), "default").create(&pp, &svc).await.unwrap();
            let slice: EndpointSlice = serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-abcde", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": backend.addr.port(), "protocol": "TCP"}],
                "endpoints": [{"addresses": [NODE_IP.to_string()], "conditions": {"ready": true}}]
            }))
            .unwrap();
            Api::<EndpointSlice>::namespaced(client.clone(), "default").create(&pp, &slice).await.unwrap();
            let (crt, key, der) = cert("testhost.com");
            let secrets = Api::<Secret>::namespaced(client.clone(), "default");
            secrets.create(&pp, &tls_secret(&crt, &key)).await.unwrap();
            // the article's Ingress, in v1 fields, without a class: skiff is the default
            let ingress: Ingress = serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "test-ingress", "namespace": "default"},
                "spec": {
                    "tls": [{"hosts": ["testhost.com"], "secretName": "testhost-tls"}],
                    "rules": [{"host": "testhost.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                        {"path": "/named", "pathType": "Exact",
                         "backend": {"service": {"name": "web", "port": {"name": "http"}}}}
                    ]}}]
                }
            }))
            .unwrap();
            let ingresses = Api::<Ingress>::namespaced(client.clone(), "default");
            ingresses.create(&pp, &ingress).await.unwrap();

            let mut config = IngressConfig::new("127.0.0.1:80".parse().unwrap(), "127.0.0.1:443".parse().unwrap());
            config.node_addresses = vec![IpAddr::V4(NODE_IP)];
            let stop = tokio_util::sync::CancellationToken::new();
            let proxy = tokio::spawn(skiff_ingress::run(client.clone(), config, stop.clone()));
            let https: SocketAddr = "127.0.0.1:443".parse().unwrap();

            let class = eventually("IngressClass skiff", async || {
                Api::<IngressClass>::all(client.clone())
                    .get_opt("skiff")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "absent".to_string())
            })
            .await;
            assert_eq!(class.spec.unwrap().controller.as_deref(), Some("skiff.io/ingress"));
            assert_eq!(class.metadata.annotations.unwrap()["ingressclass.kubernetes.io/is-default-class"], "true");

            let body = eventually("https://testhost.com/ through the proxy", async || {
                match get_tls(https, &der, "/page").await? {
                    (200, body) => Ok(body),
                    (s, body) => Err(format!("{s}: {body}")),
                }
            })
            .await;
            assert!(body.starts_with("web /page\n"), "{body}");
            assert!(body.contains("x-forwarded-proto=https\n"), "{body}");
            let (status, body) = get_tls(https, &der, "/named").await.unwrap();
            assert_eq!((status, body.lines().next().unwrap()), (200, "web /named"));

            let addr = eventually("the Ingress' status address", async || {
                let i = ingresses.get("test-ingress").await.map_err(|e| e.to_string())?;
                i.status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .and_then(|v| v.into_iter().next())
                    .and_then(|i| i.ip)
                    .ok_or_else(|| "no address yet".to_string())
            })
            .await;
            assert_eq!(addr, NODE_IP.to_string());

            // a renewed certificate is served without a restart
            let (crt2, key2, der2) = cert("testhost.com");
            let patch = json!({"data": tls_secret(&crt2, &key2).data});
            secrets.patch("testhost-tls", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            eventually("the renewed certificate", async || get_tls(https, &der2, "/").await.map(|_| ())).await;

            stop.cancel();
            proxy.await.unwrap().unwrap();
            backend.kill().await;
        });
        rt.shutdown_timeout(Duration::from_secs(1));
        drop(cluster);
    });
}
