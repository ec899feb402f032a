//! Two per-namespace loops that pods' service account tokens rely on, as
//! Kubernetes' `serviceaccount` and `root-ca-cert-publisher` controllers:
//!
//! - every active namespace has the ServiceAccount `default` (recreated
//!   when deleted);
//! - every active namespace has the ConfigMap `kube-root-ca.crt` whose
//!   `ca.crt` is the cluster CA, put back when it is changed or deleted.
//!
//! Both loops are keyed on the namespace's name, and read only their
//! informer caches before they write.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::ResourceExt;

use crate::context::{Ctx, Key};
use crate::runtime::{run_workers, Action, Informer, WorkQueue};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal \
                           endpoints such as the internal service IP or kubernetes.default.svc. No other usage is \
                           guaranteed across distributions of Kubernetes clusters.";

/// Whether objects may be created in the namespace (it exists and is not terminating).
fn active(ctx: &Ctx, ns: &str) -> bool {
    let Some(namespace) = ctx.informers.namespaces.store().get(&Key::new(None, ns).store_ref::<Namespace>()) else {
        return false;
    };
    let phase = namespace.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Active");
    namespace.metadata.deletion_timestamp.is_none() && phase == "Active"
}

/// A create that found the namespace gone or terminating: nothing to retry.
fn namespace_gone(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 404 || (s.code == 403 && s.message.contains("terminat")),
        _ => false,
    }
}

fn namespace_key(ns: Option<String>) -> Option<Key> {
    ns.map(|ns| Key::new(None, &ns))
}

/// Start a loop keyed on namespaces that watches objects of type `K` named
/// `name`, calling `reconcile` for a namespace when it appears or changes,
/// or when its object named `name` changes or goes away.
fn start_loop<K, F, Fut>(
    ctx: Arc<Ctx>,
    controller: &'static str,
    name: &'static str,
    informer: Arc<Informer<K>>,
    reconcile: F,
) -> impl Future<Output = ()> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    F: Fn(Arc<Ctx>, Arc<Informer<K>>, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, kube::Error>> + Send,
{
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();
    {
        let q = queue.clone();
        ctx.informers.namespaces.on_change(move |c| q.add(Key::new(None, &c.object().name_any())));
    }
    {
        let q = queue.clone();
        informer.on_change(move |c| {
            if c.object().meta().name.as_deref() == Some(name) {
                if let Some(key) = namespace_key(c.object().meta().namespace.clone()) {
                    q.add(key);
                }
            }
        });
    }
    async move {
        let watch = tokio::spawn(informer.clone().run(ctx.stop.clone()));
        let synced = tokio::select! {
            _ = ctx.stop.cancelled() => false,
            _ = async { ctx.informers.synced().await; informer.synced().await } => true,
        };
        if synced {
            let reconcile = Arc::new(reconcile);
            let (c, i) = (ctx.clone(), informer.clone());
            run_workers(controller, queue, 1, ctx.stop.clone(), move |key: Key| {
                let (c, i, r) = (c.clone(), i.clone(), reconcile.clone());
                async move { r(c, i, key.name).await }
            })
            .await;
        }
        let _ = watch.await;
    }
}

/// The `serviceaccount` loop: a `default` ServiceAccount in every active namespace.
pub fn start_service_accounts(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let informer = Informer::new(Api::<ServiceAccount>::all(ctx.client.clone()));
    start_loop(ctx, "serviceaccount", DEFAULT_SERVICE_ACCOUNT, informer, |ctx, informer, ns| async move {
        ensure_default_service_account(&ctx, &informer, &ns).await
    })
}

async fn ensure_default_service_account(
    ctx: &Ctx,
    informer: &Informer<ServiceAccount>,
    ns: &str,
) -> Result<Action, kube::Error> {
    if !active(ctx, ns) {
        return Ok(Action::await_change());
    }
    let key = Key::new(Some(ns), DEFAULT_SERVICE_ACCOUNT);
    if informer.store().get(&key.store_ref()).is_some() {
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(DEFAULT_SERVICE_ACCOUNT.into()), ..Default::default() },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {
            tracing::debug!(namespace = ns, "created the default ServiceAccount");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::await_change()),
        Err(e) if namespace_gone(&e) => Ok(Action::await_change()),
        Err(e) => Err(e),
    }
}

/// The `root-ca-cert-publisher` loop: `kube-root-ca.crt` in every active
/// namespace holds `ca_pem`.
pub fn start_root_ca_publisher(ctx: Arc<Ctx>, ca_pem: String) -> impl Future<Output = ()> + Send + 'static {
    let informer = Informer::new(Api::<ConfigMap>::all(ctx.client.clone()));
    let ca = Arc::new(ca_pem);
    start_loop(ctx, "root-ca-cert-publisher", ROOT_CA_CONFIG_MAP, informer, move |ctx, informer, ns| {
        let ca = ca.clone();
        async move { publish_root_ca(&ctx, &informer, &ns, &ca).await }
    })
}

async fn publish_root_ca(ctx: &Ctx, informer: &Informer<ConfigMap>, ns: &str, ca: &str) -> Result<Action, kube::Error> {
    if !active(ctx, ns) {
        return Ok(Action::await_change());
    }
    let data = BTreeMap::from([("ca.crt".to_string(), ca.to_string())]);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let key = Key::new(Some(ns), ROOT_CA_CONFIG_MAP);
    let Some(cm) = informer.store().get(&key.store_ref()) else {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CA_CONFIG_MAP.into()),
                annotations: Some(BTreeMap::from([(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into())])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        return match api.create(&PostParams::default(), &cm).await {
            Ok(_) => {
                tracing::debug!(namespace = ns, "published kube-root-ca.crt");
                Ok(Action::await_change())
            }
            // the cache is behind: the watch event will bring it back here
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::await_change()),
            Err(e) if namespace_gone(&e) => Ok(Action::await_change()),
            Err(e) => Err(e),
        };
    };
    let described =
        cm.metadata.annotations.as_ref().and_then(|a| a.get(DESCRIPTION_ANNOTATION)).is_some_and(|d| !d.is_empty());
    if cm.data.as_ref() == Some(&data) && described {
        return Ok(Action::await_change());
    }
    // replace with the cached resourceVersion: a conflict retries from a fresher cache
    let mut fixed = (*cm).clone();
    fixed.data = Some(data);
    fixed
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    api.replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &fixed).await?;
    tracing::debug!(namespace = ns, "restored kube-root-ca.crt");
    Ok(Action::await_change())
}
