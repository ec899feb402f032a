//! Malformed patches of every content type against a Deployment with ten
//! containers: truncated documents, wrong types, deep nesting, documents
//! up to the 3 MiB limit and past it, bad `$patch` directives, json-patch
//! operations on missing paths, apply configurations of the wrong kind,
//! list items without their merge key. Every answer must be a 4xx Status
//! (never a 5xx, never a dropped connection), and the stored object must
//! stay exactly as it was: no half-applied change.
//!
//! The cases come from a seeded generator, so every run sends the same
//! ones; a failure names the case's index and kind.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, Weak};

use serde_json::{json, Value};
use skiff_tests::{create_namespace, raw_request, unique_name, Cluster};

static SERVER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// Cases per content type.
const CASES: usize = 300;
const CONTAINERS: usize = 10;
const MIB: usize = 1 << 20;
/// The largest body the server takes (and Kubernetes: 3 MiB).
const MAX_BODY: usize = 3 * MIB;

const SMP: &str = "application/strategic-merge-patch+json";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
/// The Deployment's name.
const NAME: &str = "fz";

/// A small seeded generator (xorshift64*): the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

/// One malformed request: what it is, the query string and the body.
struct Case {
    what: String,
    query: &'static str,
    body: Vec<u8>,
}

impl Case {
    fn new(what: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
        Case { what: what.into(), query: "", body: body.into() }
    }

    fn json(what: impl Into<String>, body: Value) -> Case {
        Case::new(what, body.to_string())
    }

    fn with_query(mut self, query: &'static str) -> Case {
        self.query = query;
        self
    }
}

/// The Deployment under fire: ten containers with ports, env, mounts and
/// args, so every merge key of a pod template is in play.
fn deployment(name: &str) -> Value {
    let containers: Vec<Value> = (0..CONTAINERS)
        .map(|i| {
            json!({
                "name": format!("c{i}"),
                "image": format!("registry.example/app-{i}:1.0"),
                "args": ["--serve", format!("--id={i}")],
                "ports": [{"name": format!("p{i}"), "containerPort": 8000 + i, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "fast"}, {"name": format!("E{i}"), "value": format!("{i}")}],
                "volumeMounts": [{"name": "data", "mountPath": format!("/data/{i}")}],
            })
        })
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": {"note": "fuzz"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers, "volumes": [{"name": "data", "emptyDir": {}}]},
            },
        },
    })
}

fn template_spec(v: Value) -> Value {
    json!({"spec": {"template": {"spec": v}}})
}

/// A strategic-merge (or merge) patch of container `c<i>`.
fn container(i: usize, mut fields: Value) -> Value {
    fields["name"] = json!(format!("c{i}"));
    template_spec(json!({"containers": [fields]}))
}

/// `n` nested arrays (or objects) as text, around `1`.
fn nested(n: usize, objects: bool) -> String {
    let (open, close) = if objects { ("{\"a\":", "}") } else { ("[", "]") };
    format!("{}1{}", open.repeat(n), close.repeat(n))
}

/// A proper prefix of `text`: never a complete JSON (or YAML flow) document.
fn truncated(rng: &mut Rng, text: &str) -> Vec<u8> {
    let cut = 1 + rng.below(text.len() - 1);
    text.as_bytes()[..cut].to_vec()
}

/// Bodies that are no patch document at all.
fn garbage(rng: &mut Rng, allow_empty_list: bool) -> Case {
    let mut bodies: Vec<&[u8]> = vec![
        b"",
        b" ",
        b"1",
        b"\"x\"",
        b"true",
        b"{\"a\":1}{\"b\":2}",
        b"{\"spec\":{\"replicas\":3},}",
        b"{'spec': {'replicas': 3}}",
        b"{\"spec\":{\"replicas\":NaN}}",
        b"\xff\xfe{\"spec\":{}}",
        b"{\"spec\":{\"replicas\":3}}\x00",
    ];
    if allow_empty_list {
        bodies.extend_from_slice(&[b"[]", b"null"]);
    }
    let body = rng.pick(&bodies);
    Case::new(format!("garbage {:?}", String::from_utf8_lossy(body)), body.to_vec())
}

