//! The fixtures under `testdata/` are request bodies kubectl v1.33.1 sent to a capture
//! server on loopback (`NAME.pb`), next to what the same command prints with
//! `--dry-run=client -o json` (`NAME.json`): the JSON kubectl means by the body.
//!
//! | fixture | command |
//! | --- | --- |
//! | configmap | `create configmap x --from-literal=a=b` |
//! | configmap-files | `create configmap files --from-file=bin.dat --from-file=text.txt` (300 random bytes, `hello`) |
//! | secret-tls | `create secret tls web-tls --cert=tls.crt --key=tls.key` (a throwaway self-signed P-256 pair) |
//! | secret-generic | `create secret generic creds --from-literal=user=admin --from-literal=pass=s3cr3t` |
//! | secret-docker | `create secret docker-registry regcred --docker-server=r.example --docker-username=u --docker-password=p` |
//! | deployment-replicas0 | `create deployment web --image=nginx:1.27 --replicas=0 --port=80` |
//! | deployment-command | `create deployment api --image=busybox:1.36 -- sleep 3600` |
//! | service-clusterip | `create service clusterip web --tcp=80:8080` |
//! | service-nodeport | `create service nodeport np --tcp=443:https --node-port=30443` |
//! | service-externalname | `create service externalname ext --external-name=db.example.com` |
//! | service-loadbalancer | `create service loadbalancer lb --tcp=80` |
//! | namespace | `create namespace team-a` |
//! | ingress | `create ingress web --class=nginx --rule="foo.com/bar*=svc1:8080,tls=my-cert" --rule="bar.com/=svc2:http" --annotation=a=b` |
//! | token-request | `create token default` (a kind Skiff does not serve) |

use super::*;
use serde_json::json;

const FIXTURES: &[(&str, &[u8], &str)] = &[
    ("configmap", include_bytes!("testdata/configmap.pb"), include_str!("testdata/configmap.json")),
    ("configmap-files", include_bytes!("testdata/configmap-files.pb"), include_str!("testdata/configmap-files.json")),
    ("secret-tls", include_bytes!("testdata/secret-tls.pb"), include_str!("testdata/secret-tls.json")),
    ("secret-generic", include_bytes!("testdata/secret-generic.pb"), include_str!("testdata/secret-generic.json")),
    ("secret-docker", include_bytes!("testdata/secret-docker.pb"), include_str!("testdata/secret-docker.json")),
    (
        "deployment-replicas0",
        include_bytes!("testdata/deployment-replicas0.pb"),
        include_str!("testdata/deployment-replicas0.json"),
    ),
    (
        "deployment-command",
        include_bytes!("testdata/deployment-command.pb"),
        include_str!("testdata/deployment-command.json"),
    ),
    (
        "service-clusterip",
        include_bytes!("testdata/service-clusterip.pb"),
        include_str!("testdata/service-clusterip.json"),
    ),
    (
        "service-nodeport",
        include_bytes!("testdata/service-nodeport.pb"),
        include_str!("testdata/service-nodeport.json"),
    ),
    (
        "service-externalname",
        include_bytes!("testdata/service-externalname.pb"),
        include_str!("testdata/service-externalname.json"),
    ),
    (
        "service-loadbalancer",
        include_bytes!("testdata/service-loadbalancer.pb"),
        include_str!("testdata/service-loadbalancer.json"),
    ),
    ("namespace", include_bytes!("testdata/namespace.pb"), include_str!("testdata/namespace.json")),
    ("ingress", include_bytes!("testdata/ingress.pb"), include_str!("testdata/ingress.json")),
];

const TOKEN_REQUEST: &[u8] = include_bytes!("testdata/token-request.pb");

#[test]
fn kubectl_bodies_decode_to_the_json_kubectl_means() {
    for (name, body, expected) in FIXTURES {
        let expected: Value = serde_json::from_str(expected).unwrap();
        let decoded = decode(body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}");
        // Go's field order too, so the JSON reads like kubectl's.
        assert_eq!(serde_json::to_string(&decoded).unwrap(), serde_json::to_string(&expected).unwrap(), "{name}");
    }
}

