//! The pod network and the service proxy on real kernel networking: a
//! two-node cluster of network namespaces on an underlay bridge (see
//! `skiff_tests::nodes`), real `skiff server`/`skiff agent` processes, a
//! private containerd, nftables in each node's namespace. Traffic goes only to
//! addresses inside those namespaces.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::nodes::{Nodes, NodesOptions, IMAGE};

/// A web server pod pinned to `node`: answers `Hello from <pod name>` on
/// port 8080 (named `http`), `/cgi-bin/ip` with the client's address, and
/// is Ready while `/ready/ok` exists (an emptyDir the test can empty).
fn web_pod(name: &str, node: &str, app: &str, extra_port: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {IMAGE}
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /srv/cgi-bin
      echo "Hello from $(hostname)" > /srv/index.html
      printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /srv/cgi-bin/ip
      chmod +x /srv/cgi-bin/ip
      touch /ready/ok
      ln -s /ready/ok /srv/ok
      exec httpd -f -p 8080 -h /srv
    ports:
    - {{name: http, containerPort: 8080}}
{extra_port}    readinessProbe:
      httpGet: {{path: /ok, port: http}}
      periodSeconds: 1
      failureThreshold: 1
    volumeMounts:
    - {{name: ready, mountPath: /ready}}
  volumes:
  - {{name: ready, emptyDir: {{}}}}
"#
    )
}

fn service(name: &str, app: &str, ty: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: {ty}
  selector: {{app: {app}}}
  ports:
  - {{name: web, port: 80, targetPort: http}}
{extra}"#
    )
}

/// An address as busybox httpd's CGI reports it (`[::ffff:10.0.0.1]`), plain.
fn plain(addr: &str) -> String {
    addr.trim().trim_start_matches('[').trim_end_matches(']').trim_start_matches("::ffff:").to_string()
}

fn ip_of(p: &Value) -> String {
    p["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

fn by_name<'a>(pods: &'a [Value], name: &str) -> &'a Value {
    pods.iter().find(|p| p["metadata"]["name"] == name).unwrap()
}

fn svc_field(c: &Nodes, name: &str, pointer: &str) -> String {
    let (ns, name) = if name == "kube-dns" { ("kube-system", name) } else { ("default", name) };
    let out = c.kubectl(&["get", "svc", name, "-n", ns, "-o", "json"]);
    out.success();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    match &v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        other => panic!("service {name}: {pointer} is {other:?}"),
    }
}

/// Ask `url` up to `tries` times from `netns` and collect the distinct answers.
fn answers(c: &Nodes, netns: &Path, url: &str, tries: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..tries {
        match c.http_get(netns, url) {
            Ok(body) => {
                seen.insert(body.trim().to_string());
            }
            Err(e) => panic!("GET {url} from {}: {e}", netns.display()),
        }
    }
    seen
}

/// Wait until `f` holds (checked every 100 ms), or panic with `what`.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what} within {timeout:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The host folder of a pod's emptyDir volume `name`.
fn empty_dir(c: &Nodes, pod: &Value, name: &str) -> PathBuf {
    let node = pod["spec"]["nodeName"].as_str().unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let n = c.nodes.iter().find(|n| n.name == node).unwrap();
    n.data_dir.join("agent").join("pods").join(uid).join("volumes").join(name)
}

