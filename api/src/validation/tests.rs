//! The rules as a user meets them: objects go through defaulting, then
//! validation, and each test checks the exact `field: message` lines.

use serde_json::{json, Value};

use super::*;

fn rt(kind: &str) -> &'static ResourceType {
    crate::catalogue::all().iter().find(|r| r.kind == kind).unwrap()
}

fn defaulted(kind: &str, mut obj: Value) -> Value {
    crate::defaults::apply(rt(kind), &mut obj);
    obj
}

fn lines(errs: Vec<FieldError>) -> Vec<String> {
    errs.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect()
}

/// Validation of a new object of `kind`, after defaulting.
fn create(kind: &str, obj: Value) -> Vec<String> {
    lines(validate(rt(kind), &defaulted(kind, obj)))
}

/// Validation of an update from `old` to `new`, both defaulted.
fn update(kind: &str, old: Value, new: Value) -> Vec<String> {
    lines(validate_update(rt(kind), &defaulted(kind, old), &defaulted(kind, new)))
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn web() -> Value {
    json!({"name": "web", "image": "nginx:1.25"})
}

/// A pod whose only container is `c`.
fn pod_with(c: Value) -> Value {
    pod(json!({"containers": [c]}))
}

fn merge(mut base: Value, patch: Value) -> Value {
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

// ---- metadata ----

#[test]
fn names_follow_each_kinds_rule() {
    let e = validate_metadata(rt("Pod"), &json!({"metadata": {"name": "Web", "namespace": "default"}}));
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with("Invalid value: \"Web\": a lowercase RFC 1123 subdomain"));
    assert!(validate_metadata(rt("Pod"), &json!({"metadata": {"name": "a.b", "namespace": "default"}})).is_empty());
    let e = validate_metadata(rt("Service"), &json!({"metadata": {"name": "1abc", "namespace": "default"}}));
    assert!(e[0].message.starts_with("Invalid value: \"1abc\": a DNS-1035 label"));
    let e = validate_metadata(rt("Pod"), &json!({"metadata": {"namespace": "default"}}));
    assert_eq!(e[0].message, "Required value: name or generateName is required");
    let e = lines(validate(rt("Namespace"), &json!({"metadata": {"name": "team.a"}})));
    assert_eq!(e, vec!["metadata.name: Invalid value: \"team.a\": must not contain dots"]);
    let e = lines(validate(
        rt("ConfigMap"),
        &json!({"metadata": {"name": "c", "namespace": "default", "labels": {"app": "a b"}}}),
    ));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("metadata.labels: Invalid value: \"a b\": a valid label must be an empty string"));
}

// ---- pods ----

#[test]
fn a_valid_pod_has_no_errors() {
    let p = pod(json!({
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
        "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
        "containers": [{
            "name": "web", "image": "nginx:1.25",
            "ports": [{"name": "http", "containerPort": 80}],
            "env": [{"name": "MODE", "value": "x"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 80}}
        }],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
    }));
    assert_eq!(create("Pod", p), Vec::<String>::new());
}

#[test]
fn containers_are_required() {
    assert_eq!(create("Pod", pod(json!({}))), vec!["spec.containers: Required value"]);
}

#[test]
fn container_names_are_labels_unique_across_init_and_regular() {
    let p = pod(json!({"initContainers": [web()], "containers": [web(), merge(web(), json!({"name": "Web"}))]}));
    assert_eq!(
        create("Pod", p),
        vec![
            format!("spec.containers[1].name: Invalid value: \"Web\": {LABEL_MSG}"),
            "spec.initContainers[0].name: Duplicate value: \"web\"".to_string(),
        ]
    );
    let p = pod(json!({"containers": [web(), web()]}));
    assert_eq!(create("Pod", p), vec!["spec.containers[1].name: Duplicate value: \"web\""]);
}

#[test]
fn image_is_required_and_unpadded() {
    assert_eq!(create("Pod", pod_with(json!({"name": "web"}))), vec!["spec.containers[0].image: Required value"]);
    assert_eq!(
        create("Pod", pod_with(json!({"name": "web", "image": " nginx"}))),
        vec!["spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace"]
    );
}

#[test]
fn policies_take_supported_values() {
    let c = merge(web(), json!({"imagePullPolicy": "Sometimes"}));
    let p = pod(json!({"containers": [c], "restartPolicy": "Maybe", "dnsPolicy": "Google"}));
    assert_eq!(
        create("Pod", p),
        vec![
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.restartPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
        ]
    );
}

#[test]
fn container_ports() {
    let c = merge(
        web(),
        json!({"ports": [
            {"containerPort": 0},
            {"containerPort": 70000, "hostPort": 70000, "protocol": "HTTP"},
            {"name": "http", "containerPort": 80},
            {"name": "http", "containerPort": 81},
            {"name": "-bad--", "containerPort": 82},
            {"name": "8080", "containerPort": 83},
        ]}),
    );
    assert_eq!(
        create("Pod", pod_with(c)),
        vec![
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].ports[3].name: Duplicate value: \"http\"",
            "spec.containers[0].ports[4].name: Invalid value: \"-bad--\": must not contain consecutive hyphens",
            "spec.containers[0].ports[4].name: Invalid value: \"-bad--\": must not begin or end with a hyphen",
            "spec.containers[0].ports[5].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
        ]
    );
}