#[test]
fn configmap_from_kubectl_create() {
    let body = FIXTURES[0].1;
    assert_eq!(
        decode(body).unwrap(),
        json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "x", "creationTimestamp": null},
            "data": {"a": "b"},
        })
    );
}

#[test]
fn served_kinds_all_have_tables() {
    for resource in crate::catalogue::all() {
        assert!(root(&resource.api_version(), resource.kind).is_some(), "{}", resource.kind);
        for sub in resource.subresources {
            let api_version =
                if sub.group.is_empty() { sub.version.to_string() } else { format!("{}/{}", sub.group, sub.version) };
            assert!(root(&api_version, sub.kind).is_some(), "{}/{}", resource.kind, sub.name);
        }
    }
    assert!(root("v1", "DeleteOptions").is_some());
    assert!(root("apps/v1", "DeleteOptions").is_some());
}

#[test]
fn content_types() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf("application/vnd.kubernetes.protobuf; charset=utf-8"));
    assert!(is_protobuf("Application/Vnd.Kubernetes.Protobuf;stream=watch"));
    assert!(!is_protobuf("application/json"));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf+json"));
    assert!(!is_protobuf(""));
}

// ---- bodies built by hand ----

/// A protobuf writer for building test bodies.
#[derive(Default, Clone)]
struct Pb(Vec<u8>);

impl Pb {
    fn new() -> Self {
        Pb::default()
    }
    fn key(mut self, field: u32, wire: u32) -> Self {
        put_varint(&mut self.0, u64::from(field << 3 | wire));
        self
    }
    fn varint(self, field: u32, value: u64) -> Self {
        let mut pb = self.key(field, 0);
        put_varint(&mut pb.0, value);
        pb
    }
    fn int(self, field: u32, value: i64) -> Self {
        self.varint(field, value as u64)
    }
    fn bytes(self, field: u32, value: &[u8]) -> Self {
        let mut pb = self.key(field, 2);
        put_varint(&mut pb.0, value.len() as u64);
        pb.0.extend_from_slice(value);
        pb
    }
    fn str(self, field: u32, value: &str) -> Self {
        self.bytes(field, value.as_bytes())
    }
    fn msg(self, field: u32, value: Pb) -> Self {
        self.bytes(field, &value.0)
    }
    /// A `map<string, string>` entry.
    fn entry(self, field: u32, key: &str, value: &str) -> Self {
        self.msg(field, Pb::new().str(1, key).str(2, value))
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `k8s\0` and a `runtime.Unknown` around `raw`, as Kubernetes' serializer writes it.
fn envelope(api_version: &str, kind: &str, raw: Pb) -> Vec<u8> {
    let unknown = Pb::new().msg(1, Pb::new().str(1, api_version).str(2, kind)).msg(2, raw).str(3, "").str(4, "");
    [b"k8s\0".as_slice(), &unknown.0].concat()
}

/// ObjectMeta as Go writes it: every non-pointer field, zero or not.
fn meta(name: &str) -> Pb {
    Pb::new().str(1, name).str(2, "").str(3, "").str(4, "").str(5, "").str(6, "").varint(7, 0).msg(8, Pb::new())
}

fn quantity(value: &str) -> Pb {
    Pb::new().str(1, value)
}

#[test]
fn deployment_with_zero_replicas_ports_and_requests() {
    let container = Pb::new()
        .str(1, "web")
        .str(2, "nginx:1.27")
        .msg(6, Pb::new().str(1, "").int(2, 0).int(3, 8080).str(4, "TCP").str(5, ""))
        .msg(
            8,
            Pb::new()
                .msg(2, Pb::new().str(1, "cpu").msg(2, quantity("250m")))
                .msg(2, Pb::new().str(1, "memory").msg(2, quantity("64Mi")))
                .msg(1, Pb::new().str(1, "memory").msg(2, quantity("128Mi"))),
        )
        .str(5, "")
        .str(13, "")
        .varint(16, 0);
    let template = Pb::new().msg(1, meta("").entry(11, "app", "web")).msg(2, Pb::new().msg(2, container));
    let spec = Pb::new()
        .int(1, 0)
        .msg(2, Pb::new().entry(1, "app", "web"))
        .msg(3, template)
        .msg(4, Pb::new())
        .int(5, 0)
        .int(6, 10)
        .varint(7, 0);
    let body =
        envelope("apps/v1", "Deployment", Pb::new().msg(1, meta("web").str(3, "prod")).msg(2, spec).msg(3, Pb::new()));
    assert_eq!(
        decode(&body).unwrap(),
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "prod", "creationTimestamp": null},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "250m", "memory": "64Mi"}},
                    }]},
                },
                "strategy": {},
                "revisionHistoryLimit": 10,
            },
            "status": {},
        })
    );
}