#[test]
fn pods_and_services_across_two_nodes() {
    let c = Nodes::start(NodesOptions::default());
    let (n1, n2) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    let host_port = "    - {name: alt, containerPort: 8080, hostPort: 8081}\n";
    c.apply(&web_pod("web-1", &n1, "web", ""));
    c.apply(&web_pod("web-2", &n2, "web", host_port));
    c.apply(&web_pod("client", &n1, "client", ""));
    c.apply(&service("web", "web", "NodePort", ""));
    c.apply(&service("nobody", "nobody", "ClusterIP", ""));
    let pods = c.wait_pods_ready("app=web", 2, Duration::from_secs(90));
    let client = c.wait_pods_ready("app=client", 1, Duration::from_secs(60)).remove(0);
    let (w1, w2) = (by_name(&pods, "web-1"), by_name(&pods, "web-2"));
    for p in [w1, w2, &client] {
        let ip: std::net::Ipv4Addr = ip_of(p).parse().unwrap_or_else(|_| panic!("pod without an address: {p}"));
        assert!(ip.octets()[0] == 10 && ip.octets()[1] == 244, "pod address {ip} outside 10.244.0.0/16");
    }
    let client_ns = c.pod_netns(&client);

    // pod to pod on one node and across nodes
    assert_eq!(c.http_get(&client_ns, &format!("http://{}:8080/", ip_of(w1))).unwrap().trim(), "Hello from web-1");
    assert_eq!(c.http_get(&client_ns, &format!("http://{}:8080/", ip_of(w2))).unwrap().trim(), "Hello from web-2");
    // the pod sees the client's own address (no NAT pod to pod)
    let seen = c.http_get(&client_ns, &format!("http://{}:8080/cgi-bin/ip", ip_of(w2))).unwrap();
    assert_eq!(plain(&seen), ip_of(&client));

    // ClusterIP from a pod spreads over both replicas, through the named targetPort
    let vip = svc_field(&c, "web", "/spec/clusterIP");
    let url = format!("http://{vip}/");
    let got = answers(&c, &client_ns, &url, 30);
    assert_eq!(got, BTreeSet::from(["Hello from web-1".to_string(), "Hello from web-2".to_string()]));
    // and from a node's own namespace
    let got = answers(&c, &c.nodes[1].netns, &url, 30);
    assert_eq!(got.len(), 2, "from node-2: {got:?}");
    // hairpin: a pod reaching itself through its Service
    let w1_ns = c.pod_netns(w1);
    let got = answers(&c, &w1_ns, &url, 30);
    assert!(got.contains("Hello from web-1"), "hairpin failed: {got:?}");

    // NodePort on every node from the external client
    let node_port = svc_field(&c, "web", "/spec/ports/0/nodePort");
    for n in &c.nodes {
        let got = answers(&c, &c.external, &format!("http://{}:{node_port}/", n.ip), 20);
        assert_eq!(got.len(), 2, "NodePort on {}: {got:?}", n.name);
    }

    // HostPort only on the pod's node
    let hp = c.http_get(&c.external, &format!("http://{}:8081/", c.nodes[1].ip)).unwrap();
    assert_eq!(hp.trim(), "Hello from web-2");
    assert!(c.http_get(&c.external, &format!("http://{}:8081/", c.nodes[0].ip)).is_err());

    // a Service without endpoints, and an unused port of a ClusterIP, reject at once
    let nobody = svc_field(&c, "nobody", "/spec/clusterIP");
    for target in [format!("http://{nobody}/"), format!("http://{vip}:81/")] {
        let started = Instant::now();
        let err = c.http_get(&client_ns, &target).unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "{target}: rejected after {took:?} ({err})");
        assert!(err.contains("refused") || err.contains("Couldn't connect"), "{target}: {err}");
    }

    // cluster DNS from inside a pod: the Service by short name (search path), FQDN, and a miss
    let dns = c.kubectl(&["exec", "client", "--", "nslookup", "web.default.svc.cluster.local"]);
    assert!(dns.stdout.contains(&vip), "nslookup web: {}{}", dns.stdout, dns.stderr);
    let dns_svc = svc_field(&c, "kube-dns", "/spec/clusterIP");
    assert_eq!(dns_svc, "10.96.0.10");
    let short = c.kubectl(&["exec", "client", "--", "sh", "-c", "printf 'GET / HTTP/1.0\r\n\r\n' | nc web 80"]);
    assert!(short.stdout.contains("Hello from web-"), "nc web 80: {}{}", short.stdout, short.stderr);
    // the search path (ndots:5): `svc.namespace`, and an absolute name with its trailing dot
    // (through the C library's resolver, which applies the search path; busybox nslookup does not)
    let out =
        c.kubectl(&["exec", "client", "--", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web.default 80"]);
    assert!(out.stdout.contains("Hello from web-"), "nc web.default 80: {}{}", out.stdout, out.stderr);
    let out = c.kubectl(&["exec", "client", "--", "nslookup", "web.default.svc.cluster.local."]);
    assert!(out.stdout.contains(&vip), "nslookup with a trailing dot: {}{}", out.stdout, out.stderr);
    let conf = c.kubectl(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    conf.success().stdout_has("nameserver 10.96.0.10").stdout_has("default.svc.cluster.local").stdout_has("ndots:5");
    let miss = c.kubectl(&["exec", "client", "--", "nslookup", "nothing-here.default.svc.cluster.local"]);
    assert!(miss.code != Some(0) || miss.stdout.contains("NXDOMAIN"), "{}", miss.stdout);

    // a pod turning not-ready stops receiving traffic
    std::fs::remove_file(empty_dir(&c, w2, "ready").join("ok")).unwrap();
    eventually("web-2 out of the Service", Duration::from_secs(15), || {
        let got = answers(&c, &client_ns, &url, 20);
        if got == BTreeSet::from(["Hello from web-1".to_string()]) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    println!("not-ready removal ok");
}

#[test]
fn external_traffic_policy_local_and_host_network_and_agent_restart() {
    let mut c = Nodes::start(NodesOptions::default());
    let n2 = c.nodes[1].name.clone();
    c.apply(&web_pod("local-web", &n2, "local", ""));
    c.apply(&service("local", "local", "NodePort", "  externalTrafficPolicy: Local\n"));
    let web = c.wait_pods_ready("app=local", 1, Duration::from_secs(90)).remove(0);
    let node_port = svc_field(&c, "local", "/spec/ports/0/nodePort");
    // the client's own address reaches the pod through a Local NodePort
    let seen = c.http_get(&c.external, &format!("http://{}:{node_port}/cgi-bin/ip", c.nodes[1].ip)).unwrap();
    assert_eq!(plain(&seen), c.external_ip.to_string());
    // and the node without a local endpoint does not forward
    assert!(c.http_get(&c.external, &format!("http://{}:{node_port}/", c.nodes[0].ip)).is_err());

    // hostNetwork pods share the node's address
    let host_pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: on-host, labels: {{app: on-host}}}}
spec:
  nodeName: {n2}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, command: ["sleep", "3600"]}}
"#
    );
    c.apply(&host_pod);
    let p = c.wait_pods_ready("app=on-host", 1, Duration::from_secs(60)).remove(0);
    assert_eq!(ip_of(&p), c.nodes[1].ip.to_string());

    // restarting the agent keeps traffic (and the pod's address) as they were
    let before = ip_of(&web);
    c.restart_node(1);
    let url = format!("http://{}:{node_port}/", c.nodes[1].ip);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let got = c.http_get(&c.external, &url);
        assert_eq!(got.as_deref().map(str::trim), Ok("Hello from local-web"), "during the agent restart");
        std::thread::sleep(Duration::from_millis(100));
        if c.nodes[1].log().matches("node agent running").count() >= 2 {
            break;
        }
    }
    c.wait_ready(Duration::from_secs(60));
    assert_eq!(ip_of(&c.pod("local-web")), before);
    assert_eq!(c.http_get(&c.external, &url).unwrap().trim(), "Hello from local-web");
}