/// Documents near and past the 3 MiB limit. `wrap` puts a big string
/// somewhere the patch type reaches.
fn huge(rng: &mut Rng, wrap: &dyn Fn(&str, &str) -> String) -> Case {
    match rng.below(4) {
        // annotations may hold 256 KiB in all
        0 => Case::new("huge annotation", wrap("annotations", &"a".repeat(MAX_BODY - 4096))),
        // a label value may hold 63 characters
        1 => Case::new("huge label", wrap("labels", &"l".repeat(MIB))),
        // one byte over the limit: 413
        2 => {
            let mut body = wrap("annotations", &"o".repeat(MAX_BODY));
            body.truncate(MAX_BODY + 1);
            Case::new("over the limit", body)
        }
        _ => {
            let body = wrap("annotations", &"t".repeat(MAX_BODY - 4096));
            Case::new("huge and truncated", body[..body.len() - 3].to_string())
        }
    }
}

/// A JSON (strategic or merge) patch setting `metadata.<field>.big` to `value`.
fn metadata_patch(field: &str, value: &str) -> String {
    format!("{{\"metadata\":{{\"{field}\":{{\"big\":\"{value}\"}}}}}}")
}

/// Wrong types and invalid values, as a strategic-merge or merge patch.
fn wrong_value(rng: &mut Rng) -> Case {
    let i = rng.below(CONTAINERS);
    let (what, patch) = match rng.below(13) {
        0 => (
            "replicas",
            json!({"spec": {"replicas": rng.pick(&[json!("3"), json!(true), json!([1]), json!({"a": 1}), json!(1.5), json!(2_147_483_648u64), json!(-1)])}}),
        ),
        1 => (
            "image",
            container(i, json!({"image": rng.pick(&[json!(5), json!([]), json!({}), json!(true), Value::Null])})),
        ),
        2 => (
            "containerPort",
            container(
                i,
                json!({"ports": [{"containerPort": rng.pick(&[json!("80"), json!(0), json!(70000), json!(-5), json!(1.5)])}]}),
            ),
        ),
        3 => (
            "env value",
            container(
                i,
                json!({"env": [{"name": format!("E{i}"), "value": rng.pick(&[json!(5), json!(true), json!({}), json!([])])}]}),
            ),
        ),
        4 => (
            "containers not a list",
            template_spec(json!({"containers": rng.pick(&[json!("x"), json!(5), json!({"name": "c0"}), json!(true)])})),
        ),
        5 => (
            "labels",
            json!({"metadata": {"labels": rng.pick(&[json!([]), json!("x"), json!({"a": 5}), json!({"a": "b c"}), json!({"-bad": "x"}), json!({"a": "x".repeat(64)})])}}),
        ),
        6 => (
            "annotations",
            json!({"metadata": {"annotations": rng.pick(&[json!({"a": 5}), json!([]), json!("x"), json!({"a": {"b": "c"}})])}}),
        ),
        7 => (
            "name or namespace",
            rng.pick(&[
                json!({"metadata": {"name": "other"}}),
                json!({"metadata": {"namespace": "other"}}),
                json!({"metadata": {"name": 5}}),
            ]),
        ),
        8 => ("immutable selector", json!({"spec": {"selector": {"matchLabels": {"app": "other"}}}})),
        9 => (
            "template labels",
            json!({"spec": {"template": {"metadata": {"labels": {"app": rng.pick(&["other", "", "b c"])}}}}}),
        ),
        10 => (
            "invalid spec",
            rng.pick(&[
                json!({"spec": {"strategy": {"type": "Bogus"}}}),
                json!({"spec": {"strategy": {"type": "Recreate"}}}),
                json!({"spec": {"minReadySeconds": -1}}),
                json!({"spec": {"revisionHistoryLimit": -1}}),
                template_spec(json!({"restartPolicy": "Never"})),
                template_spec(json!({"dnsPolicy": "Bogus"})),
                container(i, json!({"imagePullPolicy": "Sometimes"})),
            ]),
        ),
        11 => {
            // a change pinned to a resourceVersion that is not the object's
            let rv = rng.pick(&["1", "0", "abc", "-1"]);
            return Case::json(
                format!("stale resourceVersion {rv}"),
                json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": 7}}),
            );
        }
        _ => {
            let unknown =
                rng.pick(&[container(i, json!({"bogusField": 1})), json!({"spec": {"bogus": {"deep": [1]}}})]);
            return Case::json("unknown field, fieldValidation=Strict", unknown).with_query("?fieldValidation=Strict");
        }
    };
    Case::json(format!("wrong value: {what}"), patch)
}

