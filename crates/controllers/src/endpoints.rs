//! The Endpoints controller: for each Service with a selector, the matching
//! pods' addresses (ready, or not ready unless publishNotReadyAddresses),
//! with each pod's resolution of named target ports. Services without a
//! selector are left to their users. Also what the EndpointSlice controller
//! shares: which pods a Service selects and how their ports resolve.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::ResourceExt;

use crate::context::{Ctx, Key};
use crate::pod;
use crate::runtime::{run_workers, Action, Change, WorkQueue};

pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// The pods in `svc`'s namespace that its selector matches.
pub fn selected_pods(ctx: &Ctx, svc: &Service) -> Vec<Arc<Pod>> {
    let Some(sel) = selector(svc) else { return Vec::new() };
    let ns = svc.metadata.namespace.clone();
    ctx.informers
        .pods
        .store()
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace == ns && pod::map_selects(sel, p.labels()))
        .collect()
}

/// ShouldPodBeInEndpoints: running or pending with an IP, and not being
/// deleted unless terminating pods are wanted.
pub fn should_include(p: &Pod, include_terminating: bool) -> bool {
    !pod::is_terminal(p) && pod::pod_ip(p).is_some() && (include_terminating || !pod::is_terminating(p))
}

/// The port a service port reaches on `p`: a number as is, a name looked
/// up among the pod's container ports (same protocol). None: the pod has no
/// such port.
pub fn target_port(sp: &ServicePort, p: &Pod) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            p.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|cp| {
                (cp.name.as_deref() == Some(name.as_str()) && cp.protocol.as_deref().unwrap_or("TCP") == proto)
                    .then_some(cp.container_port)
            })
        }
    }
}

pub fn pod_reference(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: p.metadata.namespace.clone(),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's DNS hostname under this (headless) service, if it asked for one.
pub fn hostname(p: &Pod, svc: &Service) -> Option<String> {
    let spec = p.spec.as_ref()?;
    let h = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| h.clone())
}

/// Labels the endpoints objects carry: the service's, plus the headless marker.
pub fn endpoint_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.labels().clone();
    if is_headless(svc) {
        l.insert("service.kubernetes.io/headless".into(), String::new());
    } else {
        l.remove("service.kubernetes.io/headless");
    }
    l
}

/// (port name, port, protocol) for each service port a pod resolves.
type ResolvedPorts = Vec<(String, i32, String)>;
type Addresses = Vec<EndpointAddress>;

struct Ec {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
}

