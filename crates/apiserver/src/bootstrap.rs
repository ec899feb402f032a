//! Objects every cluster has from the start, created through the same write
//! path as clients' objects: the four system namespaces, each with its
//! `default` ServiceAccount and `kube-root-ca.crt` ConfigMap (so that pods
//! can start before the control loops, which keep both in every namespace,
//! first run), and the `kubernetes` Service with its Endpoints and EndpointSlice.

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::catalogue;

use crate::query::Query;
use crate::request::Target;
use crate::Api;

async fn ensure(api: &Api, group: &str, plural: &str, namespace: Option<&str>, obj: Value) -> Result<(), String> {
    let rt = catalogue::find(group, "v1", plural).ok_or_else(|| format!("{plural} not served"))?;
    let target = Target { rt, namespace: namespace.map(str::to_string), name: None, subresource: None };
    let body = Bytes::from(serde_json::to_vec(&obj).map_err(|e| e.to_string())?);
    let query = Query::parse(Some("fieldManager=skiff-bootstrap&fieldValidation=Strict"));
    let resp = crate::handlers::handle(api, &Method::POST, &target, &query, &HeaderMap::new(), body).await;
    let code = resp.status().as_u16();
    if code == 201 || code == 409 {
        Ok(())
    } else {
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024).await.unwrap_or_default();
        Err(format!("creating {plural} {}: HTTP {code}: {}", obj["metadata"]["name"], String::from_utf8_lossy(&body)))
    }
}

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using \
     internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed \
     across distributions of Kubernetes clusters.";

pub async fn run(api: &Api) -> Result<(), String> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(api, "", "namespaces", None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await?;
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
        ensure(api, "", "serviceaccounts", Some(ns), sa).await?;
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
            "data": {"ca.crt": api.tls.ca_cert_pem},
        });
        ensure(api, "", "configmaps", Some(ns), cm).await?;
    }
    let ip = api.alloc.ranges.kubernetes_ip().to_string();
    let port = api.config.bind.port();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    ensure(
        api,
        "",
        "services",
        Some("default"),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        }),
    )
    .await?;
    if api.config.advertise.is_loopback() || api.config.advertise.is_unspecified() {
        // Kubernetes refuses loopback endpoint addresses (pods could never reach them)
        tracing::warn!(
            advertise = %api.config.advertise,
            "the `kubernetes` Service gets no endpoints: the advertised address is loopback; pass --node-ip"
        );
        return Ok(());
    }
    let addr = api.config.advertise.to_string();
    ensure(
        api,
        "",
        "endpoints",
        Some("default"),
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": addr}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }),
    )
    .await?;
    ensure(
        api,
        "discovery.k8s.io",
        "endpointslices",
        Some("default"),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [addr], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
    )
    .await?;
    Ok(())
}
