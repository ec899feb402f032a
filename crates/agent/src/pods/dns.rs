//! A pod's name resolution files, as the kubelet makes them: `/etc/resolv.conf`
//! from the dnsPolicy and dnsConfig, `/etc/hosts` with the pod's own names
//! and hostAliases, and `/etc/hostname`.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Most nameservers a resolver reads (glibc's MAXNS).
const MAX_NAMESERVERS: usize = 3;
/// Most search domains the kubelet passes on.
const MAX_SEARCHES: usize = 32;

/// The contents of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `ndots:5`, `edns0`: name with an optional `:value`.
    pub options: Vec<String>,
}

/// Read a resolv.conf (the node's).
pub fn parse_resolv_conf(text: &str) -> DnsSettings {
    let mut s = DnsSettings::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => s.nameservers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => s.searches = words.map(str::to_string).collect(),
            Some("options") => s.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    s
}

pub fn render_resolv_conf(s: &DnsSettings) -> String {
    let mut out = String::new();
    for n in &s.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !s.searches.is_empty() {
        out.push_str(&format!("search {}\n", s.searches.join(" ")));
    }
    if !s.options.is_empty() {
        out.push_str(&format!("options {}\n", s.options.join(" ")));
    }
    out
}

fn omit_duplicates(v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|x| seen.insert(x.clone())).collect()
}

fn option_name(o: &str) -> &str {
    o.split_once(':').map(|(n, _)| n).unwrap_or(o)
}

/// The pod's resolv.conf settings: `cluster_dns` and `cluster_domain` from
/// the agent's configuration, `host` from the node's resolv.conf.
pub fn pod_dns(pod: &Pod, cluster_dns: &[IpAddr], cluster_domain: &str, host: &DnsSettings) -> DnsSettings {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "Default" => Some(false),
        // ClusterFirst, on the host's network, falls back to Default
        _ => Some(!host_network),
    };
    let mut s = match cluster {
        None => DnsSettings::default(),
        Some(true) if !cluster_dns.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let mut searches =
                vec![format!("{ns}.svc.{cluster_domain}"), format!("svc.{cluster_domain}"), cluster_domain.to_string()];
            searches.extend(host.searches.iter().cloned());
            DnsSettings {
                nameservers: cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches: omit_duplicates(searches),
                options: vec!["ndots:5".into()],
            }
        }
        Some(_) => host.clone(),
    };
    if let Some(cfg) = &spec.dns_config {
        let mut servers = s.nameservers.clone();
        servers.extend(cfg.nameservers.clone().unwrap_or_default());
        s.nameservers = omit_duplicates(servers);
        let mut searches = s.searches.clone();
        searches.extend(cfg.searches.clone().unwrap_or_default());
        s.searches = omit_duplicates(searches);
        for o in cfg.options.clone().unwrap_or_default() {
            let name = o.name.unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            let rendered = match o.value.filter(|v| !v.is_empty()) {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            match s.options.iter_mut().find(|x| option_name(x) == name) {
                Some(x) => *x = rendered,
                None => s.options.push(rendered),
            }
        }
    }
    s.nameservers.truncate(MAX_NAMESERVERS);
    s.searches.truncate(MAX_SEARCHES);
    s
}

/// The pod's hostname: spec.hostname, or its name cut to 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    if let Some(h) = spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()) {
        return h;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// `<subdomain>.<namespace>.svc.<cluster domain>` when the pod has a subdomain.
pub fn host_domain(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let sub = pod.spec.as_ref()?.subdomain.clone().filter(|s| !s.is_empty())?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{sub}.{ns}.svc.{cluster_domain}"))
}

/// The contents of /etc/hostname (the FQDN with setHostnameAsFQDN).
pub fn hostname_file(pod: &Pod, cluster_domain: &str) -> String {
    let name = hostname(pod);
    let fqdn = pod.spec.as_ref().and_then(|s| s.set_hostname_as_fqdn).unwrap_or(false);
    match host_domain(pod, cluster_domain) {
        Some(d) if fqdn => format!("{name}.{d}\n"),
        _ => format!("{name}\n"),
    }
}

