use serde_json::json;

use super::*;

fn rt(kind: &str) -> &'static ResourceType {
    catalogue::all().iter().find(|r| r.kind == kind).expect("kind is served")
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx:1.25",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "1"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": 0.25}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5}
                    }],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            }
        }
    })
}

fn container_mut(obj: &mut Value) -> &mut Value {
    &mut obj["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn every_served_kind_has_a_schema_with_its_gvk() {
    let defs = definitions();
    for rt in catalogue::all() {
        let schema = defs.get(rt.definition).unwrap_or_else(|| panic!("{} has no schema", rt.definition));
        let gvk = &schema["x-kubernetes-group-version-kind"];
        assert_eq!(gvk, &json!([{"group": rt.group, "kind": rt.kind, "version": rt.version}]), "{}", rt.kind);
        assert!(defs.contains_key(&list_definition(rt)), "{} has no list", rt.kind);
        assert!(decode_typed(rt.definition, &json!({})).is_some(), "{} has no typed struct", rt.kind);
    }
}

#[test]
fn every_reference_resolves() {
    let defs = definitions();
    let mut refs = Vec::new();
    for schema in defs.values() {
        collect_refs(schema, &mut refs);
    }
    for r in refs {
        assert!(defs.contains_key(&r), "dangling reference to {r}");
    }
}

#[test]
fn tables_are_sorted_for_binary_search() {
    let keys: Vec<_> = tables::FIELD_EXTENSIONS.iter().map(|e| (e.definition, e.field)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let keys: Vec<_> = tables::GO_TYPES.iter().map(|e| (e.definition, e.field)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn patch_metadata_follows_kubernetes_struct_tags() {
    let pm = |d: &str, f: &str| patch_meta(d, f).map(|p| (p.strategy, p.merge_key));
    assert_eq!(pm("io.k8s.api.core.v1.PodSpec", "containers"), Some(("merge", Some("name"))));
    assert_eq!(pm("io.k8s.api.core.v1.PodSpec", "volumes"), Some(("merge,retainKeys", Some("name"))));
    assert_eq!(pm("io.k8s.api.core.v1.Container", "ports"), Some(("merge", Some("containerPort"))));
    assert_eq!(pm("io.k8s.api.core.v1.Container", "volumeMounts"), Some(("merge", Some("mountPath"))));
    assert_eq!(pm("io.k8s.api.core.v1.ServiceSpec", "ports"), Some(("merge", Some("port"))));
    assert_eq!(pm("io.k8s.api.apps.v1.DeploymentStatus", "conditions"), Some(("merge", Some("type"))));
    assert_eq!(pm("io.k8s.api.apps.v1.DeploymentSpec", "strategy"), Some(("retainKeys", None)));
    assert_eq!(pm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences"), Some(("merge", Some("uid"))));
    assert_eq!(pm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers"), Some(("merge", None)));
    assert_eq!(pm("io.k8s.api.core.v1.Container", "args"), None);
    assert_eq!(pm("io.k8s.api.networking.v1.IngressSpec", "rules"), None);

    let ports = field_extensions("io.k8s.api.core.v1.Container", "ports").expect("tagged");
    assert_eq!((ports.list_type, ports.list_map_keys), (Some("map"), &["containerPort", "protocol"][..]));
}

#[test]
fn field_definitions_resolve_lists_maps_and_structs() {
    assert_eq!(field_definition("io.k8s.api.apps.v1.Deployment", "spec"), Some("io.k8s.api.apps.v1.DeploymentSpec"));
    assert_eq!(field_definition("io.k8s.api.core.v1.PodSpec", "containers"), Some("io.k8s.api.core.v1.Container"));
    assert_eq!(field_definition("io.k8s.api.core.v1.PodTemplateSpec", "spec"), Some("io.k8s.api.core.v1.PodSpec"));
    assert_eq!(field_definition("io.k8s.api.core.v1.Container", "name"), None);
    assert_eq!(field_definition("io.k8s.api.core.v1.ResourceRequirements", "limits"), None);
    assert_eq!(field_definition("io.k8s.api.core.v1.Container", "nope"), None);
}

#[test]
fn extensions_are_on_the_schemas() {
    let defs = definitions();
    let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(defs["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"], "atomic");
}

/// The manifests of examples/, one object per YAML document.
fn example(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("examples/{file}: {e}"));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("examples/{file}: {e}"))
}

#[test]
fn the_articles_deployment_gets_the_api_servers_message() {
    // `containerPort: 8080s`, as published.
    let objects = example("article/deployment-as-published.yaml");
    let out = check(rt("Deployment"), &objects[0]);
    let err = out.decode_error().expect("a decoding error");
    assert_eq!(
        err.message,
        "json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
    );
    assert_eq!(err.path, "spec.template.spec.containers[0].ports[0].containerPort");
    assert_eq!(out.decode_errors.len(), 1);
    assert!(out.unknown_fields.is_empty());
}

#[test]
fn the_corrected_article_manifests_pass() {
    for obj in example("service-test.yaml") {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let out = check(rt(kind), &obj);
        assert!(out.is_clean(), "{kind}: {out:?}");
    }
}

#[test]
fn type_mismatches_name_go_types() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|o| o["spec"]["replicas"] = json!("two")),
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            Box::new(|o| o["spec"]["replicas"] = json!(1.5)),
            "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            Box::new(|o| o["spec"]["replicas"] = json!(4294967296u64)),
            "json: cannot unmarshal number 4294967296 into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            Box::new(|o| o["metadata"]["labels"]["app"] = json!(1)),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string",
        ),
        (
            Box::new(|o| o["spec"]["template"] = json!("x")),
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.template of type v1.PodTemplateSpec",
        ),
        (
            Box::new(|o| o["spec"]["template"]["spec"]["containers"] = json!({"name": "x"})),
            "json: cannot unmarshal object into Go struct field PodSpec.spec.template.spec.containers of type []v1.Container",
        ),
        (
            Box::new(|o| container_mut(o)["ports"][0]["protocol"] = json!(6)),
            "json: cannot unmarshal number into Go struct field ContainerPort.spec.template.spec.containers.ports.protocol of type v1.Protocol",
        ),
        (
            Box::new(|o| container_mut(o)["args"] = json!(["a", true])),
            "json: cannot unmarshal bool into Go struct field Container.spec.template.spec.containers.args of type string",
        ),
        (
            Box::new(|o| container_mut(o)["resources"]["limits"] = json!("1")),
            "json: cannot unmarshal string into Go struct field ResourceRequirements.spec.template.spec.containers.resources.limits of type v1.ResourceList",
        ),
        (
            Box::new(|o| container_mut(o)["stdin"] = json!("yes")),
            "json: cannot unmarshal string into Go struct field Container.spec.template.spec.containers.stdin of type bool",
        ),
        (
            Box::new(|o| container_mut(o)["resources"]["limits"]["cpu"] = json!("lots")),
            golang::QUANTITY_FORMAT,
        ),
        (
            Box::new(|o| container_mut(o)["readinessProbe"]["httpGet"]["port"] = json!(true)),
            "json: cannot unmarshal bool into Go value of type int32",
        ),
        (
            Box::new(|o| o["metadata"]["creationTimestamp"] = json!(5)),
            "json: cannot unmarshal number into Go value of type string",
        ),
    ];
    for (mutate, want) in cases {
        let mut obj = deployment();
        mutate(&mut obj);
        let out = check(rt("Deployment"), &obj);
        assert_eq!(out.decode_error().map(|e| e.message.as_str()), Some(want));
    }
}