#[test]
fn host_ports_may_not_collide() {
    let a = merge(web(), json!({"ports": [{"containerPort": 80, "hostPort": 8080}]}));
    let b = json!({"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]});
    assert_eq!(
        create("Pod", pod(json!({"containers": [a, b]}))),
        vec!["spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//8080\""]
    );
}

#[test]
fn env_names_are_printable_ascii_without_equals() {
    let c = merge(
        web(),
        json!({"env": [{"name": "A=B"}, {"name": "my.var-1"}, {"name": ""}, {"name": "X", "valueFrom": {}}]}),
    );
    assert_eq!(
        create("Pod", pod_with(c)),
        vec![
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].env[2].name: Required value",
            "spec.containers[0].env[3].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ]
    );
    let c =
        merge(web(), json!({"env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.restartPolicy"}}}]}));
    assert_eq!(
        create("Pod", pod_with(c)),
        vec!["spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.restartPolicy\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\""]
    );
}

#[test]
fn volume_mounts_refer_to_volumes() {
    let c = merge(
        web(),
        json!({"volumeMounts": [{"name": "missing", "mountPath": "/a"}, {"name": "data", "mountPath": "/a"}]}),
    );
    let p = pod(json!({"containers": [c], "volumes": [{"name": "data", "emptyDir": {}}]}));
    assert_eq!(
        create("Pod", p),
        vec![
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
        ]
    );
}

#[test]
fn volumes_have_label_names_unique_and_one_source() {
    let p = pod(json!({"containers": [web()], "volumes": [
        {"name": "Data", "emptyDir": {}},
        {"name": "a", "emptyDir": {}},
        {"name": "a", "emptyDir": {}},
        {"name": "b"},
        {"name": "c", "emptyDir": {}, "hostPath": {"path": "/x"}},
        {"name": "d", "secret": {}},
    ]}));
    assert_eq!(
        create("Pod", p),
        vec![
            format!("spec.volumes[0].name: Invalid value: \"Data\": {LABEL_MSG}"),
            "spec.volumes[2].name: Duplicate value: \"a\"".to_string(),
            "spec.volumes[3]: Required value: must specify a volume type".to_string(),
            "spec.volumes[4].hostPath: Forbidden: may not specify more than 1 volume type".to_string(),
            "spec.volumes[5].secret.secretName: Required value".to_string(),
        ]
    );
}