/// Enqueue every service in `p`'s namespace that selects it.
pub fn enqueue_services_for_pod(ctx: &Ctx, queue: &WorkQueue<Key>, c: &Change<Pod>) {
    let p = c.object();
    let old_labels = c.old().map(|o| o.labels().clone());
    for svc in ctx.informers.services.store().state() {
        if svc.metadata.namespace != p.metadata.namespace {
            continue;
        }
        let Some(sel) = selector(&svc) else { continue };
        if pod::map_selects(sel, p.labels()) || old_labels.as_ref().is_some_and(|l| pod::map_selects(sel, l)) {
            queue.add(Key::of(&*svc));
        }
    }
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let ec = Arc::new(Ec { queue: WorkQueue::new(), ctx: ctx.clone() });
    {
        let q = ec.queue.clone();
        ctx.informers.services.on_change(move |c| q.add(Key::of(&**c.object())));
    }
    {
        let q = ec.queue.clone();
        ctx.informers.endpoints.on_change(move |c| q.add(Key::of(&**c.object())));
    }
    {
        let this = ec.clone();
        ctx.informers.pods.on_change(move |c| {
            if pod_changed_for_endpoints(c) {
                enqueue_services_for_pod(&this.ctx, &this.queue, c)
            }
        });
    }
    async move {
        if !ec.ctx.wait_synced().await {
            return;
        }
        let this = ec.clone();
        run_workers("endpoints", ec.queue.clone(), 4, ec.ctx.stop.clone(), move |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await;
    }
}

/// Whether a pod change can change any endpoints (a status heartbeat that
/// changes nothing we read does not).
pub fn pod_changed_for_endpoints(c: &Change<Pod>) -> bool {
    let Change::Apply { old: Some(old), new } = c else { return true };
    old.labels() != new.labels()
        || pod::pod_ip(old) != pod::pod_ip(new)
        || pod::is_ready(old) != pod::is_ready(new)
        || old.metadata.deletion_timestamp.is_some() != new.metadata.deletion_timestamp.is_some()
        || pod::is_terminal(old) != pod::is_terminal(new)
        || pod::node_name(old) != pod::node_name(new)
        || old.spec.as_ref().map(|s| (&s.hostname, &s.subdomain))
            != new.spec.as_ref().map(|s| (&s.hostname, &s.subdomain))
}

impl Ec {
    async fn reconcile(&self, key: Key) -> Result<Action, kube::Error> {
        let api: Api<Endpoints> = Api::namespaced(self.ctx.client.clone(), key.ns());
        let existing = self.ctx.informers.endpoints.store().get(&key.store_ref());
        let Some(svc) = self.ctx.informers.services.store().get(&key.store_ref()) else {
            // the service is gone: so are its endpoints (unless a user made them for a selector-less service)
            if let Some(ep) = existing.filter(|e| !e.labels().contains_key("endpointslice.kubernetes.io/skip-mirror")) {
                match api.delete(&ep.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Action::await_change());
        };
        if selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let subsets = self.subsets(&svc);
        let labels = endpoint_labels(&svc);
        if let Some(ep) = &existing {
            let same_subsets = ep.subsets.clone().unwrap_or_default() == subsets;
            let ep_labels = ep.labels().clone();
            if same_subsets && ep_labels == labels {
                return Ok(Action::await_change());
            }
            let mut updated = (**ep).clone();
            updated.subsets = (!subsets.is_empty()).then_some(subsets);
            updated.metadata.labels = Some(labels);
            api.replace(&ep.name_any(), &PostParams::default(), &updated).await?;
        } else {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: svc.metadata.name.clone(),
                    namespace: svc.metadata.namespace.clone(),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets: (!subsets.is_empty()).then_some(subsets),
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => {}
                // made meanwhile: the informer will bring it and another sync
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Action::await_change())
    }

    fn subsets(&self, svc: &Service) -> Vec<EndpointSubset> {
        let publish = publish_not_ready(svc);
        let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
        // pods grouped by the ports they resolve to
        let mut groups: BTreeMap<ResolvedPorts, (Addresses, Addresses)> = BTreeMap::new();
        for p in selected_pods(&self.ctx, svc) {
            if !should_include(&p, publish) {
                continue;
            }
            let addr = EndpointAddress {
                ip: pod::pod_ip(&p).unwrap_or_default().to_string(),
                hostname: hostname(&p, svc),
                node_name: Some(pod::node_name(&p).to_string()).filter(|n| !n.is_empty()),
                target_ref: Some(pod_reference(&p)),
            };
            let ready = publish || pod::is_ready(&p);
            let mut resolved = Vec::new();
            for sp in &ports {
                if let Some(port) = target_port(sp, &p) {
                    resolved.push((
                        sp.name.clone().unwrap_or_default(),
                        port,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ));
                }
            }
            if resolved.is_empty() && !ports.is_empty() {
                continue;
            }
            let g = groups.entry(resolved).or_default();
            if ready {
                g.0.push(addr);
            } else {
                g.1.push(addr);
            }
        }
        let app_protocol: BTreeMap<String, String> =
            ports.iter().filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.app_protocol.clone()?))).collect();
        let sort = |v: &mut Vec<EndpointAddress>| {
            v.sort_by(|a, b| {
                a.ip.cmp(&b.ip).then_with(|| {
                    a.target_ref
                        .as_ref()
                        .and_then(|t| t.uid.clone())
                        .cmp(&b.target_ref.as_ref().and_then(|t| t.uid.clone()))
                })
            })
        };
        groups
            .into_iter()
            .map(|(ports, (mut ready, mut not_ready))| {
                sort(&mut ready);
                sort(&mut not_ready);
                EndpointSubset {
                    addresses: (!ready.is_empty()).then_some(ready),
                    not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                    ports: (!ports.is_empty()).then(|| {
                        ports
                            .into_iter()
                            .map(|(name, port, protocol)| EndpointPort {
                                app_protocol: app_protocol.get(&name).cloned(),
                                name: (!name.is_empty()).then_some(name),
                                port,
                                protocol: Some(protocol),
                            })
                            .collect()
                    }),
                }
            })
            .collect()
    }
}
