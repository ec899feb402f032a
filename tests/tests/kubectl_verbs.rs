//! The kubectl verbs people type every day, run by kubectl 1.27, 1.32 and
//! 1.33 at once, each in a namespace of its own on one shared server:
//! apply (client- and server-side), edit, patch, label, annotate, scale,
//! set image, describe, create secret/configmap, expose, run, wait, diff
//! and delete --cascade; and the messages bad writes get, word for word.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use skiff_tests::{create_namespace, raw_request, unique_name, Cluster, KubectlOutput, V1_27, V1_32, V1_33};

static SERVER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// Every test here runs with each of these, concurrently.
const VERSIONS: [&str; 3] = [V1_27, V1_32, V1_33];

/// A namespace per kubectl version, made with kube-rs.
async fn namespaces(c: &Cluster, prefix: &str) -> Vec<(&'static str, String)> {
    let client = c.client().await;
    let mut out = Vec::new();
    for v in VERSIONS {
        let ns = unique_name(&format!("{prefix}-{}", v.replace('.', "-")));
        create_namespace(&client, &ns).await;
        out.push((v, ns));
    }
    out
}

/// Run one scenario per (version, namespace), concurrently; a failed
/// assertion in any of them fails the test (its message names the version).
fn each(nss: &[(&'static str, String)], scenario: impl Fn(&'static str, &str) + Sync) {
    std::thread::scope(|s| {
        let handles: Vec<_> = nss.iter().map(|(v, ns)| (v, s.spawn(|| scenario(v, ns)))).collect();
        let failed: Vec<&str> = handles.into_iter().filter_map(|(v, h)| h.join().is_err().then_some(*v)).collect();
        assert!(failed.is_empty(), "the scenario failed with kubectl {failed:?} (see the panic messages above)");
    });
}

/// `kubectl -n <ns> <args>`.
fn k(c: &Cluster, v: &str, ns: &str, args: &[&str]) -> KubectlOutput {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    c.kubectl(v, &a)
}

/// `kubectl -n <ns> <args>` with `stdin`.
fn k_in(c: &Cluster, v: &str, ns: &str, args: &[&str], stdin: &str) -> KubectlOutput {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    c.kubectl_stdin(v, &a, stdin)
}

/// `kubectl get <what> -o json`, parsed.
fn get_json(c: &Cluster, v: &str, ns: &str, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    let out = k(c, v, ns, &args);
    out.success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A Deployment `name` with one container `main` and pods labelled
/// `app: <name>`; `extra` adds the label `tier: fe` and the env var `B`.
fn deployment(name: &str, replicas: u32, image: &str, extra: bool) -> String {
    let tier = if extra { "\n    tier: fe" } else { "" };
    let env_b = if extra { "\n        - name: B\n          value: \"2\"" } else { "" };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}{tier}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: main
        image: {image}
        env:
        - name: A
          value: \"1\"{env_b}
"
    )
}

fn container_names(d: &Value) -> Vec<String> {
    let containers = d.pointer("/spec/template/spec/containers").and_then(Value::as_array).cloned();
    containers.unwrap_or_default().iter().map(|c| c["name"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_configures_prunes_a_removed_field_and_is_then_unchanged() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "apply").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["apply", "-f", "-"], &deployment("web", 2, "nginx:1.25", true))
            .success()
            .stdout_is("deployment.apps/web created\n");
        let d = get_json(&c, v, ns, &["deploy", "web"]);
        assert_eq!(d["metadata"]["generation"], 1, "{v}: {d}");

        k_in(&c, v, ns, &["apply", "-f", "-"], &deployment("web", 3, "nginx:1.26", true))
            .success()
            .stdout_is("deployment.apps/web configured\n");
        let d = get_json(&c, v, ns, &["deploy", "web"]);
        assert_eq!(d["spec"]["replicas"], 3, "{v}: {d}");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26", "{v}: {d}");
        assert_eq!(d["metadata"]["labels"], json!({"app": "web", "tier": "fe"}), "{v}");
        assert_eq!(d["metadata"]["generation"], 2, "{v}: {d}");

        // the label and the env var leave the manifest, so they leave the object
        let pruned = deployment("web", 3, "nginx:1.26", false);
        k_in(&c, v, ns, &["apply", "-f", "-"], &pruned).success().stdout_is("deployment.apps/web configured\n");
        let d = get_json(&c, v, ns, &["deploy", "web"]);
        assert_eq!(d["metadata"]["labels"], json!({"app": "web"}), "{v}");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["env"], json!([{"name": "A", "value": "1"}]), "{v}");
        assert_eq!(d["metadata"]["generation"], 3, "{v}: {d}");
        let rv = d["metadata"]["resourceVersion"].clone();

        k_in(&c, v, ns, &["apply", "-f", "-"], &pruned).success().stdout_is("deployment.apps/web unchanged\n");
        let d = get_json(&c, v, ns, &["deploy", "web"]);
        assert_eq!((&d["metadata"]["resourceVersion"], &d["metadata"]["generation"]), (&rv, &json!(3)), "{v}");
    });
}

