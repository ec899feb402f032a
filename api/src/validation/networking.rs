//! Ingresses and IngressClasses (pkg/apis/networking/validation).

use serde_json::Value;

use super::field::{self, Path};
use super::meta::{self, NameRule};
use super::names::{self, PORT_RANGE_MSG};
use super::{arr, int_of, net, str_of, FieldError, NULL};

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// ValidateIngressCreate (`creating`) or the validation of an updated
/// Ingress.
pub(crate) fn validate_ingress(obj: &Value, creating: bool, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    let spec = obj.get("spec").unwrap_or(&NULL);
    let sp = Path::root("spec");
    let rules = spec.get("rules").and_then(Value::as_array);
    let default_backend = spec.get("defaultBackend").filter(|b| !b.is_null());
    if rules.is_none_or(|r| r.is_empty()) && default_backend.is_none() {
        let shown = if rules.is_some() { "[]networking.IngressRule{}" } else { "[]networking.IngressRule(nil)" };
        out.push(field::invalid(&sp, shown.to_string(), "either `defaultBackend` or `rules` must be specified"));
    }
    if let Some(b) = default_backend {
        backend(b, &sp.child("defaultBackend"), out);
    }
    let rp = sp.child("rules");
    for (i, r) in rules.into_iter().flatten().enumerate() {
        rule(r, &rp.index(i), out);
    }
    let tp = sp.child("tls");
    for (i, t) in arr(spec, "tls").iter().enumerate() {
        let ip = tp.index(i);
        let hp = ip.child("hosts");
        for (j, h) in arr(t, "hosts").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            for msg in host_errors(h) {
                out.push(field::invalid(&hp.index(j), h, &msg));
            }
        }
        let secret = str_of(t, "secretName");
        if !secret.is_empty() {
            for msg in names::dns1123_subdomain_errors(secret) {
                out.push(field::invalid(&ip.child("secretName"), secret, &msg));
            }
        }
    }
    let class = spec.get("ingressClassName").and_then(Value::as_str);
    if let Some(c) = class {
        for msg in names::dns1123_subdomain_errors(c) {
            out.push(field::invalid(&sp.child("ingressClassName"), c, &msg));
        }
    }
    if creating {
        let annotation =
            obj.pointer("/metadata/annotations").and_then(|a| a.get(CLASS_ANNOTATION)).and_then(Value::as_str);
        if let (Some(a), Some(c)) = (annotation, class) {
            if a != c {
                let ap = Path::root("annotations");
                out.push(field::invalid(
                    &ap.child(CLASS_ANNOTATION),
                    a,
                    "must match `ingressClassName` when both are specified",
                ));
            }
        }
    }
}

fn host_errors(h: &str) -> Vec<String> {
    if h.contains('*') {
        names::wildcard_dns1123_subdomain_errors(h)
    } else {
        names::dns1123_subdomain_errors(h)
    }
}

fn rule(r: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let host = str_of(r, "host");
    if !host.is_empty() {
        let hp = p.child("host");
        if net::parse_ip(host).is_some() {
            out.push(field::invalid(&hp, host, "must be a DNS name, not an IP address"));
        }
        for msg in host_errors(host) {
            out.push(field::invalid(&hp, host, &msg));
        }
    }
    let Some(http) = r.get("http").filter(|h| !h.is_null()) else { return };
    let hp = p.child("http");
    let pp = hp.child("paths");
    let paths = arr(http, "paths");
    if paths.is_empty() {
        out.push(field::required(&pp, ""));
    }
    for (i, path) in paths.iter().enumerate() {
        http_path(path, &pp.index(i), out);
    }
}

fn http_path(path: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let Some(pt) = path.get("pathType").and_then(Value::as_str) else {
        out.push(field::required(&p.child("pathType"), "pathType must be specified"));
        return;
    };
    let value = str_of(path, "path");
    let vp = p.child("path");
    match pt {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                out.push(field::invalid(&vp, value, "must be an absolute path"));
            }
            if !value.is_empty() {
                for seq in INVALID_PATH_SEQUENCES {
                    if value.contains(seq) {
                        out.push(field::invalid(&vp, value, &format!("must not contain '{seq}'")));
                    }
                }
                for suffix in INVALID_PATH_SUFFIXES {
                    if value.ends_with(suffix) {
                        out.push(field::invalid(&vp, value, &format!("cannot end with '{suffix}'")));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                out.push(field::invalid(&vp, value, "must be an absolute path"));
            }
        }
        other => out.push(field::not_supported(&p.child("pathType"), other, PATH_TYPES)),
    }
    backend(path.get("backend").unwrap_or(&NULL), &p.child("backend"), out);
}

