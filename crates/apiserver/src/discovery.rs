//! Discovery: aggregated (apidiscovery.k8s.io v2 and v2beta1, chosen by
//! Accept) and the legacy APIVersions / APIGroupList / APIResourceList.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use skiff_api::catalogue::{self, ResourceType, VERBS};

use crate::error::ApiError;
use crate::request::Route;

/// Which aggregated discovery version the client asked for, if any.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for part in accept.split(',') {
        let params: Vec<(&str, &str)> = part.split(';').skip(1).filter_map(|p| p.trim().split_once('=')).collect();
        let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| *pk == k && *pv == v);
        if has("g", "apidiscovery.k8s.io") && has("as", "APIGroupDiscoveryList") {
            if has("v", "v2") {
                return Some("v2");
            }
            if has("v", "v2beta1") {
                return Some("v2beta1");
            }
        }
        if part.split(';').next().is_some_and(|m| m.trim() == "application/json") && params.is_empty() {
            return None;
        }
    }
    None
}

fn resource_entry(r: &ResourceType) -> Value {
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
        e["subresources"] = Value::Array(subs);
    }
    e
}

fn group_item(group: &str) -> Value {
    let versions: Vec<Value> = catalogue::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            let resources: Vec<Value> =
                catalogue::all().iter().filter(|r| r.group == g && r.version == v).map(resource_entry).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": versions})
}

fn aggregated(version: &str, core: bool) -> Response {
    let groups: Vec<&str> = {
        let mut gs: Vec<&str> = Vec::new();
        for (g, _) in catalogue::group_versions() {
            if (g.is_empty() == core) && !gs.contains(&g) {
                gs.push(g);
            }
        }
        gs
    };
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": groups.into_iter().map(group_item).collect::<Vec<_>>(),
    });
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body.to_string()).into_response()
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = catalogue::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&ResourceType> = catalogue::all().iter().filter(|r| r.group == group && r.version == version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in rs {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        for s in r.subresources {
            let mut se = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                se["group"] = json!(s.group);
                se["version"] = json!(s.version);
            }
            resources.push(se);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn json(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

pub fn answer(route: &Route, headers: &HeaderMap, server_address: &str) -> Result<Response, ApiError> {
    match route {
        Route::CoreGroups => Ok(match aggregated_version(headers) {
            Some(v) => aggregated(v, true),
            None => json(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
            })),
        }),
        Route::Groups => Ok(match aggregated_version(headers) {
            Some(v) => aggregated(v, false),
            None => {
                let mut groups: Vec<&str> = Vec::new();
                for (g, _) in catalogue::group_versions() {
                    if !g.is_empty() && !groups.contains(&g) {
                        groups.push(g);
                    }
                }
                json(json!({
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": groups.into_iter().map(group_entry).collect::<Vec<_>>(),
                }))
            }
        }),
        Route::Group(g) => {
            if catalogue::group_versions().iter().any(|(gg, _)| gg == g) {
                let mut e = group_entry(g);
                e["kind"] = json!("APIGroup");
                e["apiVersion"] = json!("v1");
                Ok(json(e))
            } else {
                Err(ApiError::no_route())
            }
        }
        Route::ResourceList { group, version } => {
            resource_list(group, version).map(json).ok_or_else(ApiError::no_route)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_aggregated_version() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json".parse().unwrap());
        assert_eq!(aggregated_version(&h), Some("v2"));
        h.insert(
            header::ACCEPT,
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
                .parse()
                .unwrap(),
        );
        assert_eq!(aggregated_version(&h), Some("v2beta1"));
        h.insert(header::ACCEPT, "application/json, */*".parse().unwrap());
        assert_eq!(aggregated_version(&h), None);
    }

    #[test]
    fn legacy_lists_scale_in_autoscaling() {
        let l = resource_list("apps", "v1").unwrap();
        let scale = l["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments/scale").unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }
}