/// Deep nesting where a string belongs.
fn deep(rng: &mut Rng, wrap: impl Fn(&str) -> String) -> Case {
    let n = rng.pick(&[64, 127, 129, 1000, 5000]);
    let objects = rng.below(2) == 0;
    Case::new(format!("nested {n} deep{}", if objects { " (objects)" } else { "" }), wrap(&nested(n, objects)))
}

/// A valid change, to cut short or to follow with a failing step.
fn valid_change(rng: &mut Rng) -> Value {
    let i = rng.below(CONTAINERS);
    match rng.below(3) {
        0 => container(i, json!({"image": format!("registry.example/app-{i}:2.{}", rng.below(100))})),
        1 => json!({"metadata": {"labels": {"fuzz": "yes"}}, "spec": {"replicas": 5}}),
        _ => container(i, json!({"env": [{"name": "NEW", "value": "1"}]})),
    }
}

fn strategic_case(rng: &mut Rng, n: usize) -> Case {
    if n % 50 == 7 {
        return huge(rng, &|field, value| metadata_patch(field, value));
    }
    let i = rng.below(CONTAINERS);
    match rng.below(7) {
        0 => {
            let text = valid_change(rng).to_string();
            Case::new("truncated", truncated(rng, &text))
        }
        1 | 2 => wrong_value(rng),
        3 => {
            let (what, patch) = match rng.below(8) {
                0 => (
                    "$patch in a list item",
                    container(
                        i,
                        json!({"$patch": rng.pick(&[json!("bogus"), json!(5), json!(true), json!([]), json!({})])}),
                    ),
                ),
                1 => (
                    "$patch in a map",
                    rng.pick(&[
                        json!({"spec": {"$patch": "bogus"}}),
                        json!({"spec": {"template": {"$patch": 5}}}),
                        json!({"metadata": {"labels": {"$patch": "frob"}}}),
                    ]),
                ),
                2 => (
                    "$retainKeys not a list",
                    json!({"spec": {"strategy": {"$retainKeys": rng.pick(&[json!("type"), json!(5), json!({"a": 1})])}}}),
                ),
                3 => ("$patch: replace empties the containers", container(i, json!({"$patch": "replace"}))),
                4 => ("$patch: delete of the whole object", json!({"$patch": "delete"})),
                5 => ("list of lists", template_spec(json!({"containers": [["c0"]]}))),
                6 => ("$patch: merge in a list", template_spec(json!({"containers": [{"$patch": "merge"}]}))),
                _ => (
                    "$patch: delete without the merge key",
                    template_spec(json!({"containers": [{"$patch": "delete"}]})),
                ),
            };
            Case::json(format!("directive: {what}"), patch)
        }
        4 => {
            let (what, patch) = match rng.below(5) {
                0 => ("containers", template_spec(json!({"containers": [{"image": "x"}]}))),
                1 => ("ports", container(i, json!({"ports": [{"protocol": "UDP"}]}))),
                2 => ("env", container(i, json!({"env": [{"value": "x"}]}))),
                3 => ("volumeMounts", container(i, json!({"volumeMounts": [{"readOnly": true}]}))),
                _ => ("volumes", template_spec(json!({"volumes": [{"emptyDir": {}}]}))),
            };
            Case::json(format!("no merge key: {what}"), patch)
        }
        5 => deep(rng, |v| format!("{{\"metadata\":{{\"annotations\":{{\"a\":{v}}}}}}}")),
        _ => garbage(rng, true),
    }
}