#[test]
fn service_target_ports_as_number_and_name() {
    let port =
        |name: &str, port: i64, target: Pb| Pb::new().str(1, name).str(2, "TCP").int(3, port).msg(4, target).int(5, 0);
    let spec = Pb::new()
        .msg(1, port("http", 80, Pb::new().int(1, 0).int(2, 8080).str(3, "")))
        .msg(1, port("https", 443, Pb::new().int(1, 1).int(2, 0).str(3, "https")))
        .str(3, "")
        .str(4, "ClusterIP");
    let body =
        envelope("v1", "Service", Pb::new().msg(1, meta("web")).msg(2, spec).msg(3, Pb::new().msg(1, Pb::new())));
    assert_eq!(
        decode(&body).unwrap(),
        json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                ],
                "type": "ClusterIP",
            },
            "status": {"loadBalancer": {}},
        })
    );
}

#[test]
fn secret_bytes_become_base64() {
    let entry = |key: &str, value: &[u8]| Pb::new().str(1, key).bytes(2, value);
    let raw = Pb::new()
        .msg(1, meta("tls"))
        .msg(2, entry("tls.crt", b"-----BEGIN CERTIFICATE-----\n"))
        .msg(2, entry("empty", b""))
        .msg(2, Pb::new().str(1, "no-value"))
        .str(3, "kubernetes.io/tls");
    assert_eq!(
        decode(&envelope("v1", "Secret", raw)).unwrap(),
        json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": "tls", "creationTimestamp": null},
            "data": {"tls.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==", "empty": "", "no-value": ""},
            "type": "kubernetes.io/tls",
        })
    );
}

#[test]
fn object_meta_times_owners_and_managed_fields() {
    let owner = Pb::new().str(5, "apps/v1").str(1, "ReplicaSet").str(3, "web-5d").str(4, "u-1").varint(6, 1);
    let managed = Pb::new()
        .str(1, "kubectl-create")
        .str(2, "Update")
        .str(3, "v1")
        .msg(4, Pb::new().int(1, 1_795_730_131))
        .str(6, "FieldsV1")
        .msg(7, Pb::new().bytes(1, br#"{"f:data":{".":{},"f:a":{}}}"#))
        .str(8, "");
    let meta = Pb::new()
        .str(1, "x")
        .str(3, "default")
        .str(5, "6f1c")
        .str(6, "42")
        .int(7, 3)
        // Nanoseconds are dropped: Kubernetes' Time is in seconds.
        .msg(8, Pb::new().int(1, 1_795_730_131).int(2, 999_999_999))
        .msg(9, Pb::new().int(1, 1_795_730_161))
        .int(10, 30)
        .str(14, "example.com/guard")
        .msg(13, owner)
        .msg(17, managed);
    assert_eq!(
        decode(&envelope("v1", "ConfigMap", Pb::new().msg(1, meta))).unwrap(),
        json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {
                "name": "x",
                "namespace": "default",
                "uid": "6f1c",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2026-11-26T21:55:31Z",
                "deletionTimestamp": "2026-11-26T21:56:01Z",
                "deletionGracePeriodSeconds": 30,
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d", "uid": "u-1", "controller": true},
                ],
                "finalizers": ["example.com/guard"],
                "managedFields": [{
                    "manager": "kubectl-create",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-26T21:55:31Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}, "f:a": {}}},
                }],
            },
        })
    );
}