#[test]
fn a_fatal_error_wins_over_an_earlier_one_as_in_go() {
    let mut obj = deployment();
    obj["spec"]["replicas"] = json!("two");
    container_mut(&mut obj)["resources"]["limits"]["cpu"] = json!("lots");
    let out = check(rt("Deployment"), &obj);
    assert_eq!(out.decode_errors.len(), 2);
    assert_eq!(out.decode_error().map(|e| e.message.as_str()), Some(golang::QUANTITY_FORMAT));
}

#[test]
fn unknown_fields_are_reported_with_their_paths() {
    let mut obj = deployment();
    container_mut(&mut obj)["imagePullPolicyy"] = json!("Always");
    obj["spec"]["paused2"] = json!(true);
    obj["metadata"]["labels"]["anything"] = json!("goes");
    obj["metadata"]["annotations"]["free.form/key"] = json!("x");
    let out = check(rt("Deployment"), &obj);
    assert!(out.decode_errors.is_empty(), "{:?}", out.decode_errors);
    assert_eq!(out.unknown_fields, vec!["spec.template.spec.containers[0].imagePullPolicyy", "spec.paused2"]);
    assert_eq!(
        out.strict_decoding_message().as_deref(),
        Some(
            r#"strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolicyy", unknown field "spec.paused2""#
        )
    );
}