#[test]
fn requests_may_not_exceed_limits() {
    let c = merge(
        web(),
        json!({"resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "500m", "memory": "1024Mi"}}}),
    );
    assert_eq!(
        create("Pod", pod_with(c)),
        vec!["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 500m"]
    );
    let c = merge(web(), json!({"resources": {"requests": {"gpu": "1", "example.com/dongle": "1"}}}));
    assert_eq!(
        create("Pod", pod_with(c)),
        vec![
            "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
            "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
            "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
        ]
    );
    let c = merge(web(), json!({"resources": {"requests": {"memory": "-1"}}}));
    assert_eq!(
        create("Pod", pod_with(c)),
        vec![
            "spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0"
        ]
    );
}

#[test]
fn probes_need_exactly_one_handler() {
    let c = merge(
        web(),
        json!({
            "livenessProbe": {"periodSeconds": 5},
            "readinessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}},
            "startupProbe": {"httpGet": {"port": 0}, "successThreshold": 2}
        }),
    );
    assert_eq!(
        create("Pod", pod_with(c)),
        vec![
            "spec.containers[0].livenessProbe: Required value: must specify a handler type",
            "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].startupProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[0].startupProbe.successThreshold: Invalid value: 2: must be 1",
        ]
    );
}

#[test]
fn init_containers_without_restart_always_have_no_probes() {
    let init = merge(web(), json!({"name": "init", "readinessProbe": {"exec": {"command": ["true"]}}}));
    let sidecar = merge(web(), json!({"name": "side", "restartPolicy": "Never"}));
    let p = pod(
        json!({"initContainers": [init, sidecar], "containers": [merge(web(), json!({"restartPolicy": "Always"}))]}),
    );
    assert_eq!(
        create("Pod", p),
        vec![
            "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
            "spec.initContainers[1].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ]
    );
}

#[test]
fn node_selector_and_tolerations() {
    let p = pod(json!({
        "containers": [web()],
        "nodeSelector": {"disk": "fast ssd"},
        "tolerations": [
            {"operator": "Equal", "value": "x"},
            {"key": "k", "operator": "Like"},
            {"key": "k", "operator": "Exists", "value": "v", "effect": "Sometimes"},
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}
        ]
    }));
    let e = create("Pod", p);
    assert!(
        e[0].starts_with("spec.nodeSelector: Invalid value: \"fast ssd\": a valid label must be an empty string"),
        "{e:?}"
    );
    assert_eq!(
        &e[1..],
        [
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[1].operator: Unsupported value: \"Like\": supported values: \"Equal\", \"Exists\"",
            "spec.tolerations[2].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
            "spec.tolerations[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            "spec.tolerations[3].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        ]
    );
}

#[test]
fn pod_scheduling_fields() {
    let p = pod(json!({
        "containers": [web()],
        "activeDeadlineSeconds": 0,
        "hostname": "Web",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "dnsPolicy": "None"
    }));
    assert_eq!(
        create("Pod", p),
        vec![
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: must have at least one node selector term".to_string(),
            "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None".to_string(),
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive".to_string(),
            format!("spec.hostname: Invalid value: \"Web\": {LABEL_MSG}"),
        ]
    );
}

#[test]
fn ephemeral_containers_cannot_be_set_on_create() {
    let p = pod(json!({"containers": [web()], "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}));
    assert_eq!(create("Pod", p), vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"]);
}

#[test]
fn pod_deletion_cost_is_an_int32() {
    let mut p = pod_with(web());
    p["metadata"]["annotations"] = json!({"controller.kubernetes.io/pod-deletion-cost": "lots"});
    assert_eq!(
        create("Pod", p),
        vec!["metadata.annotations[controller.kubernetes.io/pod-deletion-cost]: Invalid value: \"lots\": must be a 32bit integer"]
    );
}

// ---- pod updates ----

#[test]
fn pod_updates_may_change_images() {
    let old = pod_with(web());
    let new = pod_with(json!({"name": "web", "image": "nginx:1.26"}));
    assert_eq!(update("Pod", old, new), Vec::<String>::new());
}

#[test]
fn pod_updates_may_not_change_other_fields() {
    let old = pod_with(web());
    let new = pod_with(merge(web(), json!({"env": [{"name": "A", "value": "b"}]})));
    let e = update("Pod", old.clone(), new);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"),
        "{e:?}"
    );
    let new = pod(json!({"containers": [web(), merge(web(), json!({"name": "b"}))]}));
    assert_eq!(
        update("Pod", old, new),
        vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
    );
}

#[test]
fn pod_updates_may_add_tolerations_only() {
    let t = json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10});
    let old = pod(json!({"containers": [web()], "tolerations": [t]}));
    let more = pod(json!({"containers": [web()], "tolerations": [
        {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20},
        {"key": "other", "operator": "Exists"}
    ]}));
    assert_eq!(update("Pod", old.clone(), more), Vec::<String>::new());
    let changed = pod(json!({"containers": [web()], "tolerations": [{"key": "j", "operator": "Exists"}]}));
    assert_eq!(
        update("Pod", old, changed),
        vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
    );
}

#[test]
fn pod_active_deadline_may_only_shrink() {
    let old = pod(json!({"containers": [web()], "activeDeadlineSeconds": 30}));
    let longer = pod(json!({"containers": [web()], "activeDeadlineSeconds": 60}));
    assert_eq!(
        update("Pod", old.clone(), longer),
        vec!["spec.activeDeadlineSeconds: Invalid value: 60: must be less than or equal to previous value"]
    );
    let shorter = pod(json!({"containers": [web()], "activeDeadlineSeconds": 10}));
    assert_eq!(update("Pod", old, shorter), Vec::<String>::new());
}

// ---- deployments and replica sets ----

fn deployment(spec: Value) -> Value {
    let base = json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [web()]}}
    });
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": merge(base, spec)})
}

#[test]
fn a_valid_deployment_has_no_errors() {
    assert_eq!(create("Deployment", deployment(json!({}))), Vec::<String>::new());
}

#[test]
fn replicas_and_limits_are_not_negative() {
    assert_eq!(
        create("Deployment", deployment(json!({"replicas": -1, "revisionHistoryLimit": -1, "minReadySeconds": -5}))),
        vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.minReadySeconds: Invalid value: -5: must be greater than or equal to 0",
            "spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
}

#[test]
fn the_selector_is_required_non_empty_and_matches_the_template() {
    let mut d = deployment(json!({}));
    d["spec"].as_object_mut().unwrap().remove("selector");
    assert_eq!(
        create("Deployment", d),
        vec![
            "spec.selector: Required value",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
        ]
    );
    assert_eq!(
        create("Deployment", deployment(json!({"selector": {}}))),
        vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"]
    );
    assert_eq!(
        create("Deployment", deployment(json!({"selector": {"matchLabels": {"app": "b"}}}))),
        vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"]
    );
    let by_expression =
        json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}});
    assert_eq!(create("Deployment", deployment(by_expression)), Vec::<String>::new());
}

