//! Services, Endpoints and EndpointSlices, and the service registry's
//! normalization of cluster IPs and type-dependent fields on update.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::field::{self, Path};
use super::meta::{self, NameRule};
use super::names::{self, PORT_RANGE_MSG};
use super::{arr, govalue, int_of, net, pod, semantic_eq, str_of, FieldError, NULL};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn spec_str<'a>(svc: &'a Value, k: &str) -> &'a str {
    svc.get("spec").map_or("", |s| str_of(s, k))
}

fn svc_type(svc: &Value) -> &str {
    spec_str(svc, "type")
}

/// The cluster IPs as the registry sees them: a lone `clusterIP` (an old
/// client's) stands for `clusterIPs: [clusterIP]`.
fn cluster_ips(svc: &Value) -> Vec<&str> {
    let ips: Vec<&str> =
        arr(svc.get("spec").unwrap_or(&NULL), "clusterIPs").iter().map(|v| v.as_str().unwrap_or("")).collect();
    let ip = spec_str(svc, "clusterIP");
    if ips.is_empty() && !ip.is_empty() {
        return vec![ip];
    }
    ips
}

fn ips_go(ips: &[&str]) -> String {
    if ips.is_empty() {
        return "[]string(nil)".to_string();
    }
    let q: Vec<String> = ips.iter().map(|s| govalue::quote(s)).collect();
    format!("[]string{{{}}}", q.join(", "))
}

fn is_headless(ips: &[&str]) -> bool {
    ips.len() == 1 && ips[0] == "None"
}