#[test]
fn an_extensions_v1beta1_ingress_backend_is_unknown_in_v1() {
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web"},
        "spec": {"rules": [{"host": "web.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"serviceName": "web", "servicePort": 80}}
        ]}}]}
    });
    let out = check(rt("Ingress"), &obj);
    assert!(out.decode_errors.is_empty(), "{:?}", out.decode_errors);
    assert_eq!(
        out.unknown_fields,
        vec!["spec.rules[0].http.paths[0].backend.serviceName", "spec.rules[0].http.paths[0].backend.servicePort"]
    );
}

#[test]
fn valid_objects_pass() {
    let objects = [
        ("Deployment", deployment()),
        (
            "Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"type": "ClusterIP", "selector": {"app": "web"},
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                                      {"name": "alt", "port": 81, "targetPort": "http"}]},
                   "status": {"loadBalancer": {}}}),
        ),
        (
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "nginx1", "creationTimestamp": "2024-05-01T10:00:00Z",
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                                     "uid": "5f4e", "controller": true}],
                                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                                                   "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]},
                   "spec": {"containers": [{"name": "nginx1", "image": "nginx", "command": ["sh", "-c", "sleep 1"],
                                            "securityContext": {"runAsUser": 1000, "capabilities": {"add": ["NET_ADMIN"]}}}],
                            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "nodeSelector": {"a": "b"},
                            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                              "lastTransitionTime": "2024-05-01T10:00:01Z"}], "podIP": "10.42.0.5"}}),
        ),
        (
            "Ingress",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                   "spec": {"ingressClassName": "skiff", "tls": [{"hosts": ["a.example"], "secretName": "tls"}],
                            "rules": [{"host": "a.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
        (
            "Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "type": "Opaque",
                   "data": {"password": "aHVudGVyMg=="}, "stringData": {"user": "admin"}}),
        ),
        (
            "Event",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
                   "involvedObject": {"kind": "Pod", "name": "nginx1"}, "reason": "Started", "count": 1,
                   "eventTime": "2024-05-01T10:00:00.123456Z", "firstTimestamp": null}),
        ),
    ];
    for (kind, obj) in objects {
        let out = check(rt(kind), &obj);
        assert!(out.is_clean(), "{kind}: {out:?}");
    }
}

#[test]
fn subresource_bodies_are_checked_too() {
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"},
                       "spec": {"replicas": "3"}, "status": {"replicas": 2, "selector": "app=web"}});
    let out = check_definition("io.k8s.api.autoscaling.v1.Scale", &scale);
    assert_eq!(
        out.decode_error().map(|e| e.message.as_str()),
        Some("json: cannot unmarshal string into Go struct field ScaleSpec.spec.replicas of type int32")
    );
    let fine = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 3}});
    assert!(check_definition("io.k8s.api.autoscaling.v1.Scale", &fine).is_clean());
}

#[test]
fn secret_data_must_be_base64() {
    let obj =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "data": {"password": "hunter2!"}});
    let out = check(rt("Secret"), &obj);
    let err = out.decode_error().expect("an error");
    assert_eq!(err.message, "illegal base64 data at input byte 7");
    assert_eq!(err.path, "data.password");
}

#[test]
fn a_top_level_mismatch_has_no_struct_context() {
    let out = check(rt("Pod"), &json!(["not", "an", "object"]));
    assert_eq!(
        out.decode_error().map(|e| e.message.as_str()),
        Some("json: cannot unmarshal array into Go value of type v1.Pod")
    );
}

#[test]
fn the_typed_backstop_reports_what_the_walk_lets_through() {
    // Go leaves a zero value for a null list item; the typed struct
    // refuses it, and the backstop says so.
    let mut obj = deployment();
    obj["spec"]["template"]["spec"]["containers"] = json!([null]);
    let out = check(rt("Deployment"), &obj);
    let err = out.decode_error().expect("the backstop error");
    assert!(err.message.starts_with("spec.template.spec.containers"), "{}", err.message);
}