#[test]
fn lease_micro_times_keep_microseconds() {
    let spec = Pb::new()
        .str(1, "node-1")
        .int(2, 40)
        .msg(3, Pb::new().int(1, 1_795_730_131).int(2, 123_456_789))
        .msg(4, Pb::new().int(1, 1_795_730_131))
        .int(5, 0);
    let body = envelope("coordination.k8s.io/v1", "Lease", Pb::new().msg(1, meta("node-1")).msg(2, spec));
    assert_eq!(
        decode(&body).unwrap()["spec"],
        json!({
            "holderIdentity": "node-1",
            "leaseDurationSeconds": 40,
            "acquireTime": "2026-11-26T21:55:31.123456Z",
            "renewTime": "2026-11-26T21:55:31.000000Z",
            "leaseTransitions": 0,
        })
    );
}

#[test]
fn events_k8s_io_event_with_series_and_references() {
    let raw = Pb::new()
        .msg(1, meta("web.1"))
        .msg(2, Pb::new().int(1, 1_795_730_131).int(2, 500_000_000))
        .msg(3, Pb::new().int(1, 2).msg(2, Pb::new().int(1, 1_795_730_131)))
        .str(4, "skiff.io/test")
        .str(5, "test-1")
        .str(6, "Testing")
        .str(7, "Tested")
        .msg(8, Pb::new().str(1, "Pod").str(3, "web"))
        .str(10, "it works")
        .str(11, "Normal");
    let event = decode(&envelope("events.k8s.io/v1", "Event", raw)).unwrap();
    assert_eq!((event["apiVersion"].as_str(), event["kind"].as_str()), (Some("events.k8s.io/v1"), Some("Event")));
    assert_eq!(event["eventTime"], "2026-11-26T21:55:31.500000Z");
    assert_eq!(event["series"], json!({"count": 2, "lastObservedTime": "2026-11-26T21:55:31.000000Z"}));
    assert_eq!(event["regarding"], json!({"kind": "Pod", "name": "web"}));
    assert_eq!(
        (&event["reportingController"], &event["reportingInstance"], &event["action"], &event["reason"]),
        (&json!("skiff.io/test"), &json!("test-1"), &json!("Testing"), &json!("Tested"))
    );
    assert_eq!((&event["note"], &event["type"]), (&json!("it works"), &json!("Normal")));
    assert!(event.get("deprecatedCount").is_none());
}

#[test]
fn pod_inlined_structs_negative_numbers_and_packed_repeats() {
    // Volume inlines VolumeSource, Probe inlines ProbeHandler, and secretRef inlines
    // LocalObjectReference: their fields sit in the parent's JSON object.
    let volume = Pb::new().str(1, "cache").msg(2, Pb::new().msg(2, Pb::new().str(1, "Memory")));
    let probe = Pb::new().msg(1, Pb::new().msg(1, Pb::new().str(1, "true"))).int(2, 5);
    let env_from = Pb::new().str(1, "APP_").msg(3, Pb::new().msg(1, Pb::new().str(1, "creds")));
    let container = Pb::new().str(1, "c").str(2, "busybox").msg(10, probe).msg(19, env_from);
    // supplementalGroups (repeated int64) packed; fsGroup negative (10-byte varint).
    let mut packed = Vec::new();
    put_varint(&mut packed, 1000);
    put_varint(&mut packed, 2000);
    let security = Pb::new().bytes(4, &packed).int(5, -1);
    let spec = Pb::new().msg(1, volume).msg(2, container).msg(14, security).int(4, -5).varint(99, 7);
    let pod = decode(&envelope("v1", "Pod", Pb::new().msg(1, meta("p")).msg(2, spec))).unwrap();
    assert_eq!(
        pod["spec"],
        json!({
            "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}}],
            "containers": [{
                "name": "c",
                "image": "busybox",
                "envFrom": [{"prefix": "APP_", "secretRef": {"name": "creds"}}],
                "livenessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 5},
            }],
            "terminationGracePeriodSeconds": -5,
            "securityContext": {"supplementalGroups": [1000, 2000], "fsGroup": -1},
        })
    );
}