/// The managers whose fieldsV1 hold `.spec.replicas`.
fn replicas_owners(d: &Value) -> Vec<(String, String)> {
    let entries = d.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    entries
        .iter()
        .filter(|e| e.pointer("/fieldsV1/f:spec/f:replicas").is_some())
        .map(|e| (e["manager"].as_str().unwrap_or("").to_string(), e["operation"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_with_kubectl_scale_until_forced() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "ssa").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["apply", "--server-side", "-f", "-"], &deployment("ssa", 2, "nginx:1.25", true))
            .success()
            .stdout_is("deployment.apps/ssa serverside-applied\n");
        let d = get_json(&c, v, ns, &["deploy", "ssa"]);
        assert_eq!(replicas_owners(&d), [("kubectl".to_string(), "Apply".to_string())], "{v}: {d}");

        k(&c, v, ns, &["scale", "deploy", "ssa", "--replicas=5"]).success().stdout_is("deployment.apps/ssa scaled\n");
        // kubectl scale sends no fieldManager: the server names the manager
        // after the User-Agent's program name, here the versioned binary
        let scaler = format!("kubectl.{v}");
        let d = get_json(&c, v, ns, &["deploy", "ssa"]);
        assert_eq!(replicas_owners(&d), [(scaler.clone(), "Update".to_string())], "{v}: {d}");

        let again = deployment("ssa", 4, "nginx:1.25", true);
        let out = k_in(&c, v, ns, &["apply", "--server-side", "-f", "-"], &again);
        out.exit_code(1)
            .stdout_is("")
            .stderr_has(&format!("error: Apply failed with 1 conflict: conflict with \"{scaler}\""))
            .stderr_has("using apps/v1: .spec.replicas\n")
            .stderr_has("--force-conflicts");
        assert_eq!(get_json(&c, v, ns, &["deploy", "ssa"])["spec"]["replicas"], 5, "{v}");

        k_in(&c, v, ns, &["apply", "--server-side", "--force-conflicts", "-f", "-"], &again)
            .success()
            .stdout_is("deployment.apps/ssa serverside-applied\n");
        let d = get_json(&c, v, ns, &["deploy", "ssa"]);
        assert_eq!(d["spec"]["replicas"], 4, "{v}");
        assert_eq!(replicas_owners(&d), [("kubectl".to_string(), "Apply".to_string())], "{v}: {d}");
    });
}

/// Kubernetes records writes through a subresource with `subresource:
/// scale` in managedFields, and names it in the conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_conflict_with_kubectl_scale_names_the_scale_subresource() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "ssa-sub").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["apply", "--server-side", "-f", "-"], &deployment("ssa", 2, "nginx:1.25", false)).success();
        k(&c, v, ns, &["scale", "deploy", "ssa", "--replicas=5"]).success();
        let d = get_json(&c, v, ns, &["deploy", "ssa"]);
        let entries = d["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        let scaler = entries.iter().find(|e| e["manager"] == format!("kubectl.{v}").as_str());
        assert_eq!(scaler.map(|e| e["subresource"].clone()), Some(json!("scale")), "{v}: {d}");
        k_in(&c, v, ns, &["apply", "--server-side", "-f", "-"], &deployment("ssa", 4, "nginx:1.25", false))
            .exit_code(1)
            .stderr_has(&format!(
                "error: Apply failed with 1 conflict: conflict with \"kubectl.{v}\" with subresource \"scale\" using apps/v1: .spec.replicas\n"
            ));
    });
}

/// "You may co-own fields by updating your manifest to match the existing
/// value" (kubectl's conflict help): Kubernetes records the second applier
/// in managedFields even though no value changes, and then a change by the
/// first applier conflicts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn applying_the_same_value_makes_a_second_manager_co_own_the_field() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "co-own").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["apply", "--server-side", "-f", "-"], &deployment("co", 2, "nginx:1.25", false)).success();
        let before = get_json(&c, v, ns, &["deploy", "co"]);
        let same = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: co\nspec:\n  replicas: 2\n";
        k_in(&c, v, ns, &["apply", "--server-side", "--field-manager=team-b", "-f", "-"], same)
            .success()
            .stdout_is("deployment.apps/co serverside-applied\n");
        let d = get_json(&c, v, ns, &["deploy", "co"]);
        let mut owners = replicas_owners(&d);
        owners.sort();
        let expected = [("kubectl".to_string(), "Apply".to_string()), ("team-b".to_string(), "Apply".to_string())];
        assert_eq!(owners, expected, "{v}: {d}");
        assert_ne!(
            d["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
            "{v}: managedFields changed"
        );
        k_in(&c, v, ns, &["apply", "--server-side", "-f", "-"], &deployment("co", 3, "nginx:1.25", false))
            .exit_code(1)
            .stderr_has("error: Apply failed with 1 conflict: conflict with \"team-b\": .spec.replicas\n");
    });
}

