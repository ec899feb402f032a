//! Rendered tables for representative Services, stated as nft text.

use super::*;

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn ep(s: &str, port: u16, local: bool) -> Endpoint {
    Endpoint { ip: ip(s), port, local }
}

/// default/web: ClusterIP 10.96.0.20:80 → two endpoints on 8080, one local.
fn web() -> Service {
    Service {
        namespace: "default".into(),
        name: "web".into(),
        cluster_ip: Some(ip("10.96.0.20")),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            endpoints: vec![ep("10.244.1.3", 8080, false), ep("10.244.0.2", 8080, true)],
        }],
        ..Default::default()
    }
}

fn state(services: Vec<Service>) -> ProxyState {
    ProxyState {
        family: Family::V4,
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        pod_cidr: Some("10.244.0.0/30".parse().unwrap()),
        services,
        host_ports: vec![],
    }
}

/// The lines of `text` from the line equal to `start` up to the next `}` line.
fn block(text: &str, start: &str) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim() == start {
            inside = true;
        }
        if inside {
            out.push(line.trim());
            if line.trim() == "}" {
                break;
            }
        }
    }
    assert!(inside, "no block {start:?} in\n{text}");
    out.join("\n")
}

fn text(services: Vec<Service>) -> String {
    render(&state(services)).to_text()
}

#[test]
fn the_table_without_services() {
    let expected = r#"table ip skiff {
	map cluster-endpoints-sctp {
		typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . sctp dport
	}
	map cluster-endpoints-tcp {
		typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport
	}
	map cluster-endpoints-udp {
		typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . udp dport
	}
	set cluster-ips {
		type ipv4_addr
	}
	set hairpin {
		type ipv4_addr . ipv4_addr
		elements = { 10.244.0.1 . 10.244.0.1,
			     10.244.0.2 . 10.244.0.2 }
	}
	map no-endpoint-nodeports {
		type inet_proto . inet_service : verdict
	}
	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
	}
	map nodeport-endpoints-sctp {
		typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . sctp dport
	}
	map nodeport-endpoints-tcp {
		typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport
	}
	map nodeport-endpoints-udp {
		typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . udp dport
	}
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
	}
	map service-nodeports {
		type inet_proto . inet_service : verdict
	}
	chain cluster-ips-check {
		ip daddr @cluster-ips goto reject-chain
	}
	chain filter-output {
		type filter hook output priority -110; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump nodeport-endpoints-check
	}
	chain filter-output-post-dnat {
		type filter hook output priority -90; policy accept;
		ct state new jump cluster-ips-check
	}
	chain filter-prerouting {
		type filter hook prerouting priority -90; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump nodeport-endpoints-check
		ct state new jump cluster-ips-check
	}
	chain mark-for-masquerade {
		meta mark set meta mark | 0x4000
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		jump services
	}
	chain nat-postrouting {
		type nat hook postrouting priority 100; policy accept;
		meta mark & 0x4000 == 0x4000 meta mark set meta mark ^ 0x4000 masquerade fully-random
		ct status dnat ip saddr . ip daddr @hairpin masquerade
	}
	chain nat-prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump services
	}
	chain nodeport-endpoints-check {
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports
	}
	chain reject-chain {
		meta l4proto tcp reject with tcp reset
		reject with icmp port-unreachable
	}
	chain service-endpoints-check {
		ip daddr . meta l4proto . th dport vmap @no-endpoint-services
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
	}
}
"#;
    assert_eq!(text(vec![]), expected);
}

#[test]
fn a_cluster_ip_dispatches_to_a_shared_chain_and_picks_from_the_endpoint_map() {
    let t = text(vec![web()]);
    assert_eq!(
        block(&t, "map service-ips {"),
        "map service-ips {\n\
         type ipv4_addr . inet_proto . inet_service : verdict\n\
         elements = { 10.96.0.20 . tcp . 80 : goto cluster-2-tcp }\n\
         }"
    );
    assert_eq!(
        block(&t, "map cluster-endpoints-tcp {"),
        "map cluster-endpoints-tcp {\n\
         typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport\n\
         elements = { 10.96.0.20 . tcp . 80 . 0 : 10.244.0.2 . 8080,\n\
         10.96.0.20 . tcp . 80 . 1 : 10.244.1.3 . 8080 }\n\
         }"
    );
    assert_eq!(
        block(&t, "chain cluster-2-tcp {"),
        "chain cluster-2-tcp {\n\
         ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n\
         meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @cluster-endpoints-tcp\n\
         }"
    );
    assert!(t.contains("elements = { 10.96.0.20 }"), "the ClusterIP is known for rejecting unused ports\n{t}");
}