#[test]
fn strategy_and_rolling_update() {
    assert_eq!(
        create("Deployment", deployment(json!({"strategy": {"type": "BlueGreen"}}))),
        vec!["spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"BlueGreen\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\""]
    );
    assert_eq!(
        create("Deployment", deployment(json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}))),
        vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"0%\"}: may not be 0 when `maxSurge` is 0"]
    );
    assert_eq!(
        create("Deployment", deployment(json!({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}))),
        vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
    );
    assert_eq!(
        create("Deployment", deployment(json!({"strategy": {"rollingUpdate": {"maxSurge": "x%", "maxUnavailable": "150%"}}}))),
        vec![
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"x%\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%",
        ]
    );
}

#[test]
fn progress_deadline_exceeds_min_ready() {
    assert_eq!(
        create("Deployment", deployment(json!({"minReadySeconds": 30, "progressDeadlineSeconds": 30}))),
        vec!["spec.progressDeadlineSeconds: Invalid value: 30: must be greater than minReadySeconds"]
    );
}

#[test]
fn templates_restart_always_and_are_validated_under_their_path() {
    let d = deployment(
        json!({"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "web"}]}}}),
    );
    assert_eq!(
        create("Deployment", d),
        vec![
            "spec.template.spec.containers[0].image: Required value",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ]
    );
}

#[test]
fn replica_sets_share_the_rules() {
    let mut rs = deployment(json!({"replicas": -1, "selector": {}}));
    rs["metadata"]["name"] = json!("web-1");
    assert_eq!(
        create("ReplicaSet", rs),
        vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
        ]
    );
}

#[test]
fn the_selector_is_immutable() {
    let old = deployment(json!({}));
    let new = deployment(json!({
        "selector": {"matchLabels": {"app": "web", "tier": "a"}},
        "template": {"metadata": {"labels": {"app": "web", "tier": "a"}}, "spec": {"containers": [web()]}}
    }));
    assert_eq!(
        update("Deployment", old.clone(), new),
        vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"a\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"]
    );
    assert_eq!(update("Deployment", old.clone(), deployment(json!({"replicas": 5}))), Vec::<String>::new());
    assert_eq!(update("ReplicaSet", old.clone(), old), Vec::<String>::new());
}

// ---- services ----

fn service(spec: Value) -> Value {
    let base = json!({"selector": {"app": "web"}, "ports": [{"port": 80}]});
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": merge(base, spec)})
}

#[test]
fn a_valid_service_has_no_errors() {
    assert_eq!(create("Service", service(json!({}))), Vec::<String>::new());
    assert_eq!(
        create("Service", service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))),
        Vec::<String>::new()
    );
    assert_eq!(create("Service", service(json!({"clusterIP": "None", "ports": []}))), Vec::<String>::new());
    let ext = json!({"type": "ExternalName", "externalName": "db.example.com.", "ports": [], "selector": null});
    assert_eq!(create("Service", service(ext)), Vec::<String>::new());
}

#[test]
fn service_types_and_ports() {
    assert_eq!(
        create("Service", service(json!({"type": "Internal"}))),
        vec!["spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""]
    );
    assert_eq!(create("Service", service(json!({"ports": []}))), vec!["spec.ports: Required value"]);
    assert_eq!(
        create("Service", service(json!({"ports": [{"port": 0, "protocol": "ICMP"}]}))),
        vec![
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ]
    );
    assert_eq!(
        create("Service", service(json!({"ports": [{"port": 80}, {"name": "a", "port": 81, "targetPort": "Http"}, {"name": "a", "port": 82}]}))),
        vec![
            "spec.ports[0].name: Required value",
            "spec.ports[1].targetPort: Invalid value: \"Http\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.ports[2].name: Duplicate value: \"a\"",
        ]
    );
    assert_eq!(
        create("Service", service(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}))),
        vec!["spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}"]
    );
}

