//! Deployments and ReplicaSets (pkg/apis/apps/validation), and the
//! selector immutability their registry strategies add on update.

use serde_json::Value;

use super::field::{self, Path};
use super::meta::{self, NameRule};
use super::names;
use super::{govalue, int_of, pod, semantic_eq, str_of, FieldError, NULL};

const NEGATIVE: &str = "must be greater than or equal to 0";

fn nonnegative(p: &Path, v: Option<i64>, out: &mut Vec<FieldError>) {
    if let Some(v) = v.filter(|v| *v < 0) {
        out.push(field::invalid(p, v, NEGATIVE));
    }
}

/// ValidateDeployment / ValidateReplicaSet.
pub(crate) fn validate(kind: &str, obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    spec(kind, obj.get("spec").unwrap_or(&NULL), out);
}

/// The spec checks, which an update runs after its metadata checks.
pub(crate) fn spec(kind: &str, spec: &Value, out: &mut Vec<FieldError>) {
    let p = Path::root("spec");
    nonnegative(&p.child("replicas"), int_of(spec, "replicas"), out);
    if kind == "ReplicaSet" {
        nonnegative(&p.child("minReadySeconds"), int_of(spec, "minReadySeconds"), out);
    }
    let sp = p.child("selector");
    let selector = spec.get("selector").filter(|s| !s.is_null());
    let mut selector_ok = true;
    match selector {
        None => out.push(field::required(&sp, "")),
        Some(sel) => {
            let before = out.len();
            meta::label_selector(sel, &sp, out);
            selector_ok = out.len() == before;
            if meta::selector_is_empty(sel) {
                // the message says deployment for ReplicaSets too
                out.push(field::invalid(&sp, govalue::label_selector(sel), "empty selector is invalid for deployment"));
            }
        }
    }
    let template = spec.get("template").unwrap_or(&NULL);
    let tp = p.child("template");
    if let (false, Some(sel)) = (selector_ok, selector) {
        out.push(field::invalid(&sp, govalue::label_selector(sel), "invalid label selector"));
    } else {
        // a missing selector selects nothing, an empty one everything
        let labels = template.pointer("/metadata/labels");
        let matches = selector.is_some_and(|s| meta::selector_is_empty(s) || meta::selector_matches(s, labels));
        if !matches {
            let mp = tp.child("metadata");
            out.push(field::invalid(
                &mp.child("labels"),
                govalue::string_map(labels),
                "`selector` does not match template `labels`",
            ));
        }
        pod::pod_template(template, &tp, out);
        let tsp = tp.child("spec");
        let restart = template.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("");
        if restart != "Always" {
            out.push(field::not_supported(&tsp.child("restartPolicy"), restart, &["Always"]));
        }
        if template.pointer("/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
            out.push(field::forbidden(
                &tsp.child("activeDeadlineSeconds"),
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            ));
        }
    }
    if kind == "Deployment" {
        strategy(spec.get("strategy").unwrap_or(&NULL), &p.child("strategy"), out);
        let min_ready = int_of(spec, "minReadySeconds").unwrap_or(0);
        nonnegative(&p.child("minReadySeconds"), Some(min_ready), out);
        nonnegative(&p.child("revisionHistoryLimit"), int_of(spec, "revisionHistoryLimit"), out);
        if let Some(pd) = int_of(spec, "progressDeadlineSeconds") {
            let pp = p.child("progressDeadlineSeconds");
            nonnegative(&pp, Some(pd), out);
            if pd <= min_ready {
                out.push(field::invalid(&pp, pd, "must be greater than minReadySeconds"));
            }
        }
    }
}

fn strategy(s: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let ru = s.get("rollingUpdate").filter(|r| !r.is_null());
    match str_of(s, "type") {
        "Recreate" => {
            if ru.is_some() {
                out.push(field::forbidden(
                    &p.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match ru {
            None => out.push(field::required(&p.child("rollingUpdate"), "this should be defaulted and never be nil")),
            Some(ru) => rolling_update(ru, &p.child("rollingUpdate"), out),
        },
        other => {
            let rolling = if ru.is_some() {
                "(*apps.RollingUpdateDeployment)(0xc000000000)"
            } else {
                "(*apps.RollingUpdateDeployment)(nil)"
            };
            let shown = format!("apps.DeploymentStrategy{{Type:{}, RollingUpdate:{rolling}}}", govalue::quote(other));
            out.push(field::not_supported(p, shown, &["Recreate", "RollingUpdate"]));
        }
    }
}

/// ValidatePositiveIntOrPercent.
fn int_or_percent(v: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) {
    match v {
        Some(Value::String(s)) => {
            if !names::is_percent(s) {
                out.push(field::invalid(p, govalue::int_or_string(v), &names::percent_error()));
            }
        }
        v => nonnegative(p, Some(v.and_then(Value::as_i64).unwrap_or(0)), out),
    }
}

/// getIntOrPercentValue: the number, or the percentage as a number.
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => match s.strip_suffix('%') {
            Some(d) if names::is_percent(s) => d.parse().unwrap_or(0),
            _ => s.parse().unwrap_or(0),
        },
        v => v.and_then(Value::as_i64).unwrap_or(0),
    }
}

fn rolling_update(ru: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let mu = ru.get("maxUnavailable");
    let ms = ru.get("maxSurge");
    let mup = p.child("maxUnavailable");
    int_or_percent(mu, &mup, out);
    int_or_percent(ms, &p.child("maxSurge"), out);
    if int_or_percent_value(mu) == 0 && int_or_percent_value(ms) == 0 {
        out.push(field::invalid(&mup, govalue::int_or_string(mu), "may not be 0 when `maxSurge` is 0"));
    }
    if let Some(Value::String(s)) = mu {
        if names::is_percent(s) && int_or_percent_value(mu) > 100 {
            out.push(field::invalid(&mup, govalue::int_or_string(mu), "must not be greater than 100%"));
        }
    }
}

/// The selector may not change (apps/v1 and later).
pub(crate) fn selector_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
    if !semantic_eq(o, n) {
        let p = Path::root("spec");
        let p = p.child("selector");
        match n.filter(|v| !v.is_null()) {
            Some(sel) => out.push(field::immutable(&p, govalue::label_selector(sel))),
            None => out.push(field::immutable(&p, "null")),
        }
    }
}