#[test]
fn repeated_singular_messages_merge() {
    // Two parts of metadata merge, as protobuf merges a singular message seen twice.
    let raw = Pb::new().msg(1, Pb::new().str(1, "a").entry(11, "x", "1")).msg(1, Pb::new().entry(11, "y", "2"));
    assert_eq!(
        decode(&envelope("v1", "Namespace", raw)).unwrap()["metadata"],
        json!({"name": "a", "labels": {"x": "1", "y": "2"}})
    );
}

#[test]
fn delete_options_and_eviction() {
    let options = Pb::new().int(1, 0).str(4, "Foreground").str(5, "All");
    assert_eq!(
        decode(&envelope("v1", "DeleteOptions", options.clone())).unwrap(),
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "dryRun": ["All"]})
    );
    let eviction = Pb::new().msg(1, meta("web-1").str(3, "default")).msg(2, options);
    assert_eq!(
        decode(&envelope("policy/v1", "Eviction", eviction)).unwrap()["deleteOptions"]["gracePeriodSeconds"],
        json!(0)
    );
}

// ---- errors ----

fn malformed(body: &[u8]) -> String {
    match decode(body) {
        Err(e @ ProtoError::Malformed { .. }) => e.to_string(),
        other => panic!("expected a malformed body, got {other:?}"),
    }
}

#[test]
fn truncated_field_is_named() {
    // A ConfigMap whose data entry claims more bytes than follow.
    let raw = [Pb::new().msg(1, meta("x")).0, vec![0x12, 0x20, 0x0a, 0x01, b'a']].concat();
    let body = envelope("v1", "ConfigMap", Pb(raw));
    assert_eq!(
        malformed(&body),
        "protobuf body: field 2 of io.k8s.api.core.v1.ConfigMap: truncated length-delimited value"
    );
    // The envelope cut short.
    assert_eq!(
        malformed(&FIXTURES[0].1[..30]),
        "protobuf body: field 2 of io.k8s.apimachinery.pkg.runtime.Unknown: truncated length-delimited value"
    );
}

#[test]
fn nested_errors_carry_the_path() {
    let container = Pb::new().str(1, "c").msg(6, Pb::new().str(3, "eighty"));
    let spec = Pb::new().msg(3, Pb::new().msg(2, Pb::new().msg(2, container)));
    let body = envelope("apps/v1", "Deployment", Pb::new().msg(2, spec));
    assert_eq!(
        malformed(&body),
        "protobuf body: field 3 of io.k8s.api.core.v1.ContainerPort at spec.template.spec.containers[0].ports[0]: \
         a length-delimited value where a varint was expected"
    );
    let target = Pb::new().int(1, 2);
    let spec = Pb::new().msg(1, Pb::new().int(3, 80).msg(4, target));
    assert_eq!(
        malformed(&envelope("v1", "Service", Pb::new().msg(2, spec))),
        "protobuf body: field 4 of io.k8s.api.core.v1.ServicePort at spec.ports[0]: \
         IntOrString type 2 is neither 0 (int) nor 1 (string)"
    );
    let raw = Pb::new().msg(2, Pb::new().str(1, "a").bytes(2, &[0xff, 0xfe]));
    assert_eq!(
        malformed(&envelope("v1", "ConfigMap", raw)),
        "protobuf body: field 2 of io.k8s.api.core.v1.ConfigMap: value of key \"a\": string is not valid utf-8"
    );
}