/// Write an executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_through_an_editor_script_and_an_invalid_edit_is_refused_with_the_reason() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "edit").await;
    let dir = tempfile::tempdir().unwrap();
    // kubectl runs `$EDITOR <file>`, and again with the error in the file's
    // header when the server refused the edit; $SEEN keeps each version it saw
    let good = script(dir.path(), "good.sh", "sed -i 's/image: nginx:1.25/image: nginx:1.27/' \"$1\"\n");
    let bad = script(
        dir.path(),
        "bad.sh",
        "n=$(ls \"$SEEN\" | wc -l)\ncp \"$1\" \"$SEEN/seen-$n\"\nsed -i 's/^        app: edit$/        app: other/' \"$1\"\n",
    );
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["create", "-f", "-"], &deployment("edit", 1, "nginx:1.25", false)).success();
        let (seen, tmp) = (dir.path().join(format!("seen-{v}")), dir.path().join(format!("tmp-{v}")));
        std::fs::create_dir(&seen).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        let env = |editor: &str| {
            [
                ("EDITOR", editor.to_string()),
                ("SEEN", seen.display().to_string()),
                ("TMPDIR", tmp.display().to_string()),
            ]
        };
        let run = |editor: &str| {
            let env = env(editor);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.kubectl_env(v, &["-n", ns, "edit", "deploy/edit"], &env)
        };
        run(&good).success().stdout_is("deployment.apps/edit edited\n");
        let d = get_json(&c, v, ns, &["deploy", "edit"]);
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27", "{v}: {d}");
        assert_eq!(d["metadata"]["generation"], 2, "{v}: {d}");

        // the template's labels no longer match the selector
        run(&bad)
            .exit_code(1)
            .stderr_has("error: deployments.apps \"edit\" is invalid\n")
            .stderr_has("error: Edit cancelled, no valid changes were saved.\n");
        let reopened =
            std::fs::read_to_string(seen.join("seen-1")).unwrap_or_else(|e| panic!("{v}: no second edit: {e}"));
        let header = "# deployments.apps \"edit\" was not valid:\n# * spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`\n";
        assert!(reopened.contains(header), "{v}: the reopened file lacks the reason:\n{reopened}");
        let after = get_json(&c, v, ns, &["deploy", "edit"]);
        assert_eq!(after["spec"]["template"]["metadata"]["labels"], json!({"app": "edit"}), "{v}");
        assert_eq!(after["metadata"]["resourceVersion"], d["metadata"]["resourceVersion"], "{v}: nothing stored");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_with_each_type() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "patch").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["create", "-f", "-"], &deployment("pt", 1, "nginx:1.25", false)).success();

        let json_patch = r#"[{"op":"replace","path":"/spec/replicas","value":3},{"op":"add","path":"/metadata/labels/j","value":"1"}]"#;
        k(&c, v, ns, &["patch", "deploy", "pt", "--type=json", "-p", json_patch])
            .success()
            .stdout_is("deployment.apps/pt patched\n");
        let d = get_json(&c, v, ns, &["deploy", "pt"]);
        assert_eq!((&d["spec"]["replicas"], &d["metadata"]["labels"]["j"]), (&json!(3), &json!("1")), "{v}: {d}");

        // a merge patch replaces lists and deletes with null
        let merge = r#"{"metadata":{"labels":{"j":null},"annotations":{"m":"1"}},"spec":{"minReadySeconds":5}}"#;
        k(&c, v, ns, &["patch", "deploy", "pt", "--type=merge", "-p", merge])
            .success()
            .stdout_is("deployment.apps/pt patched\n");
        let d = get_json(&c, v, ns, &["deploy", "pt"]);
        assert_eq!(d["metadata"]["labels"], json!({"app": "pt"}), "{v}");
        assert_eq!(
            (&d["metadata"]["annotations"]["m"], &d["spec"]["minReadySeconds"]),
            (&json!("1"), &json!(5)),
            "{v}"
        );
        k(&c, v, ns, &["patch", "deploy", "pt", "--type=merge", "-p", merge])
            .success()
            .stdout_is("deployment.apps/pt patched (no change)\n");

        // strategic (the default): containers merge by name
        let add = r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:1.36"}]}}}}"#;
        k(&c, v, ns, &["patch", "deploy", "pt", "-p", add]).success().stdout_is("deployment.apps/pt patched\n");
        let d = get_json(&c, v, ns, &["deploy", "pt"]);
        assert_eq!(container_names(&d), ["main", "side"], "{v}: {d}");
        let side = &d["spec"]["template"]["spec"]["containers"][1];
        assert_eq!((&side["image"], &side["imagePullPolicy"]), (&json!("busybox:1.36"), &json!("IfNotPresent")), "{v}");
        let env = r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","env":[{"name":"C","value":"3"}]}]}}}}"#;
        k(&c, v, ns, &["patch", "deploy", "pt", "--type=strategic", "-p", env]).success();
        let d = get_json(&c, v, ns, &["deploy", "pt"]);
        let main_env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            main_env,
            &json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]),
            "{v}: env merges by name"
        );
        let delete = r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}]}}}}"#;
        k(&c, v, ns, &["patch", "deploy", "pt", "-p", delete]).success().stdout_is("deployment.apps/pt patched\n");
        let d = get_json(&c, v, ns, &["deploy", "pt"]);
        assert_eq!(container_names(&d), ["main"], "{v}: {d}");

        // a failed json-patch test stores nothing of the patch
        let rv = d["metadata"]["resourceVersion"].clone();
        let half =
            r#"[{"op":"replace","path":"/spec/replicas","value":7},{"op":"test","path":"/spec/replicas","value":99}]"#;
        let out = k(&c, v, ns, &["patch", "deploy", "pt", "--type=json", "-p", half]);
        out.exit_code(1).stdout_is("");
        assert!(out.stderr.starts_with("The request is invalid"), "{out:?}");
        let d = get_json(&c, v, ns, &["deploy", "pt"]);
        assert_eq!((&d["spec"]["replicas"], &d["metadata"]["resourceVersion"]), (&json!(3), &rv), "{v}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_annotate_with_the_overwrite_rules_and_removal() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "label").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["create", "-f", "-"], &deployment("lb", 1, "nginx:1.25", false)).success();
        k(&c, v, ns, &["label", "deploy", "lb", "tier=fe"]).success().stdout_is("deployment.apps/lb labeled\n");
        k(&c, v, ns, &["label", "deploy", "lb", "tier=be"])
            .exit_code(1)
            .stdout_is("")
            .stderr_is("error: 'tier' already has a value (fe), and --overwrite is false\n");
        let labels = |c: &Cluster| get_json(c, v, ns, &["deploy", "lb"])["metadata"]["labels"].clone();
        assert_eq!(labels(&c), json!({"app": "lb", "tier": "fe"}), "{v}");
        k(&c, v, ns, &["label", "deploy", "lb", "tier=be", "--overwrite"])
            .success()
            .stdout_is("deployment.apps/lb labeled\n");
        assert_eq!(labels(&c), json!({"app": "lb", "tier": "be"}), "{v}");
        k(&c, v, ns, &["label", "deploy", "lb", "tier-"]).success().stdout_is("deployment.apps/lb unlabeled\n");
        assert_eq!(labels(&c), json!({"app": "lb"}), "{v}");

        // kubectl 1.27 words it "annotate"; later ones "annotated"
        let annotated = if v == V1_27 { "deployment.apps/lb annotate\n" } else { "deployment.apps/lb annotated\n" };
        k(&c, v, ns, &["annotate", "deploy", "lb", "note=hi"]).success().stdout_is(annotated);
        k(&c, v, ns, &["annotate", "deploy", "lb", "note=ho"]).exit_code(1).stderr_is(
            "error: --overwrite is false but found the following declared annotation(s): 'note' already has a value (hi)\n",
        );
        let annotations = |c: &Cluster| get_json(c, v, ns, &["deploy", "lb"])["metadata"]["annotations"].clone();
        assert_eq!(annotations(&c)["note"], "hi", "{v}");
        k(&c, v, ns, &["annotate", "deploy", "lb", "note=ho", "--overwrite"]).success().stdout_is(annotated);
        assert_eq!(annotations(&c)["note"], "ho", "{v}");
        k(&c, v, ns, &["annotate", "deploy", "lb", "note-"]).success().stdout_is(annotated);
        assert!(annotations(&c).get("note").is_none(), "{v}: {}", annotations(&c));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_set_image_change_the_spec_and_bump_the_generation() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "scale").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["create", "-f", "-"], &deployment("sc", 1, "nginx:1.25", false)).success();
        k(&c, v, ns, &["scale", "deploy", "sc", "--replicas=4"]).success().stdout_is("deployment.apps/sc scaled\n");
        let d = get_json(&c, v, ns, &["deploy", "sc"]);
        assert_eq!((&d["spec"]["replicas"], &d["metadata"]["generation"]), (&json!(4), &json!(2)), "{v}: {d}");

        let scale = k(&c, v, ns, &["get", "--raw", &format!("/apis/apps/v1/namespaces/{ns}/deployments/sc/scale")]);
        let scale: Value = serde_json::from_str(&scale.success().stdout).unwrap();
        assert_eq!((&scale["kind"], &scale["apiVersion"]), (&json!("Scale"), &json!("autoscaling/v1")), "{scale}");
        assert_eq!((&scale["spec"]["replicas"], &scale["status"]["selector"]), (&json!(4), &json!("app=sc")), "{v}");

        k(&c, v, ns, &["scale", "deploy", "sc", "--current-replicas=2", "--replicas=3"])
            .exit_code(1)
            .stderr_has("Expected replicas to be 2, was 4");

        k(&c, v, ns, &["set", "image", "deploy/sc", "main=nginx:1.26"])
            .success()
            .stdout_is("deployment.apps/sc image updated\n");
        let d = get_json(&c, v, ns, &["deploy", "sc"]);
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26", "{v}");
        assert_eq!((&d["spec"]["replicas"], &d["metadata"]["generation"]), (&json!(4), &json!(3)), "{v}: {d}");
        k(&c, v, ns, &["set", "image", "deploy/sc", "nope=nginx:1.26"])
            .exit_code(1)
            .stderr_has("unable to find container named \"nope\"");
    });
}

