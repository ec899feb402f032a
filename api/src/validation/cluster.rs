//! Namespaces, Nodes and Leases.

use serde_json::Value;

use super::field::{self, Path};
use super::meta::{self, NameRule};
use super::names;
use super::quantity;
use super::{arr, govalue, int_of, net, str_of, FieldError, NULL};

/// ValidateNamespace.
pub(crate) fn validate_namespace(obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Label, false, out);
    let sp = Path::root("spec");
    let fp = sp.child("finalizers");
    for f in obj.pointer("/spec/finalizers").and_then(Value::as_array).into_iter().flatten() {
        let f = f.as_str().unwrap_or("");
        for msg in names::qualified_name_errors(f) {
            out.push(field::invalid(&fp, f, &msg));
        }
        meta::kube_finalizer_name(f, &fp, out);
    }
}

/// A node's pod CIDRs: `podCIDRs`, or an old client's lone `podCIDR`.
fn pod_cidrs(node: &Value) -> Vec<&str> {
    let spec = node.get("spec").unwrap_or(&NULL);
    let list: Vec<&str> = arr(spec, "podCIDRs").iter().map(|v| v.as_str().unwrap_or("")).collect();
    let single = str_of(spec, "podCIDR");
    if list.is_empty() && !single.is_empty() {
        return vec![single];
    }
    list
}

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// validateNodeTaints. Kubernetes reports them under `metadata.taints`.
fn taints(list: &[Value], out: &mut Vec<FieldError>) {
    let mp = Path::root("metadata");
    let tp = mp.child("taints");
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let ip = tp.index(i);
        let (key, value, effect) = (str_of(t, "key"), str_of(t, "value"), str_of(t, "effect"));
        meta::label_name(key, &ip.child("key"), out);
        let errs = names::label_value_errors(value);
        if !errs.is_empty() {
            out.push(field::invalid(&ip.child("value"), value, &errs.join(";")));
        }
        let ep = ip.child("effect");
        if effect.is_empty() {
            out.push(field::required(&ep, ""));
        } else if !TAINT_EFFECTS.contains(&effect) {
            out.push(field::not_supported(&ep, effect, TAINT_EFFECTS));
        }
        if seen.contains(&(key, effect)) {
            let shown = format!(
                "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:(*v1.Time)(nil)}}",
                govalue::quote(key),
                govalue::quote(value),
                govalue::quote(effect)
            );
            let mut e = field::duplicate(&ip, shown);
            e.message.push_str(": taints must be unique by key and effect pair");
            out.push(e);
            continue;
        }
        seen.push((key, effect));
    }
}

/// ValidateNode.
pub(crate) fn validate_node(obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, false, out);
    let spec = obj.get("spec").unwrap_or(&NULL);
    taints(arr(spec, "taints"), out);
    let st = Path::root("status");
    for k in ["capacity", "allocatable"] {
        let kp = st.child(k);
        for (name, q) in obj.pointer(&format!("/status/{k}")).and_then(Value::as_object).into_iter().flatten() {
            if let Some(q) = quantity::from_json(q).filter(quantity::Quantity::is_negative) {
                out.push(field::invalid(&kp.child(name), q.canonical().as_str(), "must be greater than or equal to 0"));
            }
        }
    }
    let cidrs = pod_cidrs(obj);
    let sp = Path::root("spec");
    let cp = sp.child("podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        net::validate_cidr(&cp.index(i), c, out);
    }
    if cidrs.len() > 1 {
        let parsed: Vec<_> = cidrs.iter().filter_map(|c| net::parse_cidr(c)).collect();
        let v6 = parsed.iter().filter(|(ip, _)| ip.is_ipv6()).count();
        let dual = parsed.len() == cidrs.len() && v6 > 0 && v6 < parsed.len();
        if !dual || cidrs.len() > 2 {
            let shown = Value::from(cidrs.clone());
            out.push(field::invalid(
                &cp,
                govalue::string_slice(Some(&shown)),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        for (i, c) in cidrs.iter().enumerate() {
            if cidrs[..i].contains(c) {
                out.push(field::duplicate(&cp.index(i), *c));
            }
        }
    }
}

/// ValidateNodeUpdate's own rules: pod CIDRs and the provider ID are set
/// once, and status addresses are unique.
pub(crate) fn node_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let st = Path::root("status");
    let ap = st.child("addresses");
    let addrs = new.pointer("/status/addresses").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    for (i, a) in addrs.iter().enumerate() {
        if addrs[..i]
            .iter()
            .any(|b| str_of(a, "type") == str_of(b, "type") && str_of(a, "address") == str_of(b, "address"))
        {
            let shown = format!(
                "core.NodeAddress{{Type:{}, Address:{}}}",
                govalue::quote(str_of(a, "type")),
                govalue::quote(str_of(a, "address"))
            );
            out.push(field::duplicate(&ap.index(i), shown));
        }
    }
    let sp = Path::root("spec");
    const CIDR_WHY: &str = "node updates may not change podCIDR except from \"\" to valid";
    let (oc, nc) = (pod_cidrs(old), pod_cidrs(new));
    if !oc.is_empty() {
        if oc.len() != nc.len() {
            out.push(field::forbidden(&sp.child("podCIDRs"), CIDR_WHY));
        } else {
            for (o, n) in oc.iter().zip(&nc) {
                if o != n {
                    out.push(field::forbidden(&sp.child("podCIDRs"), CIDR_WHY));
                }
            }
        }
    }
    let (op, np) = (old.pointer("/spec/providerID"), new.pointer("/spec/providerID"));
    let op = op.and_then(Value::as_str).unwrap_or("");
    if !op.is_empty() && Some(op) != np.and_then(Value::as_str) {
        out.push(field::forbidden(
            &sp.child("providerID"),
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}

/// ValidateLease.
pub(crate) fn validate_lease(obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    let spec = obj.get("spec").unwrap_or(&NULL);
    let sp = Path::root("spec");
    if let Some(d) = int_of(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
        out.push(field::invalid(&sp.child("leaseDurationSeconds"), d, "must be greater than 0"));
    }
    if let Some(t) = int_of(spec, "leaseTransitions").filter(|t| *t < 0) {
        out.push(field::invalid(&sp.child("leaseTransitions"), t, "must be greater than or equal to 0"));
    }
    let strategy = spec.get("strategy").and_then(Value::as_str);
    if let Some(s) = strategy {
        let stp = sp.child("strategy");
        let stp = stp.child("strategy");
        if !s.contains('/') {
            if s != "OldestEmulationVersion" {
                out.push(field::not_supported(&stp, s, &["OldestEmulationVersion"]));
            }
        } else {
            for msg in names::qualified_name_errors(s) {
                out.push(field::invalid(&stp, s, &msg));
            }
        }
    }
    let holder = spec.get("preferredHolder").and_then(Value::as_str).unwrap_or("");
    if !holder.is_empty() && strategy.is_none_or(str::is_empty) {
        out.push(field::forbidden(&sp.child("preferredHolder"), "may only be specified if `strategy` is defined"));
    }
}