#[test]
fn node_ports_only_for_node_port_services() {
    assert_eq!(
        create("Service", service(json!({"ports": [{"port": 80, "nodePort": 30080}]}))),
        vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
}

#[test]
fn cluster_ips_are_none_or_addresses() {
    assert_eq!(
        create("Service", service(json!({"clusterIP": "10.0.0.300"}))),
        vec!["spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    );
    assert_eq!(
        create("Service", service(json!({"type": "NodePort", "clusterIP": "None"}))),
        vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"]
    );
    assert_eq!(create("Service", service(json!({"clusterIP": "10.96.0.10"}))), Vec::<String>::new());
}

#[test]
fn external_name_services_need_a_dns_name() {
    assert_eq!(
        create("Service", service(json!({"type": "ExternalName", "ports": []}))),
        vec!["spec.externalName: Required value"]
    );
    let e = create("Service", service(json!({"type": "ExternalName", "externalName": "Bad_Name"})));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("spec.externalName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
}

#[test]
fn session_affinity_and_traffic_policy() {
    assert_eq!(
        create("Service", service(json!({"sessionAffinity": "Cookie"}))),
        vec!["spec.sessionAffinity: Unsupported value: \"Cookie\": supported values: \"ClientIP\", \"None\""]
    );
    assert_eq!(
        create("Service", service(json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}}))),
        vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less than 86400"]
    );
    assert_eq!(
        create("Service", service(json!({"externalTrafficPolicy": "Local"}))),
        vec![
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"
        ]
    );
    let e = create("Service", service(json!({"selector": {"app": "a/b/c"}})));
    assert!(
        e[0].starts_with("spec.selector: Invalid value: \"a/b/c\": a valid label must be an empty string"),
        "{e:?}"
    );
}

#[test]
fn cluster_ips_may_not_change() {
    let old = service(json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}));
    let moved = service(json!({"clusterIP": "10.96.0.11"}));
    assert_eq!(
        update("Service", old.clone(), moved),
        vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"]
    );
    // a client that leaves the allocated address out keeps it
    assert_eq!(update("Service", old.clone(), service(json!({}))), Vec::<String>::new());
    // and becoming an ExternalName drops it
    let ext = service(
        json!({"type": "ExternalName", "externalName": "db.example.com", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}),
    );
    assert_eq!(update("Service", old, ext), Vec::<String>::new());
}

#[test]
fn normalize_service_drops_what_a_new_type_does_not_use() {
    let old = defaulted(
        "Service",
        service(json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]})),
    );
    let mut new = old.clone();
    new["spec"]["type"] = json!("ClusterIP");
    normalize_service(Some(&old), &mut new);
    assert!(new["spec"].get("allocateLoadBalancerNodePorts").is_none());
    assert!(new["spec"].get("externalTrafficPolicy").is_none());
    assert_eq!(new["spec"]["clusterIP"], "10.96.0.10");
    let mut created = json!({"spec": {"clusterIP": "10.96.0.5"}});
    normalize_service(None, &mut created);
    assert_eq!(created["spec"]["clusterIPs"], json!(["10.96.0.5"]));
}

// ---- endpoints ----

#[test]
fn endpoints_addresses_and_ports() {
    let ep = json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": [
        {"addresses": [{"ip": "10.0.0.300"}, {"ip": "127.0.0.1"}], "ports": [{"port": 0}, {"port": 81, "name": "b"}]},
        {"ports": [{"port": 80}]}
    ]});
    assert_eq!(
        create("Endpoints", ep),
        vec![
            "subsets[0].addresses[0].ip: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "subsets[0].addresses[0].ip: Invalid value: \"10.0.0.300\": must be a valid IP address",
            "subsets[0].addresses[1].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "subsets[0].ports[0].name: Required value",
            "subsets[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "subsets[1]: Required value: must specify `addresses` or `notReadyAddresses`",
        ]
    );
}

fn slice(patch: Value) -> Value {
    merge(
        json!({"metadata": {"name": "web-x", "namespace": "default"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}], "ports": [{"name": "http", "port": 80}]}),
        patch,
    )
}

