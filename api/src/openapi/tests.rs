use std::collections::BTreeSet;

use prost::Message;
use serde_json::json;

use super::proto::{self, non_body_parameter, parameter, parameters_item};
use super::*;

fn v3(path: &str) -> Value {
    let bytes = v3_group_version(path).expect("served group-version");
    serde_json::from_slice(&bytes).expect("valid JSON")
}

fn gvk_json(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "kind": rt.kind, "version": rt.version})
}

/// What kubectl's `supportsQueryParamV3` does: the first PATCH operation of
/// the kind decides. Paths come in no particular order there, so every
/// such operation must carry the parameter.
fn v3_patch_ops_of<'a>(doc: &'a Value, gvk: &Value) -> Vec<&'a Value> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .values()
        .filter_map(|item| item.get("patch"))
        .filter(|op| op.get("x-kubernetes-group-version-kind") == Some(gvk))
        .collect()
}

fn resolve_v3<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    if let Some(first) = schema.get("allOf").and_then(|a| a.get(0)) {
        schema = first;
    }
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("components reference");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_served_kind_has_a_v3_patch_with_field_validation() {
    for rt in catalogue::all() {
        let doc = v3(&gv_path(rt.group, rt.version));
        let ops = v3_patch_ops_of(&doc, &gvk_json(rt));
        assert!(!ops.is_empty(), "{}: no PATCH operation", rt.kind);
        for op in ops {
            let params = op["parameters"].as_array().expect("parameters");
            assert!(
                params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
                "{}: PATCH without fieldValidation",
                rt.kind
            );
            let content = op["requestBody"]["content"].as_object().expect("content");
            for t in PATCH_CONTENT_TYPES {
                assert_eq!(
                    content[*t]["schema"]["$ref"], "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
                    "{}",
                    rt.kind
                );
            }
        }
    }
}

