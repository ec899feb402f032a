//! What the API server does for Services beyond storing them: defaults that
//! the proxy relies on, and ClusterIP / NodePort allocation.

use serde_json::{json, Value};

use crate::alloc::{AllocError, Allocator};
use crate::error::{ApiError, Cause};

fn svc_type(svc: &Value) -> &str {
    svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn needs_node_ports(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
}

/// A LoadBalancer Service with externalTrafficPolicy Local gets a
/// healthCheckNodePort (from the NodePort range), which every node's proxy
/// answers with its count of local endpoints.
fn needs_health_check_port(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer"
        && svc.pointer("/spec/externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

/// Who holds an allocation: the Service's key and uid, so that a failed
/// create of a second object under the same name can never claim (or
/// release) what the existing Service holds.
pub fn owner(key: &str, svc: &Value) -> String {
    format!("{key}#{}", crate::objects::meta_str(svc, "uid").unwrap_or(""))
}

fn invalid(svc: &Value, field: String, value: String, detail: String) -> ApiError {
    let name = crate::objects::name_of(svc);
    let message = format!("Invalid value: {value}: {detail}");
    ApiError::invalid("Service", "", name, vec![Cause { reason: "FieldValueInvalid".into(), message, field }])
}

/// Allocate what a new (or changed) Service needs. `old` is the stored
/// Service on update: its allocations are kept when the new object leaves
/// them empty, as Kubernetes' PatchAllocatedValues does. Returns the values
/// to release if the write fails (`undo`).
pub async fn allocate(
    alloc: &Allocator,
    owner: &str,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<Allocation>, ApiError> {
    let mut taken = Vec::new();
    let result = allocate_inner(alloc, owner, svc, old, &mut taken).await;
    if result.is_err() {
        release_all(alloc, owner, &taken).await;
    }
    result.map(|_| taken)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    Ip(String),
    Port(i64),
}

async fn allocate_inner(
    alloc: &Allocator,
    owner: &str,
    svc: &mut Value,
    old: Option<&Value>,
    taken: &mut Vec<Allocation>,
) -> Result<(), ApiError> {
    if needs_cluster_ip(svc) {
        let requested = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).unwrap_or("");
        let ip = if requested == "None" {
            requested
        } else if requested.is_empty() && !old_ip.is_empty() {
            old_ip.to_string()
        } else if requested.is_empty() {
            let ip = alloc
                .allocate_ip(owner)
                .await
                .map_err(|e| invalid(svc, "spec.clusterIPs".into(), "[]string{}".into(), e.to_string()))?;
            taken.push(Allocation::Ip(ip.clone()));
            ip
        } else if requested == old_ip {
            requested
        } else {
            alloc.reserve_ip(&requested, owner).await.map_err(|e| {
                let v = format!("[]string{{\"{requested}\"}}");
                let detail = match e {
                    AllocError::IpTaken | AllocError::IpOutOfRange { .. } => {
                        format!("failed to allocate IP {requested}: {e}")
                    }
                    e => e.to_string(),
                };
                invalid(svc, "spec.clusterIPs".into(), v, detail)
            })?;
            taken.push(Allocation::Ip(requested.clone()));
            requested
        };
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if needs_node_ports(svc) {
        let old_ports: Vec<Value> =
            old.and_then(|o| o.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
        let count = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
        for i in 0..count {
            let port = svc.pointer(&format!("/spec/ports/{i}")).cloned().unwrap_or(Value::Null);
            let requested = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            let kept = old_ports
                .iter()
                .find(|o| o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol"))
                .and_then(|o| o.get("nodePort"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let chosen = if requested == 0 && kept != 0 {
                kept
            } else if requested == 0 {
                let p = alloc
                    .allocate_port(owner)
                    .await
                    .map_err(|e| invalid(svc, format!("spec.ports[{i}].nodePort"), "0".into(), e.to_string()))?;
                taken.push(Allocation::Port(p));
                p
            } else if requested == kept {
                requested
            } else {
                alloc.reserve_port(requested, owner).await.map_err(|e| {
                    invalid(svc, format!("spec.ports[{i}].nodePort"), requested.to_string(), e.to_string())
                })?;
                taken.push(Allocation::Port(requested));
                requested
            };
            if let Some(p) = svc.pointer_mut(&format!("/spec/ports/{i}")).and_then(Value::as_object_mut) {
                p.insert("nodePort".into(), json!(chosen));
            }
        }
    } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
    }
    if needs_health_check_port(svc) {
        let requested = svc.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).unwrap_or(0);
        let kept = old
            .filter(|o| needs_health_check_port(o))
            .and_then(|o| o.pointer("/spec/healthCheckNodePort"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let field = "spec.healthCheckNodePort".to_string();
        let chosen = if requested == 0 && kept != 0 {
            kept
        } else if requested == 0 {
            let p = alloc.allocate_port(owner).await.map_err(|e| invalid(svc, field, "0".into(), e.to_string()))?;
            taken.push(Allocation::Port(p));
            p
        } else if requested == kept {
            requested
        } else {
            alloc
                .reserve_port(requested, owner)
                .await
                .map_err(|e| invalid(svc, field, requested.to_string(), e.to_string()))?;
            taken.push(Allocation::Port(requested));
            requested
        };
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("healthCheckNodePort".into(), json!(chosen));
        }
    } else if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("healthCheckNodePort");
    }
    Ok(())
}

/// Everything a Service holds.
pub fn held(svc: &Value) -> Vec<Allocation> {
    let mut out = Vec::new();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if !ip.is_empty() && ip != "None" {
            out.push(Allocation::Ip(ip.to_string()));
        }
    }
    if let Some(ports) = svc.pointer("/spec/ports").and_then(Value::as_array) {
        out.extend(ports.iter().filter_map(|p| p.get("nodePort").and_then(Value::as_i64)).map(Allocation::Port));
    }
    if let Some(p) = svc.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64) {
        out.push(Allocation::Port(p));
    }
    out
}

pub async fn release_all(alloc: &Allocator, owner: &str, what: &[Allocation]) {
    for a in what {
        let r = match a {
            Allocation::Ip(ip) => alloc.release_ip(ip, owner).await,
            Allocation::Port(p) => alloc.release_port(*p, owner).await,
        };
        if let Err(e) = r {
            tracing::warn!(owner, ?a, error = %e, "releasing a service allocation failed");
        }
    }
}

/// After an update, release what the old object held and the new one doesn't.
pub async fn release_dropped(alloc: &Allocator, owner: &str, old: &Value, new: &Value) {
    let keep = held(new);
    let dropped: Vec<Allocation> = held(old).into_iter().filter(|a| !keep.contains(a)).collect();
    release_all(alloc, owner, &dropped).await;
}
