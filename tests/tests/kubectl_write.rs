//! kubectl writing: the article's manifests with `apply`/`create`, and the
//! errors Kubernetes gives for bad writes, word for word.
//! Each test works in namespaces of its own on one shared server.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, Weak};

use serde_json::Value;
use skiff_tests::{create_namespace, repo_file, unique_name, Cluster, KUBECTL_VERSIONS, V1_27, V1_33};

static SERVER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// A namespace per kubectl version, made with kube-rs.
async fn namespaces(c: &Cluster, prefix: &str) -> Vec<(&'static str, String)> {
    let client = c.client().await;
    let mut out = Vec::new();
    for v in KUBECTL_VERSIONS {
        let ns = unique_name(&format!("{prefix}-{}", v.replace('.', "-")));
        create_namespace(&client, &ns).await;
        out.push((v, ns));
    }
    out
}

/// Run `args` in each (version, namespace) concurrently.
fn each(c: &Cluster, nss: &[(&'static str, String)], args: &[&str]) -> Vec<skiff_tests::KubectlOutput> {
    std::thread::scope(|s| {
        let hs: Vec<_> = nss
            .iter()
            .map(|(v, ns)| {
                s.spawn(move || {
                    let mut a = vec!["-n", ns.as_str()];
                    a.extend_from_slice(args);
                    c.kubectl(v, &a)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_the_article_service_creates_a_deployment_and_a_service() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "apply").await;
    let manifest = repo_file("examples/service-test.yaml");
    let manifest = manifest.to_str().unwrap();
    for out in each(&c, &nss, &["apply", "-f", manifest]) {
        out.success().stdout_is("deployment.apps/service-test created\nservice/service-test created\n");
    }
    for out in each(&c, &nss, &["get", "deploy,svc", "-o", "wide"]) {
        out.success();
        let deploy = out.row("deployment.apps/service-test");
        // NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR (no controllers yet: 0/2)
        assert_eq!(deploy[1..4], ["0/2", "0", "0"], "{out:?}");
        assert_eq!(deploy[5..], ["simple-http", "python:2.7", "app=service_test_pod"], "{out:?}");
        let svc = out.row("service/service-test");
        assert_eq!(svc[1], "ClusterIP", "{out:?}");
        let ip: std::net::Ipv4Addr = svc[2].parse().unwrap_or_else(|_| panic!("CLUSTER-IP {:?}: {out:?}", svc[2]));
        let range: ipnet::Ipv4Net = "10.96.0.0/12".parse().unwrap();
        assert!(range.contains(&ip) && ip != "10.96.0.1".parse::<std::net::Ipv4Addr>().unwrap(), "{ip}");
        assert_eq!(svc[3..5], ["<none>", "80/TCP"], "{out:?}");
        assert_eq!(svc[6], "app=service_test_pod", "{out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_deployment_as_yaml_has_server_set_metadata() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "yaml").await;
    let manifest = repo_file("examples/service-test.yaml");
    for out in each(&c, &nss, &["apply", "-f", manifest.to_str().unwrap()]) {
        out.success();
    }
    for out in each(&c, &nss, &["get", "deploy", "service-test", "-o", "yaml"]) {
        out.success();
        let doc: Value = serde_saphyr::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        let meta = &doc["metadata"];
        assert_eq!(doc["kind"], "Deployment");
        assert_eq!(doc["apiVersion"], "apps/v1");
        assert!(uuid::Uuid::parse_str(meta["uid"].as_str().unwrap_or("")).is_ok(), "uid: {meta}");
        let rv = meta["resourceVersion"].as_str().unwrap_or("");
        assert!(rv.parse::<u64>().is_ok_and(|n| n > 0), "resourceVersion: {meta}");
        let created = meta["creationTimestamp"].as_str().unwrap_or("");
        assert!(chrono_like(created), "creationTimestamp {created:?}");
        assert_eq!(meta["generation"], 1, "{meta}");
        let last = meta["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().unwrap_or("");
        let last: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last-applied {e}: {meta}"));
        assert_eq!(last["spec"]["template"]["spec"]["containers"][0]["image"], "python:2.7");
        // typed view of the same document
        let typed: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(typed.spec.unwrap().replicas, Some(2));
    }
}

/// `2006-01-02T15:04:05Z`
fn chrono_like(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'Z'
}

const ARTICLE_ERROR: &str = "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_article_manifest_as_published_is_refused_and_nothing_is_stored() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "article").await;
    let manifest = repo_file("examples/article/deployment-as-published.yaml");
    let manifest = manifest.to_str().unwrap();
    for verb in ["create", "apply"] {
        for out in each(&c, &nss, &[verb, "-f", manifest]) {
            out.exit_code(1).stdout_is("").stderr_has(&format!(
                "Error from server (BadRequest): error when creating \"{manifest}\": {ARTICLE_ERROR}"
            ));
        }
    }
    for out in each(&c, &nss, &["get", "deploy"]) {
        out.success().stdout_is("").stderr_has("No resources found in ");
    }
}

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: twice\ndata:\n  a: b\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_same_configmap_twice_is_already_exists() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "twice").await;
    for (v, ns) in &nss {
        c.kubectl_stdin(v, &["-n", ns, "create", "-f", "-"], CONFIGMAP)
            .success()
            .stdout_is("configmap/twice created\n");
        c.kubectl_stdin(v, &["-n", ns, "create", "-f", "-"], CONFIGMAP).exit_code(1).stderr_is(
            "Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"twice\" already exists\n",
        );
    }
}

#[test]
fn kubectl_create_configmap_twice_is_already_exists_1_27() {
    let c = Cluster::shared(&SERVER);
    let name = unique_name("imperative");
    c.kubectl(V1_27, &["create", "configmap", &name, "--from-literal=a=b"])
        .success()
        .stdout_is(&format!("configmap/{name} created\n"));
    c.kubectl(V1_27, &["create", "configmap", &name, "--from-literal=a=b"])
        .exit_code(1)
        .stderr_is(&format!("error: failed to create configmap: configmaps \"{name}\" already exists\n"));
}

const RFC1123: &str = "error: failed to create configmap: ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')\n";

#[test]
fn an_invalid_name_is_refused_with_the_rfc1123_message_1_27() {
    let c = Cluster::shared(&SERVER);
    c.kubectl(V1_27, &["create", "configmap", "Bad_Name"]).exit_code(1).stderr_is(RFC1123);
}

/// kubectl 1.32+ sends the bodies of its typed clients (`create configmap`,
/// `create namespace`, `create secret`, `expose`, …) as protobuf.
#[test]

fn an_invalid_name_is_refused_with_the_rfc1123_message_1_33() {
    let c = Cluster::shared(&SERVER);
    c.kubectl(V1_33, &["create", "configmap", "Bad_Name"]).exit_code(1).stderr_is(RFC1123);
    let name = unique_name("imperative");
    c.kubectl(V1_33, &["create", "configmap", &name, "--from-literal=a=b"])
        .success()
        .stdout_is(&format!("configmap/{name} created\n"));
    let ns = unique_name("imperative-ns");
    c.kubectl(V1_33, &["create", "namespace", &ns]).success().stdout_is(&format!("namespace/{ns} created\n"));
}

const OLD_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: old-style
spec:
  rules:
  - http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          serviceName: web
          servicePort: 80
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_with_v1beta1_backend_fields_is_a_bad_request_pointing_to_the_new_field() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "ingress").await;
    for (v, ns) in &nss {
        for verb in ["create", "apply"] {
            let out = c.kubectl_stdin(v, &["-n", ns, verb, "-f", "-"], OLD_INGRESS);
            out.exit_code(1)
                .stderr_has("Error from server (BadRequest): error when creating \"STDIN\": Ingress in version \"v1\" cannot be handled as a Ingress: strict decoding error: unknown field \"spec.rules[0].http.paths[0].backend.serviceName\"")
                .stderr_has("spec.rules[0].http.paths[0].backend.service.name");
        }
        c.kubectl(v, &["-n", ns, "get", "ingress"]).success().stdout_is("");
    }
}

fn node_port_service(name: &str, node_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: NodePort\n  selector:\n    app: x\n  ports:\n  - port: 80\n    nodePort: {node_port}\n"
    )
}

const OUT_OF_RANGE: &str = "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_outside_the_range_is_invalid() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "np-range").await;
    for (v, ns) in &nss {
        c.kubectl_stdin(v, &["-n", ns, "create", "-f", "-"], &node_port_service("np-out", 40000))
            .exit_code(1)
            .stderr_has(&format!("\"np-out\" is invalid: {OUT_OF_RANGE}"));
    }
    // the same through kube-rs: 422 Invalid with the field as the cause
    let client = c.client().await;
    let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(client, &nss[0].1);
    let svc = serde_saphyr::from_str(&node_port_service("np-out", 40000)).unwrap();
    let status = skiff_tests::api_error(api.create(&Default::default(), &svc).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    assert_eq!(status.message, format!("Service \"np-out\" is invalid: {OUT_OF_RANGE}"));
    let causes = status.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
    assert_eq!(causes.len(), 1, "{status:?}");
    assert_eq!(causes[0].field, "spec.ports[0].nodePort");
    assert_eq!(causes[0].reason, "FieldValueInvalid");
}

/// kubectl prints Invalid errors as `The <details.kind> "<name>" is invalid: …`,
/// and Kubernetes puts the Kind there (`Service`), not the resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_names_the_kind_of_an_invalid_service() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "np-kind").await;
    for (v, ns) in &nss {
        c.kubectl_stdin(v, &["-n", ns, "create", "-f", "-"], &node_port_service("np-out", 40000))
            .exit_code(1)
            .stderr_is(&format!("The Service \"np-out\" is invalid: {OUT_OF_RANGE}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_already_taken_is_refused() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "np-taken").await;
    for ((v, ns), port) in nss.iter().zip([30101u16, 30102]) {
        c.kubectl_stdin(v, &["-n", ns, "create", "-f", "-"], &node_port_service("first", port))
            .success()
            .stdout_is("service/first created\n");
        c.kubectl_stdin(v, &["-n", ns, "create", "-f", "-"], &node_port_service("second", port))
            .exit_code(1)
            .stderr_has(&format!(
            "\"second\" is invalid: spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated"
        ));
        let out = c.kubectl(v, &["-n", ns, "get", "svc"]);
        out.success();
        assert_eq!(out.row("first")[4], format!("80:{port}/TCP"), "{out:?}");
        out.stdout_lacks("second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_by_reads_fields_of_the_objects_behind_the_table() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "sort").await;
    let client = c.client().await;
    for (_, ns) in &nss {
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client.clone(), ns);
        // created out of name order; `order` sorts them the other way round
        for (name, order) in [("bravo", "2"), ("charlie", "1"), ("alpha", "3")] {
            let cm = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"order": order}}));
            api.create(&Default::default(), &cm.unwrap()).await.unwrap();
        }
    }
    for out in each(&c, &nss, &["get", "cm", "--sort-by=.metadata.name"]) {
        out.success();
        let names: Vec<String> = out.column("NAME").into_iter().filter(|n| n != "kube-root-ca.crt").collect();
        assert_eq!(names, ["alpha", "bravo", "charlie"], "{out:?}");
    }
    for out in each(&c, &nss, &["get", "cm", "--sort-by=.data.order"]) {
        out.success();
        let names: Vec<String> = out.column("NAME").into_iter().filter(|n| n != "kube-root-ca.crt").collect();
        assert_eq!(names, ["charlie", "bravo", "alpha"], "{out:?}");
    }
}
