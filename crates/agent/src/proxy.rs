//! The agent's service proxy loop: watch Services, EndpointSlices and this
//! node's pods, turn them into skiff-net's proxy model, one per address
//! family the node has (IPv4, and IPv6 on dual-stack nodes, each into its own
//! table as kube-proxy runs a proxier per family), and let skiff-net program
//! them into nftables.
//!
//! The conversion (`proxy_state`) is a pure function; the loop only watches,
//! rate-limits (at most one sync per `debounce`, the first change after a
//! quiet spell at once) and calls `Proxy::sync` on a blocking thread.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use skiff_net::proxy::{self, Endpoint, Family, HostPort, Protocol, ProxyState, ServicePort};

/// What the loop needs to know about its node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    pub cluster_cidr: Option<Ipv4Net>,
    pub pod_cidr: Option<Ipv4Net>,
    /// On dual-stack nodes: the cluster's IPv6 pod range and this node's
    /// IPv6 podCIDR; Services' IPv6 addresses then go into table `ip6 skiff`.
    pub ipv6: Option<(Ipv6Net, Option<Ipv6Net>)>,
    /// The shortest time between two syncs (changes meanwhile are gathered into one).
    pub debounce: Duration,
}

impl ProxyConfig {
    /// The families this node's proxy programs.
    pub fn families(&self) -> Vec<Family> {
        let mut out = vec![Family::V4];
        if self.ipv6.is_some() {
            out.push(Family::V6);
        }
        out
    }
}

/// `s` as an address of `family`.
fn addr_of(family: Family, s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().filter(|ip| Family::of(*ip) == family)
}

/// The ready endpoints of one service port, from the Service's slices of `family`.
fn endpoints_for(
    family: Family,
    port_name: &str,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    node: &str,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != family.k8s_name() {
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
            let Some(ip) = ep.addresses.first().and_then(|a| addr_of(family, a)) else { continue };
            let local = ep.node_name.as_deref() == Some(node);
            out.push(Endpoint { ip, port: number, local });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The proxy model for this node and `family`.
pub fn proxy_state<S, E, P>(
    services: &[S],
    slices: &[E],
    pods: &[P],
    config: &ProxyConfig,
    family: Family,
) -> ProxyState
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
    P: Borrow<Pod>,
{
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices.iter().map(Borrow::borrow) {
        if let Some(svc) = s.labels().get("kubernetes.io/service-name") {
            by_service.entry((s.namespace().unwrap_or_default(), svc.clone())).or_default().push(s);
        }
    }
    let (cluster_cidr, pod_cidr) = match (family, config.ipv6) {
        (Family::V4, _) => (config.cluster_cidr.map(IpNet::V4), config.pod_cidr.map(IpNet::V4)),
        (Family::V6, Some((cluster, pod))) => (Some(IpNet::V6(cluster)), pod.map(IpNet::V6)),
        (Family::V6, None) => (None, None),
    };
    let mut out = ProxyState {
        family,
        cluster_cidr,
        pod_cidr,
        services: Vec::new(),
        host_ports: host_ports(pods, &config.node_name, family),
    };
    for svc in services.iter().map(Borrow::borrow) {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let slices = by_service.get(&(ns.clone(), name.clone())).cloned().unwrap_or_default();
        // clusterIPs holds one address per family (clusterIP is its first)
        let cluster_ip = spec.cluster_ips.iter().flatten().chain(&spec.cluster_ip).find_map(|ip| addr_of(family, ip));
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
                    endpoints: endpoints_for(family, &name, protocol, &slices, &config.node_name),
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
            external_ips: spec.external_ips.iter().flatten().filter_map(|s| addr_of(family, s)).collect(),
            load_balancer_ips: svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref().and_then(|ip| addr_of(family, ip)))
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

/// HostPorts of the running pods on this node, to their addresses of `family`.
fn host_ports<P: Borrow<Pod>>(pods: &[P], node: &str, family: Family) -> Vec<HostPort> {
    let mut out = Vec::new();
    for pod in pods.iter().map(Borrow::borrow) {
        let Some(spec) = &pod.spec else { continue };
        if spec.node_name.as_deref() != Some(node) || spec.host_network == Some(true) {
            continue;
        }
        let Some(status) = &pod.status else { continue };
        let ips = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).chain(status.pod_ip.as_deref());
        let Some(pod_ip) = ips.into_iter().find_map(|ip| addr_of(family, ip)) else { continue };
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let Some(host_port) = p.host_port.and_then(|h| u16::try_from(h).ok()).filter(|h| *h != 0) else {
                    continue;
                };
                let Some(protocol) = Protocol::from_k8s(p.protocol.as_deref().unwrap_or("TCP")) else { continue };
                let Ok(container_port) = u16::try_from(p.container_port) else { continue };
                // a hostIP of the other family publishes nothing in this one
                let host_ip = match p.host_ip.as_deref().filter(|h| !h.is_empty()) {
                    Some(h) => match h.parse::<IpAddr>() {
                        Ok(ip) if ip.is_unspecified() => None,
                        Ok(ip) if Family::of(ip) == family => Some(ip),
                        _ => continue,
                    },
                    None => None,
                };
                out.push(HostPort { protocol, host_ip, host_port, pod_ip, container_port });
            }
        }
    }
    out.sort();
    out
}