/// The value after `Key:` on the first top-level line of `describe` output.
fn described(out: &KubectlOutput, key: &str) -> String {
    let prefix = format!("{key}:");
    let line = out.stdout.lines().find(|l| l.starts_with(&prefix));
    line.map(|l| l[prefix.len()..].trim().to_string()).unwrap_or_else(|| panic!("no {prefix} line: {out:?}"))
}

const DESCRIBED: &str = "apiVersion: v1
kind: Pod
metadata:
  name: dpod
  labels:
    app: dpod
spec:
  containers:
  - name: web
    image: nginx:1.25
    ports:
    - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: dsvc
spec:
  selector:
    app: ddep
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ding
spec:
  rules:
  - host: ding.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: dsvc
            port:
              number: 80
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pods_deployments_services_ingresses_and_nodes() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "describe").await;
    let node_name = unique_name("describe-node");
    let nodes: Api<Node> = Api::all(c.client().await);
    let node = json!({"metadata": {"name": node_name, "labels": {"kubernetes.io/hostname": node_name}},
                      "spec": {"taints": [{"key": "skiff.test/dedicated", "value": "x", "effect": "NoSchedule"}]}});
    nodes.create(&PostParams::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
    each(&nss, |v, ns| {
        let manifests = format!("{}---\n{DESCRIBED}", deployment("ddep", 2, "nginx:1.25", false));
        k_in(&c, v, ns, &["create", "-f", "-"], &manifests).success();

        let out = k(&c, v, ns, &["describe", "pod", "dpod"]);
        out.success();
        assert_eq!((described(&out, "Name"), described(&out, "Namespace")), ("dpod".into(), ns.to_string()), "{v}");
        assert_eq!((described(&out, "Labels"), described(&out, "Status")), ("app=dpod".into(), "Pending".into()));
        assert_eq!(described(&out, "Node"), "<none>", "{out:?}");
        out.stdout_has("Containers:\n  web:\n    Image:        nginx:1.25\n").stdout_has("    Port:         80/TCP\n");
        assert_eq!(described(&out, "Events"), "<none>", "{out:?}");

        let out = k(&c, v, ns, &["describe", "deployment", "ddep"]);
        out.success();
        assert_eq!((described(&out, "Name"), described(&out, "Namespace")), ("ddep".into(), ns.to_string()), "{v}");
        assert_eq!(
            (described(&out, "Selector"), described(&out, "StrategyType")),
            ("app=ddep".into(), "RollingUpdate".into())
        );
        assert_eq!(described(&out, "Replicas"), "2 desired | 0 updated | 0 total | 0 available | 0 unavailable");
        assert_eq!(described(&out, "RollingUpdateStrategy"), "25% max unavailable, 25% max surge", "{out:?}");
        out.stdout_has("Pod Template:\n  Labels:  app=ddep\n");
        described(&out, "Events");

        let out = k(&c, v, ns, &["describe", "service", "dsvc"]);
        out.success();
        assert_eq!((described(&out, "Name"), described(&out, "Namespace")), ("dsvc".into(), ns.to_string()), "{v}");
        assert_eq!((described(&out, "Selector"), described(&out, "Type")), ("app=ddep".into(), "ClusterIP".into()));
        let ip: std::net::Ipv4Addr = described(&out, "IP").parse().unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert!("10.96.0.0/12".parse::<ipnet::Ipv4Net>().unwrap().contains(&ip), "{out:?}");
        assert_eq!(
            (described(&out, "Port"), described(&out, "TargetPort")),
            ("<unset>  80/TCP".into(), "8080/TCP".into())
        );
        assert_eq!(described(&out, "Session Affinity"), "None", "{out:?}");
        described(&out, "Events");

        let out = k(&c, v, ns, &["describe", "ingress", "ding"]);
        out.success();
        assert_eq!((described(&out, "Name"), described(&out, "Namespace")), ("ding".into(), ns.to_string()), "{v}");
        out.stdout_has("  ding.example.com  \n").stdout_has("/   dsvc:80 (");
        described(&out, "Events");

        let out = k(&c, v, ns, &["describe", "node", &node_name]);
        out.success();
        assert_eq!(described(&out, "Name"), node_name, "{out:?}");
        assert_eq!(described(&out, "Labels"), format!("kubernetes.io/hostname={node_name}"), "{out:?}");
        assert_eq!(described(&out, "Taints"), "skiff.test/dedicated=x:NoSchedule", "{out:?}");
        assert_eq!(described(&out, "Unschedulable"), "false", "{out:?}");
        described(&out, "Events");
    });
    nodes.delete(&node_name, &Default::default()).await.unwrap();
}

