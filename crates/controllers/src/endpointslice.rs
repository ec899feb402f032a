//! The EndpointSlice controller: for each Service with a selector, slices of
//! at most 100 endpoints per set of resolved ports, labelled
//! `kubernetes.io/service-name` and managed-by this controller, owned by the
//! Service, with ready/serving/terminating conditions as Kubernetes sets them.
//!
//! One set of slices per address type the Service serves (its ipFamilies:
//! a dual-stack Service gets IPv4 and IPv6 slices), each listing the pods'
//! addresses of that family from status.podIPs; a slice's address type never
//! changes, so slices of a family the Service dropped are deleted.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::ResourceExt;

use crate::context::{Ctx, Key};
use crate::endpoints::{
    endpoint_labels, enqueue_services_for_pod, hostname, pod_changed_for_endpoints, pod_reference, publish_not_ready,
    selected_pods, selector, should_include, target_port,
};
use crate::pod;
use crate::replicaset::controller_reference;
use crate::runtime::{run_workers, Action, WorkQueue};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MAX_ENDPOINTS: usize = 100;
const TRACKER_TTL: Duration = Duration::from_secs(5);

/// (name, port, protocol, appProtocol) for each service port a pod resolves.
type ResolvedPorts = Vec<(String, i32, String, Option<String>)>;
/// Each wanted slice: the existing one to reuse (if any), its address type, ports and endpoints.
type Plan = Vec<(Option<Arc<EndpointSlice>>, &'static str, Vec<EndpointPort>, Vec<Endpoint>)>;

struct Sc {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
    tracker: Tracker,
}

/// Writes not yet seen in the informer cache, per service: a reconcile on
/// a stale cache would create duplicate slices.
#[derive(Default)]
struct Tracker {
    inflight: Mutex<HashMap<Key, (Instant, Vec<Expect>)>>,
}

enum Expect {
    Created(String),
    Updated(String, Option<String>),
    Deleted(String),
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Vec<Expect>)>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, key: &Key, expects: Vec<Expect>) {
        if expects.is_empty() {
            self.lock().remove(key);
        } else {
            self.lock().insert(key.clone(), (Instant::now(), expects));
        }
    }

    /// Whether the cache has caught up with our writes for `key`.
    fn caught_up(&self, key: &Key, store: &kube::runtime::reflector::Store<EndpointSlice>) -> bool {
        let mut map = self.lock();
        let Some((since, expects)) = map.get(key) else { return true };
        let ns = key.ns.as_deref();
        let seen = |name: &str| store.get(&Key::new(ns, name).store_ref());
        let done = since.elapsed() > TRACKER_TTL
            || expects.iter().all(|e| match e {
                Expect::Created(n) => seen(n).is_some(),
                Expect::Updated(n, rv) => seen(n).is_none_or(|s| &s.metadata.resource_version != rv),
                Expect::Deleted(n) => seen(n).is_none(),
            });
        if done {
            map.remove(key);
        }
        done
    }
}