#[test]
fn services_with_the_same_shape_share_one_chain() {
    let mut other = web();
    other.name = "other".into();
    other.cluster_ip = Some(ip("10.96.0.21"));
    other.ports[0].endpoints = vec![ep("10.244.0.9", 9090, true), ep("10.244.2.9", 9090, false)];
    let r = render(&state(vec![web(), other]));
    let (chains, rules, _) = r.counts();
    assert_eq!((chains, rules), (render(&state(vec![web()])).counts().0, render(&state(vec![web()])).counts().1));
    assert!(r.to_text().contains("10.96.0.21 . tcp . 80 : goto cluster-2-tcp"));
}

#[test]
fn endpoint_order_does_not_change_the_table() {
    let mut shuffled = web();
    shuffled.ports[0].endpoints.reverse();
    shuffled.ports[0].endpoints.push(ep("10.244.0.2", 8080, true));
    assert_eq!(text(vec![shuffled]), text(vec![web()]));
}

#[test]
fn no_ready_endpoints_reject_and_local_policies_without_local_endpoints_drop() {
    let mut none = web();
    none.ports[0].endpoints.clear();
    let t = text(vec![none]);
    assert!(t.contains("elements = { 10.96.0.20 . tcp . 80 : goto reject-chain }"), "{t}");
    assert!(!t.contains("goto cluster-"), "{t}");

    let mut remote_only = web();
    remote_only.internal_traffic_local = true;
    remote_only.ports[0].endpoints.retain(|e| !e.local);
    let t = text(vec![remote_only]);
    assert!(t.contains("elements = { 10.96.0.20 . tcp . 80 : drop }"), "{t}");
}

#[test]
fn internal_traffic_policy_local_uses_only_local_endpoints() {
    let mut svc = web();
    svc.internal_traffic_local = true;
    let t = text(vec![svc]);
    assert!(t.contains("10.96.0.20 . tcp . 80 : goto cluster-1-tcp"), "{t}");
    assert!(t.contains("elements = { 10.96.0.20 . tcp . 80 . 0 : 10.244.0.2 . 8080 }"), "{t}");
}

#[test]
fn node_ports_masquerade_unless_the_external_policy_is_local() {
    let mut cluster = web();
    cluster.ports[0].node_port = Some(30080);
    let t = text(vec![cluster.clone()]);
    assert!(t.contains("elements = { tcp . 30080 : goto np-external-2-tcp }"), "{t}");
    assert_eq!(
        block(&t, "chain np-external-2-tcp {"),
        "chain np-external-2-tcp {\n\
         jump mark-for-masquerade\n\
         meta l4proto tcp dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-endpoints-tcp\n\
         }"
    );
    let mut local = cluster;
    local.external_traffic_local = true;
    let t = text(vec![local]);
    assert!(t.contains("elements = { tcp . 30080 : goto np-local-1-tcp }"), "{t}");
    assert_eq!(
        block(&t, "chain np-local-1-tcp {"),
        "chain np-local-1-tcp {\n\
         meta l4proto tcp dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-endpoints-tcp\n\
         }"
    );
    assert!(t.contains("elements = { tcp . 30080 . 0 : 10.244.0.2 . 8080 }"), "{t}");
    // the ClusterIP still uses every endpoint
    assert!(t.contains("10.96.0.20 . tcp . 80 : goto cluster-2-tcp"), "{t}");
}

#[test]
fn load_balancer_and_external_addresses_dispatch_like_the_cluster_ip() {
    let mut svc = web();
    svc.load_balancer_ips = vec![ip("198.18.0.100")];
    svc.external_ips = vec![ip("198.18.0.50")];
    let t = text(vec![svc]);
    assert!(t.contains("198.18.0.50 . tcp . 80 : goto external-2-tcp"), "{t}");
    assert!(t.contains("198.18.0.100 . tcp . 80 : goto external-2-tcp"), "{t}");
    assert!(t.contains("198.18.0.100 . tcp . 80 . 1 : 10.244.1.3 . 8080"), "{t}");
    assert_eq!(
        block(&t, "chain external-2-tcp {"),
        "chain external-2-tcp {\n\
         jump mark-for-masquerade\n\
         meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @cluster-endpoints-tcp\n\
         }"
    );
}