/// A self-signed certificate and its key (PEM): openssl's when it is
/// installed, else the fixture's admin client pair (any matching pair will do).
fn cert_and_key(c: &Cluster, dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=skiff.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        std::fs::write(&cert, &c.admin_cert_pem).unwrap();
        std::fs::write(&key, &c.admin_key_pem).unwrap();
    }
    (cert.display().to_string(), key.display().to_string())
}

fn base64_decode(v: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_secret_tls_and_generic_and_configmaps_from_literals_and_files() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "secrets").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_and_key(&c, dir.path());
    let settings = dir.path().join("settings.ini");
    std::fs::write(&settings, "[server]\nport = 8080\n").unwrap();
    let from_file = format!("--from-file={}", settings.display());
    each(&nss, |v, ns| {
        k(&c, v, ns, &["create", "secret", "tls", "web-tls", "--cert", &cert, "--key", &key])
            .success()
            .stdout_is("secret/web-tls created\n");
        let s = get_json(&c, v, ns, &["secret", "web-tls"]);
        assert_eq!(s["type"], "kubernetes.io/tls", "{v}: {s}");
        assert_eq!(base64_decode(&s["data"]["tls.crt"]), std::fs::read_to_string(&cert).unwrap(), "{v}");
        assert_eq!(base64_decode(&s["data"]["tls.key"]), std::fs::read_to_string(&key).unwrap(), "{v}");

        let args =
            ["create", "secret", "generic", "creds", "--from-literal=user=admin", "--from-literal=password=s3 cr3t"];
        k(&c, v, ns, &args).success().stdout_is("secret/creds created\n");
        let s = get_json(&c, v, ns, &["secret", "creds"]);
        assert_eq!(s["type"], "Opaque", "{v}: {s}");
        let data = s["data"].as_object().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["password", "user"], "{v}");
        assert_eq!(
            (base64_decode(&data["user"]), base64_decode(&data["password"])),
            ("admin".into(), "s3 cr3t".into())
        );

        k(&c, v, ns, &["create", "configmap", "cfg", "--from-literal=mode=fast", &from_file])
            .success()
            .stdout_is("configmap/cfg created\n");
        let cm = get_json(&c, v, ns, &["configmap", "cfg"]);
        assert_eq!(cm["data"], json!({"mode": "fast", "settings.ini": "[server]\nport = 8080\n"}), "{v}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_a_deployment_as_a_node_port_service() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "expose").await;
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["create", "-f", "-"], &deployment("ex", 1, "nginx:1.25", false)).success();
        let args = ["expose", "deploy", "ex", "--name=ex-np", "--port=8080", "--target-port=80", "--type=NodePort"];
        k(&c, v, ns, &args).success().stdout_is("service/ex-np exposed\n");
        let s = get_json(&c, v, ns, &["service", "ex-np"]);
        assert_eq!((&s["spec"]["type"], &s["spec"]["selector"]), (&json!("NodePort"), &json!({"app": "ex"})), "{v}");
        let port = &s["spec"]["ports"][0];
        assert_eq!((&port["port"], &port["targetPort"], &port["protocol"]), (&json!(8080), &json!(80), &json!("TCP")));
        let node_port = port["nodePort"].as_u64().unwrap_or_else(|| panic!("{v}: no nodePort: {s}"));
        assert!((30000..=32767).contains(&node_port), "{v}: nodePort {node_port}");
        let out = k(&c, v, ns, &["get", "svc", "ex-np"]);
        assert_eq!(out.success().row("ex-np")[4], format!("8080:{node_port}/TCP"), "{out:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_creates_a_pod_with_its_labels_and_port() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "run").await;
    each(&nss, |v, ns| {
        k(&c, v, ns, &["run", "solo", "--image=nginx:1.25", "--port=80", "--labels=app=solo,tier=x"])
            .success()
            .stdout_is("pod/solo created\n");
        let p = get_json(&c, v, ns, &["pod", "solo"]);
        assert_eq!(p["metadata"]["labels"], json!({"app": "solo", "tier": "x"}), "{v}");
        let container = &p["spec"]["containers"][0];
        assert_eq!((&container["name"], &container["image"]), (&json!("solo"), &json!("nginx:1.25")), "{v}");
        assert_eq!(container["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]), "{v}");
        // Kubernetes' defaults
        assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{v}");
        assert_eq!((&p["spec"]["restartPolicy"], &p["spec"]["dnsPolicy"]), (&json!("Always"), &json!("ClusterFirst")));
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30, "{v}");
        let out = k(&c, v, ns, &["get", "pods", "-l", "app=solo", "--show-labels"]);
        assert_eq!(out.success().row("solo")[5], "app=solo,tier=x", "{out:?}");
    });
}

/// Pods with this finalizer stay, with a deletionTimestamp, until the test
/// takes it away.
const HOLD: &str = "skiff.test/hold";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_delete_returns_when_the_pod_is_gone() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "wait").await;
    let client = c.client().await;
    for (_, ns) in &nss {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod = json!({"metadata": {"name": "w", "finalizers": [HOLD]},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
        pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    }
    for (v, ns) in &nss {
        k(&c, v, ns, &["delete", "pod", "w", "--wait=false"]).success().stdout_is("pod \"w\" deleted\n");
        let p = get_json(&c, v, ns, &["pod", "w"]);
        assert!(p["metadata"]["deletionTimestamp"].is_string(), "{v}: {p}");
    }
    let mut waits: Vec<_> = nss
        .iter()
        .map(|(v, ns)| c.kubectl_spawn(v, &["-n", ns, "wait", "--for=delete", "pod/w", "--timeout=60s"]))
        .collect();
    // no other test in this file watches pods: three watches are the three waits
    c.wait_for_watchers("pods", nss.len()).await;
    for (_, ns) in &nss {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.patch("w", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .unwrap();
    }
    for w in &mut waits {
        w.wait(Duration::from_secs(60)).success().stdout_is("pod/w condition met\n");
    }
    for (v, ns) in &nss {
        k(&c, v, ns, &["get", "pod", "w"])
            .exit_code(1)
            .stderr_is("Error from server (NotFound): pods \"w\" not found\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_exits_1_with_the_difference_and_0_without() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "diff").await;
    each(&nss, |v, ns| {
        let live = deployment("df", 2, "nginx:1.25", false);
        k_in(&c, v, ns, &["apply", "-f", "-"], &live).success();
        let before = get_json(&c, v, ns, &["deploy", "df"]);

        k_in(&c, v, ns, &["diff", "-f", "-"], &live).success().stdout_is("");
        let out = k_in(&c, v, ns, &["diff", "-f", "-"], &deployment("df", 3, "nginx:1.26", false));
        out.exit_code(1)
            .stdout_has("-  replicas: 2\n+  replicas: 3\n")
            .stdout_has("-        image: nginx:1.25\n+        image: nginx:1.26\n")
            .stdout_has("-  generation: 1\n+  generation: 2\n")
            .stdout_lacks("managedFields");
        // diff asks for a dry run: nothing changes
        let after = get_json(&c, v, ns, &["deploy", "df"]);
        assert_eq!(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"], "{v}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_cascade_orphan_or_foreground_marks_the_object_with_its_finalizer() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "cascade").await;
    // The garbage collector is not part of this in-process server, so only
    // what the API server itself does is asserted: the object stays, with a
    // deletionTimestamp and the finalizer the collector would act on.
    each(&nss, |v, ns| {
        for (name, cascade, finalizer) in [("orph", "orphan", "orphan"), ("fg", "foreground", "foregroundDeletion")] {
            k_in(&c, v, ns, &["create", "-f", "-"], &deployment(name, 1, "nginx:1.25", false)).success();
            k(&c, v, ns, &["delete", "deploy", name, &format!("--cascade={cascade}"), "--wait=false"])
                .success()
                .stdout_is(&format!("deployment.apps \"{name}\" deleted\n"));
            let d = get_json(&c, v, ns, &["deploy", name]);
            assert!(d["metadata"]["deletionTimestamp"].is_string(), "{v} {cascade}: {d}");
            assert_eq!(d["metadata"]["finalizers"], json!([finalizer]), "{v} {cascade}: {d}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_warn_strict_and_ignore_on_an_unknown_field() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "fieldval").await;
    let with_foo = |name: &str| deployment(name, 1, "nginx:1.25", false).replace("\nspec:\n", "\nspec:\n  foo: bar\n");
    each(&nss, |v, ns| {
        k_in(&c, v, ns, &["apply", "--validate=warn", "-f", "-"], &with_foo("warned"))
            .success()
            .stdout_is("deployment.apps/warned created\n")
            .stderr_is("Warning: unknown field \"spec.foo\"\n");
        let d = get_json(&c, v, ns, &["deploy", "warned"]);
        assert!(d["spec"].get("foo").is_none(), "{v}: the unknown field is dropped: {d}");

        k_in(&c, v, ns, &["create", "--validate=strict", "-f", "-"], &with_foo("strict")).exit_code(1).stderr_is(
            "Error from server (BadRequest): error when creating \"STDIN\": Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.foo\"\n",
        );
        k(&c, v, ns, &["get", "deploy", "strict"]).exit_code(1);

        k_in(&c, v, ns, &["apply", "--validate=ignore", "-f", "-"], &with_foo("ignored"))
            .success()
            .stdout_is("deployment.apps/ignored created\n")
            .stderr_is("");
    });

    // the same as raw requests
    let client = c.client().await;
    let ns = &nss[0].1;
    let path = |fv: &str| format!("/api/v1/namespaces/{ns}/configmaps?fieldValidation={fv}");
    let body =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "bogus": 1}, "foo": 2});
    let post = |path: String, name: &'static str| {
        let client = client.clone();
        async move {
            raw_request(&client, "POST", &path, "application/json", body(name).to_string().into_bytes()).await.unwrap()
        }
    };
    let warn = post(path("Warn"), "w").await;
    assert_eq!(warn.status, 201, "{warn:?}");
    assert_eq!(warn.warnings, ["unknown field \"metadata.bogus\"", "unknown field \"foo\""], "{warn:?}");
    let strict = post(path("Strict"), "s").await;
    assert_eq!(strict.status, 400, "{strict:?}");
    let status: Value = serde_json::from_str(&strict.body).unwrap();
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(
        status["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"metadata.bogus\", unknown field \"foo\""
    );
    let ignore = post(path("Ignore"), "i").await;
    assert_eq!((ignore.status, ignore.warnings.len()), (201, 0), "{ignore:?}");
    // Warn is the default
    let default = post(format!("/api/v1/namespaces/{ns}/configmaps"), "d").await;
    assert_eq!((default.status, default.warnings.len()), (201, 2), "{default:?}");
}

const BAD_PORT: &str = "apiVersion: v1
kind: Service
metadata:
  name: badport
spec:
  selector:
    app: x
  ports:
  - port: 70000
";

const NO_PATH_TYPE: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: nopt
spec:
  rules:
  - http:
      paths:
      - path: /
        backend:
          service:
            name: web
            port:
              number: 80
";

const TLS_WITHOUT_KEY: &str = "apiVersion: v1
kind: Secret
metadata:
  name: tlsbad
type: kubernetes.io/tls
data:
  tls.crt: YQ==
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_get_kubernetes_messages() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "invalid").await;
    each(&nss, |v, ns| {
        let mismatch = deployment("sel", 1, "nginx:1.25", false).replace("        app: sel\n", "        app: b\n");
        for verb in ["create", "apply"] {
            k_in(&c, v, ns, &[verb, "-f", "-"], &mismatch).exit_code(1).stdout_is("").stderr_is(
                "The Deployment \"sel\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`\n",
            );
        }
        k_in(&c, v, ns, &["apply", "-f", "-"], BAD_PORT).exit_code(1).stderr_is(
            "The Service \"badport\" is invalid: \n* spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive\n* spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive\n",
        );
        k_in(&c, v, ns, &["apply", "-f", "-"], NO_PATH_TYPE).exit_code(1).stderr_is(
            "The Ingress \"nopt\" is invalid: spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified\n",
        );
        k_in(&c, v, ns, &["create", "-f", "-"], TLS_WITHOUT_KEY)
            .exit_code(1)
            .stderr_is("The Secret \"tlsbad\" is invalid: data[tls.key]: Required value\n");
        k(&c, v, ns, &["get", "deploy,svc,ingress,secret"]).success().stdout_is("");

        // a Deployment's selector is immutable
        k_in(&c, v, ns, &["apply", "-f", "-"], &deployment("imm", 1, "nginx:1.25", false)).success();
        let moved = deployment("imm", 1, "nginx:1.25", false).replace("app: imm\n", "app: imm2\n");
        k_in(&c, v, ns, &["apply", "-f", "-"], &moved).exit_code(1).stderr_is(
            "The Deployment \"imm\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"imm2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable\n",
        );
        let d = get_json(&c, v, ns, &["deploy", "imm"]);
        assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"app": "imm"}}), "{v}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_in_a_missing_namespace_names_the_namespace() {
    let c = Cluster::shared(&SERVER);
    let missing = unique_name("nope");
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n";
    std::thread::scope(|s| {
        for v in VERSIONS {
            let (c, missing) = (&c, &missing);
            s.spawn(move || {
                k_in(c, v, missing, &["apply", "-f", "-"], manifest).exit_code(1).stderr_is(&format!(
                    "Error from server (NotFound): error when creating \"STDIN\": namespaces \"{missing}\" not found\n"
                ));
                k(c, v, missing, &["create", "configmap", "x", "--from-literal=a=b"])
                    .exit_code(1)
                    .stderr_is(&format!("error: failed to create configmap: namespaces \"{missing}\" not found\n"));
            });
        }
    });
}

/// Kubernetes' NamespaceLifecycle admission answers
/// `NewForbidden(resource, name, err)`: `configmaps "x" is forbidden: …`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_in_a_terminating_namespace_is_forbidden() {
    let c = Cluster::shared(&SERVER);
    let nss = namespaces(&c, "terminating").await;
    let client = c.client().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for (_, ns) in &nss {
        // something in it, so that the namespace stays Terminating here (no namespace controller runs)
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm = json!({"metadata": {"name": "keep"}});
        cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap()).await.unwrap();
        namespaces.delete(ns, &Default::default()).await.unwrap();
    }
    each(&nss, |v, ns| {
        let out = k(&c, v, ns, &["get", "namespace", ns]);
        assert_eq!(out.success().row(ns)[1], "Terminating", "{out:?}");
        k_in(&c, v, ns, &["create", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
            .exit_code(1)
            .stderr_is(&format!(
                "Error from server (Forbidden): error when creating \"STDIN\": configmaps \"x\" is forbidden: unable to create new content in namespace {ns} because it is being terminated\n"
            ));
    });
}