fn merge_case(rng: &mut Rng, n: usize) -> Case {
    if n % 50 == 7 {
        return huge(rng, &|field, value| metadata_patch(field, value));
    }
    let i = rng.below(CONTAINERS);
    match rng.below(6) {
        0 => {
            let text = valid_change(rng).to_string();
            Case::new("truncated", truncated(rng, &text))
        }
        1 | 2 => wrong_value(rng),
        // a merge patch replaces the whole list: these leave nameless or imageless containers
        3 => Case::json(
            "list replaced by an incomplete one",
            rng.pick(&[
                template_spec(json!({"containers": [{"image": "x"}]})),
                container(i, json!({"env": [{"value": "x"}]})),
                template_spec(json!({"containers": []})),
            ]),
        ),
        4 => deep(rng, |v| format!("{{\"metadata\":{{\"annotations\":{{\"a\":{v}}}}}}}")),
        _ => garbage(rng, true),
    }
}

/// One json-patch operation that fails or makes the object invalid.
fn bad_op(rng: &mut Rng) -> (String, Value) {
    let i = rng.below(CONTAINERS);
    let far = CONTAINERS + 1 + rng.below(90);
    let c = |rest: &str| format!("/spec/template/spec/containers/{i}{rest}");
    let (what, op) = match rng.below(21) {
        0 => ("replace a missing field", json!({"op": "replace", "path": "/spec/nope", "value": 1})),
        1 => ("remove a missing field", json!({"op": "remove", "path": "/spec/nope"})),
        2 => (
            "replace past the last container",
            json!({"op": "replace", "path": format!("/spec/template/spec/containers/{far}/image"), "value": "x"}),
        ),
        3 => (
            "remove past the last container",
            json!({"op": "remove", "path": format!("/spec/template/spec/containers/{}", CONTAINERS)}),
        ),
        4 => ("add under a missing parent", json!({"op": "add", "path": "/spec/nope/deeper", "value": 1})),
        5 => ("remove a missing label", json!({"op": "remove", "path": "/metadata/labels/nope"})),
        6 => ("a path without the leading slash", json!({"op": "replace", "path": "spec/replicas", "value": 1})),
        7 => ("a path into a number", json!({"op": "add", "path": "/spec/replicas/x", "value": 1})),
        8 => ("move from a missing path", json!({"op": "move", "from": "/spec/nope", "path": "/spec/replicas"})),
        9 => ("copy from a missing path", json!({"op": "copy", "from": c("/ports/7"), "path": c("/ports/-")})),
        10 => ("a failing test", json!({"op": "test", "path": "/spec/replicas", "value": 99})),
        11 => ("a failing test on an image", json!({"op": "test", "path": c("/image"), "value": "nope"})),
        12 => (
            "replicas of the wrong type",
            json!({"op": "replace", "path": "/spec/replicas", "value": rng.pick(&[json!("x"), json!(1.5), json!({})])}),
        ),
        13 => ("an image of the wrong type", json!({"op": "replace", "path": c("/image"), "value": 5})),
        14 => ("labels of the wrong type", json!({"op": "replace", "path": "/metadata/labels", "value": []})),
        15 => ("negative replicas", json!({"op": "replace", "path": "/spec/replicas", "value": -1})),
        16 => ("remove a required image", json!({"op": "remove", "path": c("/image")})),
        17 => ("remove the selector", json!({"op": "remove", "path": "/spec/selector"})),
        18 => (
            "change the immutable selector",
            json!({"op": "replace", "path": "/spec/selector/matchLabels/app", "value": "other"}),
        ),
        19 => (
            "a duplicate container name",
            json!({"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": format!("c{i}"), "image": "x"}}),
        ),
        _ => ("rename the object", json!({"op": "replace", "path": "/metadata/name", "value": "other"})),
    };
    (what.to_string(), op)
}

