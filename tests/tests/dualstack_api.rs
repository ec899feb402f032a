//! Dual-stack Services as the API server defaults, validates and allocates
//! them (Kubernetes' service registry: ipFamilyPolicy, ipFamilies,
//! clusterIPs), on a single-stack IPv4 cluster and on a dual-stack one;
//! driven by kube-rs and by the real kubectl.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use skiff_tests::{api_error, create_namespace, unique_name, Cluster, ServerSettings};

const V1_27: &str = "1.27";
const V1_33: &str = "1.33";

fn dual_stack() -> Cluster {
    Cluster::start_with(ServerSettings {
        service_cidr: "10.96.0.0/12,fd00:10:96::/112".parse().unwrap(),
        ..ServerSettings::default()
    })
}

fn svc(name: &str, spec: Value) -> Service {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn services(c: &Cluster, prefix: &str) -> (Api<Service>, String) {
    let client = c.client().await;
    let ns = unique_name(prefix);
    create_namespace(&client, &ns).await;
    (Api::namespaced(client, &ns), ns)
}

/// (policy, families, clusterIP, clusterIPs) of a created Service.
fn families_of(s: &Service) -> (String, Vec<String>, String, Vec<String>) {
    let spec = s.spec.clone().unwrap();
    (
        spec.ip_family_policy.unwrap_or_default(),
        spec.ip_families.unwrap_or_default(),
        spec.cluster_ip.unwrap_or_default(),
        spec.cluster_ips.unwrap_or_default(),
    )
}

fn in_range(ip: &str, cidr: &str) -> bool {
    let net: ipnet::IpNet = cidr.parse().unwrap();
    net.contains(&ip.parse::<IpAddr>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_stack_cluster_shows_ipv4_single_stack_and_refuses_require_dual_stack() {
    let c = Cluster::start();
    let (api, ns) = services(&c, "single").await;
    let pp = PostParams::default();

    let plain = api.create(&pp, &svc("plain", json!({"selector": {"app": "a"}}))).await.unwrap();
    let (policy, fams, ip, ips) = families_of(&plain);
    assert_eq!((policy.as_str(), fams), ("SingleStack", vec!["IPv4".to_string()]));
    assert_eq!(ips, vec![ip.clone()]);
    assert!(in_range(&ip, "10.96.0.0/12"), "{ip}");

    // PreferDualStack on a single-stack cluster: one IP, the cluster's family
    let prefer =
        api.create(&pp, &svc("prefer", json!({"ipFamilyPolicy": "PreferDualStack", "selector": {"app": "a"}}))).await;
    let (policy, fams, _, ips) = families_of(&prefer.unwrap());
    assert_eq!((policy.as_str(), fams, ips.len()), ("PreferDualStack", vec!["IPv4".to_string()], 1));

    let require =
        api.create(&pp, &svc("require", json!({"ipFamilyPolicy": "RequireDualStack", "selector": {"app": "a"}}))).await;
    let status = api_error(require);
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(
        status.message,
        "Service \"require\" is invalid: spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": \
         this cluster is not configured for dual-stack services"
    );
    let v6 = api.create(&pp, &svc("v6", json!({"ipFamilies": ["IPv6"], "selector": {"app": "a"}}))).await;
    let status = api_error(v6);
    assert!(
        status.message.contains("spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"),
        "{status:?}"
    );
    let v6_ip = api.create(&pp, &svc("v6ip", json!({"clusterIP": "fd00:10:96::10"}))).await;
    let status = api_error(v6_ip);
    assert!(status.message.contains("IPv6 is not configured on this cluster"), "{status:?}");

    // headless: with a selector SingleStack; without one RequireDualStack with both families, as Kubernetes
    let headless =
        api.create(&pp, &svc("headless", json!({"clusterIP": "None", "selector": {"app": "a"}}))).await.unwrap();
    let (policy, fams, ip, ips) = families_of(&headless);
    assert_eq!(
        (policy.as_str(), fams, ip.as_str(), ips),
        ("SingleStack", vec!["IPv4".into()], "None", vec!["None".into()])
    );
    let bare = api.create(&pp, &svc("bare", json!({"clusterIP": "None"}))).await.unwrap();
    let (policy, fams, _, _) = families_of(&bare);
    assert_eq!((policy.as_str(), fams), ("RequireDualStack", vec!["IPv4".to_string(), "IPv6".to_string()]));

    // ExternalName gets no families
    let ext = api.create(&pp, &svc("ext", json!({"type": "ExternalName", "externalName": "example.com"}))).await;
    let spec = ext.unwrap().spec.unwrap();
    assert_eq!((spec.ip_families, spec.ip_family_policy), (None, None));

    // the `kubernetes` Service, too
    let k: Api<Service> = Api::namespaced(c.client().await, "default");
    let (policy, fams, _, _) = families_of(&k.get("kubernetes").await.unwrap());
    assert_eq!((policy.as_str(), fams), ("SingleStack", vec!["IPv4".to_string()]));

    for out in c.kubectl_each(
        &[V1_27, V1_33],
        &["get", "svc", "plain", "-n", &ns, "-o", "jsonpath={.spec.ipFamilyPolicy} {.spec.ipFamilies}"],
    ) {
        out.success().stdout_is("SingleStack [\"IPv4\"]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_cluster_gives_one_cluster_ip_per_family() {
    let c = dual_stack();
    let (api, ns) = services(&c, "dual").await;
    let pp = PostParams::default();

    // the default is still single-stack, of the primary family
    let plain = api.create(&pp, &svc("plain", json!({"selector": {"app": "a"}}))).await.unwrap();
    let (policy, fams, ip, _) = families_of(&plain);
    assert_eq!((policy.as_str(), fams), ("SingleStack", vec!["IPv4".to_string()]));
    assert!(in_range(&ip, "10.96.0.0/12"));

    let prefer = api
        .create(&pp, &svc("prefer", json!({"ipFamilyPolicy": "PreferDualStack", "selector": {"app": "a"}})))
        .await
        .unwrap();
    let (policy, fams, ip, ips) = families_of(&prefer);
    assert_eq!((policy.as_str(), fams), ("PreferDualStack", vec!["IPv4".to_string(), "IPv6".to_string()]));
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert_eq!(ip, ips[0]);
    assert!(in_range(&ips[0], "10.96.0.0/12") && in_range(&ips[1], "fd00:10:96::/112"), "{ips:?}");

    // IPv6 first: the IPv6 address is the primary clusterIP
    let v6first = api
        .create(
            &pp,
            &svc(
                "v6first",
                json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"], "selector": {"app": "a"}}),
            ),
        )
        .await
        .unwrap();
    let (_, fams, v6first_ip, ips) = families_of(&v6first);
    assert_eq!(fams, vec!["IPv6".to_string(), "IPv4".to_string()]);
    assert!(in_range(&v6first_ip, "fd00:10:96::/112") && in_range(&ips[1], "10.96.0.0/12"), "{ips:?}");

    // single-stack IPv6 by a requested address: the family is inferred
    let v6 =
        api.create(&pp, &svc("v6", json!({"clusterIP": "fd00:10:96::7", "selector": {"app": "a"}}))).await.unwrap();
    let (policy, fams, ip, ips) = families_of(&v6);
    assert_eq!((policy.as_str(), fams, ip.as_str()), ("SingleStack", vec!["IPv6".to_string()], "fd00:10:96::7"));
    assert_eq!(ips, vec!["fd00:10:96::7".to_string()]);

    // the IPv6 address is held: a second claim fails, a release frees it
    let again = api.create(&pp, &svc("again", json!({"clusterIP": "fd00:10:96::7"}))).await;
    let status = api_error(again);
    assert!(
        status.message.contains("failed to allocate IP fd00:10:96::7: provided IP is already allocated"),
        "{status:?}"
    );
    let outside = api.create(&pp, &svc("outside", json!({"clusterIP": "fd00:99::7"}))).await;
    let status = api_error(outside);
    assert!(
        status.message.contains("is not in the valid range. The range of valid IPs is fd00:10:96::/112"),
        "{status:?}"
    );
    api.delete("v6", &DeleteParams::default()).await.unwrap();
    api.create(&pp, &svc("again", json!({"clusterIP": "fd00:10:96::7"}))).await.unwrap();

    // SingleStack with two families is refused with Kubernetes' message
    let bad =
        api.create(&pp, &svc("bad", json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"]}))).await;
    let status = api_error(bad);
    assert!(
        status.message.contains(
            "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"
        ),
        "{status:?}"
    );

    // upgrade: SingleStack -> PreferDualStack adds an IPv6 address; downgrade releases it
    let patch = json!({"spec": {"ipFamilyPolicy": "PreferDualStack"}});
    let up = api.patch("plain", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let (_, fams, ip0, ips) = families_of(&up);
    assert_eq!(fams, vec!["IPv4".to_string(), "IPv6".to_string()]);
    assert_eq!((ips.len(), &ips[0]), (2, &ip0));
    let secondary = ips[1].clone();
    let patch = json!({"spec": {"ipFamilyPolicy": "SingleStack"}});
    let down = api.patch("plain", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let (_, fams, _, ips) = families_of(&down);
    assert_eq!((fams, ips), (vec!["IPv4".to_string()], vec![ip0.clone()]));
    api.create(&pp, &svc("reuse", json!({"clusterIP": secondary.clone(), "selector": {"app": "a"}}))).await.unwrap();

    // deleting a dual-stack Service releases both addresses
    let ips = families_of(&prefer).3;
    api.delete("prefer", &DeleteParams::default()).await.unwrap();
    let both = json!({"ipFamilyPolicy": "RequireDualStack", "clusterIPs": ips.clone(), "clusterIP": ips[0].clone()});
    let back = api.create(&pp, &svc("prefer2", both)).await.unwrap();
    assert_eq!(families_of(&back).3, ips);

    // kubectl prints the primary ClusterIP in CLUSTER-IP, and the families in the object
    for out in c.kubectl_each(&[V1_27, V1_33], &["get", "svc", "v6first", "-n", &ns]) {
        out.success();
        assert_eq!(out.column("CLUSTER-IP"), vec![v6first_ip.clone()], "{}", out.stdout);
    }
    for out in c.kubectl_each(
        &[V1_27, V1_33],
        &["get", "svc", "prefer2", "-n", &ns, "-o", "jsonpath={.spec.ipFamilyPolicy} {.spec.clusterIPs}"],
    ) {
        out.success().stdout_is(&format!("RequireDualStack [\"{}\",\"{}\"]", ips[0], ips[1]));
    }
    // kubectl create service clusterip with the families on the command line of a manifest
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: fromkubectl\n  namespace: {ns}\nspec:\n  ipFamilyPolicy: PreferDualStack\n  selector:\n    app: a\n  ports:\n  - port: 80\n"
    );
    c.kubectl_stdin(V1_33, &["apply", "-f", "-"], &manifest).success();
    let got = api.get("fromkubectl").await.unwrap();
    assert_eq!(families_of(&got).3.len(), 2);
}
