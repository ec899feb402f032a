//! The built-in services every node runs beside its pods once the pod network
//! is up: the cluster DNS (skiff-dns) on the node's pod gateway, published as
//! this node's endpoint of `kube-system/kube-dns`, and the ingress proxy
//! (skiff-ingress) on the node's ports 80 and 443.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// The Service pods reach the cluster DNS through (created by the server).
pub const DNS_SERVICE: &str = "kube-dns";
pub const DNS_NAMESPACE: &str = "kube-system";

/// Which built-ins this node runs.
#[derive(Debug, Clone)]
pub struct AddonOptions {
    /// Serve the cluster DNS on the pod gateway.
    pub dns: bool,
    /// Run the ingress proxy.
    pub ingress: Option<IngressOptions>,
}

impl Default for AddonOptions {
    fn default() -> Self {
        AddonOptions { dns: true, ingress: Some(IngressOptions::default()) }
    }
}

#[derive(Debug, Clone)]
pub struct IngressOptions {
    pub http_port: u16,
    pub https_port: u16,
    /// Write Ingress status (one node per cluster does: the server's).
    pub update_status: bool,
}

impl Default for IngressOptions {
    fn default() -> Self {
        IngressOptions { http_port: 80, https_port: 443, update_status: false }
    }
}

/// Start the built-ins in the background; they stop with `shutdown`.
pub fn start(
    client: &kube::Client,
    cfg: &AgentConfig,
    opts: &AddonOptions,
    gateway: IpAddr,
    shutdown: &CancellationToken,
) {
    if opts.dns {
        let upstreams = skiff_dns::upstreams_from_resolv_conf(&cfg.resolv_conf).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the node's resolvers; names outside the cluster will fail");
            Vec::new()
        });
        let dns = skiff_dns::DnsConfig {
            cluster_domain: cfg.cluster_domain.clone(),
            listen: vec![SocketAddr::new(gateway, 53)],
            upstreams,
            ..Default::default()
        };
        let (client, stop, node) = (client.clone(), shutdown.clone(), cfg.node_name.clone());
        tokio::spawn(async move {
            let server = match skiff_dns::Server::bind(&dns) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cluster DNS not started on this node");
                    return;
                }
            };
            let publish = tokio::spawn(publish_dns_endpoint(client.clone(), node, gateway, stop.clone()));
            if let Err(e) = skiff_dns::run_bound(client, dns, server, stop).await {
                tracing::error!(error = %e, "cluster DNS stopped");
            }
            publish.abort();
        });
    }
    if let Some(ing) = &opts.ingress {
        let any = IpAddr::from([0, 0, 0, 0]);
        let mut config = skiff_ingress::IngressConfig::new(
            SocketAddr::new(any, ing.http_port),
            SocketAddr::new(any, ing.https_port),
        );
        config.node_addresses = vec![cfg.node_ip];
        config.update_status = ing.update_status;
        let (client, stop) = (client.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = skiff_ingress::run(client, config, stop).await {
                tracing::error!(error = %e, "the ingress proxy is not running on this node (start with --disable ingress to silence this)");
            }
        });
    }
}

/// The EndpointSlice `kube-dns-<node>` listing this node's DNS address. With
/// the Service's internalTrafficPolicy Local, every pod asks its own node.
pub fn dns_slice(node: &str, node_uid: Option<&str>, address: IpAddr) -> serde_json::Value {
    let owner = node_uid.map(|uid| vec![json!({"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid})]);
    let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let mut slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{DNS_SERVICE}-{node}"),
            "namespace": DNS_NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": DNS_SERVICE,
                "endpointslice.kubernetes.io/managed-by": "skiff-agent",
            },
        },
        "addressType": family,
        "endpoints": [{
            "addresses": [address.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
        }],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ],
    });
    if let Some(owner) = owner {
        slice["metadata"]["ownerReferences"] = json!(owner);
    }
    slice
}

/// Keep this node's kube-dns EndpointSlice applied (it comes back if deleted).
async fn publish_dns_endpoint(client: kube::Client, node: String, address: IpAddr, stop: CancellationToken) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), DNS_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let pp = PatchParams::apply("skiff-agent").force();
    loop {
        let uid = nodes.get_opt(&node).await.ok().flatten().and_then(|n| n.metadata.uid);
        let slice = dns_slice(&node, uid.as_deref(), address);
        let name = format!("{DNS_SERVICE}-{node}");
        let wait = match slices.patch(&name, &pp, &Patch::Apply(&slice)).await {
            Ok(_) => Duration::from_secs(60),
            Err(e) => {
                tracing::warn!(error = %e, "publishing this node's cluster DNS endpoint failed; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The kube-dns Service as the server creates it: ClusterIP `--cluster-dns`,
/// 53/UDP and 53/TCP, no selector (each node publishes its own endpoint),
/// internalTrafficPolicy Local.
pub fn dns_service(cluster_ip: IpAddr) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": DNS_SERVICE,
            "namespace": DNS_NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "skiff-dns"},
        },
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "internalTrafficPolicy": "Local",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// Create the kube-dns Service if it is missing (the server calls this at start).
pub async fn ensure_dns_service(client: &kube::Client, cluster_ip: IpAddr) -> Result<(), kube::Error> {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), DNS_NAMESPACE);
    if api.get_opt(DNS_SERVICE).await?.is_some() {
        return Ok(());
    }
    let svc = serde_json::from_value(dns_service(cluster_ip)).map_err(kube::Error::SerdeError)?;
    match api.create(&Default::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_slice_names_its_node_and_both_protocols() {
        let s = dns_slice("n1", Some("u1"), IpAddr::from([10, 244, 0, 1]));
        assert_eq!(s["metadata"]["name"], "kube-dns-n1");
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns");
        assert_eq!(s["endpoints"][0]["nodeName"], "n1");
        assert_eq!(s["ports"].as_array().unwrap().len(), 2);
        assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "u1");
        let svc: k8s_openapi::api::core::v1::Service =
            serde_json::from_value(dns_service(IpAddr::from([10, 96, 0, 10]))).unwrap();
        assert_eq!(svc.spec.unwrap().internal_traffic_policy.as_deref(), Some("Local"));
    }
}