#[test]
fn client_ip_affinity_gets_per_endpoint_chains_and_sets_with_the_timeout() {
    let mut svc = web();
    svc.session_affinity_timeout = Some(600);
    let t = text(vec![svc]);
    assert_eq!(
        block(&t, "chain svc-default/web/tcp/80 {"),
        "chain svc-default/web/tcp/80 {\n\
         ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n\
         ip saddr @affinity-default/web/tcp/80/10.244.0.2/8080 goto ep-default/web/tcp/80/10.244.0.2/8080\n\
         ip saddr @affinity-default/web/tcp/80/10.244.1.3/8080 goto ep-default/web/tcp/80/10.244.1.3/8080\n\
         numgen random mod 2 vmap { 0 : goto ep-default/web/tcp/80/10.244.0.2/8080, 1 : goto ep-default/web/tcp/80/10.244.1.3/8080 }\n\
         }"
    );
    assert_eq!(
        block(&t, "chain ep-default/web/tcp/80/10.244.1.3/8080 {"),
        "chain ep-default/web/tcp/80/10.244.1.3/8080 {\n\
         update @affinity-default/web/tcp/80/10.244.1.3/8080 { ip saddr }\n\
         meta l4proto tcp dnat to 10.244.1.3:8080\n\
         }"
    );
    assert_eq!(
        block(&t, "set affinity-default/web/tcp/80/10.244.0.2/8080 {"),
        "set affinity-default/web/tcp/80/10.244.0.2/8080 {\n\
         type ipv4_addr\n\
         flags dynamic,timeout\n\
         timeout 600s\n\
         }"
    );
    assert!(t.contains("10.96.0.20 . tcp . 80 : goto svc-default/web/tcp/80"), "{t}");
}

#[test]
fn host_ports_dnat_on_the_node_addresses_or_the_host_ip() {
    let mut st = state(vec![]);
    st.host_ports = vec![
        HostPort {
            protocol: Protocol::Udp,
            host_ip: Some(ip("198.18.0.1")),
            host_port: 53,
            pod_ip: ip("10.244.0.2"),
            container_port: 5353,
        },
        HostPort {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 8081,
            pod_ip: ip("10.244.0.3"),
            container_port: 80,
        },
    ];
    let t = render(&st).to_text();
    assert_eq!(
        block(&t, "chain hostports {"),
        "chain hostports {\n\
         fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto tcp th dport 8081 dnat to 10.244.0.3:80\n\
         ip daddr 198.18.0.1 meta l4proto udp th dport 53 dnat to 10.244.0.2:5353\n\
         }"
    );
    assert!(block(&t, "chain services {").contains("jump hostports"));
}

#[test]
fn the_full_sync_declares_then_refills_every_map_in_one_element_batch() {
    let ruleset = render(&state(vec![web()]));
    let parts: Vec<&super::render::Fragment> =
        std::iter::once(&ruleset.global).chain(ruleset.services.values()).collect();
    let (pre, log) = super::sync::full_plan_text(&parts, &ruleset.select_chains());
    let lines: Vec<&str> = pre.lines().collect();
    assert_eq!(lines[0], "add table ip skiff");
    // the endpoint maps are keyed on a numgen index, declared by typeof, one per protocol
    assert!(lines.contains(
        &"add map ip skiff cluster-endpoints-udp { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . udp dport ; }"
    ), "{pre}");
    assert!(!pre.contains("element"), "elements go over netlink: {pre}");
    // every map is flushed before it is filled, within the same batch
    let pos = |prefix: &str| log.iter().position(|l| l.starts_with(prefix));
    let fill = pos("add service-ips ").expect("service-ips is filled");
    assert!(pos("flush service-ips").expect("service-ips is flushed") < fill);
    assert!(
        log.contains(&"add cluster-endpoints-tcp 10.96.0.20 . tcp . 80 . 0 : 10.244.0.2 . 8080".to_string()),
        "{log:?}"
    );
}
