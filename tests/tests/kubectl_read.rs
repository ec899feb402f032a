//! kubectl reading a fresh cluster: the bootstrap objects as tables,
//! discovery, and the errors of reads that find nothing.
//! kubectl 1.27 asks for aggregated discovery v2beta1; 1.30 and 1.33 for v2.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, Weak};

use skiff_tests::{Cluster, V1_27, V1_30, V1_33};

static SERVER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

const DISCOVERY_VERSIONS: [&str; 3] = [V1_27, V1_30, V1_33];

#[test]
fn get_ns_lists_the_four_system_namespaces_as_active() {
    let c = Cluster::shared(&SERVER);
    for out in c.kubectl_each(&DISCOVERY_VERSIONS, &["get", "ns"]) {
        out.success().stderr_is("");
        let table = out.table();
        assert_eq!(table[0], ["NAME", "STATUS", "AGE"], "header: {out:?}");
        for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            assert_eq!(out.row(ns)[1], "Active", "namespace {ns}: {out:?}");
        }
    }
}

#[test]
fn get_svc_kubernetes_shows_the_first_service_ip() {
    let c = Cluster::shared(&SERVER);
    for out in c.kubectl_each(&DISCOVERY_VERSIONS, &["get", "svc", "kubernetes"]) {
        out.success()
            .stdout_has("NAME         TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\n")
            .stdout_has("\nkubernetes   ClusterIP   10.96.0.1    <none>        443/TCP   ");
    }
}

#[test]
fn get_svc_wide_adds_selector_and_all_namespaces_adds_namespace() {
    let c = Cluster::shared(&SERVER);
    for v in [V1_27, V1_33] {
        let wide = c.kubectl(v, &["get", "svc", "kubernetes", "-o", "wide"]);
        wide.success();
        assert_eq!(wide.table()[0], ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]);
        // the kubernetes Service has no selector
        assert_eq!(wide.column("SELECTOR"), ["<none>"], "{wide:?}");

        let all = c.kubectl(v, &["get", "svc", "-A"]);
        all.success();
        assert_eq!(all.table()[0], ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
        let row = all.row("default");
        assert_eq!(row[1..6], ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"], "{all:?}");
    }
}

#[test]
fn api_resources_lists_short_names_and_groups() {
    let c = Cluster::shared(&SERVER);
    for out in c.kubectl_each(&DISCOVERY_VERSIONS, &["api-resources"]) {
        out.success();
        assert_eq!(out.table()[0], ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]);
        assert_eq!(out.row("pods"), ["pods", "po", "v1", "true", "Pod"]);
        assert_eq!(out.row("services"), ["services", "svc", "v1", "true", "Service"]);
        assert_eq!(out.row("deployments"), ["deployments", "deploy", "apps/v1", "true", "Deployment"]);
        assert_eq!(out.row("ingresses"), ["ingresses", "ing", "networking.k8s.io/v1", "true", "Ingress"]);
        assert_eq!(out.row("endpointslices"), ["endpointslices", "discovery.k8s.io/v1", "true", "EndpointSlice"]);
        assert_eq!(out.row("leases"), ["leases", "coordination.k8s.io/v1", "true", "Lease"]);
        assert_eq!(out.row("namespaces"), ["namespaces", "ns", "v1", "false", "Namespace"]);
    }
}

#[test]
fn get_all_in_default_shows_the_kubernetes_service() {
    let c = Cluster::shared(&SERVER);
    for out in c.kubectl_each(&DISCOVERY_VERSIONS, &["get", "all"]) {
        out.success().stdout_has("service/kubernetes   ClusterIP   10.96.0.1").stderr_is("");
    }
    // an empty namespace: nothing, said on stderr
    for out in c.kubectl_each(&DISCOVERY_VERSIONS, &["get", "all", "-n", "kube-public"]) {
        out.success().stdout_is("").stderr_has("No resources found in kube-public namespace.");
    }
}

#[test]
fn get_a_missing_pod_is_not_found() {
    let c = Cluster::shared(&SERVER);
    for out in c.kubectl_each(&[V1_27, V1_33], &["get", "pod", "nope"]) {
        out.exit_code(1).stdout_is("").stderr_is("Error from server (NotFound): pods \"nope\" not found\n");
    }
}

#[test]
fn get_in_a_missing_namespace_names_the_namespace() {
    let c = Cluster::shared(&SERVER);
    for out in c.kubectl_each(&[V1_27, V1_33], &["get", "deploy", "nope", "-n", "nons"]) {
        out.exit_code(1).stderr_is("Error from server (NotFound): namespaces \"nons\" not found\n");
    }
    // listing in a missing namespace is an empty list, as in Kubernetes
    for out in c.kubectl_each(&[V1_27, V1_33], &["get", "deploy", "-n", "nons"]) {
        out.success().stdout_is("").stderr_has("No resources found in nons namespace.");
    }
}

#[test]
fn get_an_unknown_resource_type_fails_in_discovery() {
    let c = Cluster::shared(&SERVER);
    for out in c.kubectl_each(&[V1_27, V1_33], &["get", "widgets"]) {
        out.exit_code(1).stderr_has("the server doesn't have a resource type \"widgets\"");
    }
}
