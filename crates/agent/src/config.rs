//! The agent's configuration.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

/// How one node agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// The node's InternalIP (hostIP of its pods).
    pub node_ip: IpAddr,
    /// The node's IPv6 InternalIP on a dual-stack node whose `node_ip` is
    /// IPv4 (reported second, as kubelet does with `--node-ip v4,v6`).
    pub node_ip_v6: Option<Ipv6Addr>,
    /// Where pods' files, logs and network namespaces live.
    pub data_dir: PathBuf,
    /// The cluster DNS service's address (pods' nameserver).
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's resolv.conf (dnsPolicy Default, and extra search domains).
    pub resolv_conf: PathBuf,
    /// The image sandboxes run.
    pub pause_image: String,
    /// Port of the agent's HTTPS endpoint (daemonEndpoints.kubeletEndpoint).
    pub kubelet_port: u16,
    pub max_pods: u32,
    /// How often the node Lease is renewed.
    pub lease_renew: Duration,
    pub lease_duration_seconds: i32,
    /// How often the Node status is written when nothing changed.
    pub node_status_period: Duration,
    /// How often every pod is synced even when nothing happened (volumes
    /// refresh on this beat).
    pub resync: Duration,
    /// Containerd's version as reported in nodeInfo (asked of the runtime when it answers).
    pub container_runtime_version: String,
    /// Where pod cgroups go (`/skiff/<node>`; see pods::cgroups); None:
    /// containers get the runtime's default cgroup (tests with a fake runtime).
    pub pod_cgroup_root: Option<String>,
}

impl AgentConfig {
    pub fn new(node_name: impl Into<String>, node_ip: IpAddr, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            node_name: node_name.into(),
            node_ip,
            node_ip_v6: None,
            data_dir: data_dir.into(),
            cluster_dns: vec![IpAddr::from([10, 96, 0, 10])],
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            pause_image: "skiff.local/pause:1".into(),
            kubelet_port: 10250,
            max_pods: 110,
            lease_renew: Duration::from_secs(10),
            lease_duration_seconds: 40,
            node_status_period: Duration::from_secs(60),
            resync: Duration::from_secs(10),
            container_runtime_version: "containerd://1.6.20".into(),
            pod_cgroup_root: None,
        }
    }

    /// The node's InternalIPs (hostIPs of its pods): `node_ip`, then the IPv6 one of a dual-stack node.
    pub fn node_ips(&self) -> Vec<IpAddr> {
        let v6 = self.node_ip_v6.map(IpAddr::V6).filter(|ip| *ip != self.node_ip);
        std::iter::once(self.node_ip).chain(v6).collect()
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.data_dir.join("netns")
    }
}