fn valid_ops(rng: &mut Rng) -> Vec<Value> {
    let i = rng.below(CONTAINERS);
    let all = [
        json!({"op": "replace", "path": format!("/spec/template/spec/containers/{i}/image"), "value": "registry.example/new:1"}),
        json!({"op": "add", "path": "/metadata/labels/fuzz", "value": "yes"}),
        json!({"op": "replace", "path": "/spec/replicas", "value": 6}),
        json!({"op": "add", "path": format!("/spec/template/spec/containers/{i}/env/-"), "value": {"name": "NEW", "value": "1"}}),
    ];
    (0..1 + rng.below(3)).map(|_| rng.pick(&all)).collect()
}

fn json_patch_case(rng: &mut Rng, n: usize) -> Case {
    if n % 50 == 7 {
        return huge(rng, &|field, value| {
            format!("[{{\"op\":\"add\",\"path\":\"/metadata/{field}/big\",\"value\":\"{value}\"}}]")
        });
    }
    match rng.below(7) {
        0 => {
            let text = Value::Array(valid_ops(rng)).to_string();
            Case::new("truncated", truncated(rng, &text))
        }
        1 => {
            let (what, op) = bad_op(rng);
            Case::json(what, json!([op]))
        }
        2 => {
            // valid steps first: none of them may be stored
            let (what, op) = bad_op(rng);
            let mut ops = valid_ops(rng);
            ops.push(op);
            Case::json(format!("valid steps, then: {what}"), Value::Array(ops))
        }
        3 => {
            let (what, body) = match rng.below(9) {
                0 => ("not a list", json!({"op": "add", "path": "/spec/replicas", "value": 1})),
                1 => ("no op", json!([{"path": "/spec/replicas", "value": 1}])),
                2 => ("no path", json!([{"op": "replace", "value": 1}])),
                3 => ("an unknown op", json!([{"op": "frob", "path": "/spec/replicas", "value": 1}])),
                4 => ("add without a value", json!([{"op": "add", "path": "/metadata/labels/x"}])),
                5 => ("move without from", json!([{"op": "move", "path": "/metadata/labels/x"}])),
                6 => ("op not a string", json!([{"op": 5, "path": "/spec/replicas", "value": 1}])),
                7 => ("path not a string", json!([{"op": "replace", "path": ["spec"], "value": 1}])),
                _ => ("an operation that is not an object", json!(["replace"])),
            };
            Case::json(format!("malformed: {what}"), body)
        }
        4 => {
            let stale = json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": rng.pick(&["1", "0", "abc"])},
                {"op": "replace", "path": "/spec/replicas", "value": 7},
            ]);
            if rng.below(2) == 0 {
                Case::json("stale resourceVersion", stale)
            } else {
                let add = json!([{"op": "add", "path": "/spec/bogus", "value": {"deep": 1}}]);
                Case::json("unknown field, fieldValidation=Strict", add).with_query("?fieldValidation=Strict")
            }
        }
        5 => deep(rng, |v| format!("[{{\"op\":\"add\",\"path\":\"/metadata/annotations/a\",\"value\":{v}}}]")),
        _ => garbage(rng, false),
    }
}

/// An apply configuration of the Deployment, with `edit` applied to it.
fn applied(name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut config = deployment(name);
    edit(&mut config);
    config
}

const MANAGER: &str = "?fieldManager=fuzz";
const FORCED: &str = "?fieldManager=fuzz&force=true";