#[test]
fn the_apps_document_describes_deployments() {
    let doc = v3("apis/apps/v1");
    assert_eq!(doc["openapi"], "3.0.0");
    assert_eq!(doc["info"]["version"], "v1.33.0");
    let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    let names: Vec<&str> =
        patch["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["dryRun", "fieldManager", "fieldValidation", "force"]);
    assert_eq!(
        patch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.Deployment"
    );
    for method in ["get", "put", "delete"] {
        assert!(item.get(method).is_some(), "item {method}");
    }
    let collection = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert_eq!(collection["get"]["x-kubernetes-action"], "list");
    assert_eq!(collection["post"]["x-kubernetes-action"], "post");
    assert_eq!(collection["delete"]["x-kubernetes-action"], "deletecollection");
    let post_params: Vec<&str> =
        collection["post"]["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(post_params, ["dryRun", "fieldManager", "fieldValidation"]);

    let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(
        scale["x-kubernetes-group-version-kind"],
        json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
    );
    let status = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]["put"];
    assert_eq!(status["x-kubernetes-group-version-kind"]["kind"], "Deployment");

    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert!(schemas.contains_key("io.k8s.api.autoscaling.v1.Scale"));
    assert!(schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Patch"));
    // Only what the group-version uses: no Service schema here.
    assert!(!schemas.contains_key("io.k8s.api.core.v1.Service"));
}

#[test]
fn v3_references_resolve_and_stand_alone() {
    for (group, version) in catalogue::group_versions() {
        let doc = v3(&gv_path(group, version));
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        for r in refs {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("reference {r}"));
            assert!(doc["components"]["schemas"].get(name).is_some(), "{group}/{version}: dangling {r}");
        }
        let text = serde_json::to_string(&doc).unwrap_or_default();
        assert!(!text.contains("#/definitions/"), "{group}/{version}");
    }
}

#[test]
fn strategic_merge_metadata_is_found_the_way_kubectl_looks_for_it() {
    // PatchMetaFromOpenAPIV3: the extensions sit on the property; allOf[0]
    // or $ref leads to the next schema.
    let doc = v3("apis/apps/v1");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let gvk = json!({"group": "apps", "kind": "Deployment", "version": "v1"});
    let root = schemas
        .values()
        .find(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|l| l.contains(&gvk)))
        .expect("the Deployment schema");
    let spec = resolve_v3(&doc, &root["properties"]["spec"]);
    let template = resolve_v3(&doc, &spec["properties"]["template"]);
    let pod_spec = resolve_v3(&doc, &template["properties"]["spec"]);
    let containers = &pod_spec["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    let container = resolve_v3(&doc, &containers["items"]);
    assert_eq!(container["properties"]["ports"]["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(pod_spec["properties"]["volumes"]["x-kubernetes-patch-strategy"], "merge,retainKeys");
}

#[test]
fn explain_finds_pod_containers() {
    // kubectl explain's template: the GVK from the collection's GET, then
    // the schema that lists it, then the field path.
    let doc = v3("api/v1");
    let gvk = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"]["x-kubernetes-group-version-kind"];
    assert_eq!(gvk, &json!({"group": "", "kind": "Pod", "version": "v1"}));
    let pod = doc["components"]["schemas"]
        .as_object()
        .and_then(|s| {
            s.values().find(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|l| l.contains(gvk)))
        })
        .expect("Pod schema");
    let spec = resolve_v3(&doc, &pod["properties"]["spec"]);
    let containers = &spec["properties"]["containers"];
    assert_eq!(containers["type"], "array");
    let container = resolve_v3(&doc, &containers["items"]);
    assert!(container["properties"]["image"]["description"].is_string());
    let nodes = &doc["paths"]["/api/v1/nodes"]["get"]["x-kubernetes-group-version-kind"];
    assert_eq!(nodes["kind"], "Node");
}

#[test]
fn the_index_lists_every_group_version_with_its_hash() {
    let index = v3_index();
    let paths = index["paths"].as_object().expect("paths");
    let want: BTreeSet<String> = catalogue::group_versions().into_iter().map(|(g, v)| gv_path(g, v)).collect();
    assert_eq!(paths.keys().cloned().collect::<BTreeSet<_>>(), want);
    for (path, entry) in paths {
        let doc = v3_group_version(path).expect("document");
        let url = entry["serverRelativeURL"].as_str().expect("url");
        assert_eq!(url, format!("/openapi/v3/{path}?hash={}", hash(&doc)));
        assert_eq!(hash(&doc).len(), 32);
    }
    assert!(v3_group_version("apis/batch/v1").is_none());
}

fn yaml_of(ext: &[proto::NamedAny], name: &str) -> Option<Value> {
    ext.iter().find(|e| e.name == name).and_then(|e| e.value.as_ref()).map(proto::any_json)
}

fn query_param_names(op: &proto::Operation) -> Vec<String> {
    op.parameters
        .iter()
        .filter_map(|p| match &p.oneof {
            Some(parameters_item::Oneof::Parameter(proto::Parameter {
                oneof:
                    Some(parameter::Oneof::NonBodyParameter(proto::NonBodyParameter {
                        oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(q)),
                    })),
            })) => Some(q.name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_v2_protobuf_decodes_with_what_kubectl_1_27_reads() {
    let bytes = v2_protobuf();
    let doc = proto::Document::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(doc.swagger, "2.0");

    // supportsQueryParam: for every PATCH whose first GVK extension is the
    // kind's, a query parameter named fieldValidation.
    for rt in catalogue::all() {
        let want = gvk_json(rt);
        let patches: Vec<&proto::Operation> = doc
            .paths
            .iter()
            .flat_map(|p| &p.path)
            .filter_map(|p| p.value.as_ref()?.patch.as_ref())
            .filter(|op| yaml_of(&op.vendor_extension, "x-kubernetes-group-version-kind").as_ref() == Some(&want))
            .collect();
        assert!(!patches.is_empty(), "{}", rt.kind);
        for op in patches {
            assert!(query_param_names(op).iter().any(|n| n == "fieldValidation"), "{}", rt.kind);
            assert!(op.consumes.iter().any(|c| c == "application/strategic-merge-patch+json"), "{}", rt.kind);
        }
    }

    let deployment_patch = doc
        .paths
        .iter()
        .flat_map(|p| &p.path)
        .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .and_then(|p| p.value.as_ref()?.patch.as_ref())
        .expect("Deployment PATCH");
    assert_eq!(
        yaml_of(&deployment_patch.vendor_extension, "x-kubernetes-group-version-kind"),
        Some(json!({"group": "apps", "kind": "Deployment", "version": "v1"}))
    );
    assert_eq!(query_param_names(deployment_patch), ["dryRun", "fieldManager", "fieldValidation", "force"]);

    // Schema look-up by GVK (explain, strategic merge): definitions carry a
    // list of GVKs; the patch metadata sits on the properties.
    let defs = doc.definitions.as_ref().expect("definitions");
    let deployment = defs
        .additional_properties
        .iter()
        .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
        .and_then(|d| d.value.as_ref())
        .expect("Deployment definition");
    assert_eq!(
        yaml_of(&deployment.vendor_extension, "x-kubernetes-group-version-kind"),
        Some(json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]))
    );
    let pod_spec = defs
        .additional_properties
        .iter()
        .find(|d| d.name == "io.k8s.api.core.v1.PodSpec")
        .and_then(|d| d.value.as_ref())
        .expect("PodSpec definition");
    let containers = pod_spec
        .properties
        .as_ref()
        .and_then(|p| p.additional_properties.iter().find(|n| n.name == "containers"))
        .and_then(|n| n.value.as_ref())
        .expect("containers");
    assert_eq!(yaml_of(&containers.vendor_extension, "x-kubernetes-patch-merge-key"), Some(json!("name")));
    assert_eq!(containers.items.as_ref().map(|i| i.schema.len()), Some(1));
}

/// The rules of kube-openapi's `proto.NewOpenAPIData`, which refuses the
/// whole document on the first schema that breaks one.
fn check_proto_schema(s: &proto::Schema, names: &BTreeSet<&str>, at: &str) {
    if !s.r#ref.is_empty() {
        let target = s.r#ref.strip_prefix("#/definitions/").unwrap_or_else(|| panic!("{at}: {}", s.r#ref));
        assert!(names.contains(target), "{at}: unknown model {target}");
        assert!(s.r#type.is_none() && s.properties.is_none(), "{at}: reference with a type");
        return;
    }
    let types = s.r#type.as_ref().map(|t| t.value.clone()).unwrap_or_default();
    assert!(types.len() <= 1, "{at}: several types");
    match types.first().map(String::as_str) {
        Some("array") => {
            let items = s.items.as_ref().map(|i| i.schema.as_slice()).unwrap_or_default();
            assert_eq!(items.len(), 1, "{at}: array items");
            check_proto_schema(&items[0], names, at);
        }
        Some("object") | None => {
            for p in s.properties.iter().flat_map(|p| &p.additional_properties) {
                let sub = p.value.as_ref().unwrap_or_else(|| panic!("{at}.{}: empty", p.name));
                check_proto_schema(sub, names, &format!("{at}.{}", p.name));
            }
            if let Some(proto::additional_properties_item::Oneof::Schema(sub)) =
                s.additional_properties.as_ref().and_then(|a| a.oneof.as_ref())
            {
                check_proto_schema(sub, names, at);
            }
        }
        Some(t) => assert!(["string", "number", "integer", "boolean"].contains(&t), "{at}: type {t}"),
    }
}

#[test]
fn the_v2_definitions_parse_with_kube_openapi_rules() {
    let doc = proto::Document::decode(v2_protobuf().as_slice()).expect("decodes");
    let defs = &doc.definitions.as_ref().expect("definitions").additional_properties;
    let names: BTreeSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    for d in defs {
        check_proto_schema(d.value.as_ref().expect("schema"), &names, &d.name);
    }
    let int_or_string = defs.iter().find(|d| d.name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString");
    assert_eq!(int_or_string.and_then(|d| d.value.as_ref()).map(|s| s.format.as_str()), Some("int-or-string"));
    // Every reference of an operation resolves as well.
    let json = v2_json();
    let mut refs = Vec::new();
    collect_refs(&json["paths"], &mut refs);
    for r in refs {
        let name = r.strip_prefix("#/definitions/").unwrap_or(&r);
        assert!(names.contains(name), "dangling {r}");
    }
}
