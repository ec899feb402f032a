//! The Node object: registration with capacity, addresses and nodeInfo as
//! the kubelet reports them, the node Lease renewed every 10 s, and the
//! status (conditions with their heartbeat) written every minute or when
//! something changes.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

pub const KUBELET_VERSION: &str = "v1.33.0+skiff";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the node has, measured once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpus: usize,
    pub memory_kib: u64,
    pub ephemeral_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `MemTotal` of /proc/meminfo, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// `MemAvailable` of /proc/meminfo, in KiB.
pub fn mem_available_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// PRETTY_NAME of an os-release file.
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

impl Machine {
    pub fn measure(data_dir: &Path) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ephemeral = nix::sys::statvfs::statvfs(data_dir).map(|s| s.blocks() * s.fragment_size()).unwrap_or(0);
        let os = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_kib: mem_total_kib(&meminfo).unwrap_or(0),
            ephemeral_bytes: ephemeral,
            kernel: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
            os_image: os_image(&os),
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
        }
    }
}

pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `containerd 1.6.20~ds1` (or `1.6.20`) as `containerd://1.6.20`.
pub fn runtime_version(reported: &str) -> String {
    let v = reported.split_whitespace().last().unwrap_or(reported);
    let v = v.trim_start_matches('v');
    let v = v.split(['~', '+', '-']).next().unwrap_or(v);
    format!("containerd://{v}")
}

pub fn capacity(config: &AgentConfig, m: &Machine) -> BTreeMap<String, Quantity> {
    let mut c = BTreeMap::new();
    c.insert("cpu".into(), Quantity(m.cpus.to_string()));
    c.insert("memory".into(), Quantity(format!("{}Ki", m.memory_kib)));
    c.insert("pods".into(), Quantity(config.max_pods.to_string()));
    c.insert("ephemeral-storage".into(), Quantity(format!("{}Ki", m.ephemeral_bytes / 1024)));
    c
}

/// The node's pressure conditions: (type, status, reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

impl Pressure {
    /// Kubernetes' default hard eviction thresholds: memory.available < 100Mi,
    /// nodefs.available < 10%; pids: more than 90% of pid_max in use.
    pub fn measure(data_dir: &Path) -> Pressure {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = mem_available_kib(&meminfo).is_some_and(|a| a < 100 * 1024);
        let disk = nix::sys::statvfs::statvfs(data_dir)
            .map(|s| s.blocks() > 0 && (s.blocks_available() as f64) < 0.1 * s.blocks() as f64)
            .unwrap_or(false);
        let pid_max: u64 = read_trim("/proc/sys/kernel/pid_max").parse().unwrap_or(u64::MAX);
        let procs = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten().filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit())).count()
            })
            .unwrap_or(0) as u64;
        Pressure { memory, disk, pid: procs as f64 > 0.9 * pid_max as f64 }
    }
}

fn cond(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Time,
    old: Option<&NodeCondition>,
) -> NodeCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = match old {
        Some(o) if o.status == status => o.last_transition_time.clone().unwrap_or(now.clone()),
        _ => now.clone(),
    };
    NodeCondition {
        type_: type_.into(),
        status,
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now),
        last_transition_time: Some(since),
    }
}

/// The node's conditions, keeping the transition times of `old` ones that did not change.
pub fn conditions(p: &Pressure, now: Time, old: &[NodeCondition]) -> Vec<NodeCondition> {
    let o = |t: &str| old.iter().find(|c| c.type_ == t);
    vec![
        if p.memory {
            cond(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                now.clone(),
                o("MemoryPressure"),
            )
        } else {
            cond(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                now.clone(),
                o("MemoryPressure"),
            )
        },
        if p.disk {
            cond(
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
                now.clone(),
                o("DiskPressure"),
            )
        } else {
            cond(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                now.clone(),
                o("DiskPressure"),
            )
        },
        if p.pid {
            cond(
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
                now.clone(),
                o("PIDPressure"),
            )
        } else {
            cond(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                now.clone(),
                o("PIDPressure"),
            )
        },
        cond("Ready", true, "KubeletReady", "kubelet is posting ready status", now, o("Ready")),
    ]
}