/// ValidateService.
pub(crate) fn validate(svc: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(svc, NameRule::Dns1035, true, out);
    let spec = svc.get("spec").unwrap_or(&NULL);
    let ann = svc.pointer("/metadata/annotations");
    let ann_str = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_str);
    if let (Some(mode), Some(hints)) =
        (ann_str("service.kubernetes.io/topology-mode"), ann_str("service.kubernetes.io/topology-aware-hints"))
    {
        if mode != hints {
            let mp = Path::root("metadata");
            let ap = mp.child("annotations");
            out.push(field::invalid(
                &ap.key("service.kubernetes.io/topology-mode"),
                mode,
                "must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            ));
        }
    }
    let sp = Path::root("spec");
    let ty = str_of(spec, "type");
    let ips = cluster_ips(svc);
    let headless = is_headless(&ips);
    let ports = arr(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        out.push(field::required(&sp.child("ports"), ""));
    }
    let ips_path = sp.child("clusterIPs");
    match ty {
        "LoadBalancer" | "NodePort" if headless => {
            out.push(field::invalid(
                &ips_path.index(0),
                "None",
                &format!("may not be set to 'None' for {ty} services"),
            ));
        }
        "ExternalName" => {
            if !ips.is_empty() {
                out.push(field::forbidden(&ips_path, "may not be set for ExternalName services"));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                out.push(field::forbidden(&sp.child("ipFamilies"), "may not be set for ExternalName services"));
            }
            if spec.get("ipFamilyPolicy").is_some_and(|v| !v.is_null()) {
                out.push(field::forbidden(&sp.child("ipFamilyPolicy"), "may not be set for ExternalName services"));
            }
            let cname = str_of(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            let ep = sp.child("externalName");
            if cname.is_empty() {
                out.push(field::required(&ep, ""));
            } else {
                for msg in names::dns1123_subdomain_errors(cname) {
                    out.push(field::invalid(&ep, cname, &msg));
                }
            }
        }
        _ => {}
    }
    let pp = sp.child("ports");
    let mut port_names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        service_port(port, ports.len() > 1, &mut port_names, &pp.index(i), out);
    }
    if spec.get("selector").is_some_and(|s| !s.is_null()) {
        meta::labels(spec.get("selector"), &sp.child("selector"), out);
    }
    let affinity = str_of(spec, "sessionAffinity");
    let ap = sp.child("sessionAffinity");
    if affinity.is_empty() {
        out.push(field::required(&ap, ""));
    } else if !matches!(affinity, "ClientIP" | "None") {
        out.push(field::not_supported(&ap, affinity, &["ClientIP", "None"]));
    }
    let cp = sp.child("sessionAffinityConfig");
    let config = spec.get("sessionAffinityConfig").filter(|c| !c.is_null());
    if affinity == "ClientIP" {
        client_ip_config(config, &cp, out);
    } else if affinity == "None" && config.is_some() {
        out.push(field::forbidden(&cp, "must not be set when session affinity is None"));
    }
    cluster_ips_related(svc, &ips, out);
    let xp = sp.child("externalIPs");
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        let ipp = xp.index(i);
        if net::validate_ip(&ipp, ip, out) {
            net::validate_non_special_ip(&ipp, ip, out);
        }
    }
    let tp = sp.child("type");
    if ty.is_empty() {
        out.push(field::required(&tp, ""));
    } else if !SERVICE_TYPES.contains(&ty) {
        out.push(field::not_supported(&tp, ty, SERVICE_TYPES));
    }
    if ty == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if int_of(port, "nodePort").unwrap_or(0) != 0 {
                out.push(field::forbidden(
                    &pp.index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports: Vec<(&str, i64)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let np = int_of(port, "nodePort").unwrap_or(0);
        if np == 0 {
            continue;
        }
        let key = (str_of(port, "protocol"), np);
        if node_ports.contains(&key) {
            out.push(field::duplicate(&pp.index(i).child("nodePort"), np));
        }
        node_ports.push(key);
    }
    let mut seen: Vec<(&str, i64)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let key = (str_of(port, "protocol"), int_of(port, "port").unwrap_or(0));
        if seen.contains(&key) {
            let shown = format!(
                "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                govalue::quote(key.0),
                key.1
            );
            out.push(field::duplicate(&pp.index(i), shown));
        }
        seen.push(key);
    }
    source_ranges(svc, spec, ty, out);
    let lb = ty == "LoadBalancer";
    let alloc = spec.get("allocateLoadBalancerNodePorts").filter(|v| !v.is_null());
    if alloc.is_some() && !lb {
        out.push(field::forbidden(
            &sp.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if lb && alloc.is_none() {
        out.push(field::required(&Path::root("allocateLoadBalancerNodePorts"), ""));
    }
    if let Some(class) = spec.get("loadBalancerClass").and_then(Value::as_str) {
        let lp = sp.child("loadBalancerClass");
        if lb {
            for msg in names::qualified_name_errors(class) {
                out.push(field::invalid(&lp, class, &msg));
            }
        } else {
            out.push(field::forbidden(&lp, "may only be used when `type` is 'LoadBalancer'"));
        }
    }
    traffic_policies(spec, ty, &sp, out);
}

/// validateServicePort.
fn service_port<'a>(port: &'a Value, require_name: bool, seen: &mut Vec<&'a str>, p: &Path, out: &mut Vec<FieldError>) {
    let name = str_of(port, "name");
    let np = p.child("name");
    if require_name && name.is_empty() {
        out.push(field::required(&np, ""));
    } else if !name.is_empty() {
        for msg in names::dns1123_label_errors(name) {
            out.push(field::invalid(&np, name, &msg));
        }
        if seen.contains(&name) {
            out.push(field::duplicate(&np, name));
        } else {
            seen.push(name);
        }
    }
    let n = int_of(port, "port").unwrap_or(0);
    if !names::port_num_ok(n) {
        out.push(field::invalid(&p.child("port"), n, PORT_RANGE_MSG));
    }
    pod::protocol(str_of(port, "protocol"), &p.child("protocol"), out);
    // a zero or empty targetPort is defaulted to the port
    let target = port.get("targetPort").filter(|t| !(t.as_i64() == Some(0) || t.as_str() == Some("")));
    if let Some(t) = target {
        pod::port_num_or_name(Some(t), &p.child("targetPort"), out);
    }
    if let Some(ap) = port.get("appProtocol").and_then(Value::as_str) {
        for msg in names::qualified_name_errors(ap) {
            out.push(field::invalid(&p.child("appProtocol"), ap, &msg));
        }
    }
}

fn client_ip_config(config: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) {
    const WHY: &str = "when session affinity type is ClientIP";
    let Some(config) = config else {
        out.push(field::required(p, WHY));
        return;
    };
    let cp = p.child("clientIP");
    let Some(cip) = config.get("clientIP").filter(|c| !c.is_null()) else {
        out.push(field::required(&cp, WHY));
        return;
    };
    let tp = cp.child("timeoutSeconds");
    match int_of(cip, "timeoutSeconds") {
        None => out.push(field::required(&tp, WHY)),
        Some(t) if t <= 0 || t > 86400 => {
            out.push(field::invalid(&tp, t, "must be greater than 0 and less than 86400"))
        }
        Some(_) => {}
    }
}

/// ValidateServiceClusterIPsRelatedFields.
fn cluster_ips_related(svc: &Value, ips: &[&str], out: &mut Vec<FieldError>) {
    if svc_type(svc) == "ExternalName" {
        return;
    }
    let spec = svc.get("spec").unwrap_or(&NULL);
    let sp = Path::root("spec");
    let ips_path = sp.child("clusterIPs");
    let cluster_ip = str_of(spec, "clusterIP");
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            out.push(field::required(&ips_path, ""));
        } else if ips[0] != cluster_ip {
            out.push(field::invalid(&ips_path, ips_go(ips), "first value must match `clusterIP`"));
        }
    } else if !ips.is_empty() {
        out.push(field::invalid(&ips_path, ips_go(ips), "must be empty when `clusterIP` is not specified"));
    }
    let fp = sp.child("ipFamilies");
    let families: Vec<&str> = arr(spec, "ipFamilies").iter().map(|f| f.as_str().unwrap_or("")).collect();
    for (i, f) in families.iter().enumerate() {
        if !matches!(*f, "IPv4" | "IPv6") {
            out.push(field::not_supported(&fp.index(i), *f, &["IPv4", "IPv6"]));
        }
        if families[..i].contains(f) {
            out.push(field::duplicate(&fp.index(i), *f));
        }
    }
    if let Some(policy) = spec.get("ipFamilyPolicy").and_then(Value::as_str) {
        const POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !POLICIES.contains(&policy) {
            out.push(field::not_supported(&sp.child("ipFamilyPolicy"), policy, POLICIES));
        }
    }
    let mut bad_ips = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && *ip == "None" {
            if ips.len() > 1 {
                bad_ips = true;
                out.push(field::invalid(&ips_path, ips_go(ips), "'None' must be the first and only value"));
            }
            continue;
        }
        bad_ips |= !net::validate_ip(&ips_path.index(i), ip, out);
    }
    if ips.len() > 2 {
        out.push(field::invalid(&ips_path, ips_go(ips), "may only hold up to 2 values"));
    }
    if bad_ips {
        return;
    }
    let v6 = |ip: &str| matches!(net::parse_ip(ip), Some(IpAddr::V6(_)));
    if ips.len() > 1 {
        let n6 = ips.iter().filter(|ip| v6(ip)).count();
        if n6 == 0 || n6 == ips.len() {
            out.push(field::invalid(&ips_path, ips_go(ips), "may specify no more than one IP for each IP family"));
        }
    }
    if !is_headless(ips) && !ips.is_empty() && !families.is_empty() {
        for (i, ip) in ips.iter().enumerate().take(families.len()) {
            if families[i] == "IPv4" && v6(ip) {
                out.push(field::invalid(
                    &ips_path.index(i),
                    *ip,
                    &format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if families[i] == "IPv6" && !v6(ip) {
                out.push(field::invalid(
                    &ips_path.index(i),
                    *ip,
                    &format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
}

fn source_ranges(svc: &Value, spec: &Value, ty: &str, out: &mut Vec<FieldError>) {
    const LB_ONLY: &str = "may only be used when `type` is 'LoadBalancer'";
    let ranges = arr(spec, "loadBalancerSourceRanges");
    if !ranges.is_empty() {
        let sp = Path::root("spec");
        let fp = sp.child("LoadBalancerSourceRanges");
        if ty != "LoadBalancer" {
            out.push(field::forbidden(&fp, LB_ONLY));
        }
        for (i, r) in ranges.iter().enumerate() {
            net::validate_cidr(&fp.index(i), r.as_str().unwrap_or("").trim(), out);
        }
        return;
    }
    const KEY: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
    let Some(val) = svc.pointer("/metadata/annotations").and_then(|a| a.get(KEY)).and_then(Value::as_str) else {
        return;
    };
    let mp = Path::root("metadata");
    let ap = mp.child("annotations");
    let fp = ap.key(KEY);
    if ty != "LoadBalancer" {
        out.push(field::forbidden(&fp, LB_ONLY));
    }
    let val = val.trim();
    if !val.is_empty() {
        for r in val.split(',') {
            net::validate_cidr(&fp, r.trim(), out);
        }
    }
}

fn externally_accessible(spec: &Value, ty: &str) -> bool {
    ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && !arr(spec, "externalIPs").is_empty())
}

fn traffic_policies(spec: &Value, ty: &str, sp: &Path, out: &mut Vec<FieldError>) {
    let etp = str_of(spec, "externalTrafficPolicy");
    let ep = sp.child("externalTrafficPolicy");
    if !externally_accessible(spec, ty) {
        if !etp.is_empty() {
            out.push(field::invalid(&ep, etp, "may only be set for externally-accessible services"));
        }
    } else if etp.is_empty() {
        // NodePort and LoadBalancer services have it defaulted; a ClusterIP
        // service with external IPs is left to the proxy's default
        if ty != "ClusterIP" {
            out.push(field::required(&ep, ""));
        }
    } else if !matches!(etp, "Cluster" | "Local") {
        out.push(field::not_supported(&ep, etp, &["Cluster", "Local"]));
    }
    let hc = int_of(spec, "healthCheckNodePort").unwrap_or(0);
    let hp = sp.child("healthCheckNodePort");
    let needs_hc = ty == "LoadBalancer" && etp == "Local";
    if !needs_hc && hc != 0 {
        out.push(field::invalid(
            &hp,
            hc,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    } else if needs_hc && hc != 0 && !names::port_num_ok(hc) {
        out.push(field::invalid(&hp, hc, PORT_RANGE_MSG));
    }
    let ip = sp.child("internalTrafficPolicy");
    match spec.get("internalTrafficPolicy").and_then(Value::as_str) {
        None if matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer") => out.push(field::required(&ip, "")),
        Some(itp) if !matches!(itp, "Cluster" | "Local") => {
            out.push(field::not_supported(&ip, itp, &["Cluster", "Local"]))
        }
        _ => {}
    }
    if let Some(td) = spec.get("trafficDistribution").and_then(Value::as_str) {
        if td != "PreferClose" {
            out.push(field::not_supported(&sp.child("trafficDistribution"), td, &["PreferClose"]));
        }
    }
}

/// ValidateServiceUpdate's checks of the old and new service, before the
/// new service is validated.
pub(crate) fn update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let sp = Path::root("spec");
    let (ot, nt) = (svc_type(old), svc_type(new));
    if ot != "ExternalName" && nt != "ExternalName" {
        let (oi, ni) = (cluster_ips(old), cluster_ips(new));
        let ips_path = sp.child("clusterIPs");
        if !(is_headless(&oi) && is_headless(&ni)) {
            if oi.len() == ni.len() {
                for (i, ip) in oi.iter().enumerate() {
                    if *ip != ni[i] {
                        out.push(field::invalid(&ips_path.index(i), ips_go(&ni), "may not change once set"));
                    }
                }
            } else if oi.len() > ni.len() {
                if ni.is_empty() {
                    out.push(field::invalid(&ips_path.index(0), ips_go(&ni), "primary clusterIP can not be unset"));
                }
                if !oi.is_empty() && !ni.is_empty() && ni[0] != oi[0] {
                    out.push(field::invalid(&ips_path.index(0), ips_go(&ni), "may not change once set"));
                }
                if ni.len() == 1 && spec_str(new, "ipFamilyPolicy") != "SingleStack" {
                    out.push(policy_not_single(
                        new,
                        "must be set to 'SingleStack' when releasing the secondary clusterIP",
                    ));
                }
            } else if !oi.is_empty() && ni[0] != oi[0] {
                out.push(field::invalid(&ips_path.index(0), ips_go(&ni), "may not change once set"));
            }
        }
        if is_headless(&oi) == is_headless(&ni) && !is_headless(&ni) {
            families_update(old, new, out);
        }
    }
    let (olb, nlb) = (ot == "LoadBalancer", nt == "LoadBalancer");
    if olb && nlb {
        let (oc, nc) = (old.pointer("/spec/loadBalancerClass"), new.pointer("/spec/loadBalancerClass"));
        if !semantic_eq(oc, nc) {
            let lp = sp.child("loadBalancerClass");
            out.push(field::invalid(&lp, nc.and_then(Value::as_str).unwrap_or("null"), "may not change once set"));
        }
        let needs_hc = |s: &Value| spec_str(s, "externalTrafficPolicy") == "Local";
        if needs_hc(old)
            && needs_hc(new)
            && old.pointer("/spec/healthCheckNodePort") != new.pointer("/spec/healthCheckNodePort")
        {
            out.push(field::forbidden(&sp.child("healthCheckNodePort"), "field is immutable"));
        }
    }
}

fn policy_not_single(new: &Value, why: &str) -> FieldError {
    let sp = Path::root("spec");
    let pp = sp.child("ipFamilyPolicy");
    match new.pointer("/spec/ipFamilyPolicy").and_then(Value::as_str) {
        Some(p) => field::invalid(&pp, p, why),
        None => field::invalid(&pp, "null", why),
    }
}

fn families_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let fam = |s: &Value| -> Vec<String> {
        s.pointer("/spec/ipFamilies")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|f| f.as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default()
    };
    let (of, nf) = (fam(old), fam(new));
    let sp = Path::root("spec");
    let fp = sp.child("ipFamilies");
    let shown = |v: &[String]| {
        let q: Vec<String> = v.iter().map(|s| govalue::quote(s)).collect();
        if v.is_empty() {
            "[]core.IPFamily(nil)".to_string()
        } else {
            format!("[]core.IPFamily{{{}}}", q.join(", "))
        }
    };
    if of.len() == nf.len() {
        for (i, f) in of.iter().enumerate() {
            if *f != nf[i] {
                out.push(field::invalid(&fp.index(0), shown(&nf), "may not change once set"));
            }
        }
    } else if of.len() > nf.len() {
        if cluster_ips(new).is_empty() {
            out.push(field::invalid(&fp.index(0), shown(&nf), "primary ipFamily can not be unset"));
        }
        if !nf.is_empty() && nf[0] != of[0] {
            out.push(field::invalid(&fp.index(0), ips_go(&cluster_ips(new)), "may not change once set"));
        }
        if nf.len() == 1 && spec_str(new, "ipFamilyPolicy") != "SingleStack" {
            out.push(policy_not_single(new, "must be set to 'SingleStack' when releasing the secondary ipFamily"));
        }
    } else if !of.is_empty() && !nf.is_empty() && nf[0] != of[0] {
        out.push(field::invalid(&fp.index(0), ips_go(&cluster_ips(new)), "may not change once set"));
    }
}

/// What the service registry does to a Service before validating it:
/// on create, a lone `clusterIP` also fills `clusterIPs`; on update the
/// allocated values the client left out are carried over from `old`
/// (patchAllocatedValues), `clusterIP` and `clusterIPs` are kept in step
/// (normalizeClusterIPs), and fields the new type has no use for are
/// dropped when the client did not change them (dropTypeDependentFields).
pub fn normalize_service(old: Option<&Value>, new: &mut Value) {
    let Some(old) = old else {
        let ip = spec_str(new, "clusterIP").to_string();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            let ips_empty = spec.get("clusterIPs").and_then(Value::as_array).is_none_or(|a| a.is_empty());
            if !ip.is_empty() && ips_empty {
                spec.insert("clusterIPs".into(), json!([ip]));
            }
        }
        return;
    };
    let os = old.get("spec").cloned().unwrap_or(Value::Null);
    let ot = str_of(&os, "type").to_string();
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let nt = spec.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    let get_str = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let is_empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty));
    // patchAllocatedValues
    if ot != "ExternalName" && nt != "ExternalName" {
        if get_str(spec, "clusterIP").is_empty() {
            if let Some(ip) = os.get("clusterIP") {
                spec.insert("clusterIP".into(), ip.clone());
            }
        }
        if is_empty(spec.get("clusterIPs")) && !is_empty(os.get("clusterIPs")) {
            if let Some(ips) = os.get("clusterIPs") {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        }
    }
    let needs_hc = |t: &str, etp: &str| t == "LoadBalancer" && etp == "Local";
    let old_hc = needs_hc(&ot, str_of(&os, "externalTrafficPolicy"));
    if old_hc && needs_hc(&nt, &get_str(spec, "externalTrafficPolicy")) {
        let unset = spec.get("healthCheckNodePort").and_then(Value::as_i64).unwrap_or(0) == 0;
        if unset {
            if let Some(hc) = os.get("healthCheckNodePort") {
                spec.insert("healthCheckNodePort".into(), hc.clone());
            }
        }
    }
    // normalizeClusterIPs
    let old_ip = str_of(&os, "clusterIP").to_string();
    let new_ip = get_str(spec, "clusterIP");
    if !is_empty(os.get("clusterIPs")) && is_empty(spec.get("clusterIPs")) && old_ip == new_ip {
        if let Some(ips) = os.get("clusterIPs") {
            spec.insert("clusterIPs".into(), ips.clone());
        }
    }
    let same_ips = semantic_eq(os.get("clusterIPs"), spec.get("clusterIPs"));
    if old_ip != new_ip {
        if !old_ip.is_empty() && new_ip.is_empty() {
            if same_ips {
                spec.remove("clusterIPs");
            }
        } else if same_ips {
            spec.insert("clusterIPs".into(), json!([new_ip]));
        }
    }
    // dropTypeDependentFields
    if ot != "ExternalName" && nt == "ExternalName" {
        if semantic_eq(os.get("clusterIPs"), spec.get("clusterIPs"))
            && str_of(&os, "clusterIP") == get_str(spec, "clusterIP")
        {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        if semantic_eq(os.get("ipFamilies"), spec.get("ipFamilies")) {
            spec.remove("ipFamilies");
        }
        if os.get("ipFamilyPolicy") == spec.get("ipFamilyPolicy") {
            spec.remove("ipFamilyPolicy");
        }
        if os.get("internalTrafficPolicy") == spec.get("internalTrafficPolicy") {
            spec.remove("internalTrafficPolicy");
        }
    }
    let node_port_type = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if node_port_type(&ot) && !node_port_type(&nt) {
        let old_ports = arr(&os, "ports");
        let new_ports = spec.get("ports").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let same = old_ports.len() == new_ports.len()
            && old_ports.iter().zip(new_ports).all(|(a, b)| a.get("nodePort") == b.get("nodePort"));
        if same {
            for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
    if old_hc
        && !needs_hc(&nt, &get_str(spec, "externalTrafficPolicy"))
        && os.get("healthCheckNodePort") == spec.get("healthCheckNodePort")
    {
        spec.remove("healthCheckNodePort");
    }
    if nt != "LoadBalancer" {
        spec.remove("allocateLoadBalancerNodePorts");
        if ot == "LoadBalancer" && os.get("loadBalancerClass") == spec.get("loadBalancerClass") {
            spec.remove("loadBalancerClass");
        }
    }
    let has_external_ips = spec.get("externalIPs").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if !(node_port_type(&nt) || (nt == "ClusterIP" && has_external_ips)) {
        spec.remove("externalTrafficPolicy");
    }
}

// ---- Endpoints ----

/// ValidateEndpoints.
pub(crate) fn validate_endpoints(obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    let sp = Path::root("subsets");
    for (i, ss) in arr(obj, "subsets").iter().enumerate() {
        let ip = sp.index(i);
        let (ready, not_ready) = (arr(ss, "addresses"), arr(ss, "notReadyAddresses"));
        if ready.is_empty() && not_ready.is_empty() {
            out.push(field::required(&ip, "must specify `addresses` or `notReadyAddresses`"));
        }
        for (k, list) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            let lp = ip.child(k);
            for (j, a) in list.iter().enumerate() {
                endpoint_address(a, &lp.index(j), out);
            }
        }
        let ports = arr(ss, "ports");
        let pp = ip.child("ports");
        for (j, port) in ports.iter().enumerate() {
            endpoint_port(port, ports.len() > 1, &pp.index(j), out);
        }
    }
}

fn endpoint_address(a: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let ip = str_of(a, "ip");
    let ipp = p.child("ip");
    net::validate_ip(&ipp, ip, out);
    let host = str_of(a, "hostname");
    if !host.is_empty() {
        for msg in names::dns1123_label_errors(host) {
            out.push(field::invalid(&p.child("hostname"), host, &msg));
        }
    }
    if let Some(node) = a.get("nodeName").and_then(Value::as_str) {
        for msg in names::dns1123_subdomain_errors(node) {
            out.push(field::invalid(&p.child("nodeName"), node, &msg));
        }
    }
    net::validate_non_special_ip(&ipp, ip, out);
}

fn endpoint_port(port: &Value, require_name: bool, p: &Path, out: &mut Vec<FieldError>) {
    let name = str_of(port, "name");
    let np = p.child("name");
    if require_name && name.is_empty() {
        out.push(field::required(&np, ""));
    } else if !name.is_empty() {
        for msg in names::dns1123_label_errors(name) {
            out.push(field::invalid(&np, name, &msg));
        }
    }
    let n = int_of(port, "port").unwrap_or(0);
    if !names::port_num_ok(n) {
        out.push(field::invalid(&p.child("port"), n, PORT_RANGE_MSG));
    }
    pod::protocol(str_of(port, "protocol"), &p.child("protocol"), out);
    if let Some(ap) = port.get("appProtocol").and_then(Value::as_str) {
        for msg in names::qualified_name_errors(ap) {
            out.push(field::invalid(&p.child("appProtocol"), ap, &msg));
        }
    }
}

// ---- EndpointSlice ----

/// ValidateEndpointSlice; an update also accepts the deprecated `IP`
/// address type.
pub(crate) fn validate_slice(obj: &Value, updating: bool, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    let at = str_of(obj, "addressType");
    let ap = Path::root("addressType");
    let types: &[&str] = if updating { &["FQDN", "IP", "IPv4", "IPv6"] } else { &["FQDN", "IPv4", "IPv6"] };
    if at.is_empty() {
        out.push(field::required(&ap, ""));
    } else if !types.contains(&at) {
        out.push(field::not_supported(&ap, at, types));
    }
    slice_endpoints(arr(obj, "endpoints"), at, out);
    slice_ports(arr(obj, "ports"), out);
}

fn slice_endpoints(list: &[Value], at: &str, out: &mut Vec<FieldError>) {
    let p = Path::root("endpoints");
    if list.len() > 1000 {
        out.push(field::too_many(&p, list.len(), 1000));
        return;
    }
    for (i, e) in list.iter().enumerate() {
        let ip = p.index(i);
        let ap = ip.child("addresses");
        let addrs = arr(e, "addresses");
        if addrs.is_empty() {
            out.push(field::required(&ap, "must contain at least 1 address"));
        } else if addrs.len() > 100 {
            out.push(field::too_many(&ap, addrs.len(), 100));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let aip = ap.index(j);
            match at {
                "IPv4" | "IPv6" => slice_ip(at, a, &ap, &aip, out),
                "FQDN" => fully_qualified_domain_name(a, &aip, out),
                _ => {}
            }
        }
        if let Some(node) = e.get("nodeName").and_then(Value::as_str) {
            for msg in names::dns1123_subdomain_errors(node) {
                out.push(field::invalid(&ip.child("nodeName"), node, &msg));
            }
        }
        let tp = ip.child("deprecatedTopology");
        if let Some(t) = e.get("deprecatedTopology").and_then(Value::as_object) {
            if t.len() > 16 {
                out.push(field::too_many(&tp, t.len(), 16));
            }
        }
        meta::labels(e.get("deprecatedTopology"), &tp, out);
        if let Some(h) = e.get("hostname").and_then(Value::as_str) {
            for msg in names::dns1123_label_errors(h) {
                out.push(field::invalid(&ip.child("hostname"), h, &msg));
            }
        }
        if let Some(hints) = e.get("hints").filter(|h| !h.is_null()) {
            let hp = ip.child("hints");
            let zp = hp.child("forZones");
            let zones = arr(hints, "forZones");
            if zones.len() > 8 {
                out.push(field::too_many(&zp, zones.len(), 8));
                continue;
            }
            let mut seen: Vec<&str> = Vec::new();
            for (j, z) in zones.iter().enumerate() {
                let name = str_of(z, "name");
                let np = zp.index(j);
                let np = np.child("name");
                if seen.contains(&name) {
                    out.push(field::duplicate(&np, name));
                } else {
                    seen.push(name);
                }
                for msg in names::label_value_errors(name) {
                    out.push(field::invalid(&np, name, &msg));
                }
            }
        }
    }
}

/// An address of an IPv4 or IPv6 slice. The family mismatch is reported
/// at the list, as Kubernetes does.
fn slice_ip(at: &str, a: &str, list: &Path, p: &Path, out: &mut Vec<FieldError>) {
    if !net::validate_ip(p, a, out) {
        return;
    }
    let is_v6 = matches!(net::parse_ip(a), Some(IpAddr::V6(_)));
    if at == "IPv4" && is_v6 {
        out.push(field::invalid(list, a, "must be an IPv4 address"));
    }
    if at == "IPv6" && !is_v6 {
        out.push(field::invalid(list, a, "must be an IPv6 address"));
    }
    net::validate_non_special_ip(p, a, out);
}

/// IsFullyQualifiedDomainName.
fn fully_qualified_domain_name(name: &str, p: &Path, out: &mut Vec<FieldError>) {
    if name.is_empty() {
        out.push(field::required(p, ""));
        return;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let errs = names::dns1123_subdomain_errors(name);
    if !errs.is_empty() {
        out.push(field::invalid(p, name, &errs.join(",")));
        return;
    }
    if !name.contains('.') {
        out.push(field::invalid(p, name, "should be a domain with at least two segments separated by dots"));
        return;
    }
    for label in name.split('.') {
        let errs = names::dns1123_label_errors(label);
        if !errs.is_empty() {
            out.push(field::invalid(p, label, &errs.join(",")));
            return;
        }
    }
}

fn slice_ports(list: &[Value], out: &mut Vec<FieldError>) {
    let p = Path::root("ports");
    if list.len() > 20000 {
        out.push(field::too_many(&p, list.len(), 20000));
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, port) in list.iter().enumerate() {
        let ip = p.index(i);
        // an absent name is defaulted to ""
        let name = str_of(port, "name");
        let np = ip.child("name");
        if !name.is_empty() {
            for msg in names::dns1123_label_errors(name) {
                out.push(field::invalid(&np, name, &msg));
            }
        }
        if seen.contains(&name) {
            out.push(field::duplicate(&np, name));
        } else {
            seen.push(name);
        }
        match port.get("protocol").and_then(Value::as_str) {
            None => out.push(field::required(&ip.child("protocol"), "")),
            Some(pr) if !PROTOCOLS.contains(&pr) => {
                out.push(field::not_supported(&ip.child("protocol"), pr, PROTOCOLS))
            }
            Some(_) => {}
        }
        if let Some(ap) = port.get("appProtocol").and_then(Value::as_str) {
            for msg in names::qualified_name_errors(ap) {
                out.push(field::invalid(&ip.child("appProtocol"), ap, &msg));
            }
        }
    }
}

/// An EndpointSlice's address type may not change.
pub(crate) fn slice_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let (o, n) = (str_of(old, "addressType"), str_of(new, "addressType"));
    if o != n {
        out.push(field::immutable(&Path::root("addressType"), n));
    }
}