fn apply_case(rng: &mut Rng, n: usize, name: &str) -> Case {
    if n % 50 == 7 {
        let name = name.to_string();
        let case = huge(rng, &move |field, value| {
            let doc = applied(&name, |c| c["metadata"][field] = json!({"big": "X"})).to_string();
            doc.replace("\"X\"", &format!("\"{value}\""))
        });
        return case.with_query(FORCED);
    }
    let i = rng.below(CONTAINERS);
    match rng.below(9) {
        0 => {
            let config = applied(name, |c| c["spec"]["replicas"] = json!(7));
            Case::new("truncated", truncated(rng, &config.to_string())).with_query(FORCED)
        }
        1 => {
            let (what, config) = match rng.below(7) {
                0 => ("kind ConfigMap", applied(name, |c| c["kind"] = json!("ConfigMap"))),
                1 => ("apiVersion v1", applied(name, |c| c["apiVersion"] = json!("v1"))),
                2 => ("apiVersion apps/v2", applied(name, |c| c["apiVersion"] = json!("apps/v2"))),
                3 => ("no kind", applied(name, |c| drop(c.as_object_mut().unwrap().remove("kind")))),
                4 => ("no apiVersion", applied(name, |c| drop(c.as_object_mut().unwrap().remove("apiVersion")))),
                5 => ("another name", applied(name, |c| c["metadata"]["name"] = json!("other"))),
                _ => ("another namespace", applied(name, |c| c["metadata"]["namespace"] = json!("other"))),
            };
            Case::json(format!("wrong object: {what}"), config).with_query(FORCED)
        }
        2 => {
            let (what, config) = match rng.below(8) {
                0 => ("replicas a string", applied(name, |c| c["spec"]["replicas"] = json!("7"))),
                1 => {
                    ("containers a string", applied(name, |c| c["spec"]["template"]["spec"]["containers"] = json!("x")))
                }
                2 => (
                    "an image a number",
                    applied(name, |c| c["spec"]["template"]["spec"]["containers"][i]["image"] = json!(5)),
                ),
                3 => ("labels a list", applied(name, |c| c["metadata"]["labels"] = json!(["a"]))),
                4 => ("negative replicas", applied(name, |c| c["spec"]["replicas"] = json!(-1))),
                5 => ("a bogus strategy", applied(name, |c| c["spec"]["strategy"] = json!({"type": "Bogus"}))),
                6 => (
                    "template labels off the selector",
                    applied(name, |c| c["spec"]["template"]["metadata"]["labels"]["app"] = json!("other")),
                ),
                _ => (
                    "a container without its name",
                    applied(name, |c| {
                        c["spec"]["template"]["spec"]["containers"][i].as_object_mut().unwrap().remove("name");
                    }),
                ),
            };
            Case::json(format!("invalid, forced: {what}"), config).with_query(FORCED)
        }
        3 => {
            // fields the creator owns, changed without force: a conflict
            let (what, config) = match rng.below(3) {
                0 => ("replicas", applied(name, |c| c["spec"]["replicas"] = json!(7))),
                1 => (
                    "an image",
                    applied(name, |c| c["spec"]["template"]["spec"]["containers"][i]["image"] = json!("x:2")),
                ),
                _ => (
                    "an env value",
                    applied(name, |c| {
                        c["spec"]["template"]["spec"]["containers"][i]["env"][0]["value"] = json!("slow")
                    }),
                ),
            };
            Case::json(format!("conflict: {what}"), config).with_query(MANAGER)
        }
        4 => Case::json("no fieldManager", applied(name, |c| c["spec"]["replicas"] = json!(7))),
        5 => {
            let yaml: &[&str] = &[
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n\tspec: {}\n",
                "apiVersion: 'apps/v1\nkind: Deployment\n",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: [x\n",
                ": : :\n",
                "- apiVersion: apps/v1\n- kind: Deployment\n",
                "42\n",
                "~\n",
                "apiVersion: apps/v1\nkind: Deployment\nkind: Deployment\nmetadata: {name: x}\n",
                "---\napiVersion: apps/v1\nkind: Deployment\n---\napiVersion: apps/v1\nkind: Deployment\n",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: &a {name: *a}\n",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n  labels: !!binary AAAA\n",
            ];
            let doc = rng.pick(yaml);
            Case::new(format!("yaml: {doc:?}"), doc).with_query(MANAGER)
        }
        6 => {
            let body = applied(name, |c| c["metadata"]["annotations"]["a"] = json!("X")).to_string();
            deep(rng, |v| body.replace("\"X\"", v)).with_query(FORCED)
        }
        7 => {
            let depth = rng.pick(&[70, 200, 1000]);
            let mut doc =
                format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  annotations:\n    a:\n");
            for level in 0..depth {
                doc.push_str(&format!("{}k:\n", "  ".repeat(level + 3)));
            }
            Case::new(format!("block yaml {depth} deep"), doc).with_query(FORCED)
        }
        _ => Case::new("invalid UTF-8", b"apiVersion: apps/v1\nkind: \xff\xfe\n".to_vec()).with_query(MANAGER),
    }
}

/// Create the Deployment (as field manager `creator`) in a namespace of its
/// own; its path.
async fn target(client: &kube::Client, prefix: &str) -> String {
    let ns = unique_name(prefix);
    create_namespace(client, &ns).await;
    let collection = format!("/apis/apps/v1/namespaces/{ns}/deployments?fieldManager=creator");
    let body = deployment(NAME).to_string().into_bytes();
    let created = raw_request(client, "POST", &collection, "application/json", body).await.unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    format!("/apis/apps/v1/namespaces/{ns}/deployments/{NAME}")
}

async fn stored(client: &kube::Client, path: &str) -> Value {
    let got = raw_request(client, "GET", path, "application/json", Vec::new()).await.unwrap();
    assert_eq!(got.status, 200, "GET {path}: {got:?}");
    serde_json::from_str(&got.body).unwrap()
}

/// Send `CASES` cases from `generate` as `content_type` and check each answer
/// and the stored object after it; then `control`, a valid patch of the same
/// type, which must be stored (so the cases were refused for what they are).
async fn fuzz(content_type: &str, seed: u64, generate: impl Fn(&mut Rng, usize, &str) -> Case, control: Case) {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    let path = target(&client, "fuzz").await;
    let before = stored(&client, &path).await;
    assert_eq!(before["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len), Some(CONTAINERS));
    let mut rng = Rng(seed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for n in 0..CASES {
        let case = generate(&mut rng, n, NAME);
        let size = case.body.len();
        let url = format!("{path}{}", case.query);
        let answer = raw_request(&client, "PATCH", &url, content_type, case.body)
            .await
            .unwrap_or_else(|e| panic!("case {n} ({}; {size} bytes): no answer: {e}", case.what));
        let shown = answer.body.chars().take(300).collect::<String>();
        assert!(
            (400..500).contains(&answer.status),
            "case {n} ({}; {size} bytes, query {:?}): {} {shown}",
            case.what,
            case.query,
            answer.status
        );
        let status: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("case {n} ({}): the answer is not a Status ({e}): {shown}", case.what));
        assert_eq!((status["kind"].as_str(), status["code"].as_u64()), (Some("Status"), Some(answer.status.into())));
        let after = stored(&client, &path).await;
        assert!(after == before, "case {n} ({}) changed the object:\nbefore {before}\nafter  {after}", case.what);
        *statuses.entry(answer.status).or_default() += 1;
    }
    eprintln!("{content_type}: {CASES} cases answered {statuses:?}");

    let url = format!("{path}{}", control.query);
    let answer = raw_request(&client, "PATCH", &url, content_type, control.body).await.unwrap();
    assert_eq!(answer.status, 200, "control ({}): {answer:?}", control.what);
    let after = stored(&client, &path).await;
    assert_ne!(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"], "control stored nothing");
    assert_eq!(after["spec"]["template"]["spec"]["containers"][3]["image"], NEW_IMAGE, "{after}");
}

const NEW_IMAGE: &str = "registry.example/app-3:2.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_strategic_merge_patches_are_4xx_and_change_nothing() {
    let control = Case::json("a new image for c3", container(3, json!({"image": NEW_IMAGE})));
    fuzz(SMP, 0x5eed_0001, |rng, n, _| strategic_case(rng, n), control).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_merge_patches_are_4xx_and_change_nothing() {
    let mut containers = deployment(NAME)["spec"]["template"]["spec"]["containers"].clone();
    containers[3]["image"] = json!(NEW_IMAGE);
    let control = Case::json("containers with a new image for c3", template_spec(json!({"containers": containers})));
    fuzz(MERGE, 0x5eed_0002, |rng, n, _| merge_case(rng, n), control).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_patches_are_4xx_and_change_nothing() {
    let replace = json!([{"op": "replace", "path": "/spec/template/spec/containers/3/image", "value": NEW_IMAGE}]);
    fuzz(JSON_PATCH, 0x5eed_0003, |rng, n, _| json_patch_case(rng, n), Case::json("replace c3's image", replace)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_apply_patches_are_4xx_and_change_nothing() {
    let config = applied(NAME, |c| c["spec"]["template"]["spec"]["containers"][3]["image"] = json!(NEW_IMAGE));
    fuzz(APPLY, 0x5eed_0004, apply_case, Case::json("c3's new image, forced", config).with_query(FORCED)).await;
}

/// Send one patch and return its status; the object must be unchanged.
async fn patch_unchanged(client: &kube::Client, path: &str, content_type: &str, body: &str) -> u16 {
    let before = stored(client, path).await;
    let answer = raw_request(client, "PATCH", path, content_type, body.as_bytes().to_vec()).await.unwrap();
    let after = stored(client, path).await;
    assert!(
        after == before,
        "PATCH {path} {body} ({}) changed the object:\nbefore {before}\nafter  {after}",
        answer.status
    );
    answer.status
}

/// Kubernetes decodes a scale patch's result into an autoscaling/v1 Scale,
/// so `spec.replicas` must be an int32: anything else is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_patch_with_a_replicas_that_is_no_int32_is_a_bad_request() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    let path = target(&client, "scale").await;
    let scale = format!("{path}/scale");
    for replicas in [json!("3"), json!(1.5), json!({"a": 1}), json!([3]), json!(true), json!(2_147_483_648u64)] {
        let body = json!({"spec": {"replicas": replicas}}).to_string();
        assert_eq!(patch_unchanged(&client, &scale, MERGE, &body).await, 400, "replicas {replicas}");
        assert_eq!(stored(&client, &path).await["spec"]["replicas"], 2);
    }
}

/// Kubernetes refuses a `$retainKeys` list that leaves out a key the same
/// patch sets (ErrBadPatchFormatForRetainKeys: 400 "invalid patch format of
/// retainKeys").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_retain_keys_list_missing_a_patched_key_is_a_bad_request() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    let path = target(&client, "retain").await;
    let body = r#"{"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{"maxSurge":1}}}}"#;
    assert_eq!(patch_unchanged(&client, &path, SMP, body).await, 400);
}

/// Kubernetes: `metadata.managedFields must be nil` in an applied configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn an_apply_configuration_with_managed_fields_is_a_bad_request() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    let path = target(&client, "managed").await;
    let config =
        applied(NAME, |c| c["metadata"]["managedFields"] = json!([{"manager": "someone", "operation": "Apply"}]));
    let status = patch_unchanged(&client, &format!("{path}{FORCED}"), APPLY, &config.to_string()).await;
    assert_eq!(status, 400);
}

/// Kubernetes validates `metadata.uid` as immutable on every update:
/// 422 `metadata.uid: Invalid value: "…": field is immutable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_patch_changing_the_uid_is_invalid() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    let path = target(&client, "uid").await;
    let body = r#"{"metadata":{"uid":"00000000-0000-0000-0000-000000000000"}}"#;
    assert_eq!(patch_unchanged(&client, &path, MERGE, body).await, 422);
}