fn service_of_slice(s: &EndpointSlice) -> Option<Key> {
    let l = s.labels();
    if l.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    Some(Key::new(s.metadata.namespace.as_deref(), l.get(SERVICE_NAME_LABEL)?))
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let sc = Arc::new(Sc { queue: WorkQueue::new(), ctx: ctx.clone(), tracker: Tracker::default() });
    {
        let q = sc.queue.clone();
        ctx.informers.services.on_change(move |c| q.add(Key::of(&**c.object())));
    }
    {
        let q = sc.queue.clone();
        ctx.informers.slices.on_change(move |c| {
            if let Some(k) = service_of_slice(c.object()) {
                q.add(k);
            }
        });
    }
    {
        let this = sc.clone();
        ctx.informers.pods.on_change(move |c| {
            if pod_changed_for_endpoints(c) {
                enqueue_services_for_pod(&this.ctx, &this.queue, c)
            }
        });
    }
    async move {
        if !sc.ctx.wait_synced().await {
            return;
        }
        let this = sc.clone();
        run_workers("endpointslice", sc.queue.clone(), 4, sc.ctx.stop.clone(), move |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await;
    }
}

/// The address types `svc` gets slices for, as Kubernetes decides them: its
/// ipFamilies; for a Service written before ipFamilies existed, its
/// ClusterIP's family; for such a headless Service, both.
pub fn address_types(svc: &Service) -> Vec<&'static str> {
    let spec = svc.spec.as_ref();
    let mut out: Vec<&'static str> = Vec::new();
    for f in spec.and_then(|s| s.ip_families.as_ref()).into_iter().flatten() {
        let t = match f.as_str() {
            "IPv4" => "IPv4",
            "IPv6" => "IPv6",
            _ => continue,
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if !out.is_empty() {
        return out;
    }
    match spec.and_then(|s| s.cluster_ip.as_deref()).filter(|ip| !ip.is_empty() && *ip != "None") {
        Some(ip) if ip.parse::<std::net::Ipv6Addr>().is_ok() => vec!["IPv6"],
        Some(_) => vec!["IPv4"],
        None => vec!["IPv4", "IPv6"],
    }
}

/// The pod's addresses of `address_type` (status.podIPs, or podIP when
/// podIPs is missing).
pub fn pod_addresses(p: &Pod, address_type: &str) -> Vec<String> {
    let status = p.status.as_ref();
    let mut ips: Vec<&str> =
        status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|i| i.ip.as_str()).collect();
    if ips.is_empty() {
        ips.extend(pod::pod_ip(p));
    }
    let want_v6 = address_type == "IPv6";
    ips.into_iter()
        .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .filter(|ip| ip.is_ipv6() == want_v6)
        .map(|ip| ip.to_string())
        .collect()
}

/// The desired endpoints of `svc` of one address type, grouped by their
/// resolved ports. Pods without an address of that type are left out.
fn desired(ctx: &Ctx, svc: &Service, address_type: &str) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let publish = publish_not_ready(svc);
    let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    let mut groups: BTreeMap<ResolvedPorts, Vec<Endpoint>> = BTreeMap::new();
    for p in selected_pods(ctx, svc) {
        if !should_include(&p, true) {
            continue;
        }
        let addresses = pod_addresses(&p, address_type);
        if addresses.is_empty() {
            continue;
        }
        let serving = pod::is_ready(&p);
        let terminating = pod::is_terminating(&p);
        let ready = publish || (serving && !terminating);
        let mut resolved = Vec::new();
        for sp in &ports {
            if let Some(port) = target_port(sp, &p) {
                resolved.push((
                    sp.name.clone().unwrap_or_default(),
                    port,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    sp.app_protocol.clone(),
                ));
            }
        }
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let node = pod::node_name(&p).to_string();
        let zone = (!node.is_empty())
            .then(|| ctx.informers.nodes.store().get(&Key::new(None, &node).store_ref()))
            .flatten()
            .and_then(|n| n.labels().get("topology.kubernetes.io/zone").cloned());
        groups.entry(resolved).or_default().push(Endpoint {
            addresses,
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname(&p, svc),
            node_name: (!node.is_empty()).then_some(node),
            target_ref: Some(pod_reference(&p)),
            zone,
            ..Default::default()
        });
    }
    groups
        .into_iter()
        .map(|(ports, mut eps)| {
            eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            let ports = ports
                .into_iter()
                .map(|(name, port, protocol, app_protocol)| EndpointPort {
                    name: Some(name),
                    port: Some(port),
                    protocol: Some(protocol),
                    app_protocol,
                })
                .collect();
            (ports, eps)
        })
        .collect()
}

