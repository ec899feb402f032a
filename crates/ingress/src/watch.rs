//! The control side: follow the API with reflectors, rebuild the routing
//! snapshot after each burst of changes, and report served Ingresses'
//! addresses in their status.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio_util::sync::CancellationToken;

use crate::model::{self, Objects};
use crate::{IngressConfig, IngressError, RoutesHandle};

/// Create IngressClass `name` (controller `skiff.io/ingress`, the default
/// class) unless it exists.
async fn ensure_class(client: &kube::Client, name: &str) -> Result<(), IngressError> {
    let api = Api::<IngressClass>::all(client.clone());
    match api.get_opt(name).await {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => {}
        Err(e) => return Err(IngressError::Class(name.to_string(), e)),
    }
    match api.create(&PostParams::default(), &model::default_ingress_class(name)).await {
        Ok(_) => {
            tracing::info!(class = name, "created IngressClass");
            Ok(())
        }
        // another node's proxy was first
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(IngressError::Class(name.to_string(), e)),
    }
}

fn reflect<K>(
    api: Api<K>,
    notify: tokio::sync::mpsc::Sender<()>,
) -> (Store<K>, impl std::future::Future<Output = ()> + Send)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let fut = reflector(writer, watcher(api, watcher::Config::default())).default_backoff().for_each(move |ev| {
        if let Err(e) = &ev {
            tracing::debug!(error = %e, kind = K::kind(&()).as_ref(), "watch error; retrying");
        }
        let _ = notify.try_send(());
        futures::future::ready(())
    });
    (store, fut)
}

/// Watch the API and serve until `shutdown`.
pub async fn run(client: kube::Client, config: IngressConfig, shutdown: CancellationToken) -> Result<(), IngressError> {
    // the class is created in the background: an API server that is not up
    // yet must not keep the proxy from serving
    let class_task = {
        let (client, name, stop) = (client.clone(), config.class.clone(), shutdown.clone());
        tokio::spawn(async move {
            while let Err(e) = ensure_class(&client, &name).await {
                tracing::warn!(error = %e, "retrying in 5 s");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        })
    };
    let routes = RoutesHandle::default();
    let serving = crate::serve(routes.clone(), &config, shutdown.clone()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let (ingresses, f1) = reflect(Api::<Ingress>::all(client.clone()), tx.clone());
    let (classes, f2) = reflect(Api::<IngressClass>::all(client.clone()), tx.clone());
    let (services, f3) = reflect(Api::<Service>::all(client.clone()), tx.clone());
    let (slices, f4) = reflect(Api::<EndpointSlice>::all(client.clone()), tx.clone());
    let (secrets, f5) = reflect(Api::<Secret>::all(client.clone()), tx);
    let watchers = tokio::spawn(async move {
        tokio::join!(f1, f2, f3, f4, f5);
    });
    // a failed status write is retried after a while even without changes
    let mut retry_status = false;
    loop {
        let retry = async {
            if retry_status {
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
            _ = retry => {}
        }
        tokio::time::sleep(config.debounce).await;
        while rx.try_recv().is_ok() {}
        let objects = Objects {
            ingresses: ingresses.state(),
            classes: classes.state(),
            services: services.state(),
            slices: slices.state(),
            secrets: secrets.state().into_iter().filter(|s| s.type_.as_deref() == Some("kubernetes.io/tls")).collect(),
        };
        let built = model::build(&objects, &config.class);
        for w in &built.warnings {
            tracing::warn!("{w}");
        }
        tracing::debug!(
            ingresses = built.served.len(),
            hosts = built.routes.host_count(),
            certificates = built.routes.certs.len(),
            "routing snapshot rebuilt"
        );
        routes.store(built.routes);
        if config.update_status {
            retry_status = !update_status(&client, &config, &objects, &built.served).await;
        }
    }
    watchers.abort();
    class_task.abort();
    serving.wait().await;
    Ok(())
}

/// Set `status.loadBalancer.ingress` of served Ingresses to the node
/// addresses where it differs; false if a write failed.
async fn update_status(
    client: &kube::Client,
    config: &IngressConfig,
    objects: &Objects,
    served: &[(String, String)],
) -> bool {
    let want: Vec<String> = config.node_addresses.iter().map(|a| a.to_string()).collect();
    if want.is_empty() {
        return true;
    }
    let mut ok = true;
    for (ns, name) in served {
        let Some(ing) = objects
            .ingresses
            .iter()
            .find(|i| i.metadata.namespace.as_deref() == Some(ns) && i.metadata.name.as_deref() == Some(name))
        else {
            continue;
        };
        let have: Vec<String> = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone())
            .collect();
        if have == want {
            continue;
        }
        let status = IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(
                    want.iter()
                        .map(|ip| IngressLoadBalancerIngress { ip: Some(ip.clone()), ..Default::default() })
                        .collect(),
                ),
            }),
        };
        let patch = serde_json::json!({ "status": status });
        let api = Api::<Ingress>::namespaced(client.clone(), ns);
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(ingress = %format!("{ns}/{name}"), addresses = ?want, "ingress status updated");
            }
            Err(e) => {
                ok = false;
                tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "updating ingress status; will retry");
            }
        }
    }
    ok
}
