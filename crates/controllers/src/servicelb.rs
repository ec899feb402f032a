//! ServiceLB: gives Services of type LoadBalancer their external addresses
//! (`status.loadBalancer.ingress`), which every node's proxy then programs.
//!
//! With `--service-lb-pool CIDR` each Service gets its own address from the
//! pool (the network must route the pool to the nodes, as for externalIPs);
//! without it, every Service gets the addresses of the Ready nodes, as k3s's
//! ServiceLB does. A Service with `spec.loadBalancerClass` belongs to another
//! implementation and is left alone. Pool addresses a Service already has are
//! kept across restarts; one leader runs this loop, so two Services never get
//! the same pool address.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use crate::context::{Ctx, Key};
use crate::runtime::{run_workers, Action, WorkQueue};

struct ServiceLb {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
    pool: Option<Ipv4Net>,
}

fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none())
}

/// The IPv4 addresses in a Service's status.loadBalancer.ingress.
pub fn status_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The InternalIPs of the Ready, schedulable nodes, sorted.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                && n.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|n| {
            let addrs = n.status.as_ref()?.addresses.as_ref()?;
            addrs.iter().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse().ok())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The lowest pool address not in `taken` (the network and broadcast
/// addresses of pools larger than /31 are skipped).
pub fn first_free(pool: Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    pool.hosts().find(|a| !taken.contains(a))
}

pub fn start(ctx: Arc<Ctx>, pool: Option<Ipv4Net>) -> impl Future<Output = ()> + Send + 'static {
    let lb = Arc::new(ServiceLb { queue: WorkQueue::new(), ctx: ctx.clone(), pool });
    {
        let q = lb.queue.clone();
        ctx.informers.services.on_change(move |c| {
            if is_ours(c.object()) {
                q.add(Key::of(&**c.object()));
            }
        });
    }
    if pool.is_none() {
        // node addresses follow the nodes
        let q = lb.queue.clone();
        let services = ctx.informers.services.clone();
        ctx.informers.nodes.on_change(move |_| {
            for s in services.store().state() {
                if is_ours(&s) {
                    q.add(Key::of(&*s));
                }
            }
        });
    }
    async move {
        if !lb.ctx.wait_synced().await {
            return;
        }
        let this = lb.clone();
        // one worker: pool choices are made one at a time
        run_workers("servicelb", lb.queue.clone(), 1, lb.ctx.stop.clone(), move |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await;
    }
}

impl ServiceLb {
    fn want(&self, svc: &Service) -> Option<Vec<Ipv4Addr>> {
        let Some(pool) = self.pool else {
            return Some(node_addresses(&self.ctx.informers.nodes.store().state()));
        };
        let have: Vec<Ipv4Addr> = status_ips(svc).into_iter().filter(|a| pool.contains(a)).collect();
        if let Some(a) = have.first() {
            return Some(vec![*a]);
        }
        let me = (svc.namespace(), svc.name_any());
        let taken: BTreeSet<Ipv4Addr> = self
            .ctx
            .informers
            .services
            .store()
            .state()
            .iter()
            .filter(|s| (s.namespace(), s.name_any()) != me)
            .flat_map(|s| status_ips(s))
            .collect();
        match first_free(pool, &taken) {
            Some(a) => Some(vec![a]),
            None => {
                tracing::warn!(service = %format!("{}/{}", me.0.unwrap_or_default(), me.1), %pool,
                    "no address left in --service-lb-pool");
                None
            }
        }
    }

    async fn reconcile(&self, key: Key) -> Result<Action, kube::Error> {
        let Some(svc) = self.ctx.informers.services.store().get(&key.store_ref()) else {
            return Ok(Action::await_change());
        };
        if !is_ours(&svc) || svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let Some(want) = self.want(&svc) else { return Ok(Action::await_change()) };
        if status_ips(&svc) == want {
            return Ok(Action::await_change());
        }
        let ingress: Vec<_> = want.iter().map(|a| json!({"ip": a.to_string(), "ipMode": "VIP"})).collect();
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &svc.namespace().unwrap_or_default());
        api.patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!(service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any()),
            addresses = ?want, "load balancer addresses set");
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_addresses_skip_taken_and_network_addresses() {
        let pool: Ipv4Net = "198.19.0.0/30".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(first_free(pool, &taken), Some(Ipv4Addr::new(198, 19, 0, 1)));
        taken.insert(Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(first_free(pool, &taken), Some(Ipv4Addr::new(198, 19, 0, 2)));
        taken.insert(Ipv4Addr::new(198, 19, 0, 2));
        assert_eq!(first_free(pool, &taken), None);
    }
}
