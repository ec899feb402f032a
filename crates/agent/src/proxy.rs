//! The agent's service proxy loop: watch Services, EndpointSlices and this
//! node's pods, turn them into skiff-net's proxy model, and let skiff-net
//! program it into nftables (one transaction per sync).
//!
//! The conversion (`proxy_state`) is a pure function; the loop only watches,
//! rate-limits (at most one sync per `debounce`, the first change after a
//! quiet spell at once) and calls `Proxy::sync` on a blocking thread.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use skiff_net::proxy::{self, Endpoint, HostPort, Protocol, ProxyState, ServicePort};

/// What the loop needs to know about its node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    pub cluster_cidr: Option<Ipv4Net>,
    pub pod_cidr: Option<Ipv4Net>,
    /// The shortest time between two syncs (changes meanwhile are gathered into one).
    pub debounce: Duration,
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// The ready endpoints of one service port, from the Service's slices.
fn endpoints_for(port_name: &str, protocol: Protocol, slices: &[&EndpointSlice], node: &str) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Protocol::from_k8s(p.protocol.as_deref().unwrap_or("TCP")) == Some(protocol)
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else { continue };
        for ep in &slice.endpoints {
            // ready unset means "unknown": Kubernetes treats it as ready
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            let Some(ip) = ep.addresses.first().and_then(|a| ipv4(a)) else { continue };
            let local = ep.node_name.as_deref() == Some(node);
            out.push(Endpoint { ip, port: number, local });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The proxy model for this node.
pub fn proxy_state(services: &[Service], slices: &[EndpointSlice], pods: &[Pod], config: &ProxyConfig) -> ProxyState {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if let Some(svc) = s.labels().get("kubernetes.io/service-name") {
            by_service.entry((s.namespace().unwrap_or_default(), svc.clone())).or_default().push(s);
        }
    }
    let mut out = ProxyState {
        cluster_cidr: config.cluster_cidr,
        pod_cidr: config.pod_cidr,
        services: Vec::new(),
        host_ports: host_ports(pods, &config.node_name),
    };
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let slices = by_service.get(&(ns.clone(), name.clone())).cloned().unwrap_or_default();
        let cluster_ip = spec.cluster_ip.as_deref().and_then(ipv4);
        let affinity = spec.session_affinity.as_deref() == Some("ClientIP");
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10800);
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let protocol = Protocol::from_k8s(p.protocol.as_deref().unwrap_or("TCP"))?;
                let name = p.name.clone().unwrap_or_default();
                Some(ServicePort {
                    endpoints: endpoints_for(&name, protocol, &slices, &config.node_name),
                    name,
                    protocol,
                    port: u16::try_from(p.port).ok()?,
                    node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                })
            })
            .collect();
        out.services.push(proxy::Service {
            namespace: ns,
            name,
            cluster_ip,
            external_ips: spec.external_ips.iter().flatten().filter_map(|s| ipv4(s)).collect(),
            load_balancer_ips: svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref().and_then(ipv4))
                .collect(),
            session_affinity_timeout: affinity.then_some(timeout),
            internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            ports,
        });
    }
    out
}

/// Delete the UDP conntrack entries the change from `old` to `new` made
/// stale, as kube-proxy does: those that pin clients to endpoints that are
/// gone, so that their next datagrams reach a current endpoint, and those of
/// Services that had no endpoints and now have some (datagrams sent while
/// the Service rejected left entries without NAT, which would keep the
/// client's later datagrams from being DNATed).
fn clear_udp_conntrack(old: &proxy::UdpState, new: &proxy::UdpState) {
    let gone = old.removed_endpoints(new);
    if !gone.is_empty() {
        match tokio::task::block_in_place(|| skiff_net::conntrack::delete_udp_to_endpoints(&gone)) {
            Ok(n) => tracing::debug!(endpoints = ?gone, deleted = n, "stale UDP conntrack entries deleted"),
            Err(e) => tracing::warn!(endpoints = ?gone, error = %e, "deleting stale UDP conntrack entries failed"),
        }
    }
    let active = old.newly_active(new);
    if !active.is_empty() {
        match tokio::task::block_in_place(|| skiff_net::conntrack::delete_udp_to_destinations(&active)) {
            Ok(n) => {
                tracing::debug!(services = ?active, deleted = n, "UDP conntrack entries of services that got endpoints deleted")
            }
            Err(e) => {
                tracing::warn!(services = ?active, error = %e, "deleting UDP conntrack entries of services that got endpoints failed")
            }
        }
    }
}

/// HostPorts of the running pods on this node.
fn host_ports(pods: &[Pod], node: &str) -> Vec<HostPort> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(spec) = &pod.spec else { continue };
        if spec.node_name.as_deref() != Some(node) || spec.host_network == Some(true) {
            continue;
        }
        let Some(pod_ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(ipv4) else { continue };
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let Some(host_port) = p.host_port.and_then(|h| u16::try_from(h).ok()).filter(|h| *h != 0) else {
                    continue;
                };
                let Some(protocol) = Protocol::from_k8s(p.protocol.as_deref().unwrap_or("TCP")) else { continue };
                let Ok(container_port) = u16::try_from(p.container_port) else { continue };
                out.push(HostPort {
                    protocol,
                    host_ip: p.host_ip.as_deref().and_then(ipv4),
                    host_port,
                    pod_ip,
                    container_port,
                });
            }
        }
    }
    out.sort();
    out
}

