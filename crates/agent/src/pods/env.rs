//! A container's process: its argv (command/args merged with the image's
//! entrypoint and cmd, as containerd's CRI plugin does) and its environment
//! (env, envFrom, the downward API, and the Docker-link style service
//! variables), with Kubernetes' `$(VAR)` expansion.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use super::resources::{resource_field_value, Amount};
use crate::runtime::ImageInfo;

/// Where env and volumes read ConfigMaps, Secrets and Services from (the API
/// server; an in-memory map in tests).
#[async_trait::async_trait]
pub trait Objects: Send + Sync {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String>;
    /// Services of one namespace.
    async fn services(&self, namespace: &str) -> Result<Vec<Service>, String>;
    /// A service account token bound to a pod (cached and refreshed by the implementation).
    async fn service_account_token(&self, key: &super::token::TokenKey) -> Result<String, String> {
        Err(format!("no service account tokens here (service account {}/{})", key.namespace, key.service_account))
    }
}

/// What the downward API can say about the pod beyond its object.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub pod_ips: Vec<IpAddr>,
    pub host_ips: Vec<IpAddr>,
    pub node_allocatable: BTreeMap<String, Amount>,
}

/// `$(VAR)` expansion: `$$` is a literal `$`, an unknown reference stays as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && i + 1 < chars.len() {
            match chars[i + 1] {
                '$' => {
                    out.push('$');
                    i += 2;
                }
                '(' => match chars[i + 2..].iter().position(|c| *c == ')') {
                    Some(end) => {
                        let name: String = chars[i + 2..i + 2 + end].iter().collect();
                        match lookup(&name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&format!("$({name})")),
                        }
                        i += end + 3;
                    }
                    None => {
                        out.push_str("$(");
                        i += 2;
                    }
                },
                c => {
                    out.push('$');
                    out.push(c);
                    i += 2;
                }
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The final argv: command/args (with `$(VAR)` expanded from `env`) merged with
/// the image's entrypoint and cmd.
pub fn argv(c: &Container, image: &ImageInfo, env: &[(String, String)]) -> Result<Vec<String>, String> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| vars.get(n).map(|v| v.to_string());
    let command: Vec<String> = c.command.iter().flatten().map(|s| expand(s, &lookup)).collect();
    let args: Vec<String> = c.args.iter().flatten().map(|s| expand(s, &lookup)).collect();
    let mut out = Vec::new();
    if command.is_empty() {
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            out.extend(image.entrypoint.iter().cloned());
        }
        if args.is_empty() {
            out.extend(image.cmd.iter().cloned());
        } else {
            out.extend(args);
        }
    } else {
        out.extend(command);
        out.extend(args);
    }
    if out.is_empty() {
        return Err("no command specified".into());
    }
    Ok(out)
}

fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// The variables Kubernetes gives for `services` (`FOO_SERVICE_HOST`,
/// `FOO_PORT_80_TCP_ADDR`, ...), in order.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = env_name(svc.metadata.name.as_deref().unwrap_or(""));
        let ports = spec.ports.clone().unwrap_or_default();
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{name}_SERVICE_PORT_{}", env_name(pn)), p.port.to_string()));
            }
        }
        let host = |port: i32| match ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{ip}]:{port}"),
            _ => format!("{ip}:{port}"),
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let lower = proto.to_lowercase();
            if i == 0 {
                out.push((format!("{name}_PORT"), format!("{lower}://{}", host(p.port))));
            }
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((prefix.clone(), format!("{lower}://{}", host(p.port))));
            out.push((format!("{prefix}_PROTO"), lower.clone()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

/// The services whose variables a pod gets: its namespace's when
/// enableServiceLinks (the default), and always the `kubernetes` service.
pub async fn pod_services(pod: &Pod, objects: &dyn Objects) -> Result<Vec<Service>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut by_name: BTreeMap<String, Service> = BTreeMap::new();
    if links {
        for s in objects.services(ns).await? {
            by_name.insert(s.metadata.name.clone().unwrap_or_default(), s);
        }
    }
    if ns != "default" || !links {
        if let Some(k) =
            objects.services("default").await?.into_iter().find(|s| s.metadata.name.as_deref() == Some("kubernetes"))
        {
            by_name.entry("kubernetes".into()).or_insert(k);
        }
    }
    Ok(by_name.into_values().collect())
}

/// A field of the pod, as fieldRef names it.
pub fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let join = |ips: &[IpAddr]| ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels['", &m.labels) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations['", &m.annotations) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&m.labels),
        "metadata.annotations" => format_map(&m.annotations),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" => facts.host_ips.first().map(|i| i.to_string()).unwrap_or_default(),
        "status.hostIPs" => join(&facts.host_ips),
        "status.podIP" => facts.pod_ips.first().map(|i| i.to_string()).unwrap_or_default(),
        "status.podIPs" => join(&facts.pod_ips),
        other => return Err(format!("unsupported fieldRef {other:?}")),
    })
}