#[test]
fn endpoint_slices() {
    assert_eq!(create("EndpointSlice", slice(json!({}))), Vec::<String>::new());
    assert_eq!(
        create("EndpointSlice", slice(json!({"addressType": "IPX"}))),
        vec!["addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]
    );
    assert_eq!(
        create(
            "EndpointSlice",
            slice(
                json!({"endpoints": [{"addresses": ["fd00::1"]}, {"addresses": []}], "ports": [{"port": 80}, {"port": 81}]})
            )
        ),
        vec![
            "endpoints[0].addresses: Invalid value: \"fd00::1\": must be an IPv4 address",
            "endpoints[1].addresses: Required value: must contain at least 1 address",
            "ports[1].name: Duplicate value: \"\"",
        ]
    );
    let many: Vec<Value> = (0..1001).map(|_| json!({"addresses": ["10.1.0.5"]})).collect();
    assert_eq!(
        create("EndpointSlice", slice(json!({"endpoints": many}))),
        vec!["endpoints: Too many: 1001: must have at most 1000 items"]
    );
    let fqdn = slice(json!({"addressType": "FQDN", "endpoints": [{"addresses": ["localhost"]}]}));
    assert_eq!(
        create("EndpointSlice", fqdn),
        vec!["endpoints[0].addresses[0]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"]
    );
    assert_eq!(
        update("EndpointSlice", slice(json!({})), slice(json!({"addressType": "IPv6", "endpoints": []}))),
        vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
    );
}

// ---- ingresses ----

fn ingress(spec: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn rule(path: Value) -> Value {
    json!({"rules": [{"host": "web.example.com", "http": {"paths": [path]}}]})
}

fn svc_backend() -> Value {
    json!({"service": {"name": "web", "port": {"number": 80}}})
}

#[test]
fn a_valid_ingress_has_no_errors() {
    let i = ingress(merge(
        rule(json!({"path": "/", "pathType": "Prefix", "backend": svc_backend()})),
        json!({"ingressClassName": "nginx", "tls": [{"hosts": ["*.example.com"], "secretName": "tls"}]}),
    ));
    assert_eq!(create("Ingress", i), Vec::<String>::new());
}

#[test]
fn ingress_paths() {
    assert_eq!(
        create("Ingress", ingress(rule(json!({"path": "/", "backend": svc_backend()})))),
        vec!["spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"]
    );
    assert_eq!(
        create("Ingress", ingress(rule(json!({"path": "/", "pathType": "Regex", "backend": svc_backend()})))),
        vec!["spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""]
    );
    assert_eq!(
        create("Ingress", ingress(rule(json!({"path": "api//v1/..", "pathType": "Exact", "backend": svc_backend()})))),
        vec![
            "spec.rules[0].http.paths[0].path: Invalid value: \"api//v1/..\": must be an absolute path",
            "spec.rules[0].http.paths[0].path: Invalid value: \"api//v1/..\": must not contain '//'",
            "spec.rules[0].http.paths[0].path: Invalid value: \"api//v1/..\": cannot end with '/..'",
        ]
    );
}

#[test]
fn ingress_backends() {
    let both = json!({"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "Bucket", "name": "b"}});
    let named_and_numbered = json!({"service": {"name": "web", "port": {"name": "http", "number": 80}}});
    let big = json!({"service": {"name": "web", "port": {"number": 70000}}});
    let no_port = json!({"service": {"name": "web"}});
    let spec = json!({"rules": [{"http": {"paths": [
        {"path": "/a", "pathType": "Prefix", "backend": both},
        {"path": "/b", "pathType": "Prefix", "backend": named_and_numbered},
        {"path": "/c", "pathType": "Prefix", "backend": big},
        {"path": "/d", "pathType": "Prefix", "backend": no_port},
        {"path": "/e", "pathType": "Prefix", "backend": {}}
    ]}}]});
    assert_eq!(
        create("Ingress", ingress(spec)),
        vec![
            "spec.rules[0].http.paths[0].backend: Invalid value: \"\": cannot set both resource and service backends",
            "spec.rules[0].http.paths[1].backend: Invalid value: \"\": cannot set both port name & port number",
            "spec.rules[0].http.paths[2].backend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.rules[0].http.paths[3].backend: Required value: port name or number is required",
            "spec.rules[0].http.paths[4].backend: Invalid value: \"\": resource or service backend is required",
        ]
    );
}

#[test]
fn ingress_hosts_classes_and_rules() {
    assert_eq!(
        create("Ingress", ingress(json!({}))),
        vec![
            "spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"
        ]
    );
    let spec = json!({
        "defaultBackend": svc_backend(),
        "rules": [{"host": "10.0.0.1"}, {"host": "*.*.example.com"}],
        "tls": [{"hosts": ["Web.example.com"]}],
        "ingressClassName": "Nginx"
    });
    let e = create("Ingress", ingress(spec));
    assert_eq!(e.len(), 4, "{e:?}");
    // an IP is a valid subdomain, so only the IP rule applies
    assert_eq!(e[0], "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address");
    assert!(e[1].starts_with(
        "spec.rules[1].host: Invalid value: \"*.*.example.com\": a wildcard DNS-1123 subdomain must start with '*.'"
    ));
    assert!(
        e[2].starts_with("spec.tls[0].hosts[0]: Invalid value: \"Web.example.com\": a lowercase RFC 1123 subdomain")
    );
    assert!(e[3].starts_with("spec.ingressClassName: Invalid value: \"Nginx\": a lowercase RFC 1123 subdomain"));
}

#[test]
fn ingress_classes_name_a_domain_prefixed_controller() {
    let class = |c: Value| json!({"metadata": {"name": "nginx"}, "spec": c});
    assert_eq!(create("IngressClass", class(json!({}))), vec!["spec.controller: Required value"]);
    assert_eq!(
        create("IngressClass", class(json!({"controller": "nginx"}))),
        vec!["spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"]
    );
    assert_eq!(create("IngressClass", class(json!({"controller": "k8s.io/ingress-nginx"}))), Vec::<String>::new());
    assert_eq!(
        update("IngressClass", class(json!({"controller": "k8s.io/a"})), class(json!({"controller": "k8s.io/b"}))),
        vec!["spec.controller: Invalid value: \"k8s.io/b\": field is immutable"]
    );
}

// ---- secrets and config maps ----

fn secret(patch: Value) -> Value {
    merge(json!({"metadata": {"name": "s", "namespace": "default"}}), patch)
}

#[test]
fn secret_keys_and_types() {
    let e = create("Secret", secret(json!({"data": {"a/b": "eA==", "ok.key": "eA=="}})));
    assert_eq!(
        e,
        vec!["data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]
    );
    assert_eq!(
        create("Secret", secret(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}))),
        vec!["data[tls.key]: Required value"]
    );
    assert_eq!(
        create("Secret", secret(json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}))),
        vec!["data[.dockerconfigjson]: Required value"]
    );
    assert_eq!(
        create("Secret", secret(json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "eA=="}}))),
        vec!["data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character 'x' looking for beginning of value"]
    );
    let big = "A".repeat(1024 * 1024 / 3 * 4 + 8);
    assert_eq!(
        create("Secret", secret(json!({"data": {"big": big}}))),
        vec!["data: Too long: may not be more than 1048576 bytes"]
    );
}