/// validateIngressBackend: exactly one of a service or a resource.
fn backend(b: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let resource = b.get("resource").filter(|r| !r.is_null());
    let service = b.get("service").filter(|s| !s.is_null());
    match (resource, service) {
        (Some(_), Some(_)) => out.push(field::invalid(p, "", "cannot set both resource and service backends")),
        (Some(r), None) => typed_reference(r, &p.child("resource"), out),
        (None, Some(s)) => {
            let svc = p.child("service");
            let name = str_of(s, "name");
            if name.is_empty() {
                out.push(field::required(&svc.child("name"), ""));
            } else {
                for msg in names::dns1035_label_errors(name) {
                    out.push(field::invalid(&svc.child("name"), name, &msg));
                }
            }
            let port = s.get("port").unwrap_or(&NULL);
            let port_name = str_of(port, "name");
            let number = int_of(port, "number").unwrap_or(0);
            let pp = svc.child("port");
            if !port_name.is_empty() && number != 0 {
                out.push(field::invalid(p, "", "cannot set both port name & port number"));
            } else if !port_name.is_empty() {
                for msg in names::port_name_errors(port_name) {
                    out.push(field::invalid(&pp.child("name"), port_name, &msg));
                }
            } else if number != 0 {
                if !names::port_num_ok(number) {
                    out.push(field::invalid(&pp.child("number"), number, PORT_RANGE_MSG));
                }
            } else {
                out.push(field::required(p, "port name or number is required"));
            }
        }
        (None, None) => out.push(field::invalid(p, "", "resource or service backend is required")),
    }
}

/// IsPathSegmentName, as a name or kind in a reference must be.
fn path_segment(v: &str, p: &Path, out: &mut Vec<FieldError>) {
    for msg in names::path_segment_errors(v) {
        out.push(field::invalid(p, v, &msg));
    }
}

fn typed_reference(r: &Value, p: &Path, out: &mut Vec<FieldError>) {
    if let Some(g) = r.get("apiGroup").and_then(Value::as_str) {
        for msg in names::dns1123_subdomain_errors(g) {
            out.push(field::invalid(&p.child("apiGroup"), g, &msg));
        }
    }
    for k in ["kind", "name"] {
        let v = str_of(r, k);
        if v.is_empty() {
            out.push(field::required(&p.child(k), ""));
        } else {
            path_segment(v, &p.child(k), out);
        }
    }
}

/// ValidateIngressClass.
pub(crate) fn validate_class(obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, false, out);
    let spec = obj.get("spec").unwrap_or(&NULL);
    let sp = Path::root("spec");
    let cp = sp.child("controller");
    let controller = str_of(spec, "controller");
    if controller.is_empty() {
        out.push(field::required(&cp, ""));
    } else {
        if controller.len() > 250 {
            out.push(field::too_long(&cp, 250));
        }
        domain_prefixed_path(controller, &cp, out);
    }
    if let Some(params) = spec.get("parameters").filter(|v| !v.is_null()) {
        parameters(params, &sp.child("parameters"), out);
    }
}

/// IsDomainPrefixedPath (`example.com/ingress-controller`).
fn domain_prefixed_path(v: &str, p: &Path, out: &mut Vec<FieldError>) {
    let Some((host, path)) = v.split_once('/').filter(|(h, p)| !h.is_empty() && !p.is_empty()) else {
        out.push(field::invalid(p, v, "must be a domain-prefixed path (such as \"acme.io/foo\")"));
        return;
    };
    for msg in names::dns1123_subdomain_errors(host) {
        out.push(field::invalid(p, host, &msg));
    }
    if !names::http_path_ok(path) {
        out.push(field::invalid(p, path, &names::http_path_error()));
    }
}

fn parameters(params: &Value, p: &Path, out: &mut Vec<FieldError>) {
    typed_reference(params, p, out);
    let scope_path = p.child("scope");
    let Some(scope) = params.get("scope").and_then(Value::as_str) else {
        out.push(field::required(&scope_path, ""));
        return;
    };
    let namespace = params.get("namespace").and_then(Value::as_str);
    let np = p.child("namespace");
    match scope {
        "Namespace" => match namespace {
            None => out.push(field::required(&np, "`parameters.scope` is set to 'Namespace'")),
            Some(ns) => {
                for msg in names::dns1123_label_errors(ns) {
                    out.push(field::invalid(&np, ns, &msg));
                }
            }
        },
        "Cluster" => {
            if namespace.is_some() {
                out.push(field::forbidden(&np, "`parameters.scope` is set to 'Cluster'"));
            }
        }
        other => out.push(field::not_supported(&scope_path, other, &["Cluster", "Namespace"])),
    }
}

/// An IngressClass's controller may not change.
pub(crate) fn class_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let (o, n) = (old.pointer("/spec/controller"), new.pointer("/spec/controller"));
    let (o, n) = (o.and_then(Value::as_str).unwrap_or(""), n.and_then(Value::as_str).unwrap_or(""));
    if o != n {
        let sp = Path::root("spec");
        out.push(field::immutable(&sp.child("controller"), n));
    }
}
