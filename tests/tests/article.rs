//! The article Skiff grew from, end to end on a two-node cluster of network
//! namespaces (`skiff_tests::nodes`): the manifests in `examples/article/`
//! applied with kubectl, and every hop the article describes checked from
//! where a user would stand (a pod, a node, an external client).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::nodes::{Nodes, NodesOptions};
use skiff_tests::repo_file;

fn apply_file(c: &Nodes, relative: &str) {
    let path = repo_file(relative);
    c.kubectl(&["apply", "-f", path.to_str().unwrap()]).success();
}

fn svc(c: &Nodes) -> Value {
    let out = c.kubectl(&["get", "svc", "service-test", "-o", "json"]);
    out.success();
    serde_json::from_str(&out.stdout).unwrap()
}

fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what} within {timeout:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn distinct(c: &Nodes, netns: &std::path::Path, url: &str, tries: usize) -> BTreeSet<String> {
    (0..tries).map(|_| c.http_get(netns, url).unwrap_or_else(|e| panic!("GET {url}: {e}")).trim().to_string()).collect()
}

#[test]
fn the_article_runs_on_a_two_node_cluster() {
    let c = Nodes::start(NodesOptions::default());

    // the invalid spots of the article, refused with precise messages
    let bad = repo_file("examples/article/deployment-as-published.yaml");
    c.kubectl(&["apply", "-f", bad.to_str().unwrap()]).exit_code(1).stderr_has(
        "json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32",
    );
    let bad = repo_file("examples/article/ingress-as-published.yaml");
    c.kubectl(&["apply", "-f", bad.to_str().unwrap()])
        .exit_code(1)
        .stderr_has(r#"unknown field "spec.rules[0].http.paths[0].backend.serviceName""#)
        .stderr_has(r#"unknown field "spec.rules[0].http.paths[0].backend.servicePort""#);

    // the Deployment and its ClusterIP Service
    apply_file(&c, "examples/article/01-service-test.yaml");
    let pods = c.wait_pods_ready("app=service_test_pod", 2, Duration::from_secs(120));
    let names: BTreeSet<String> =
        pods.iter().map(|p| format!("<p>Hello from {}</p>", p["metadata"]["name"].as_str().unwrap())).collect();

    // the client pod asks `service-test` by name (cluster DNS) and gets a replica's page
    apply_file(&c, "examples/article/02-client.yaml");
    let logs = eventually("the client pod's answer", Duration::from_secs(60), || {
        let out = c.kubectl(&["logs", "service-test-client"]);
        if out.stdout.contains("Hello from service-test-") {
            Ok(out.stdout)
        } else {
            Err(format!("{}{}", out.stdout, out.stderr))
        }
    });
    assert!(names.iter().any(|n| logs.contains(n.as_str())), "client got {logs:?}, replicas {names:?}");

    // repeated requests through the ClusterIP reach both replicas
    let vip = svc(&c)["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert_eq!(distinct(&c, &c.nodes[1].netns, &format!("http://{vip}/"), 30), names);

    // NodePort: `kubectl get svc` shows 80:3xxxx/TCP, and every node answers the external client
    apply_file(&c, "examples/article/03-service-nodeport.yaml");
    let node_port = svc(&c)["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port));
    c.kubectl(&["get", "svc", "service-test"]).success().stdout_has(&format!("80:{node_port}/TCP"));
    for n in &c.nodes {
        let url = format!("http://{}:{node_port}/", n.ip);
        assert_eq!(distinct(&c, &c.external, &url, 20), names, "NodePort on {}", n.name);
    }

    // LoadBalancer: an external address in status, reachable from outside on port 80
    apply_file(&c, "examples/article/04-service-loadbalancer.yaml");
    let lb = eventually("an EXTERNAL-IP", Duration::from_secs(20), || {
        svc(&c)["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "pending".into())
    });
    c.kubectl(&["get", "svc", "service-test"]).success().stdout_has(&lb);
    assert!(c.nodes.iter().any(|n| n.ip.to_string() == lb), "LB address {lb} is not a node's");
    let got = eventually("the LoadBalancer address answering", Duration::from_secs(10), || {
        c.http_get(&c.external, &format!("http://{lb}/"))
    });
    assert!(names.contains(got.trim()), "{got}");

    // Ingress with TLS for testhost.com, from the external client through each node
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("testhost.crt"), dir.path().join("testhost.key"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=testhost.com"])
        .args(["-addext", "subjectAltName=DNS:testhost.com", "-keyout", key.to_str().unwrap()])
        .args(["-out", crt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success(), "openssl: {}", String::from_utf8_lossy(&status.stderr));
    c.kubectl(&[
        "create",
        "secret",
        "tls",
        "my-ssl-secret",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ])
    .success();
    apply_file(&c, "examples/article/05-ingress.yaml");
    for n in &c.nodes {
        let body = eventually("the Ingress answering over TLS", Duration::from_secs(20), || {
            let out = c.run_in(
                &c.external,
                &[
                    "curl",
                    "-sS",
                    "--fail",
                    "--max-time",
                    "3",
                    "--cacert",
                    crt.to_str().unwrap(),
                    "--resolve",
                    &format!("testhost.com:443:{}", n.ip),
                    "https://testhost.com/",
                ],
                Duration::from_secs(5),
            );
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        assert!(names.contains(body.trim()), "through {}: {body}", n.name);
    }
    eventually("the Ingress ADDRESS", Duration::from_secs(20), || {
        let out = c.kubectl(&["get", "ingress", "test-ingress"]);
        if out.stdout.contains(&c.nodes[0].ip.to_string()) {
            Ok(())
        } else {
            Err(out.stdout)
        }
    });

    // deleting a replica moves its traffic to the other within a second
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    let victim_page = format!("<p>Hello from {victim}</p>");
    c.kubectl(&["delete", "pod", &victim, "--wait=false"]).success();
    let deleted = Instant::now();
    let url = format!("http://{}:{node_port}/", c.nodes[0].ip);
    let mut clean_since: Option<Instant> = None;
    while deleted.elapsed() < Duration::from_secs(10) {
        let got = c.http_get(&c.external, &url);
        match got.as_deref().map(str::trim) {
            Ok(page) if page == victim_page => clean_since = None,
            Ok(_) => {
                let since = *clean_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
            // a request caught by the replica as it stops may fail: that is not "moved" yet
            Err(e) => {
                println!("while {victim} stops: {e}");
                clean_since = None;
            }
        }
    }
    let moved = clean_since.map(|s| s.duration_since(deleted)).expect("traffic kept reaching the deleted replica");
    println!("traffic left the deleted replica after {moved:?}");
    assert!(moved <= Duration::from_secs(1), "traffic left {victim} only after {moved:?}");
}
