//! skiff-dns: the cluster DNS. Answers the Kubernetes DNS-Based Service
//! Discovery records for the cluster zone from Services, EndpointSlices and
//! Pods it watches through the API, and forwards every other name to the
//! node's upstream resolvers.
//!
//! - [`records`]: the zone as a pure model, built from API objects.
//! - [`wire`]: that model compiled into ready-made answers (the hot path).
//! - [`server`]: UDP and TCP serving, the general path.
//! - [`forward`]: upstream forwarding with a cache.
//!
//! [`run`] is what the agent calls; [`serve`] and [`server::Server`] serve a
//! zone built by hand (tests, benchmarks).

pub mod forward;
pub mod records;
pub mod server;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use tokio_util::sync::CancellationToken;

pub use forward::Forwarder;
pub use records::Records;
pub use server::{Server, ZoneHandle};
pub use wire::Snapshot;

/// How long a burst of API changes is gathered before the zone is rebuilt.
const DEBOUNCE: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The cluster domain (`--cluster-domain`), e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Where to serve, UDP and TCP on each.
    pub listen: Vec<SocketAddr>,
    /// Resolvers for names outside the cluster zone (see [`upstreams_from_resolv_conf`]).
    pub upstreams: Vec<SocketAddr>,
    /// TTL of the cluster records, in seconds.
    pub ttl: u32,
    /// UDP sockets (and threads) per listen address.
    pub udp_workers: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            cluster_domain: "cluster.local".into(),
            listen: Vec::new(),
            upstreams: Vec::new(),
            ttl: 5,
            udp_workers: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cluster DNS: {0}")]
    Config(String),
    #[error("cluster DNS: binding {proto} {addr}: {source}")]
    Bind { addr: SocketAddr, proto: String, source: std::io::Error },
    #[error("cluster DNS: reading {path}: {source}")]
    ResolvConf { path: String, source: std::io::Error },
    #[error("cluster DNS: {0}")]
    Io(std::io::Error),
}

/// The `nameserver` lines of a resolv.conf, on port 53.
pub fn upstreams_from_resolv_conf(path: impl AsRef<Path>) -> Result<Vec<SocketAddr>, DnsError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| DnsError::ResolvConf { path: path.display().to_string(), source: e })?;
    Ok(parse_resolv_conf(&text))
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // an IPv6 zone index (fe80::1%eth0) cannot be kept in a SocketAddr's text form
        if let Some(ip) = words.next().and_then(|w| w.split('%').next()).and_then(|w| w.parse::<IpAddr>().ok()) {
            let sa = SocketAddr::new(ip, 53);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    out
}

/// A zone handle holding `records` (ready: answered as they are).
pub fn zone_handle(records: Records) -> ZoneHandle {
    Arc::new(ArcSwap::from_pointee(Snapshot::new(records, true)))
}

/// Serve `zone` on `config.listen` until `shutdown`; no API client needed.
pub async fn serve(zone: ZoneHandle, config: &DnsConfig, shutdown: CancellationToken) -> Result<(), DnsError> {
    let server = Server::bind(config)?;
    let forwarder = Arc::new(Forwarder::new(upstreams_without_self(config, &server.local_addrs())));
    server.run(zone, forwarder, shutdown).await
}

/// Never forward to ourselves.
fn upstreams_without_self(config: &DnsConfig, ours: &[SocketAddr]) -> Vec<SocketAddr> {
    config.upstreams.iter().filter(|u| !ours.contains(u) && !config.listen.contains(u)).copied().collect()
}

/// Watch Services, EndpointSlices and Pods and serve the cluster zone on
/// `config.listen` until `shutdown`.
pub async fn run(client: kube::Client, config: DnsConfig, shutdown: CancellationToken) -> Result<(), DnsError> {
    let server = Server::bind(&config)?;
    run_bound(client, config, server, shutdown).await
}

/// [`run`] on sockets already bound (to learn their ports first).
pub async fn run_bound(
    client: kube::Client,
    config: DnsConfig,
    server: Server,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let zone: ZoneHandle =
        Arc::new(ArcSwap::from_pointee(Snapshot::new(Records::empty(&config.cluster_domain, config.ttl), false)));
    let forwarder = Arc::new(Forwarder::new(upstreams_without_self(&config, &server.local_addrs())));
    tracing::info!(listen = ?server.local_addrs(), upstreams = ?config.upstreams, "starting cluster DNS");
    let serving = tokio::spawn(server.run(zone.clone(), forwarder, shutdown.clone()));
    follow_api(client, &config, &zone, &shutdown).await;
    serving.await.map_err(|e| DnsError::Io(std::io::Error::other(e)))?
}

/// Keep `zone` in step with the API until `shutdown`.
async fn follow_api(client: kube::Client, config: &DnsConfig, zone: &ZoneHandle, shutdown: &CancellationToken) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let listed: Arc<[AtomicBool; 3]> = Arc::new(Default::default());

    fn follow<K, S>(
        stream: S,
        which: usize,
        listed: Arc<[AtomicBool; 3]>,
        tx: tokio::sync::mpsc::Sender<()>,
    ) -> impl std::future::Future<Output = ()>
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    {
        stream.for_each(move |ev| {
            match ev {
                Ok(watcher::Event::InitDone) => listed[which].store(true, Ordering::Release),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cluster DNS watch failed; retrying"),
            }
            let _ = tx.try_send(());
            futures::future::ready(())
        })
    }

    let services = follow(
        reflector(svc_writer, watcher(Api::<Service>::all(client.clone()), watcher::Config::default()))
            .default_backoff(),
        0,
        listed.clone(),
        tx.clone(),
    );
    let slices = follow(
        reflector(slice_writer, watcher(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default()))
            .default_backoff(),
        1,
        listed.clone(),
        tx.clone(),
    );
    let pods = follow(
        reflector(pod_writer, watcher(Api::<Pod>::all(client), watcher::Config::default())).default_backoff(),
        2,
        listed.clone(),
        tx,
    );
    let watchers = tokio::spawn(async move {
        tokio::join!(services, slices, pods);
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        let ready = listed.iter().all(|l| l.load(Ordering::Acquire));
        let services: Vec<Service> = svc_store.state().iter().map(|s| (**s).clone()).collect();
        let slices: Vec<EndpointSlice> = slice_store.state().iter().map(|s| (**s).clone()).collect();
        let pods: Vec<Pod> = pod_store.state().iter().map(|p| (**p).clone()).collect();
        let started = std::time::Instant::now();
        let records = Records::build(&config.cluster_domain, config.ttl, &services, &slices, &pods);
        let snap = Snapshot::new(records, ready);
        let names = snap.len();
        zone.store(Arc::new(snap));
        tracing::debug!(names, ready, elapsed = ?started.elapsed(), "cluster DNS zone rebuilt");
    }
    watchers.abort();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n\
                    nameserver 10.0.0.2\noptions ndots:2\nnameserver bogus\n";
        let got = parse_resolv_conf(text);
        assert_eq!(got, vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }

    #[test]
    fn missing_resolv_conf_names_the_path() {
        let e = upstreams_from_resolv_conf("/nonexistent/resolv.conf").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("/nonexistent/resolv.conf")));
    }
}
