//! Node IPAM: every Node gets a podCIDR per family (an IPv4 /24 and, on a
//! dual-stack cluster, an IPv6 /64 by default) out of the cluster CIDRs,
//! written to `spec.podCIDRs` (the primary family first, also in
//! `spec.podCIDR`), which the
//! node's agent uses for its bridge and other nodes for their routes. The
//! API makes a podCIDR immutable once set, and this loop remembers what it
//! handed out, so no two nodes share one even before the cache catches up.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use crate::context::{Ctx, Key};
use crate::runtime::{run_workers, Action, WorkQueue};

struct Ipam {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
    /// Each family's cluster CIDR and node mask, the primary first.
    ranges: Vec<(IpNet, u8)>,
    /// podCIDRs handed out by this loop or seen on nodes.
    taken: Mutex<BTreeSet<IpNet>>,
}

/// The first subnet of `cluster` with prefix `mask` that is not in `taken`.
pub fn first_free(cluster: IpNet, mask: u8, taken: &BTreeSet<IpNet>) -> Option<IpNet> {
    cluster.subnets(mask).ok()?.find(|s| !taken.iter().any(|t| t.contains(&s.network()) || s.contains(&t.network())))
}

/// The node's podCIDRs (`spec.podCIDRs`, or the lone `spec.podCIDR`).
fn pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else { return Vec::new() };
    let mut out: Vec<IpNet> = spec.pod_cidrs.iter().flatten().filter_map(|c| c.parse().ok()).collect();
    if out.is_empty() {
        out.extend(spec.pod_cidr.as_deref().and_then(|c| c.parse::<IpNet>().ok()));
    }
    out
}

/// Whether the node still lacks a podCIDR of a configured family. A node
/// with a podCIDR keeps it (podCIDRs are immutable once set), so only
/// nodes without any are served.
fn needs_cidrs(node: &Node) -> bool {
    pod_cidrs(node).is_empty()
}

pub fn start(
    ctx: Arc<Ctx>,
    cluster: skiff_api::families::DualCidr,
    mask: u8,
    mask_v6: u8,
) -> impl Future<Output = ()> + Send + 'static {
    let ranges = cluster
        .iter()
        .map(|net| match net {
            IpNet::V4(_) => (net, mask),
            IpNet::V6(_) => (net, mask_v6),
        })
        .collect();
    let ipam = Arc::new(Ipam { queue: WorkQueue::new(), ctx: ctx.clone(), ranges, taken: Mutex::new(BTreeSet::new()) });
    {
        let q = ipam.queue.clone();
        ctx.informers.nodes.on_change(move |c| {
            if needs_cidrs(c.object()) {
                q.add(Key::of(&**c.object()));
            }
        });
    }
    async move {
        if !ipam.ctx.wait_synced().await {
            return;
        }
        let this = ipam.clone();
        run_workers("nodeipam", ipam.queue.clone(), 1, ipam.ctx.stop.clone(), move |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await;
    }
}

impl Ipam {
    async fn reconcile(&self, key: Key) -> Result<Action, kube::Error> {
        let Some(node) = self.ctx.informers.nodes.store().get(&key.store_ref()) else {
            return Ok(Action::await_change());
        };
        if !needs_cidrs(&node) {
            return Ok(Action::await_change());
        }
        let chosen: Vec<IpNet> = {
            let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
            for n in self.ctx.informers.nodes.store().state() {
                taken.extend(pod_cidrs(&n));
            }
            let mut chosen = Vec::new();
            for (cluster, mask) in &self.ranges {
                let Some(c) = first_free(*cluster, *mask, &taken) else {
                    tracing::warn!(node = %node.name_any(), %cluster, "no podCIDR left in the cluster CIDR");
                    for c in &chosen {
                        taken.remove(c);
                    }
                    return Ok(Action::await_change());
                };
                taken.insert(c);
                chosen.push(c);
            }
            chosen
        };
        let Some(first) = chosen.first() else { return Ok(Action::await_change()) };
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let all: Vec<String> = chosen.iter().map(ToString::to_string).collect();
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"podCIDR": first.to_string(), "podCIDRs": all},
        });
        match api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(node = %node.name_any(), pod_cidrs = ?all, "allocated podCIDRs");
                Ok(Action::await_change())
            }
            Err(e) => {
                // not handed out after all: free them and retry from fresh state
                let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
                for c in &chosen {
                    taken.remove(c);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_subnet() {
        let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(first_free(cluster, 24, &taken), Some("10.244.0.0/24".parse().unwrap()));
        taken.insert("10.244.0.0/24".parse().unwrap());
        taken.insert("10.244.2.0/24".parse().unwrap());
        assert_eq!(first_free(cluster, 24, &taken), Some("10.244.1.0/24".parse().unwrap()));
        let tiny: IpNet = "10.0.0.0/24".parse().unwrap();
        let full: BTreeSet<IpNet> = [tiny].into_iter().collect();
        assert_eq!(first_free(tiny, 24, &full), None);
    }

    #[test]
    fn hands_out_a_64_of_an_ipv6_56() {
        let cluster: IpNet = "fd00:10:244::/56".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(first_free(cluster, 64, &taken), Some("fd00:10:244::/64".parse().unwrap()));
        taken.insert("fd00:10:244::/64".parse().unwrap());
        taken.insert("10.244.1.0/24".parse().unwrap());
        assert_eq!(first_free(cluster, 64, &taken), Some("fd00:10:244:1::/64".parse().unwrap()));
    }
}