#[test]
fn wrong_magic_unknown_kind_and_encodings() {
    assert_eq!(decode(b"{\"kind\":\"ConfigMap\"}"), Err(ProtoError::Magic));
    assert_eq!(decode(b""), Err(ProtoError::Magic));
    assert_eq!(decode(b"k8s\0"), Err(ProtoError::NoKind));
    let unserved =
        [b"k8s\0".as_slice(), &Pb::new().msg(1, Pb::new().str(1, "storage.k8s.io/v1").str(2, "StorageClass")).0]
            .concat();
    assert_eq!(
        decode(&unserved).unwrap_err().to_string(),
        "protobuf body: kind \"StorageClass\" of apiVersion \"storage.k8s.io/v1\" is not served"
    );
    // what `kubectl create token` (1.33) sends
    assert_eq!(
        decode(TOKEN_REQUEST).unwrap(),
        serde_json::json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null}, "spec": {}, "status": {"token": "", "expirationTimestamp": null}})
    );
    let gzip =
        [b"k8s\0".as_slice(), &Pb::new().msg(1, Pb::new().str(1, "v1").str(2, "ConfigMap")).str(3, "gzip").0].concat();
    assert_eq!(decode(&gzip), Err(ProtoError::ContentEncoding("gzip".into())));
    let json = [
        b"k8s\0".as_slice(),
        &Pb::new().msg(1, Pb::new().str(1, "v1").str(2, "ConfigMap")).str(4, "application/json").0,
    ]
    .concat();
    assert_eq!(decode(&json), Err(ProtoError::ContentType("application/json".into())));
    assert_eq!(
        malformed(b"k8s\0\x0f"),
        "protobuf body: field 1 of io.k8s.apimachinery.pkg.runtime.Unknown: unsupported wire type 7"
    );
    assert_eq!(malformed(b"k8s\0\x00"), "protobuf body: io.k8s.apimachinery.pkg.runtime.Unknown: invalid field key 0");
}

/// xorshift64*, so the fuzzing below is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Where the object's bytes (`raw`, field 2 of the envelope) sit in a body.
fn raw_range(body: &[u8]) -> std::ops::Range<usize> {
    let mut reader = Reader { bytes: &body[4..] };
    while let Some((number, value)) = reader.field().ok().unwrap() {
        if let (2, Wire::Len(raw)) = (number, value) {
            let end = body.len() - reader.bytes.len();
            return end - raw.len()..end;
        }
    }
    panic!("no raw field")
}

#[test]
fn garbled_bodies_are_errors_not_panics() {
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    for (name, body, _) in FIXTURES {
        // Every truncation; cutting the object itself is an error.
        let raw = raw_range(body);
        for len in 0..body.len() {
            let result = decode(&body[..len]);
            if raw.contains(&len) {
                assert!(result.is_err(), "{name} cut to {len} bytes decoded");
            }
        }
        // Random corruption: anything but a panic.
        for _ in 0..300 {
            let mut garbled = body.to_vec();
            for _ in 0..=rng.below(4) {
                let i = rng.below(garbled.len());
                garbled[i] = rng.next() as u8;
            }
            let _ = decode(&garbled);
        }
    }
    // Random bytes behind the magic.
    for _ in 0..2000 {
        let len = rng.below(64);
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = decode(&[b"k8s\0".as_slice(), &noise].concat());
        let _ = decode(&envelope("v1", "Pod", Pb(noise)));
    }
}

/// The tables come from Kubernetes' `.proto` files and Go structs; k8s-openapi's schemas
/// come from its OpenAPI document. Both must name the same JSON fields of each type.
#[test]
fn tables_name_the_fields_of_the_openapi_schemas() {
    fn json_names(message: &Message, out: &mut Vec<&'static str>) {
        for field in message.fields {
            match (field.shape, field.kind) {
                (Shape::Inline, Kind::Msg(inner)) => json_names(inner, out),
                _ => out.push(field.json),
            }
        }
    }
    let definitions = crate::schema::definitions();
    let mut todo: Vec<&Message> = fields::ROOTS.iter().map(|(_, _, m)| *m).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut compared = 0;
    while let Some(message) = todo.pop() {
        if !seen.insert(message.name) {
            continue;
        }
        for field in message.fields {
            if let Kind::Msg(inner) = field.kind {
                todo.push(inner);
            }
        }
        // Types Go inlines (VolumeSource, ProbeHandler) have no schema of their own.
        let Some(definition) = definitions.get(message.name) else { continue };
        let mut table = Vec::new();
        json_names(message, &mut table);
        let mut schema: Vec<&str> = definition["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        if fields::ROOTS.iter().any(|(_, _, m)| m.name == message.name) {
            schema.retain(|name| !matches!(*name, "apiVersion" | "kind"));
        }
        table.sort_unstable();
        schema.sort_unstable();
        assert_eq!(table, schema, "{}", message.name);
        compared += 1;
    }
    assert!(compared > 100, "only {compared} messages had schemas");
}