pub fn hostname() -> String {
    read_trim("/proc/sys/kernel/hostname")
}

/// The whole node status.
pub fn node_status(
    config: &AgentConfig,
    m: &Machine,
    runtime_version: &str,
    conditions: Vec<NodeCondition>,
) -> NodeStatus {
    let cap = capacity(config, m);
    NodeStatus {
        capacity: Some(cap.clone()),
        allocatable: Some(cap),
        conditions: Some(conditions),
        addresses: Some(
            config
                .node_ips()
                .iter()
                .map(|ip| NodeAddress { type_: "InternalIP".into(), address: ip.to_string() })
                .chain(std::iter::once(NodeAddress { type_: "Hostname".into(), address: config.node_name.clone() }))
                .collect(),
        ),
        daemon_endpoints: Some(k8s_openapi::api::core::v1::NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint { port: config.kubelet_port as i32 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: architecture().into(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: runtime_version.into(),
            kernel_version: m.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: m.os_image.clone(),
            system_uuid: m.system_uuid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn labels(config: &AgentConfig) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("kubernetes.io/hostname".into(), config.node_name.clone());
    l.insert("kubernetes.io/os".into(), "linux".into());
    l.insert("kubernetes.io/arch".into(), architecture().into());
    l.insert("beta.kubernetes.io/os".into(), "linux".into());
    l.insert("beta.kubernetes.io/arch".into(), architecture().into());
    l
}

/// Keeps the Node and its Lease fresh.
pub struct NodeAgent {
    pub config: AgentConfig,
    pub client: kube::Client,
    pub machine: Machine,
    pub runtime_version: String,
}

impl NodeAgent {
    /// Create the Node if it is not there (or add our labels), then write its status.
    pub async fn register(&self) -> Result<Vec<NodeCondition>, kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = &self.config.node_name;
        let existing = api.get_opt(name).await?;
        let old =
            existing.as_ref().and_then(|n| n.status.as_ref()).and_then(|s| s.conditions.clone()).unwrap_or_default();
        let conds =
            conditions(&Pressure::measure(&self.config.data_dir), crate::pods::status::time(chrono::Utc::now()), &old);
        let status = node_status(&self.config, &self.machine, &self.runtime_version, conds.clone());
        match existing {
            None => {
                let node = Node {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(labels(&self.config)),
                        ..Default::default()
                    },
                    status: Some(status.clone()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &node).await {
                    Ok(_) => tracing::info!(node = %name, "registered the node"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {
                let patch = serde_json::json!({"metadata": {"labels": labels(&self.config)}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                tracing::info!(node = %name, "the node was registered before; updating it");
            }
        }
        self.write_status(status).await?;
        Ok(conds)
    }

    async fn write_status(&self, status: NodeStatus) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"status": status});
        api.patch_status(&self.config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    async fn renew_lease(&self) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let name = &self.config.node_name;
        let now = MicroTime(crate::pods::status::time(chrono::Utc::now()).0);
        let patch = serde_json::json!({"spec": {"renewTime": now, "holderIdentity": name, "leaseDurationSeconds": self.config.lease_duration_seconds}});
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let lease: Lease = serde_json::from_value(serde_json::json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                        "ownerReferences": self.owner().await},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": self.config.lease_duration_seconds, "renewTime": now},
                }))
                .map_err(kube::Error::SerdeError)?;
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn owner(&self) -> serde_json::Value {
        let api: Api<Node> = Api::all(self.client.clone());
        match api.get_opt(&self.config.node_name).await {
            Ok(Some(n)) => {
                serde_json::json!([{"apiVersion": "v1", "kind": "Node", "name": self.config.node_name, "uid": n.metadata.uid}])
            }
            _ => serde_json::json!([]),
        }
    }

    /// Register, then renew the Lease and write the status until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut conds = loop {
            match self.register().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, node = %self.config.node_name, "registering the node failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    }
                }
            }
        };
        let mut last_status = tokio::time::Instant::now();
        let mut last_pressure = Pressure::measure(&self.config.data_dir);
        loop {
            if let Err(e) = self.renew_lease().await {
                tracing::warn!(error = %e, "renewing the node lease failed");
            }
            let pressure = Pressure::measure(&self.config.data_dir);
            if pressure != last_pressure || last_status.elapsed() >= self.config.node_status_period {
                conds = conditions(&pressure, crate::pods::status::time(chrono::Utc::now()), &conds);
                let status = node_status(&self.config, &self.machine, &self.runtime_version, conds.clone());
                match self.write_status(status).await {
                    Ok(()) => {
                        last_status = tokio::time::Instant::now();
                        last_pressure = pressure;
                    }
                    Err(e) => tracing::warn!(error = %e, "writing the node status failed"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.lease_renew) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machine_like_the_kubelet() {
        assert_eq!(mem_total_kib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24_576_000));
        assert_eq!(
            os_image("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(runtime_version("containerd 1.6.20~ds1"), "containerd://1.6.20");
        assert_eq!(runtime_version("v1.7.2"), "containerd://1.7.2");
        let m = Machine::measure(Path::new("/"));
        assert!(m.cpus >= 1 && m.memory_kib > 0 && m.ephemeral_bytes > 0 && !m.kernel.is_empty());
    }

    #[test]
    fn node_status_as_kubernetes_shows_it() {
        let cfg = AgentConfig::new("n1", "192.0.2.7".parse().unwrap(), "/tmp");
        let m = Machine {
            cpus: 2,
            memory_kib: 1000,
            ephemeral_bytes: 4096 * 1024,
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            machine_id: String::new(),
            boot_id: String::new(),
            system_uuid: String::new(),
        };
        let t0 = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let conds = conditions(&Pressure { memory: false, disk: false, pid: false }, t0.clone(), &[]);
        let s = node_status(&cfg, &m, "containerd://1.6.20", conds.clone());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["capacity"],
            serde_json::json!({"cpu": "2", "memory": "1000Ki", "pods": "110", "ephemeral-storage": "4096Ki"})
        );
        assert_eq!(v["addresses"][0], serde_json::json!({"type": "InternalIP", "address": "192.0.2.7"}));
        assert_eq!(v["addresses"][1]["type"], "Hostname");
        // a dual-stack node reports its IPv6 address second
        let mut dual = cfg.clone();
        dual.node_ip_v6 = Some("2001:db8::7".parse().unwrap());
        let v = serde_json::to_value(node_status(&dual, &m, "containerd://1.6.20", conds.clone())).unwrap();
        assert_eq!(v["addresses"][1], serde_json::json!({"type": "InternalIP", "address": "2001:db8::7"}));
        assert_eq!(v["addresses"][2]["type"], "Hostname");
        assert_eq!(v["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(v["nodeInfo"]["kubeletVersion"], "v1.33.0+skiff");
        assert_eq!(v["nodeInfo"]["containerRuntimeVersion"], "containerd://1.6.20");
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.reason.as_deref(), ready.message.as_deref()),
            (Some("KubeletReady"), Some("kubelet is posting ready status"))
        );
        // a later heartbeat keeps the transition time, a change moves it
        let t1 = Time("2026-01-01T00:01:00Z".parse().unwrap());
        let later = conditions(&Pressure { memory: true, disk: false, pid: false }, t1.clone(), &conds);
        let mem = later.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!((mem.status.as_str(), mem.last_transition_time.clone()), ("True", Some(t1.clone())));
        let ready = later.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.last_transition_time.clone(), ready.last_heartbeat_time.clone()), (Some(t0), Some(t1)));
    }
}