/// How long after a failed sync the proxy tries again without a change.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Watch and sync until `shutdown`. `proxies` are skiff-net's programmers
/// (in this node's network namespace), one per family of
/// [`ProxyConfig::families`].
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    mut proxies: Vec<proxy::Proxy>,
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
    let mut previous: Vec<Option<proxy::UdpState>> = proxies
        .iter()
        .map(|proxy| match tokio::task::block_in_place(|| proxy.programmed_udp_state()) {
            Ok(udp) => Some(udp),
            Err(e) => {
                tracing::warn!(error = %e, "reading the UDP services of the existing table failed; stale conntrack entries of the first sync stay");
                None
            }
        })
        .collect();
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
        let woke = std::time::Instant::now();
        // at most one sync per `debounce`: a change after a quiet spell is
        // applied at once, the changes of a burst go into one transaction
        if let Some(wait) = last_sync.map(|t| config.debounce.saturating_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        while rx.try_recv().is_ok() {}
        last_sync = Some(std::time::Instant::now());
        // the stores' objects as they are (shared, not copied)
        let services = svc_store.state();
        let slices = slice_store.state();
        let pods = pod_store.state();
        let mut failed = false;
        let mut states = Vec::with_capacity(proxies.len());
        for (proxy, previous) in proxies.iter_mut().zip(previous.iter_mut()) {
            let started = std::time::Instant::now();
            let state = proxy_state(&services, &slices, &pods, &config, proxy.family());
            let built = started.elapsed();
            match tokio::task::block_in_place(|| proxy.sync(&state)) {
                Ok(stats) => {
                    tracing::debug!(
                        family = %proxy.family(),
                        ?stats,
                        ?built,
                        since_change = ?woke.elapsed(),
                        "proxy synced"
                    );
                    let now = proxy.udp_state();
                    if let Some(old) = &*previous {
                        clear_udp_conntrack(old, &now);
                    }
                    *previous = Some(now);
                }
                Err(e) => {
                    tracing::warn!(family = %proxy.family(), error = %e, "proxy sync failed; retrying");
                    failed = true;
                }
            }
            states.push(state);
        }
        if failed {
            // the next sync is a full one; it comes with the next change
            // or after a second, whichever is first
            let retry = retry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_AFTER).await;
                let _ = retry.try_send(());
            });
        }
        health_checks.sync(crate::healthcheck::wanted(&services, &states)).await;
    }
    health_checks.stop();
    watchers.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A dual-stack Service: each family's state takes its own ClusterIP,
    /// slices, external addresses and the pods' addresses of that family.
    #[test]
    fn each_family_gets_its_own_addresses_and_slices() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00:10:96::20"],
                     "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
                     "externalIPs": ["198.18.0.50", "2001:2::50"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }))
        .unwrap();
        let slice = |name: &str, family: &str, addr: &str| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": family,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [addr], "conditions": {"ready": true}, "nodeName": "n1"}]
            }))
            .unwrap()
        };
        let slices = [slice("web-a", "IPv4", "10.244.1.5"), slice("web-b", "IPv6", "fd00:10:244:1::5")];
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
            "status": {"podIP": "10.244.1.9", "podIPs": [{"ip": "10.244.1.9"}, {"ip": "fd00:10:244:1::9"}]}
        }))
        .unwrap();
        let v6 = proxy_state(std::slice::from_ref(&svc), &slices, std::slice::from_ref(&pod), &cfg(), Family::V6);
        assert_eq!(v6.family, Family::V6);
        assert_eq!(v6.cluster_cidr, Some("fd00:10:244::/56".parse().unwrap()));
        let s = &v6.services[0];
        assert_eq!(s.cluster_ip, Some(ip("fd00:10:96::20")));
        assert_eq!(s.external_ips, vec![ip("2001:2::50")]);
        assert_eq!(s.ports[0].endpoints, vec![Endpoint { ip: ip("fd00:10:244:1::5"), port: 8080, local: true }]);
        assert_eq!(v6.host_ports[0].pod_ip, ip("fd00:10:244:1::9"));
        let v4 = proxy_state(&[svc], &slices, &[pod], &cfg(), Family::V4);
        assert_eq!(v4.services[0].cluster_ip, Some(ip("10.96.0.20")));
        assert_eq!(v4.services[0].ports[0].endpoints[0].ip, ip("10.244.1.5"));
        assert_eq!(v4.host_ports[0].pod_ip, ip("10.244.1.9"));
    }

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            node_name: "n1".into(),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
            ipv6: Some(("fd00:10:244::/56".parse().unwrap(), Some("fd00:10:244:1::/64".parse().unwrap()))),
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
        let state = proxy_state(&[svc], &[slice], &[] as &[Pod], &cfg(), Family::V4);
        assert_eq!(state.services.len(), 1);
        let s = &state.services[0];
        assert_eq!(s.cluster_ip, Some(ip("10.96.0.20")));
        assert_eq!(
            s.ports[0].endpoints,
            vec![
                Endpoint { ip: ip("10.244.1.5"), port: 8080, local: true },
                Endpoint { ip: ip("10.244.2.7"), port: 8080, local: false },
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
        let hp = host_ports(
            &[pod("n1", Some("10.244.1.9")), pod("n2", Some("10.244.2.9")), pod("n1", None)],
            "n1",
            Family::V4,
        );
        assert_eq!(
            hp,
            vec![HostPort {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                pod_ip: ip("10.244.1.9"),
                container_port: 80
            }]
        );
        assert!(host_ports(&[pod("n1", Some("10.244.1.9"))], "n1", Family::V6).is_empty(), "no IPv6 address");
    }
}