#[test]
fn config_map_keys_and_size() {
    let cm = |patch: Value| merge(json!({"metadata": {"name": "c", "namespace": "default"}}), patch);
    assert_eq!(
        create("ConfigMap", cm(json!({"data": {"k": "v"}, "binaryData": {"k": "eA=="}}))),
        vec!["data[k]: Invalid value: \"k\": duplicate of key present in binaryData"]
    );
    let big = "x".repeat(1024 * 1024 + 1);
    assert_eq!(
        create("ConfigMap", cm(json!({"data": {"big": big}}))),
        vec![": Too long: may not be more than 1048576 bytes"]
    );
    assert_eq!(create("ConfigMap", cm(json!({"data": {"..": "v"}}))).len(), 1);
}

#[test]
fn immutable_data_stays_immutable() {
    let old = secret(json!({"immutable": true, "data": {"a": "eA=="}}));
    let new = secret(json!({"immutable": false, "data": {"a": "eQ=="}}));
    assert_eq!(
        update("Secret", old, new),
        vec![
            "immutable: Forbidden: field is immutable when `immutable` is set",
            "data: Forbidden: field is immutable when `immutable` is set",
        ]
    );
    let old = secret(json!({"type": "Opaque"}));
    let new = secret(json!({"type": "kubernetes.io/basic-auth", "data": {"username": "eA=="}}));
    assert_eq!(
        update("Secret", old, new),
        vec!["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
    );
    let cm = |d: Value| json!({"metadata": {"name": "c", "namespace": "default"}, "immutable": true, "binaryData": d});
    assert_eq!(
        update("ConfigMap", cm(json!({"k": "eA=="})), cm(json!({}))),
        vec!["binaryData: Forbidden: field is immutable when `immutable` is set"]
    );
}

// ---- nodes, namespaces, events, leases ----

#[test]
fn nodes_have_cidrs_and_taints() {
    let node = |spec: Value| json!({"metadata": {"name": "node-1"}, "spec": spec});
    assert_eq!(
        create("Node", node(json!({"podCIDR": "10.244.0.0"}))),
        vec!["spec.podCIDRs[0]: Invalid value: \"10.244.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    );
    assert_eq!(
        create("Node", node(json!({"taints": [{"key": "k", "effect": "Sometimes"}, {"key": "k"}]}))),
        vec![
            "metadata.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            "metadata.taints[1].effect: Required value",
        ]
    );
    assert_eq!(
        update("Node", node(json!({"podCIDR": "10.244.0.0/24"})), node(json!({"podCIDR": "10.244.1.0/24"}))),
        vec!["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]
    );
    assert_eq!(update("Node", node(json!({})), node(json!({"podCIDR": "10.244.1.0/24"}))), Vec::<String>::new());
}

#[test]
fn events_name_their_namespace() {
    let ev = |ns: &str| json!({"metadata": {"name": "e.1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": ns}, "reason": "Started"});
    assert_eq!(create("Event", ev("default")), Vec::<String>::new());
    assert_eq!(
        create("Event", ev("other")),
        vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
    );
    let e = create("Event", json!({"metadata": {"name": "a/b", "namespace": "default"}, "involvedObject": {}}));
    assert_eq!(e, vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]);
}

fn events_v1() -> &'static ResourceType {
    crate::catalogue::find("events.k8s.io", "v1", "events").unwrap()
}

fn events_v1_event(extra: Value) -> Value {
    let mut ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "eventTime": "2026-11-26T10:00:00.000000Z", "reportingController": "skiff.io/test",
        "reportingInstance": "test-1", "action": "Testing", "reason": "Tested", "note": "it works", "type": "Normal",
        "regarding": {"kind": "Pod", "name": "web", "namespace": "default"}});
    for (k, v) in extra.as_object().unwrap() {
        ev[k] = v.clone();
    }
    ev
}