/// Labels or annotations as the downward API writes them: `k="v"` lines, sorted.
pub fn format_map(map: &Option<BTreeMap<String, String>>) -> String {
    map.iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
}

/// The container's environment (without the image's), in the order the
/// container declares it, then the service variables it did not override.
pub async fn container_env(
    pod: &Pod,
    c: &Container,
    facts: &PodFacts,
    objects: &dyn Objects,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let services = service_env(&pod_services(pod, objects).await?);
    let service_map: HashMap<String, String> = services.iter().cloned().collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| match out.iter_mut().find(|(n, _)| *n == k) {
        Some(e) => e.1 = v,
        None => out.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.config_map(ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut out, name, v);
                        }
                    }
                }
                None if optional => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.secret(ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut out, name, String::from_utf8_lossy(&v.0).into_owned());
                        }
                    }
                }
                None if optional => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let known: HashMap<String, String> = out.iter().cloned().collect();
            let lookup = |n: &str| known.get(n).or_else(|| service_map.get(n)).cloned();
            expand(v, &lookup)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path, facts)?
            } else if let Some(r) = &src.resource_field_ref {
                let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => find_container(pod, n).ok_or_else(|| format!("container {n:?} not found"))?,
                    None => c.clone(),
                };
                resource_field_value(&target, &r.resource, r.divisor.as_ref(), &facts.node_allocatable)?
            } else if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match objects.config_map(ns, &r.name).await? {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned().or_else(|| {
                        cm.binary_data
                            .as_ref()
                            .and_then(|d| d.get(&r.key))
                            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    }) {
                        Some(v) => v,
                        None if optional => continue,
                        None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                    },
                    None if optional => continue,
                    None => return Err(format!("configmap {:?} not found", r.name)),
                }
            } else if let Some(r) = &src.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match objects.secret(ns, &r.name).await? {
                    Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                    },
                    None if optional => continue,
                    None => return Err(format!("secret {:?} not found", r.name)),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, e.name.clone(), value);
    }
    for (k, v) in services {
        if !out.iter().any(|(n, _)| *n == k) {
            out.push((k, v));
        }
    }
    Ok(out)
}

fn valid_env_name(n: &str) -> bool {
    !n.is_empty() && !n.contains('=') && n.chars().all(|c| c.is_ascii_graphic())
}

pub fn find_container(pod: &Pod, name: &str) -> Option<Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name).cloned()
}

