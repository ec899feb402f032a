#!/usr/bin/env python3
"""Writes fields.rs: the protobuf field tables of the kinds Skiff serves.

Usage: gen_fields.py API_GIT_DIR APIMACHINERY_GIT_DIR > fields.rs
(git directories of kubernetes/api and kubernetes/apimachinery holding tag TAG).
Message shapes come from the generated.proto files; what Go's JSON does with a
field (inline embedding, omitempty on a non-pointer scalar) from the Go structs.
"""
import re
import subprocess
import sys

TAG = "v0.33.13"
API, MACHINERY = sys.argv[1], sys.argv[2]
# proto package -> (git dir, directory, Rust prefix)
PACKAGES = {
    "k8s.io.api.core.v1": (API, "core/v1", "CORE_V1"),
    "k8s.io.api.apps.v1": (API, "apps/v1", "APPS_V1"),
    "k8s.io.api.networking.v1": (API, "networking/v1", "NETWORKING_V1"),
    "k8s.io.api.discovery.v1": (API, "discovery/v1", "DISCOVERY_V1"),
    "k8s.io.api.coordination.v1": (API, "coordination/v1", "COORDINATION_V1"),
    "k8s.io.api.autoscaling.v1": (API, "autoscaling/v1", "AUTOSCALING_V1"),
    "k8s.io.api.policy.v1": (API, "policy/v1", "POLICY_V1"),
    "k8s.io.api.events.v1": (API, "events/v1", "EVENTS_V1"),
    "k8s.io.api.authentication.v1": (API, "authentication/v1", "AUTHENTICATION_V1"),
    "k8s.io.apimachinery.pkg.apis.meta.v1": (MACHINERY, "pkg/apis/meta/v1", "META_V1"),
}
# Messages whose Go type has its own JSON form: decoded by hand in protobuf.rs.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawExtension",
}
# Types only the server writes (UserInfo.extra in a SelfSubjectReview's status), whose Go
# type is a named slice the tables cannot describe: fields of these types are skipped.
SERVER_WRITTEN = {"k8s.io.api.authentication.v1.ExtraValue"}
SCALARS = {"string": "Str", "bytes": "Bytes", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64"}
# (apiVersion, kind) of the request bodies decoded.
ROOTS = [
    ("v1", "k8s.io.api.core.v1", k)
    for k in ["Namespace", "Pod", "Service", "Endpoints", "Secret", "ConfigMap", "Node", "Event", "Binding", "ServiceAccount"]
] + [
    ("apps/v1", "k8s.io.api.apps.v1", "Deployment"),
    ("apps/v1", "k8s.io.api.apps.v1", "ReplicaSet"),
    ("networking.k8s.io/v1", "k8s.io.api.networking.v1", "Ingress"),
    ("networking.k8s.io/v1", "k8s.io.api.networking.v1", "IngressClass"),
    ("discovery.k8s.io/v1", "k8s.io.api.discovery.v1", "EndpointSlice"),
    ("coordination.k8s.io/v1", "k8s.io.api.coordination.v1", "Lease"),
    ("events.k8s.io/v1", "k8s.io.api.events.v1", "Event"),
    ("autoscaling/v1", "k8s.io.api.autoscaling.v1", "Scale"),
    ("policy/v1", "k8s.io.api.policy.v1", "Eviction"),
    ("authentication.k8s.io/v1", "k8s.io.api.authentication.v1", "TokenRequest"),
    ("authentication.k8s.io/v1", "k8s.io.api.authentication.v1", "SelfSubjectReview"),
    ("meta.k8s.io/v1", "k8s.io.apimachinery.pkg.apis.meta.v1", "DeleteOptions"),
]


def show(git_dir, path):
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{TAG}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def go_files(git_dir, directory):
    names = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "--name-only", f"{TAG}:{directory}"],
                           check=True, capture_output=True, text=True).stdout.split()
    return [show(git_dir, f"{directory}/{n}") for n in names if n.endswith(".go") and not n.endswith("_test.go")]