/// Watch and sync until `shutdown`. `proxy` is skiff-net's programmer
/// (in this node's network namespace).
/// How long after a failed sync the proxy tries again without a change.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    mut proxy: proxy::Proxy,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let retry = tx.clone();
    let notify = move || {
        let _ = tx.try_send(());
    };
    let pods_cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
    let n1 = notify.clone();
    let services = reflector(svc_writer, watcher(Api::<Service>::all(client.clone()), watcher::Config::default()))
        .default_backoff()
        .for_each(move |_| {
            n1();
            futures::future::ready(())
        });
    let n2 = notify.clone();
    let slices =
        reflector(slice_writer, watcher(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .for_each(move |_| {
                n2();
                futures::future::ready(())
            });
    let n3 = notify;
    let pods = reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), pods_cfg)).default_backoff().for_each(
        move |_| {
            n3();
            futures::future::ready(())
        },
    );
    let watchers = tokio::spawn(async move {
        tokio::join!(services, slices, pods);
    });
    let mut health_checks = crate::healthcheck::HealthChecks::default();
    // what the table did with UDP before this agent started (a restart):
    // the first sync's stale conntrack entries are found against it
    let mut previous = match tokio::task::block_in_place(|| proxy.programmed_udp_state()) {
        Ok(udp) => Some(udp),
        Err(e) => {
            tracing::warn!(error = %e, "reading the UDP services of the existing table failed; stale conntrack entries of the first sync stay");
            None
        }
    };
    // the first sync waits for all three lists: a partial state would
    // program Services without their endpoints (and reject their traffic)
    let ready = async {
        let _ =
            tokio::join!(svc_store.wait_until_ready(), slice_store.wait_until_ready(), pod_store.wait_until_ready());
    };
    tokio::select! {
        _ = shutdown.cancelled() => {
            watchers.abort();
            return;
        }
        _ = ready => {}
    }
    let mut last_sync: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        // at most one sync per `debounce`: a change after a quiet spell is
        // applied at once, the changes of a burst go into one transaction
        if let Some(wait) = last_sync.map(|t| config.debounce.saturating_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        while rx.try_recv().is_ok() {}
        last_sync = Some(std::time::Instant::now());
        let services = svc_store.state().iter().map(|s| (**s).clone()).collect::<Vec<_>>();
        let state = proxy_state(
            &services,
            &slice_store.state().iter().map(|s| (**s).clone()).collect::<Vec<_>>(),
            &pod_store.state().iter().map(|p| (**p).clone()).collect::<Vec<_>>(),
            &config,
        );
        let started = std::time::Instant::now();
        match tokio::task::block_in_place(|| proxy.sync(&state)) {
            Ok(stats) => {
                tracing::debug!(?stats, elapsed = ?started.elapsed(), "proxy synced");
                let now = proxy.udp_state();
                if let Some(old) = &previous {
                    clear_udp_conntrack(old, &now);
                }
                previous = Some(now);
            }
            Err(e) => {
                // the next sync is a full one; it comes with the next change
                // or after a second, whichever is first
                tracing::warn!(error = %e, "proxy sync failed; retrying");
                let retry = retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY_AFTER).await;
                    let _ = retry.try_send(());
                });
            }
        }
        health_checks.sync(crate::healthcheck::wanted(&services, &state)).await;
    }
    health_checks.stop();
    watchers.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            node_name: "n1".into(),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
            debounce: Duration::from_millis(10),
        }
    }

    #[test]
    fn ready_endpoints_of_the_article_service_by_named_port() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "service-test", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80, "protocol": "TCP", "targetPort": "http"}],
                     "selector": {"app": "service_test_pod"}}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "service-test-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "service-test"}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": true}, "nodeName": "n2"},
                {"addresses": ["10.244.2.8"], "conditions": {"ready": false}, "nodeName": "n2"}
            ]
        }))
        .unwrap();
        let state = proxy_state(&[svc], &[slice], &[], &cfg());
        assert_eq!(state.services.len(), 1);
        let s = &state.services[0];
        assert_eq!(s.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 20)));
        assert_eq!(
            s.ports[0].endpoints,
            vec![
                Endpoint { ip: Ipv4Addr::new(10, 244, 1, 5), port: 8080, local: true },
                Endpoint { ip: Ipv4Addr::new(10, 244, 2, 7), port: 8080, local: false },
            ]
        );
    }

    #[test]
    fn host_ports_only_for_this_nodes_pods_with_an_ip() {
        let pod = |node: &str, ip: Option<&str>| -> Pod {
            let mut status = json!({});
            if let Some(ip) = ip {
                status = json!({"podIP": ip});
            }
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
                "status": status
            }))
            .unwrap()
        };
        let hp = host_ports(&[pod("n1", Some("10.244.1.9")), pod("n2", Some("10.244.2.9")), pod("n1", None)], "n1");
        assert_eq!(
            hp,
            vec![HostPort {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                pod_ip: Ipv4Addr::new(10, 244, 1, 9),
                container_port: 80
            }]
        );
    }
}