#[test]
fn pods_reach_each_other_over_vxlan() {
    let c = Nodes::start(NodesOptions { node_flags: vec!["--flannel-backend=vxlan".into()], ..Default::default() });
    let (n1, n2) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    c.apply(&web_pod("vx-1", &n1, "vx", ""));
    c.apply(&web_pod("vx-2", &n2, "vx", ""));
    c.apply(&service("vx", "vx", "ClusterIP", ""));
    let pods = c.wait_pods_ready("app=vx", 2, Duration::from_secs(90));
    let (p1, p2) = (by_name(&pods, "vx-1"), by_name(&pods, "vx-2"));
    let ns1 = c.pod_netns(p1);
    // across nodes through the tunnel, with the client's own address kept
    assert_eq!(c.http_get(&ns1, &format!("http://{}:8080/", ip_of(p2))).unwrap().trim(), "Hello from vx-2");
    let seen = c.http_get(&ns1, &format!("http://{}:8080/cgi-bin/ip", ip_of(p2))).unwrap();
    assert_eq!(plain(&seen), ip_of(p1));
    let vip = svc_field(&c, "vx", "/spec/clusterIP");
    assert_eq!(answers(&c, &ns1, &format!("http://{vip}/"), 30).len(), 2);
    // what carries it: the VXLAN device, a route on it, and the pods' MTU less the 50 bytes of VXLAN
    let route = Command::new("ip").args(["-n", &c.nodes[0].ns_name, "route", "show", "proto", "99"]).output().unwrap();
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(route.contains("dev skiff.vxlan") && route.contains("onlink"), "routes on node 1: {route}");
    let link = c.run_in(&ns1, &["ip", "-o", "link", "show", "eth0"], Duration::from_secs(5));
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    assert!(link.contains(" mtu 1450 "), "the pod's eth0: {link}");
}

/// A LoadBalancer Service with externalTrafficPolicy Local answering on
/// `port`, its one pod pinned to node 2.
fn local_lb(c: &Nodes) -> Value {
    let n2 = c.nodes[1].name.clone();
    c.apply(&web_pod("lb-web", &n2, "lb", ""));
    c.apply(&service("lb", "lb", "LoadBalancer", "  externalTrafficPolicy: Local\n"));
    c.wait_pods_ready("app=lb", 1, Duration::from_secs(90)).remove(0)
}

