//! What the API server does for Services beyond storing them: defaults that
//! the proxy relies on, and ClusterIP / NodePort allocation.

use serde_json::{json, Value};

use skiff_api::families::{DualCidr, IpFamily};

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
        init_ip_families(&alloc.ranges.service_cidr, svc, old)?;
        allocate_cluster_ips(alloc, owner, svc, old, taken).await?;
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
    for ip in cluster_ips(svc) {
        if !ip.is_empty() && ip != "None" {
            out.push(Allocation::Ip(ip));
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

/// `spec.clusterIPs`, or a lone `spec.clusterIP` (an old client's).
fn cluster_ips(svc: &Value) -> Vec<String> {
    let ips: Vec<String> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        let ip = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("");
        if !ip.is_empty() {
            return vec![ip.to_string()];
        }
    }
    ips
}

fn ip_families(svc: &Value) -> Vec<String> {
    svc.pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

fn policy(svc: &Value) -> Option<&str> {
    svc.pointer("/spec/ipFamilyPolicy").and_then(Value::as_str)
}

fn go_strings(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", q.join(", "))
}

fn cause(field: &str, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

fn family_of(ip: &str) -> Option<IpFamily> {
    ip.parse().ok().map(IpFamily::of)
}

/// Kubernetes' initIPFamilyFields: default `spec.ipFamilyPolicy` and
/// `spec.ipFamilies` from the cluster's service CIDRs (the first one is the
/// default family), infer families from requested cluster IPs, and refuse
/// families or dual-stack the cluster is not configured for.
pub fn init_ip_families(cidrs: &DualCidr, svc: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    if svc_type(svc) == "ExternalName" {
        return Ok(());
    }
    // a PreferDualStack Service is not upgraded or downgraded by an update
    // that leaves its IPs and families alone (the cluster may have changed)
    if let Some(old) = old {
        if policy(svc) == Some("PreferDualStack")
            && policy(old) == Some("PreferDualStack")
            && cluster_ips(old) == cluster_ips(svc)
            && ip_families(old) == ip_families(svc)
        {
            return Ok(());
        }
    }
    let selectorless = svc.pointer("/spec/selector").and_then(Value::as_object).is_none_or(|m| m.is_empty());
    let mut ips = cluster_ips(svc);
    let headless = ips.first().is_some_and(|ip| ip == "None");
    let mut families = ip_families(svc);
    let policy = match (policy(svc), old.and_then(policy)) {
        (Some(p), _) => p.to_string(),
        (None, Some(p)) => p.to_string(),
        (None, None) if headless && selectorless => "RequireDualStack".to_string(),
        (None, None) => "SingleStack".to_string(),
    };
    let shown_policy = format!("{policy:?}");
    let mut errs = Vec::new();
    if let Some(old) = old {
        if policy == "SingleStack" {
            // with the IPs and families unchanged, SingleStack says: drop the secondary
            if cluster_ips(old) == ips && ips.len() > 1 {
                ips.truncate(1);
            }
            if ip_families(old) == families && families.len() > 1 {
                families.truncate(1);
            }
        } else {
            let old_ips = cluster_ips(old);
            if !ips.is_empty() && ips.len() < old_ips.len() {
                errs.push(cause(
                    "spec.ipFamilyPolicy",
                    &shown_policy,
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            let old_families = ip_families(old);
            if !families.is_empty() && families.len() < old_families.len() {
                errs.push(cause(
                    "spec.ipFamilyPolicy",
                    &shown_policy,
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }
    if policy == "SingleStack" {
        if ips.len() == 2 {
            errs.push(cause(
                "spec.ipFamilyPolicy",
                &shown_policy,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if families.len() == 2 {
            errs.push(cause(
                "spec.ipFamilyPolicy",
                &shown_policy,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            break;
        }
        let Some(fam) = family_of(ip) else { continue };
        if i >= families.len() {
            if cidrs.get(fam).is_some() {
                families.push(fam.as_str().to_string());
            } else {
                errs.push(cause(
                    &format!("spec.clusterIPs[{i}]"),
                    &go_strings(&ips),
                    &format!("{fam} is not configured on this cluster"),
                ));
            }
        }
    }
    let done = |svc: &mut Value, ips: Vec<String>, families: Vec<String>, errs: Vec<Cause>| {
        if !errs.is_empty() {
            return Err(ApiError::invalid("Service", "", crate::objects::name_of(svc), errs));
        }
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("ipFamilyPolicy".into(), json!(policy));
            spec.insert("ipFamilies".into(), json!(families));
            if !ips.is_empty() {
                spec.insert("clusterIP".into(), json!(ips[0]));
                spec.insert("clusterIPs".into(), json!(ips));
            }
        }
        Ok(())
    };
    if !errs.is_empty() {
        return done(svc, ips, families, errs);
    }
    let other = |f: &str| if f == "IPv4" { "IPv6" } else { "IPv4" };
    if headless && selectorless {
        // headless without a selector may name families the cluster lacks
        if families.is_empty() {
            families.push(cidrs.primary_family().as_str().to_string());
        }
        if families.len() < 2 && policy != "SingleStack" {
            families.push(other(&families[0]).to_string());
        }
        return done(svc, ips, families, errs);
    }
    if policy == "RequireDualStack" && !cidrs.is_dual() {
        errs.push(cause(
            "spec.ipFamilyPolicy",
            &shown_policy,
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in families.iter().enumerate() {
        if IpFamily::from_api(f).is_none_or(|fam| cidrs.get(fam).is_none()) {
            errs.push(cause(&format!("spec.ipFamilies[{i}]"), &format!("{f:?}"), "not configured on this cluster"));
        }
    }
    if !errs.is_empty() {
        return done(svc, ips, families, errs);
    }
    if families.is_empty() {
        families.push(cidrs.primary_family().as_str().to_string());
    }
    if policy != "SingleStack" && families.len() == 1 && cidrs.is_dual() {
        families.push(other(&families[0]).to_string());
    }
    done(svc, ips, families, errs)
}

/// One ClusterIP per family in `spec.ipFamilies` (headless Services get
/// none): kept from `old`, reserved when requested, allocated otherwise.
async fn allocate_cluster_ips(
    alloc: &Allocator,
    owner: &str,
    svc: &mut Value,
    old: Option<&Value>,
    taken: &mut Vec<Allocation>,
) -> Result<(), ApiError> {
    let mut ips = cluster_ips(svc);
    let old_ips = old.map(cluster_ips).unwrap_or_default();
    if ips.is_empty() && !old_ips.is_empty() {
        ips = old_ips.clone();
    }
    if ips.first().is_some_and(|ip| ip == "None") {
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("clusterIP".into(), json!("None"));
            spec.insert("clusterIPs".into(), json!(["None"]));
        }
        return Ok(());
    }
    let families: Vec<IpFamily> = ip_families(svc).iter().filter_map(|f| IpFamily::from_api(f)).collect();
    ips.resize(families.len().max(ips.len()), String::new());
    for (i, family) in families.iter().enumerate() {
        let requested = ips[i].clone();
        if requested.is_empty() {
            let ip = alloc
                .allocate_ip(*family, owner)
                .await
                .map_err(|e| ApiError::internal(format!("failed to allocate a serviceIP: {e}")))?;
            taken.push(Allocation::Ip(ip.clone()));
            ips[i] = ip;
        } else if !old_ips.contains(&requested) {
            alloc.reserve_ip(&requested, owner).await.map_err(|e| {
                let detail = match e {
                    AllocError::IpTaken | AllocError::IpOutOfRange { .. } | AllocError::FamilyNotConfigured(_) => {
                        format!("failed to allocate IP {requested}: {e}")
                    }
                    e => e.to_string(),
                };
                invalid(svc, "spec.clusterIPs".into(), go_strings(&ips), detail)
            })?;
            taken.push(Allocation::Ip(requested));
        }
    }
    if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(first) = ips.first() {
            spec.insert("clusterIP".into(), json!(first));
        }
        spec.insert("clusterIPs".into(), json!(ips));
    }
    Ok(())
}
