//! Node IPAM: every Node gets a podCIDR (a /24 by default) out of the
//! cluster CIDR, written to `spec.podCIDR` and `spec.podCIDRs`, which the
//! node's agent uses for its bridge and other nodes for their routes. The
//! API makes a podCIDR immutable once set, and this loop remembers what it
//! handed out, so no two nodes share one even before the cache catches up.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use crate::context::{Ctx, Key};
use crate::runtime::{run_workers, Action, WorkQueue};

struct Ipam {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
    cluster: Ipv4Net,
    mask: u8,
    /// podCIDRs handed out by this loop or seen on nodes.
    taken: Mutex<BTreeSet<Ipv4Net>>,
}

/// The first subnet of `cluster` with prefix `mask` that is not in `taken`.
pub fn first_free(cluster: Ipv4Net, mask: u8, taken: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    cluster.subnets(mask).ok()?.find(|s| !taken.iter().any(|t| t.contains(&s.network()) || s.contains(&t.network())))
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

pub fn start(ctx: Arc<Ctx>, cluster: Ipv4Net, mask: u8) -> impl Future<Output = ()> + Send + 'static {
    let ipam =
        Arc::new(Ipam { queue: WorkQueue::new(), ctx: ctx.clone(), cluster, mask, taken: Mutex::new(BTreeSet::new()) });
    {
        let q = ipam.queue.clone();
        ctx.informers.nodes.on_change(move |c| {
            if pod_cidr(c.object()).is_none() {
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
        if pod_cidr(&node).is_some() {
            return Ok(Action::await_change());
        }
        let chosen = {
            let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
            for n in self.ctx.informers.nodes.store().state() {
                if let Some(c) = pod_cidr(&n) {
                    taken.insert(c);
                }
            }
            let Some(c) = first_free(self.cluster, self.mask, &taken) else {
                tracing::warn!(node = %node.name_any(), cluster = %self.cluster, "no podCIDR left in the cluster CIDR");
                return Ok(Action::await_change());
            };
            taken.insert(c);
            c
        };
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"podCIDR": chosen.to_string(), "podCIDRs": [chosen.to_string()]},
        });
        match api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(node = %node.name_any(), pod_cidr = %chosen, "allocated podCIDR");
                Ok(Action::await_change())
            }
            Err(e) => {
                // not handed out after all: free it and retry from fresh state
                self.taken.lock().unwrap_or_else(|e| e.into_inner()).remove(&chosen);
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
        let cluster: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(first_free(cluster, 24, &taken), Some("10.244.0.0/24".parse().unwrap()));
        taken.insert("10.244.0.0/24".parse().unwrap());
        taken.insert("10.244.2.0/24".parse().unwrap());
        assert_eq!(first_free(cluster, 24, &taken), Some("10.244.1.0/24".parse().unwrap()));
        let tiny: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let full: BTreeSet<Ipv4Net> = [tiny].into_iter().collect();
        assert_eq!(first_free(tiny, 24, &full), None);
    }
}