#[test]
fn events_k8s_io_creates_follow_the_strict_rules() {
    assert_eq!(lines(validate(events_v1(), &events_v1_event(json!({})))), Vec::<String>::new());
    // the same event without eventTime: legacy rules pass, the strict one does not
    let mut no_time = events_v1_event(json!({}));
    no_time.as_object_mut().unwrap().remove("eventTime");
    assert_eq!(lines(validate(events_v1(), &no_time)), vec!["eventTime: Required value"]);
    // and through core/v1 that is fine
    let core = crate::convert::to_stored(events_v1(), no_time);
    assert_eq!(create("Event", core), Vec::<String>::new());

    let bad = events_v1_event(json!({"reportingController": "", "action": "", "reason": "r".repeat(129),
        "type": "Info", "deprecatedCount": 2, "deprecatedSource": {"component": "kubelet"},
        "deprecatedFirstTimestamp": "2026-11-26T10:00:00Z", "series": {"count": 1},
        "metadata": {"name": "Web_1", "namespace": "default"}}));
    let got = lines(validate(events_v1(), &bad));
    assert_eq!(got[0], "reportingController: Required value");
    assert!(got[1].starts_with("reportingController: Invalid value: \"\": name part must be non-empty"), "{got:?}");
    let rest: Vec<&str> = got.iter().map(String::as_str).skip_while(|l| l.starts_with("reportingController")).collect();
    assert_eq!(rest[0], "action: Required value");
    assert_eq!(rest[1], "reason: Invalid value: \"\": can have at most 128 characters");
    assert!(rest[2].starts_with("metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain"), "{got:?}");
    assert_eq!(
        rest[3..],
        [
            "series.count: Invalid value: \"\": should be at least 2",
            "series.lastObservedTime: Required value",
            "type: Invalid value: \"\": has invalid value: Info",
            "firstTimestamp: Invalid value: \"\": needs to be unset",
            "count: Invalid value: \"\": needs to be unset",
            "source: Invalid value: \"\": needs to be unset",
        ]
    );
}

#[test]
fn events_k8s_io_updates_keep_what_was_reported() {
    let old = events_v1_event(json!({}));
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-11-26T10:01:00.000000Z"}});
    assert_eq!(lines(validate_update(events_v1(), &old, &events_v1_event(series))), Vec::<String>::new());
    let new = events_v1_event(
        json!({"note": "changed", "reason": "Other", "regarding": {"kind": "Pod", "name": "db", "namespace": "default"},
        "eventTime": "2026-11-26T10:00:00.5Z", "related": {"kind": "Node", "name": "n1"}}),
    );
    assert_eq!(
        lines(validate_update(events_v1(), &old, &new)),
        vec![
            "involvedObject: Invalid value: core.ObjectReference{Kind:\"Pod\", Namespace:\"default\", Name:\"db\", UID:\"\", APIVersion:\"\", ResourceVersion:\"\", FieldPath:\"\"}: field is immutable",
            "reason: Invalid value: \"Other\": field is immutable",
            "message: Invalid value: \"changed\": field is immutable",
            "reason: Invalid value: \"Other\": field is immutable",
            "eventTime: Invalid value: 2026-11-26 10:00:00.5 +0000 UTC: field is immutable",
            "related: Invalid value: core.ObjectReference{Kind:\"Node\", Namespace:\"\", Name:\"n1\", UID:\"\", APIVersion:\"\", ResourceVersion:\"\", FieldPath:\"\"}: field is immutable",
        ]
    );
    // core/v1 writes may change them
    let (old, new) = (crate::convert::to_stored(events_v1(), old), crate::convert::to_stored(events_v1(), new));
    assert_eq!(update("Event", old, new), Vec::<String>::new());
}

#[test]
fn leases_last_a_positive_time() {
    let lease = json!({"metadata": {"name": "l", "namespace": "default"}, "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
    assert_eq!(
        create("Lease", lease),
        vec![
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
}

#[test]
fn namespaces_and_finalizers() {
    let ns = json!({"metadata": {"name": "team", "finalizers": ["example.com/x"], "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"finalizers": ["kubernetes"]}});
    let mut new = ns.clone();
    new["metadata"]["finalizers"] = json!(["example.com/x", "example.com/y"]);
    assert_eq!(
        update("Namespace", ns, new),
        vec!["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/y\"}"]
    );
}

#[test]
fn status_writes_check_only_metadata() {
    let old = pod_with(web());
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("");
    new["metadata"]["labels"] = json!({"ok": "yes"});
    assert!(validate_status_update(rt("Pod"), &old, &new).is_empty());
}

#[test]
fn the_articles_corrected_manifests_are_valid() {
    let text =
        std::fs::read_to_string(format!("{}/../examples/service-test.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(objects.len(), 2);
    for mut obj in objects {
        let kind = obj["kind"].as_str().unwrap().to_string();
        obj["metadata"]["namespace"] = json!("default");
        assert_eq!(create(&kind, obj), Vec::<String>::new(), "{kind}");
    }
}

#[test]
#[ignore = "timing probe, run by hand with --release"]
fn pod_validation_cost() {
    let p = defaulted(
        "Pod",
        pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"name": "http", "containerPort": 80}],
                "env": [{"name": "A", "value": "b"}], "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
                "readinessProbe": {"httpGet": {"port": "http"}}}]
        })),
    );
    let n = 100_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(validate(rt("Pod"), &p).is_empty());
    }
    println!("{:?} per pod", start.elapsed() / n);
}