messages = {}  # full name -> [(label, type, name, number)]
for pkg, (git_dir, directory, _) in PACKAGES.items():
    body = show(git_dir, f"{directory}/generated.proto")
    for name, fields in re.findall(r"^message (\w+) \{\n(.*?)^\}", body, re.S | re.M):
        if len(re.findall(r"^\s*[^/].* = \d+;", fields, re.M)) != len(re.findall(r"^\s*(?:optional|repeated|map<string,) ", fields, re.M)):
            sys.exit(f"{pkg}.{name}: a field of a form this script does not read")
        messages[f"{pkg}.{name}"] = [
            (label, typ[1:] if typ.startswith(".") else typ if typ in SCALARS else f"{pkg}.{typ}", fname, int(num))
            for label, typ, fname, num in re.findall(
                r"^\s*(optional|repeated|map<string,) ?(\S+?)>? (\w+) = (\d+);", fields, re.M)
        ]

go = {}  # full name -> {number: (json name, options, go type)}
for pkg, (git_dir, directory, _) in PACKAGES.items():
    for src in go_files(git_dir, directory):
        for name, body in re.findall(r"^type (\w+) struct \{\n(.*?)^\}", src, re.S | re.M):
            fields = {}
            for line in body.splitlines():
                m = re.match(r'^\s*(?:\w+\s+)?(\S+)\s+`.*json:"([^"]*)".*protobuf:"\w+,(\d+),', line)
                if m:
                    json_name, _, options = m.group(2).partition(",")
                    fields[int(m.group(3))] = (json_name, options, m.group(1))
            go[f"{pkg}.{name}"] = fields


def rust_name(full):
    pkg, _, name = full.rpartition(".")
    return PACKAGES[pkg][2] + "_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).upper()


def kind(typ, todo):
    if typ in SCALARS:
        return SCALARS[typ]
    if typ in SPECIAL:
        return SPECIAL[typ]
    if typ not in messages:
        sys.exit(f"unknown proto type {typ}")
    todo.append(typ)
    return f"Msg(&{rust_name(typ)})"


out, done, todo = [], set(), [f"{pkg}.{k}" for _, pkg, k in ROOTS]
while todo:
    full = todo.pop(0)
    if full in done:
        continue
    done.add(full)
    rows = []
    for label, typ, fname, num in messages[full]:
        if typ in SERVER_WRITTEN:
            continue
        json_name, options, go_type = go[full][num]
        if "inline" in options.split(","):
            shape, json_name = "Inline", ""
        elif label == "repeated":
            shape = "Repeated"
        elif label == "map<string,":
            shape = "Map"
        elif typ in SCALARS and "omitempty" in options.split(",") and not go_type.startswith("*"):
            shape = "OmitZero"
        else:
            shape = "One"
        if shape != "Inline" and json_name != fname:
            print(f"note: {full}: field {num} is {fname} in proto, {json_name} in JSON", file=sys.stderr)
        rows.append(f'    f({num}, "{json_name}", {kind(typ, todo)}, {shape}),')
    api_name = full.replace("k8s.io.", "io.k8s.", 1)
    out.append(f'pub(super) static {rust_name(full)}: Message = Message {{\n    name: "{api_name}",\n'
               f'    fields: &[\n' + "\n".join("    " + r for r in rows) + "\n    ],\n};\n")

print(f"""//! Protobuf field tables of the kinds Skiff serves, generated by `gen_fields.py` from the
//! generated.proto files and Go structs of kubernetes/api and kubernetes/apimachinery at {TAG}
//! (core/v1, apps/v1, networking/v1, discovery/v1, coordination/v1, autoscaling/v1, policy/v1,
//! events/v1, authentication/v1, meta/v1). Regenerate with:
//! `python3 api/src/protobuf/gen_fields.py <api.git> <apimachinery.git> > api/src/protobuf/fields.rs`
//! and then `rustfmt --edition 2021 api/src/protobuf/fields.rs`. Do not edit by hand.

use super::{{f, Kind::*, Message, Shape::*}};

/// The top-level messages by `(apiVersion, kind)` of their `runtime.Unknown` envelope.
pub(super) static ROOTS: &[(&str, &str, &Message)] = &[""")
for api_version, pkg, k in ROOTS:
    print(f'    ("{api_version}", "{k}", &{rust_name(pkg + "." + k)}),')
print("];\n")
print("\n".join(sorted(out)), end="")