/// `curl` from `netns`, without --fail: (status code, body).
fn http_status(c: &Nodes, netns: &Path, url: &str) -> (u16, String) {
    let out = c.run_in(
        netns,
        &["curl", "-sS", "--max-time", "3", "-o", "-", "-w", "\n%{http_code}", url],
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code =
        code.trim().parse().unwrap_or_else(|_| panic!("GET {url}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_string())
}

#[test]
fn health_check_node_port_of_a_local_load_balancer() {
    let c = Nodes::start(NodesOptions::default());
    local_lb(&c);
    let hc = svc_field(&c, "lb", "/spec/healthCheckNodePort");
    let hc_port: u16 = hc.parse().unwrap();
    let node_port: u16 = svc_field(&c, "lb", "/spec/ports/0/nodePort").parse().unwrap();
    assert_ne!(hc_port, node_port, "healthCheckNodePort and nodePort must differ");
    assert!((30000..=32767).contains(&hc_port), "healthCheckNodePort {hc_port} outside the NodePort range");
    let expect = |count: u64| {
        serde_json::json!({"service": {"namespace": "default", "name": "lb"}, "localEndpoints": count,
                           "serviceProxyHealthy": true})
    };
    // the node with the pod: 200 and one local endpoint
    eventually("node-2's health check answers 200", Duration::from_secs(15), || {
        let (code, body) = http_status(&c, &c.external, &format!("http://{}:{hc}/healthz", c.nodes[1].ip));
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {body}: {e}"))?;
        if code == 200 && v == expect(1) {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
    // the node without: 503 and none
    let (code, body) = http_status(&c, &c.external, &format!("http://{}:{hc}/healthz", c.nodes[0].ip));
    assert_eq!(code, 503, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), expect(0));
    // switching the Service to Cluster releases the port and the agents close it
    let patch = r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#;
    c.kubectl(&["patch", "svc", "lb", "--type=merge", "-p", patch]).success();
    let out = c.kubectl(&["get", "svc", "lb", "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v.pointer("/spec/healthCheckNodePort").is_none(), "kept after the switch to Cluster: {v}");
    eventually("health check port closed", Duration::from_secs(15), || {
        match c.http_get(&c.external, &format!("http://{}:{hc}/healthz", c.nodes[1].ip)) {
            Err(e) if e.contains("refused") || e.contains("Couldn't connect") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[test]
fn load_balancer_addresses_from_a_pool() {
    let c = Nodes::start(NodesOptions {
        server_flags: vec!["--service-lb-pool=198.19.0.0/28".into()],
        ..Default::default()
    });
    let n1 = c.nodes[0].name.clone();
    let n2 = c.nodes[1].name.clone();
    c.apply(&web_pod("pool-1", &n1, "pool", ""));
    c.apply(&web_pod("pool-2", &n2, "pool", ""));
    c.apply(&service("pool", "pool", "LoadBalancer", ""));
    c.wait_pods_ready("app=pool", 2, Duration::from_secs(90));
    let route = c.run_in(
        &c.external,
        &["ip", "route", "add", "198.19.0.0/28", "via", &c.nodes[0].ip.to_string()],
        Duration::from_secs(5),
    );
    assert!(route.status.success(), "ip route add: {}", String::from_utf8_lossy(&route.stderr));
    eventually("status.loadBalancer.ingress from the pool", Duration::from_secs(15), || {
        let out = c.kubectl(&["get", "svc", "pool", "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        match v.pointer("/status/loadBalancer/ingress/0/ip").and_then(Value::as_str) {
            Some("198.19.0.1") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let table = c.kubectl(&["get", "svc", "pool"]);
    table.success().stdout_has("198.19.0.1");
    eventually("the pool address reaches both pods", Duration::from_secs(15), || {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.insert(c.http_get(&c.external, "http://198.19.0.1/")?.trim().to_string());
        }
        let want = BTreeSet::from(["Hello from pool-1".to_string(), "Hello from pool-2".to_string()]);
        if seen == want {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
}

/// A pod running the shell command `args` (here: echo servers on port 9000).
fn echo_pod(name: &str, node: &str, app: &str, args: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: {IMAGE}
    command: ["sh", "-c", "{args}"]
"#
    )
}

#[test]
fn agent_restart_keeps_an_open_connection() {
    use std::io::{BufRead, BufReader, Write};
    let mut c = Nodes::start(NodesOptions::default());
    let n2 = c.nodes[1].name.clone();
    c.apply(&echo_pod("echo", &n2, "echo", "exec nc -ll -p 9000 -e cat"));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  type: NodePort\n  selector: {app: echo}\n  ports:\n  - {port: 9000, targetPort: 9000}\n",
    );
    c.wait_pods_ready("app=echo", 1, Duration::from_secs(90));
    let node_port = svc_field(&c, "echo", "/spec/ports/0/nodePort");
    let target = format!("{}:{node_port}", c.nodes[1].ip);
    let stream = c.in_netns(&c.external.clone(), move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match std::net::TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(2)) {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("connect {target}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut roundtrip = |msg: &str| -> String {
        writer.write_all(format!("{msg}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap_or_else(|e| panic!("echo of {msg}: {e}"));
        line.trim().to_string()
    };
    assert_eq!(roundtrip("before"), "before");
    c.restart_agent_and_wait(1);
    // the proxy has synced again after the restart (its first full sync)
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(roundtrip("after"), "after", "the open connection through the NodePort broke");
}

/// A UDP server the test runs inside a pod's network namespace: answers
/// every datagram on port 9000 with `reply`, for at most `lifetime`.
fn udp_server_in(c: &Nodes, pod: &Value, reply: &'static str, lifetime: Duration) {
    let socket = c.in_netns(&c.pod_netns(pod), || std::net::UdpSocket::bind("0.0.0.0:9000").unwrap());
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        let until = Instant::now() + lifetime;
        let mut buf = [0u8; 512];
        while Instant::now() < until {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(reply.as_bytes(), from);
            }
        }
    });
}

#[test]
fn udp_conntrack_of_a_removed_endpoint_is_deleted() {
    let c = Nodes::start(NodesOptions::default());
    let (n1, n2) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    c.apply(&echo_pod("udp-a", &n2, "udp", "exec sleep 3600"));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: udp}\nspec:\n  selector: {app: udp}\n  ports:\n  - {port: 9000, targetPort: 9000, protocol: UDP}\n",
    );
    let a = c.wait_pods_ready("app=udp", 1, Duration::from_secs(90)).remove(0);
    udp_server_in(&c, &a, "a", Duration::from_secs(50));
    let vip = svc_field(&c, "udp", "/spec/clusterIP");
    // one client socket (in node 1's namespace) for the whole test
    let target = format!("{vip}:9000");
    let client = c.in_netns(&c.nodes[0].netns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(&target).unwrap();
        s
    });
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let ask = || -> Result<String, String> {
        client.send(b"who").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    eventually("udp-a answers through the ClusterIP", Duration::from_secs(15), || match ask()? {
        s if s == "a" => Ok(()),
        s => Err(s),
    });
    // replace the endpoint: udp-a goes, udp-b (on the other node) comes
    c.kubectl(&["delete", "pod", "udp-a", "--wait=false"]).success();
    c.apply(&echo_pod("udp-b", &n1, "udp", "exec sleep 3600"));
    let b = c.wait_pods_ready("app=udp", 1, Duration::from_secs(60));
    let b = b.iter().find(|p| p["metadata"]["name"] == "udp-b").unwrap_or_else(|| panic!("udp-b not ready: {b:?}"));
    assert_ne!(ip_of(b), ip_of(&a));
    udp_server_in(&c, b, "b", Duration::from_secs(30));
    // the same client socket keeps sending (so its old conntrack entry would
    // never time out) and reaches the new endpoint
    eventually("udp-b answers the same client socket", Duration::from_secs(20), || match ask() {
        Ok(s) if s == "b" => Ok(()),
        other => Err(format!("{other:?}\n{}", c.ruleset(0))),
    });
}

/// A connected UDP client socket in `netns` that also keeps sending in the
/// background every 300 ms for `lifetime`, as a client that never stops
/// would (so its conntrack entry never times out); `ask` sends and reads one
/// answer (possibly one the background sends drew).
fn udp_client(c: &Nodes, netns: &Path, target: String, lifetime: Duration) -> std::net::UdpSocket {
    let client = c.in_netns(netns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(&target).unwrap();
        s
    });
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let keepalive = client.try_clone().unwrap();
    std::thread::spawn(move || {
        let until = Instant::now() + lifetime;
        while Instant::now() < until {
            let _ = keepalive.send(b"keepalive");
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    client
}

fn ask(client: &std::net::UdpSocket) -> Result<String, String> {
    client.send(b"who").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The conntrack cleanup of a removed UDP endpoint also works across an
/// agent restart: the restarted agent reads what its table did from the
/// kernel and compares its first sync with that.
#[test]
fn udp_conntrack_of_an_endpoint_removed_while_the_agent_was_down_is_deleted() {
    let mut c = Nodes::start(NodesOptions::default());
    let n1 = c.nodes[0].name.clone();
    c.apply(&echo_pod("udp-a", &n1, "udp", "exec sleep 3600"));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: udp}\nspec:\n  selector: {app: udp}\n  ports:\n  - {port: 9000, targetPort: 9000, protocol: UDP}\n",
    );
    let a = c.wait_pods_ready("app=udp", 1, Duration::from_secs(90)).remove(0);
    udp_server_in(&c, &a, "a", Duration::from_secs(80));
    let vip = svc_field(&c, "udp", "/spec/clusterIP");
    // the client is on node 2, whose agent the test restarts
    let client = udp_client(&c, &c.nodes[1].netns.clone(), format!("{vip}:9000"), Duration::from_secs(80));
    eventually("udp-a answers through the ClusterIP", Duration::from_secs(15), || match ask(&client)? {
        s if s == "a" => Ok(()),
        s => Err(s),
    });
    // node 2's agent stops; meanwhile udp-a is replaced by udp-b
    c.stop_node(1);
    c.kubectl(&["delete", "pod", "udp-a", "--wait=false"]).success();
    c.apply(&echo_pod("udp-b", &n1, "udp", "exec sleep 3600"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let b = loop {
        let pods = c.wait_pods_ready("app=udp", 1, Duration::from_secs(60));
        if let Some(b) = pods.iter().find(|p| p["metadata"]["name"] == "udp-b") {
            break b.clone();
        }
        assert!(Instant::now() < deadline, "udp-b not ready: {pods:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    udp_server_in(&c, &b, "b", Duration::from_secs(60));
    // the old table (udp-a) stays in node 2's kernel until the agent is back
    assert!(c.ruleset(1).contains(&ip_of(&a)), "node 2's table changed while its agent was down");
    c.restart_node(1);
    eventually("udp-b answers the same client socket after the restart", Duration::from_secs(20), || {
        match ask(&client) {
            Ok(s) if s == "b" => Ok(()),
            other => Err(format!("{other:?}\n{}", c.ruleset(1))),
        }
    });
}

/// A UDP Service that goes from no endpoints to one: datagrams a client
/// sent before (here to a NodePort nothing served yet, so the node itself
/// answered them and their conntrack entry was confirmed without NAT) must
/// not keep the same client socket from reaching the new endpoint, as
/// kube-proxy ensures by deleting the entries to the Service's addresses.
#[test]
fn udp_service_getting_its_first_endpoint_deletes_conntrack_entries_made_before() {
    let c = Nodes::start(NodesOptions::default());
    let n2 = c.nodes[1].name.clone();
    let node2 = c.nodes[1].ip;
    // the external client sends to node 2's port 30999 from before the Service exists
    let ext = c.external.clone();
    let client = udp_client(&c, &ext, format!("{node2}:30999"), Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(1));
    assert!(ask(&client).is_err(), "something answers on {node2}:30999 before the test made it");
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: udp-np}\nspec:\n  type: NodePort\n  selector: {app: udp-np}\n  ports:\n  - {port: 9000, targetPort: 9000, nodePort: 30999, protocol: UDP}\n",
    );
    // no endpoints for a while: the Service rejects
    std::thread::sleep(Duration::from_secs(2));
    assert!(ask(&client).is_err());
    c.apply(&echo_pod("udp-np", &n2, "udp-np", "exec sleep 3600"));
    let p = c.wait_pods_ready("app=udp-np", 1, Duration::from_secs(90)).remove(0);
    udp_server_in(&c, &p, "np", Duration::from_secs(60));
    eventually("the new endpoint answers the same client socket", Duration::from_secs(20), || match ask(&client) {
        Ok(s) if s == "np" => Ok(()),
        other => Err(format!("{other:?}\n{}", c.ruleset(1))),
    });
}

/// The pod's addresses in status.podIPs.
fn pod_ips(p: &Value) -> Vec<String> {
    p["status"]["podIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_string))
        .collect()
}

/// A dual-stack cluster on an IPv4+IPv6 underlay (host-gw): pods get an
/// IPv4 and an IPv6 address, reach each other over IPv6 on one node and
/// across nodes with no NAT between them, reach the outside over IPv6
/// masqueraded as their node's IPv6 address, and a dual-stack Service gets
/// an IPv6 EndpointSlice with the pods' IPv6 addresses.
#[test]
fn dual_stack_pods_reach_each_other_and_the_outside_over_ipv6() {
    let mut c = Nodes::start(NodesOptions { dual_stack: true, ..Default::default() });
    let (n1, n2) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    c.apply(&web_pod("web-1", &n1, "web", ""));
    c.apply(&web_pod("web-2", &n2, "web", ""));
    c.apply(&web_pod("client", &n1, "client", ""));
    c.apply(&service("web", "web", "ClusterIP", "  ipFamilyPolicy: RequireDualStack\n"));
    let pods = c.wait_pods_ready("app=web", 2, Duration::from_secs(90));
    let client = c.wait_pods_ready("app=client", 1, Duration::from_secs(60)).remove(0);
    let (w1, w2) = (by_name(&pods, "web-1"), by_name(&pods, "web-2"));

    // every node reports its IPv6 InternalIP: the server was told it, the agent found it
    let nodes: Value = serde_json::from_str(&c.kubectl(&["get", "nodes", "-o", "json"]).success().stdout).unwrap();
    for n in &c.nodes {
        let node =
            nodes["items"].as_array().unwrap().iter().find(|i| i["metadata"]["name"] == n.name.as_str()).unwrap();
        let internal: Vec<&str> = node["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert_eq!(internal, vec![n.ip.to_string(), n.ip6.unwrap().to_string()], "{}", n.name);
    }

    // both addresses, IPv4 first (podIP stays IPv4), each in its node's podCIDR of that family
    let cluster6: ipnet::Ipv6Net = "fd00:10:244::/56".parse().unwrap();
    let mut v6 = std::collections::BTreeMap::new();
    for p in [w1, w2, &client] {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        let ips = pod_ips(p);
        assert_eq!(ips.len(), 2, "{name}: podIPs {ips:?}");
        assert_eq!(ips[0], ip_of(p), "{name}: podIP is the IPv4 one");
        let a: std::net::Ipv6Addr = ips[1].parse().unwrap_or_else(|_| panic!("{name}: {ips:?}"));
        assert!(cluster6.contains(&a), "{name}: {a} outside {cluster6}");
        v6.insert(name, a);
    }
    let node_of = |p: &Value| -> String { p["spec"]["nodeName"].as_str().unwrap().to_string() };
    let nodes_json: Value = nodes;
    for p in [w1, w2] {
        let node =
            nodes_json["items"].as_array().unwrap().iter().find(|n| n["metadata"]["name"] == node_of(p)).unwrap();
        let cidrs: Vec<&str> = node["spec"]["podCIDRs"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let net6: ipnet::Ipv6Net = cidrs[1].parse().unwrap();
        assert!(net6.contains(&v6[p["metadata"]["name"].as_str().unwrap()]), "{cidrs:?}");
    }

    // host-gw: each node routes the other's IPv6 podCIDR via the other's IPv6 address
    for (i, other) in [(0, 1), (1, 0)] {
        let other_node = nodes_json["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["metadata"]["name"] == c.nodes[other].name.as_str())
            .unwrap();
        let want =
            format!("{} via {}", other_node["spec"]["podCIDRs"][1].as_str().unwrap(), c.nodes[other].ip6.unwrap());
        let out = Command::new("ip").args(["-n", &c.nodes[i].ns_name, "-6", "route", "show", "proto", "99"]).output();
        let routes = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
        assert!(routes.contains(&want), "{}: {routes}", c.nodes[i].name);
    }

    // pod to pod over IPv6: on one node (web-1) and across nodes (web-2, host-gw), real HTTP over TCP
    let client_ns = c.pod_netns(&client);
    let started = Instant::now();
    for (name, addr) in [("web-1", v6["web-1"]), ("web-2", v6["web-2"])] {
        let t = Instant::now();
        let body = c.http_get(&client_ns, &format!("http://[{addr}]:8080/")).unwrap();
        assert_eq!(body.trim(), format!("Hello from {name}"));
        // the first packet is not lost to neighbour discovery (a SYN retransmit would take 1 s)
        assert!(t.elapsed() < Duration::from_millis(900), "GET {name} over IPv6 took {:?}", t.elapsed());
        // the server sees the client pod's own IPv6 address: no NAT pod to pod
        let seen = c.http_get(&client_ns, &format!("http://[{addr}]:8080/cgi-bin/ip")).unwrap();
        assert_eq!(plain(&seen), v6["client"].to_string(), "{name} saw");
    }
    println!("pod-to-pod over IPv6 (4 requests, one node and across nodes) in {:?}", started.elapsed());
    // and back: web-2 (node-2) reaches the client on node-1
    let w2_ns = c.pod_netns(w2);
    let body = c.http_get(&w2_ns, &format!("http://[{}]:8080/", v6["client"])).unwrap();
    assert_eq!(body.trim(), "Hello from client");

    // to the outside over IPv6: masqueraded as the node's IPv6 address
    let ext6 = c.external_ip6.unwrap();
    let listener = c.in_netns(&c.external.clone(), move || std::net::TcpListener::bind((ext6, 9000)).unwrap());
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 2 && Instant::now() < deadline {
            let (mut conn, peer) = match listener.accept() {
                Ok(c) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            use std::io::{Read, Write};
            let _ = conn.set_nonblocking(false);
            let mut buf = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
            let _ = conn.read(&mut buf);
            let body = format!("{}\n", peer.ip());
            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            seen.push(peer.ip().to_string());
        }
        seen
    });
    for (p, node) in [(&client, 0), (w2, 1)] {
        let seen = c.http_get(&c.pod_netns(p), &format!("http://[{ext6}]:9000/")).unwrap();
        assert_eq!(seen.trim(), c.nodes[node].ip6.unwrap().to_string(), "egress from {}", node_of(p));
    }
    assert_eq!(server.join().unwrap().len(), 2);
    let table = Command::new("ip")
        .args(["netns", "exec", &c.nodes[0].ns_name, "nft", "list", "table", "ip6", "skiff-podnet"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("masquerade"), "{}", c.ruleset(0));

    // the dual-stack Service: two ClusterIPs, an IPv4 and an IPv6 EndpointSlice with the pods' addresses
    let families = svc_field(&c, "web", "/spec/ipFamilies/1");
    assert_eq!(families, "IPv6");
    let want6: BTreeSet<String> = [v6["web-1"].to_string(), v6["web-2"].to_string()].into();
    eventually("an IPv6 EndpointSlice with both pods", Duration::from_secs(15), || {
        let out = c.kubectl(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stderr))?;
        let by_type = |t: &str| -> BTreeSet<String> {
            v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["addressType"] == t)
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
                .collect()
        };
        let want4: BTreeSet<String> = [ip_of(w1), ip_of(w2)].into();
        if by_type("IPv6") == want6 && by_type("IPv4") == want4 {
            Ok(())
        } else {
            Err(format!("IPv4 {:?}, IPv6 {:?}", by_type("IPv4"), by_type("IPv6")))
        }
    });
    // IPv4 keeps working beside it
    assert_eq!(c.http_get(&client_ns, &format!("http://{}:8080/", ip_of(w2))).unwrap().trim(), "Hello from web-2");

    // node-2's agent restarts: web-2 keeps both addresses (adopted, not re-wired) and stays reachable over IPv6
    let before = pod_ips(w2);
    c.restart_agent_and_wait(1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pod_ips(&c.pod("web-2")), before, "web-2's addresses after the agent restart");
    let body = c.http_get(&client_ns, &format!("http://[{}]:8080/", v6["web-2"])).unwrap();
    assert_eq!(body.trim(), "Hello from web-2");
    // a new pod on the restarted node gets an IPv6 address nobody holds
    c.apply(&web_pod("web-3", &n2, "web3", ""));
    let w3 = c.wait_pods_ready("app=web3", 1, Duration::from_secs(60)).remove(0);
    let ips3 = pod_ips(&w3);
    assert_eq!(ips3.len(), 2, "{ips3:?}");
    assert!(!v6.values().any(|a| a.to_string() == ips3[1]), "{} handed out twice", ips3[1]);
    let body = c.http_get(&client_ns, &format!("http://[{}]:8080/", ips3[1])).unwrap();
    assert_eq!(body.trim(), "Hello from web-3");
}

/// The VXLAN backend carries the pods' IPv6 too: through the same (IPv4)
/// tunnel, via a route to the other node's IPv6 podCIDR on the VXLAN
/// device, with no NAT between the pods.
#[test]
fn dual_stack_pods_reach_each_other_over_vxlan() {
    let c = Nodes::start(NodesOptions {
        dual_stack: true,
        node_flags: vec!["--flannel-backend=vxlan".into()],
        ..Default::default()
    });
    let (n1, n2) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    c.apply(&web_pod("vx6-1", &n1, "vx6", ""));
    c.apply(&web_pod("vx6-2", &n2, "vx6", ""));
    let pods = c.wait_pods_ready("app=vx6", 2, Duration::from_secs(90));
    let (p1, p2) = (by_name(&pods, "vx6-1"), by_name(&pods, "vx6-2"));
    let (a1, a2) = (pod_ips(p1)[1].clone(), pod_ips(p2)[1].clone());
    for (from, to, addr, peer) in [(p1, "vx6-2", &a2, &a1), (p2, "vx6-1", &a1, &a2)] {
        let ns = c.pod_netns(from);
        let from_name = from["metadata"]["name"].as_str().unwrap_or_default();
        let started = Instant::now();
        assert_eq!(c.http_get(&ns, &format!("http://[{addr}]:8080/")).unwrap().trim(), format!("Hello from {to}"));
        // right after the pods start, the node behind the tunnel resolves a
        // pod that has not spoken yet at once: its bridge's link-local
        // address is not held tentative by duplicate address detection
        // (that cost the first SYN a 1 s retry)
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "first GET {from_name} -> {to} over IPv6/VXLAN took {:?}",
            started.elapsed()
        );
        let seen = c.http_get(&ns, &format!("http://[{addr}]:8080/cgi-bin/ip")).unwrap();
        assert_eq!(&plain(&seen), peer);
        let again = Instant::now();
        c.http_get(&ns, &format!("http://[{addr}]:8080/")).unwrap();
        assert!(again.elapsed() < Duration::from_millis(900), "a later GET took {:?}", again.elapsed());
    }
    let out = Command::new("ip").args(["-n", &c.nodes[0].ns_name, "-6", "route", "show", "proto", "99"]).output();
    let routes = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
    assert!(routes.contains("dev skiff.vxlan") && routes.contains("onlink"), "IPv6 routes on node 1: {routes}");
}

/// IPv6 Services through the agents' `ip6 skiff` tables on a dual-stack
/// cluster: a RequireDualStack NodePort Service's IPv6 ClusterIP spreads
/// over pods on both nodes from a pod (whose address the server sees, no
/// NAT), and a pod reaches itself through it (hairpin); its NodePort answers
/// the external client on every node's IPv6 address; an IPv6 Service
/// without endpoints refuses at once.
#[test]
fn dual_stack_services_over_ipv6() {
    let c = Nodes::start(NodesOptions { dual_stack: true, ..Default::default() });
    let (n1, n2) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    c.apply(&web_pod("web-1", &n1, "web", ""));
    c.apply(&web_pod("web-2", &n2, "web", ""));
    c.apply(&web_pod("client", &n1, "client", ""));
    c.apply(&service("web", "web", "NodePort", "  ipFamilyPolicy: RequireDualStack\n"));
    c.apply(&service("nobody", "nobody", "ClusterIP", "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n"));
    let pods = c.wait_pods_ready("app=web", 2, Duration::from_secs(90));
    let client = c.wait_pods_ready("app=client", 1, Duration::from_secs(60)).remove(0);
    let vip6 = svc_field(&c, "web", "/spec/clusterIPs/1");
    assert!(vip6.contains(':'), "the second ClusterIP is IPv6: {vip6}");
    let node_port = svc_field(&c, "web", "/spec/ports/0/nodePort");
    let client_ns = c.pod_netns(&client);
    let client6 = pod_ips(&client)[1].clone();

    // the ClusterIP spreads over both pods (one on each node) and keeps the client's address
    let mut seen = BTreeSet::new();
    eventually("both pods answer the IPv6 ClusterIP", Duration::from_secs(30), || {
        let body =
            c.http_get(&client_ns, &format!("http://[{vip6}]/")).map_err(|e| format!("{e}\n{}", c.ruleset(0)))?;
        seen.insert(body.trim().to_string());
        if seen.len() == 2 {
            Ok(())
        } else {
            Err(format!("only {seen:?}"))
        }
    });
    let peer = c.http_get(&client_ns, &format!("http://[{vip6}]/cgi-bin/ip")).unwrap();
    assert_eq!(plain(&peer), client6, "no NAT from a pod to a ClusterIP");
    // hairpin: web-1 reaches itself through the Service
    let w1 = by_name(&pods, "web-1");
    let w1_ns = c.pod_netns(w1);
    eventually("web-1 answers itself through the IPv6 ClusterIP", Duration::from_secs(20), || {
        match c.http_get(&w1_ns, &format!("http://[{vip6}]/")) {
            Ok(b) if b.trim() == "Hello from web-1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // the NodePort on each node's IPv6 address, from the external client
    let ext = c.external.clone();
    for n in &c.nodes {
        let url = format!("http://[{}]:{node_port}/", n.ip6.unwrap());
        let body = c.http_get(&ext, &url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(body.starts_with("Hello from web-"), "{url}: {body}");
    }

    // an IPv6 Service without endpoints refuses at once
    let nobody6 = svc_field(&c, "nobody", "/spec/clusterIP");
    assert!(nobody6.contains(':'), "{nobody6}");
    let t = Instant::now();
    let err = c.http_get(&client_ns, &format!("http://[{nobody6}]/")).unwrap_err();
    assert!(err.contains("exit status: 7"), "refused (curl exit 7): {err}");
    assert!(t.elapsed() < Duration::from_secs(1), "refused within a second (curl itself included): {:?}", t.elapsed());
    let table = Command::new("ip")
        .args(["netns", "exec", &c.nodes[1].ns_name, "nft", "list", "table", "ip6", "skiff"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains(&vip6), "{}", c.ruleset(1));
}