/// The kubelet-managed /etc/hosts of a pod with its own network.
pub fn hosts_file(pod: &Pod, pod_ips: &[IpAddr], cluster_domain: &str) -> String {
    let name = hostname(pod);
    let mut out = String::from("# Kubernetes-managed hosts file.\n");
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::\tip6-localnet\n");
    out.push_str("fe00::\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        match host_domain(pod, cluster_domain) {
            Some(d) => out.push_str(&format!("{ip}\t{name}.{d}\t{name}\n")),
            None => out.push_str(&format!("{ip}\t{name}\n")),
        }
    }
    out.push_str(&host_aliases(pod));
    out
}

/// The node's own /etc/hosts with the pod's hostAliases (hostNetwork pods).
pub fn host_network_hosts_file(node_hosts: &str, pod: &Pod) -> String {
    let mut out = format!("# Kubernetes-managed hosts file (host network).\n{node_hosts}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&host_aliases(pod));
    out
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.clone()).unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.unwrap_or_default().join("\t")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn dns10() -> Vec<IpAddr> {
        vec!["10.96.0.10".parse().unwrap()]
    }

    fn node() -> DnsSettings {
        parse_resolv_conf("# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lan example.org\noptions edns0 ndots:2\n")
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_and_kubernetes_search_path() {
        let p = pod(serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"containers": []}}));
        let s = pod_dns(&p, &dns10(), "cluster.local", &node());
        assert_eq!(
            render_resolv_conf(&s),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local lan example.org\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_copies_the_node_and_none_takes_only_dns_config() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"containers": [], "dnsPolicy": "Default"}}),
        );
        assert_eq!(pod_dns(&p, &dns10(), "cluster.local", &node()), node());
        let p = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        assert_eq!(
            render_resolv_conf(&pod_dns(&p, &dns10(), "cluster.local", &node())),
            "nameserver 1.2.3.4\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let p = pod(serde_json::json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"containers": [],
            "dnsConfig": {"nameservers": ["10.96.0.10", "8.8.8.8"], "searches": ["cluster.local", "x.example"],
                          "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}]}}}));
        let s = pod_dns(&p, &dns10(), "cluster.local", &DnsSettings::default());
        assert_eq!(s.nameservers, vec!["10.96.0.10", "8.8.8.8"]);
        assert_eq!(s.searches, vec!["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "x.example"]);
        assert_eq!(s.options, vec!["ndots:1", "single-request"]);
    }

    #[test]
    fn host_network_cluster_first_falls_back_to_the_node() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"containers": [], "hostNetwork": true}}),
        );
        assert_eq!(pod_dns(&p, &dns10(), "cluster.local", &node()), node());
        let p = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}}),
        );
        assert_eq!(pod_dns(&p, &dns10(), "cluster.local", &node()).nameservers, vec!["10.96.0.10"]);
    }

    #[test]
    fn hosts_file_has_localhost_the_pod_and_its_aliases() {
        let p =
            pod(serde_json::json!({"metadata": {"name": "web-0", "namespace": "default"}, "spec": {"containers": [],
            "hostname": "web", "subdomain": "nginx",
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]}]}}));
        let ips: Vec<IpAddr> = vec!["10.244.0.5".parse().unwrap()];
        let h = hosts_file(&p, &ips, "cluster.local");
        assert!(h.starts_with(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        ));
        assert!(h.contains("10.244.0.5\tweb.nginx.default.svc.cluster.local\tweb\n"), "{h}");
        assert!(h.ends_with("\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n"), "{h}");
        // no address (loopback-only pod network): no line for the pod
        let p =
            pod(serde_json::json!({"metadata": {"name": "solo", "namespace": "default"}, "spec": {"containers": []}}));
        assert!(!hosts_file(&p, &[], "cluster.local").contains("solo"));
        assert_eq!(hostname_file(&p, "cluster.local"), "solo\n");
    }

    #[test]
    fn hostname_is_the_pod_name_cut_to_63() {
        let long = format!("{}-x", "a".repeat(62));
        let p = pod(serde_json::json!({"metadata": {"name": long}, "spec": {"containers": []}}));
        assert_eq!(hostname(&p), "a".repeat(62));
    }
}