impl Sc {
    async fn reconcile(&self, key: Key) -> Result<Action, kube::Error> {
        let Some(svc) = self.ctx.informers.services.store().get(&key.store_ref()) else {
            // owned slices go with the service (garbage collector)
            return Ok(Action::await_change());
        };
        if selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        if !self.tracker.caught_up(&key, &self.ctx.informers.slices.store()) {
            // our own writes are on their way; their events bring us back
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.ctx.client.clone(), key.ns());
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .ctx
            .informers
            .slices
            .store()
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace == svc.metadata.namespace && service_of_slice(s).as_ref() == Some(&key))
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .collect();
        existing.sort_by_key(|s| s.name_any());
        let labels = {
            let mut l = endpoint_labels(&svc);
            l.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
            l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
            l
        };
        let owner = controller_reference(&*svc);
        let types = address_types(&svc);
        // slices of an address type the service no longer has go
        let (mut keep, mut unused): (Vec<Arc<EndpointSlice>>, Vec<Arc<EndpointSlice>>) =
            existing.into_iter().partition(|s| types.contains(&s.address_type.as_str()));
        let mut plan: Plan = Vec::new();
        for ty in types {
            let mut wanted: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
            for (ports, eps) in desired(&self.ctx, &svc, ty) {
                for chunk in eps.chunks(MAX_ENDPOINTS) {
                    wanted.push((ports.clone(), chunk.to_vec()));
                }
            }
            if wanted.is_empty() {
                // no endpoints of this type: still one (empty) slice
                wanted.push((Vec::new(), Vec::new()));
            }
            // reuse slices of this type that already carry the same ports, then any others of this type
            let (mut mine, rest): (Vec<_>, Vec<_>) = keep.into_iter().partition(|s| s.address_type == ty);
            keep = rest;
            for (ports, eps) in wanted {
                let pick = mine
                    .iter()
                    .position(|s| s.ports.clone().unwrap_or_default() == ports)
                    .or_else(|| (!mine.is_empty()).then_some(0));
                let slot = pick.map(|i| mine.remove(i));
                plan.push((slot, ty, ports, eps));
            }
            unused.extend(mine);
        }
        let mut expects = Vec::new();
        let result = self.apply(&api, &svc, plan, unused, &labels, &owner, &mut expects).await;
        self.tracker.record(&key, expects);
        result?;
        Ok(Action::await_change())
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        api: &Api<EndpointSlice>,
        svc: &Service,
        plan: Plan,
        unused: Vec<Arc<EndpointSlice>>,
        labels: &BTreeMap<String, String>,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
        expects: &mut Vec<Expect>,
    ) -> Result<(), kube::Error> {
        for (slot, address_type, ports, eps) in plan {
            let ports = (!ports.is_empty()).then_some(ports);
            match slot {
                Some(s) => {
                    let same = s.endpoints == eps
                        && s.ports == ports
                        && s.labels() == labels
                        && s.owner_references().iter().any(|o| o.uid == owner.uid);
                    if same {
                        continue;
                    }
                    let mut updated = (*s).clone();
                    updated.endpoints = eps;
                    updated.ports = ports;
                    updated.metadata.labels = Some(labels.clone());
                    updated.metadata.owner_references = Some(vec![owner.clone()]);
                    match api.replace(&s.name_any(), &PostParams::default(), &updated).await {
                        Ok(_) => expects.push(Expect::Updated(s.name_any(), s.metadata.resource_version.clone())),
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    let mut prefix = format!("{}-", svc.name_any());
                    if prefix.len() > 58 {
                        prefix.truncate(58);
                    }
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(prefix),
                            namespace: svc.metadata.namespace.clone(),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        address_type: address_type.into(),
                        endpoints: eps,
                        ports,
                    };
                    let created = api.create(&PostParams::default(), &slice).await?;
                    expects.push(Expect::Created(created.name_any()));
                }
            }
        }
        for s in unused {
            match api.delete(&s.name_any(), &DeleteParams::default()).await {
                Ok(_) => expects.push(Expect::Deleted(s.name_any())),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).unwrap()
    }

    #[test]
    fn address_types_follow_the_services_families() {
        assert_eq!(address_types(&svc(json!({"ipFamilies": ["IPv4", "IPv6"]}))), vec!["IPv4", "IPv6"]);
        assert_eq!(address_types(&svc(json!({"ipFamilies": ["IPv6", "IPv4"]}))), vec!["IPv6", "IPv4"]);
        assert_eq!(address_types(&svc(json!({"ipFamilies": ["IPv4"]}))), vec!["IPv4"]);
        // written before ipFamilies: the ClusterIP's family; headless: both
        assert_eq!(address_types(&svc(json!({"clusterIP": "fd00::10"}))), vec!["IPv6"]);
        assert_eq!(address_types(&svc(json!({"clusterIP": "10.96.0.10"}))), vec!["IPv4"]);
        assert_eq!(address_types(&svc(json!({"clusterIP": "None"}))), vec!["IPv4", "IPv6"]);
    }

    #[test]
    fn pod_addresses_are_picked_by_family() {
        let dual: Pod = serde_json::from_value(json!({"status": {
            "podIP": "10.244.1.5",
            "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}],
        }}))
        .unwrap();
        assert_eq!(pod_addresses(&dual, "IPv4"), vec!["10.244.1.5"]);
        assert_eq!(pod_addresses(&dual, "IPv6"), vec!["fd00:10:244:1::5"]);
        let v4_only: Pod = serde_json::from_value(json!({"status": {"podIP": "10.244.1.6"}})).unwrap();
        assert_eq!(pod_addresses(&v4_only, "IPv4"), vec!["10.244.1.6"]);
        assert!(pod_addresses(&v4_only, "IPv6").is_empty());
    }
}
