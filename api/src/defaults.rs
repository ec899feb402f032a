//! Defaulting as Kubernetes' SetDefaults_* functions do it, so that `-o yaml`
//! shows what Kubernetes would show. Applied on create and on every update.

use serde_json::{json, Map, Value};

use crate::ResourceType;

fn obj<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.get_mut(key).and_then(Value::as_object_mut)
}

fn set(m: &mut Map<String, Value>, key: &str, value: Value) {
    m.entry(key).or_insert(value);
}

/// Apply the defaults of `rt`'s kind to `o`.
pub fn apply(rt: &ResourceType, o: &mut Value) {
    match rt.kind {
        "Pod" => {
            if let Some(spec) = o.get_mut("spec") {
                pod_spec(spec);
            }
        }
        "Deployment" => deployment(o),
        "ReplicaSet" => {
            if let Some(spec) = obj(o, "spec") {
                set(spec, "replicas", json!(1));
            }
            template(o);
        }
        "Service" => service(o),
        "Endpoints" => {
            for subset in o.get_mut("subsets").and_then(Value::as_array_mut).into_iter().flatten() {
                ports_protocol(subset.get_mut("ports"));
            }
        }
        "EndpointSlice" => ports_protocol(o.get_mut("ports")),
        "Secret" => {
            if let Some(m) = o.as_object_mut() {
                set(m, "type", json!("Opaque"));
            }
        }
        _ => {}
    }
}

fn deployment(o: &mut Value) {
    if let Some(spec) = obj(o, "spec") {
        set(spec, "replicas", json!(1));
        set(spec, "revisionHistoryLimit", json!(10));
        set(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if let Some(st) = strategy.as_object_mut() {
            set(st, "type", json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    set(ru, "maxUnavailable", json!("25%"));
                    set(ru, "maxSurge", json!("25%"));
                }
            }
        }
    }
    template(o);
}

fn template(o: &mut Value) {
    if let Some(spec) = o.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

/// SetDefaults_PodSpec and the container defaults.
pub fn pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else { return };
    set(s, "restartPolicy", json!("Always"));
    set(s, "terminationGracePeriodSeconds", json!(30));
    set(s, "dnsPolicy", json!("ClusterFirst"));
    set(s, "securityContext", json!({}));
    set(s, "schedulerName", json!("default-scheduler"));
    set(s, "enableServiceLinks", json!(true));
    let host_network = s.get("hostNetwork").and_then(Value::as_bool).unwrap_or(false);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in s.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            container(c, host_network);
        }
    }
    for v in s.get_mut("volumes").and_then(Value::as_array_mut).into_iter().flatten() {
        for source in ["secret", "configMap", "projected", "downwardAPI"] {
            if let Some(src) = v.get_mut(source).and_then(Value::as_object_mut) {
                set(src, "defaultMode", json!(420));
            }
        }
    }
}

/// Always for `:latest` or untagged images, IfNotPresent otherwise.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Value, host_network: bool) {
    let Some(m) = c.as_object_mut() else { return };
    set(m, "terminationMessagePath", json!("/dev/termination-log"));
    set(m, "terminationMessagePolicy", json!("File"));
    let image = m.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    set(m, "imagePullPolicy", json!(image_pull_policy(&image)));
    set(m, "resources", json!({}));
    for p in m.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(pm) = p.as_object_mut() {
            set(pm, "protocol", json!("TCP"));
            if host_network {
                if let Some(cp) = pm.get("containerPort").cloned() {
                    set(pm, "hostPort", cp);
                }
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pr) = m.get_mut(probe).and_then(Value::as_object_mut) {
            set(pr, "timeoutSeconds", json!(1));
            set(pr, "periodSeconds", json!(10));
            set(pr, "successThreshold", json!(1));
            set(pr, "failureThreshold", json!(3));
            if let Some(h) = pr.get_mut("httpGet").and_then(Value::as_object_mut) {
                set(h, "scheme", json!("HTTP"));
                set(h, "path", json!("/"));
            }
        }
    }
}

fn ports_protocol(ports: Option<&mut Value>) {
    for p in ports.and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(pm) = p.as_object_mut() {
            set(pm, "protocol", json!("TCP"));
        }
    }
}

/// Service defaults (the proxy relies on them).
pub fn service(svc: &mut Value) {
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else { return };
    set(spec, "type", json!("ClusterIP"));
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    set(spec, "sessionAffinity", json!("None"));
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        set(spec, "sessionAffinityConfig", json!({"clientIP": {"timeoutSeconds": 10800}}));
    }
    if ty != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        // ipFamilies and ipFamilyPolicy depend on the cluster's service
        // CIDRs: the API server's service registry defaults them
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(pm) = p.as_object_mut() {
            set(pm, "protocol", json!("TCP"));
            if !pm.contains_key("targetPort") {
                if let Some(port) = pm.get("port").cloned() {
                    pm.insert("targetPort".into(), port);
                }
            }
        }
    }
    if let Some(m) = svc.as_object_mut() {
        set(m, "status", json!({"loadBalancer": {}}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn deployment_defaults_match_kubernetes() {
        let rt = crate::catalogue::find("apps", "v1", "deployments").unwrap();
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}}}});
        apply(rt, &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }
}
