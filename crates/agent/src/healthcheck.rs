//! Service health checks, as kube-proxy answers them: for every
//! LoadBalancer Service with externalTrafficPolicy Local, an HTTP server on
//! its `spec.healthCheckNodePort` (all of the node's addresses) that tells an
//! external load balancer whether this node has a ready local endpoint.
//! 200 when it has, 503 when not; the body names the Service and the count.
//!
//! The servers follow the proxy loop's state: `HealthChecks::sync` opens
//! servers for new ports, updates counts and closes the ports no Service
//! asks for any more.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use skiff_net::proxy::ProxyState;
use tokio_util::sync::CancellationToken;

/// What one health check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

/// The body and status kube-proxy's service health server sends.
pub fn response(h: &Health) -> (StatusCode, String) {
    let status = if h.local_endpoints > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "service": {"namespace": h.namespace, "name": h.name},
        "localEndpoints": h.local_endpoints,
        "serviceProxyHealthy": true,
    });
    (status, body.to_string())
}

/// The health check ports this node should answer, from the Services and the
/// proxy states built from them, one per family (local endpoints counted over
/// the Service's ports, each endpoint once, as kube-proxy does; from the first
/// family in which the Service has endpoints, so that a dual-stack pod counts once).
pub fn wanted<S: std::borrow::Borrow<Service>>(services: &[S], states: &[ProxyState]) -> BTreeMap<u16, Health> {
    let mut out = BTreeMap::new();
    for svc in services.iter().map(std::borrow::Borrow::borrow) {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() != Some("LoadBalancer") || spec.external_traffic_policy.as_deref() != Some("Local") {
            continue;
        }
        let Some(port) = spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) else {
            continue;
        };
        let (namespace, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        let endpoints = |state: &ProxyState| -> Vec<skiff_net::proxy::Endpoint> {
            state
                .services
                .iter()
                .filter(|s| s.namespace == namespace && s.name == name)
                .flat_map(|s| s.ports.iter())
                .flat_map(|p| p.endpoints.iter().copied())
                .collect()
        };
        let all = states.iter().map(endpoints).find(|e| !e.is_empty()).unwrap_or_default();
        let mut local: Vec<std::net::IpAddr> = all.iter().filter(|e| e.local).map(|e| e.ip).collect();
        local.sort();
        local.dedup();
        out.insert(port, Health { namespace, name, local_endpoints: local.len() });
    }
    out
}

struct Server {
    health: Arc<Mutex<Health>>,
    stop: CancellationToken,
}

/// The running health check servers of this node.
#[derive(Default)]
pub struct HealthChecks {
    servers: BTreeMap<u16, Server>,
}

impl HealthChecks {
    /// Make the running servers match `wanted`. A port that cannot be bound
    /// is logged and tried again on the next sync.
    pub async fn sync(&mut self, wanted: BTreeMap<u16, Health>) {
        self.servers.retain(|port, server| {
            let keep = wanted.contains_key(port);
            if !keep {
                server.stop.cancel();
                tracing::info!(port, "health check port closed");
            }
            keep
        });
        for (port, health) in wanted {
            if let Some(server) = self.servers.get(&port) {
                if let Ok(mut h) = server.health.lock() {
                    *h = health;
                }
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port, error = %e, service = %format!("{}/{}", health.namespace, health.name),
                        "cannot open the healthCheckNodePort; retrying on the next sync");
                    continue;
                }
            };
            tracing::info!(port, service = %format!("{}/{}", health.namespace, health.name), "health check port open");
            let shared = Arc::new(Mutex::new(health));
            let stop = CancellationToken::new();
            let state = shared.clone();
            let app = axum::Router::new().fallback(move || {
                let state = state.clone();
                async move { answer(&state) }
            });
            let token = stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
                if let Err(e) = served {
                    tracing::warn!(port, error = %e, "health check server stopped");
                }
            });
            self.servers.insert(port, Server { health: shared, stop });
        }
    }

    /// Close every server.
    pub fn stop(&mut self) {
        for server in self.servers.values() {
            server.stop.cancel();
        }
        self.servers.clear();
    }
}

fn answer(state: &Mutex<Health>) -> Response {
    let health = match state.lock() {
        Ok(h) => h.clone(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let (status, body) = response(&health);
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&health.local_endpoints.to_string()) {
        headers.insert("x-load-balancing-endpoint-weight", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_net::proxy::{self, Endpoint, Protocol, ServicePort};

    fn svc(policy: &str, hc: Option<i32>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "healthCheckNodePort": hc,
                     "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    fn state(local: &[bool]) -> ProxyState {
        let endpoints = local
            .iter()
            .enumerate()
            .map(|(i, l)| Endpoint { ip: Ipv4Addr::new(10, 244, 0, 2 + i as u8).into(), port: 80, local: *l })
            .collect();
        ProxyState {
            family: proxy::Family::V4,
            cluster_cidr: None,
            pod_cidr: None,
            host_ports: vec![],
            services: vec![proxy::Service {
                namespace: "default".into(),
                name: "lb".into(),
                cluster_ip: None,
                external_ips: vec![],
                load_balancer_ips: vec![],
                session_affinity_timeout: None,
                internal_traffic_local: false,
                external_traffic_local: true,
                ports: vec![ServicePort {
                    name: String::new(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: Some(30080),
                    endpoints,
                }],
            }],
        }
    }

    #[test]
    fn counts_local_endpoints_of_local_load_balancers_only() {
        let w = wanted(&[svc("Local", Some(31000))], &[state(&[true, false, true])]);
        assert_eq!(w.get(&31000).map(|h| h.local_endpoints), Some(2));
        assert!(wanted(&[svc("Cluster", Some(31000))], &[state(&[true])]).is_empty());
        assert!(wanted(&[svc("Local", None)], &[state(&[true])]).is_empty());
    }

    #[test]
    fn body_and_status_as_kube_proxy_sends_them() {
        let h = Health { namespace: "default".into(), name: "lb".into(), local_endpoints: 1 };
        let (status, body) = response(&h);
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"service": {"namespace": "default", "name": "lb"}, "localEndpoints": 1, "serviceProxyHealthy": true})
        );
        let (status, _) = response(&Health { local_endpoints: 0, ..h });
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