/// `KEY=value` lines for the runtime: the image's variables first (those the
/// pod sets left out), then the pod's.
pub fn runtime_env(image: &ImageInfo, env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = image
        .env
        .iter()
        .filter(|kv| {
            let k = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
            !env.iter().any(|(n, _)| n == k)
        })
        .cloned()
        .collect();
    out.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// ConfigMaps, Secrets and Services in memory.
    #[derive(Default)]
    pub struct MemObjects {
        pub config_maps: Mutex<Vec<ConfigMap>>,
        pub secrets: Mutex<Vec<Secret>>,
        pub services: Mutex<Vec<Service>>,
    }

    fn matches(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, ns: &str, name: &str) -> bool {
        m.namespace.as_deref() == Some(ns) && m.name.as_deref() == Some(name)
    }

    #[async_trait::async_trait]
    impl Objects for MemObjects {
        async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok(self.config_maps.lock().unwrap().iter().find(|c| matches(&c.metadata, namespace, name)).cloned())
        }
        async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
            Ok(self.secrets.lock().unwrap().iter().find(|c| matches(&c.metadata, namespace, name)).cloned())
        }
        async fn services(&self, namespace: &str) -> Result<Vec<Service>, String> {
            Ok(self
                .services
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
                .cloned()
                .collect())
        }
        async fn service_account_token(&self, key: &crate::pods::token::TokenKey) -> Result<String, String> {
            let aud = key.audience.as_deref().unwrap_or("api");
            Ok(format!(
                "token:{}/{}:{}:{aud}:{}",
                key.namespace, key.service_account, key.pod_name, key.expiration_seconds
            ))
        }
    }

    pub fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageInfo {
        ImageInfo {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn argv_merges_like_kubernetes() {
        let img = image(&["/docker-entrypoint.sh"], &["nginx", "-g", "daemon off;"]);
        let c = |v: serde_json::Value| -> Container { obj(v) };
        // nothing given: entrypoint + cmd
        assert_eq!(
            argv(&c(serde_json::json!({"name": "a"})), &img, &[]).unwrap(),
            ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
        );
        // command given: command + args, the image's cmd ignored
        assert_eq!(argv(&c(serde_json::json!({"name": "a", "command": ["sleep"]})), &img, &[]).unwrap(), ["sleep"]);
        assert_eq!(
            argv(&c(serde_json::json!({"name": "a", "command": ["sleep"], "args": ["10"]})), &img, &[]).unwrap(),
            ["sleep", "10"]
        );
        // args only: entrypoint + args
        assert_eq!(
            argv(&c(serde_json::json!({"name": "a", "args": ["x"]})), &img, &[]).unwrap(),
            ["/docker-entrypoint.sh", "x"]
        );
        // $(VAR) from the env, $$ escapes, unknown stays
        let env = vec![("MSG".to_string(), "hi".to_string())];
        assert_eq!(
            argv(&c(serde_json::json!({"name": "a", "command": ["echo", "$(MSG)", "$$(MSG)", "$(NOPE)"]})), &img, &env)
                .unwrap(),
            ["echo", "hi", "$(MSG)", "$(NOPE)"]
        );
        assert!(argv(&c(serde_json::json!({"name": "a"})), &ImageInfo::default(), &[]).is_err());
    }

    #[test]
    fn expansion_edge_cases() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("$(A)$(A)", &lookup), "11");
        assert_eq!(expand("$(A", &lookup), "$(A");
        assert_eq!(expand("a$", &lookup), "a$");
        assert_eq!(expand("$x", &lookup), "$x");
        assert_eq!(expand("$$$(A)", &lookup), "$1");
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        obj(serde_json::json!({"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip, "ports": ports}}))
    }

    #[test]
    fn service_links_as_kubernetes_writes_them() {
        let env = service_env(&[svc(
            "ns",
            "service-test",
            "10.0.0.11",
            serde_json::json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]),
        )]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SERVICE_TEST_SERVICE_HOST"), Some("10.0.0.11"));
        assert_eq!(get("SERVICE_TEST_SERVICE_PORT"), Some("80"));
        assert_eq!(get("SERVICE_TEST_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("SERVICE_TEST_PORT"), Some("tcp://10.0.0.11:80"));
        assert_eq!(get("SERVICE_TEST_PORT_80_TCP"), Some("tcp://10.0.0.11:80"));
        assert_eq!(get("SERVICE_TEST_PORT_80_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("SERVICE_TEST_PORT_80_TCP_PORT"), Some("80"));
        assert_eq!(get("SERVICE_TEST_PORT_80_TCP_ADDR"), Some("10.0.0.11"));
        assert_eq!(get("SERVICE_TEST_PORT_53_UDP"), Some("udp://10.0.0.11:53"));
        // headless services give nothing
        assert!(service_env(&[svc("ns", "h", "None", serde_json::json!([{"port": 80}]))]).is_empty());
    }

    fn pod_with(container: serde_json::Value, links: Option<bool>) -> Pod {
        let mut spec =
            serde_json::json!({"nodeName": "n1", "serviceAccountName": "default", "containers": [container]});
        if let Some(l) = links {
            spec["enableServiceLinks"] = l.into();
        }
        obj(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "web"}}, "spec": spec}),
        )
    }

    fn objects() -> MemObjects {
        let o = MemObjects::default();
        o.services.lock().unwrap().push(svc("ns", "service-test", "10.0.0.11", serde_json::json!([{"port": 80}])));
        o.services.lock().unwrap().push(svc("other", "elsewhere", "10.0.0.12", serde_json::json!([{"port": 80}])));
        o.services.lock().unwrap().push(svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            serde_json::json!([{"name": "https", "port": 443}]),
        ));
        o.config_maps.lock().unwrap().push(obj(serde_json::json!({"metadata": {"name": "cfg", "namespace": "ns"}, "data": {"mode": "fast", "bad=key": "x"}})));
        o.secrets.lock().unwrap().push(obj(
            serde_json::json!({"metadata": {"name": "s", "namespace": "ns"}, "data": {"password": "c2VjcmV0"}}),
        ));
        o
    }

    #[tokio::test]
    async fn env_resolves_every_source() {
        let c = serde_json::json!({"name": "app", "resources": {"limits": {"memory": "64Mi"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "missing", "optional": true}}],
        "env": [
            {"name": "GREETING", "value": "hello $(CFG_mode) at $(SERVICE_TEST_SERVICE_HOST)"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": true}}},
            {"name": "CFG_mode", "value": "slow"}
        ]});
        let pod = pod_with(c, None);
        let facts = PodFacts { host_ips: vec!["192.0.2.1".parse().unwrap()], ..Default::default() };
        let env = container_env(&pod, &pod.spec.as_ref().unwrap().containers[0], &facts, &objects()).await.unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CFG_mode"), Some("slow"), "env overrides envFrom");
        assert_eq!(get("CFG_bad=key"), None);
        assert_eq!(get("GREETING"), Some("hello fast at 10.0.0.11"));
        assert_eq!(get("POD_NAME"), Some("p"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("NODE"), Some("n1"));
        assert_eq!(get("HOST_IP"), Some("192.0.2.1"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("PW"), Some("secret"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("SERVICE_TEST_SERVICE_HOST"), Some("10.0.0.11"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("ELSEWHERE_SERVICE_HOST"), None, "only the pod's namespace");
        // the pod's own variables come first, in declared order
        assert_eq!(env[0].0, "CFG_mode");
    }

    #[tokio::test]
    async fn service_links_off_keeps_only_kubernetes() {
        let pod = pod_with(serde_json::json!({"name": "app"}), Some(false));
        let env = container_env(&pod, &pod.spec.as_ref().unwrap().containers[0], &PodFacts::default(), &objects())
            .await
            .unwrap();
        assert!(env.iter().any(|(k, _)| k == "KUBERNETES_SERVICE_HOST"));
        assert!(!env.iter().any(|(k, _)| k == "SERVICE_TEST_SERVICE_HOST"));
    }

    #[tokio::test]
    async fn missing_references_are_clear_errors() {
        let pod = pod_with(
            serde_json::json!({"name": "app", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]}),
            None,
        );
        let e = container_env(&pod, &pod.spec.as_ref().unwrap().containers[0], &PodFacts::default(), &objects())
            .await
            .unwrap_err();
        assert_eq!(e, "couldn't find key nope in ConfigMap ns/cfg");
        let pod = pod_with(serde_json::json!({"name": "app", "envFrom": [{"secretRef": {"name": "gone"}}]}), None);
        let e = container_env(&pod, &pod.spec.as_ref().unwrap().containers[0], &PodFacts::default(), &objects())
            .await
            .unwrap_err();
        assert_eq!(e, "secret \"gone\" not found");
    }

    #[test]
    fn image_env_comes_first_unless_overridden() {
        let img = ImageInfo { env: vec!["PATH=/bin".into(), "A=image".into()], ..Default::default() };
        assert_eq!(runtime_env(&img, &[("A".into(), "pod".into())]), ["PATH=/bin", "A=pod"]);
    }
}
