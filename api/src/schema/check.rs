//! The checks the API server runs on a written object before storing it:
//! decoding errors with the messages Kubernetes' Go decoder gives, and the
//! fields the schema does not know, in Kubernetes' strict-decoding format.
//!
//! Kubernetes decodes a body with sigs.k8s.io/json, a fork of Go's
//! `encoding/json`. A value of the wrong JSON type is recorded as
//! `json: cannot unmarshal <value> into Go struct field <Struct>.<path> of
//! type <Go type>` and decoding goes on; types with their own decoder
//! (IntOrString, Quantity, Time) return their error, which ends decoding.
//! Unknown fields are collected as `spec.containers[0].name`-style paths.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

use super::golang;
use super::tables;
use super::REF_PREFIX;
use crate::ResourceType;

const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";

/// Kubernetes keeps at most this many strict-decoding errors.
const MAX_UNKNOWN_FIELDS: usize = 100;

/// What [`check`] found in an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Decoding errors in document order. Kubernetes reports a single one:
    /// see [`CheckOutcome::decode_error`].
    pub decode_errors: Vec<DecodeError>,
    /// Fields the schema does not know, in document order, as Kubernetes'
    /// strict decoding writes them: `spec.template.spec.containers[0].imagePullPolicyy`.
    pub unknown_fields: Vec<String>,
}

/// One decoding error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Go's message: `json: cannot unmarshal string into Go struct field
    /// ContainerPort.spec.template.spec.containers.ports.containerPort of type int32`.
    pub message: String,
    /// Where, with list indices: `spec.template.spec.containers[0].ports[0].containerPort`.
    pub path: String,
    /// The error came from a type's own decoder, which stops decoding.
    pub fatal: bool,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

impl CheckOutcome {
    /// The error Kubernetes would report: the first one that stopped
    /// decoding, or else the first one recorded.
    pub fn decode_error(&self) -> Option<&DecodeError> {
        self.decode_errors.iter().find(|e| e.fatal).or_else(|| self.decode_errors.first())
    }

    /// Nothing to report.
    pub fn is_clean(&self) -> bool {
        self.decode_errors.is_empty() && self.unknown_fields.is_empty()
    }

    /// The message of Kubernetes' strict decoding error (what a
    /// `fieldValidation=Strict` write fails with, after the API server's
    /// `<Kind> in version "<v>" cannot be handled as a <Kind>: ` prefix):
    /// `strict decoding error: unknown field "spec.foo", unknown field "spec.bar"`.
    pub fn strict_decoding_message(&self) -> Option<String> {
        if self.unknown_fields.is_empty() {
            return None;
        }
        let fields: Vec<String> = self.unknown_fields.iter().map(|p| unknown_field_message(p)).collect();
        Some(format!("strict decoding error: {}", fields.join(", ")))
    }
}

/// `unknown field "spec.foo"`, quoted as Go's `strconv.Quote` does: the
/// form of each strict-decoding error and of each `fieldValidation=Warn`
/// warning.
pub fn unknown_field_message(path: &str) -> String {
    let mut quoted = String::with_capacity(path.len() + 2);
    quoted.push('"');
    for c in path.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    format!("unknown field {quoted}")
}

/// Checks `obj`, a written object of type `rt`, against the schema of its
/// kind: type mismatches as Kubernetes' decoder reports them and the
/// fields it does not know. As a backstop the object is then decoded into
/// k8s-openapi's typed struct, and a failure the walk missed is reported
/// too.
pub fn check(rt: &ResourceType, obj: &Value) -> CheckOutcome {
    check_definition(rt.definition, obj)
}

/// [`check`] for a body of any definition, such as the `Scale` of a scale
/// subresource (`io.k8s.api.autoscaling.v1.Scale`). A definition Skiff has
/// no schema for passes.
pub fn check_definition(definition: &str, obj: &Value) -> CheckOutcome {
    let reg = super::registry();
    let mut walk =
        Walk { reg, field_stack: Vec::new(), path: String::new(), out: CheckOutcome::default(), stopped: false };
    let root = Node { shape: Shape::Ref(definition.to_string()), go: None };
    walk.value(&root, obj, None);
    let mut out = walk.out;
    if out.decode_errors.is_empty() && type_meta_matches(definition, obj) {
        if let Some(Err(message)) = super::decode_typed(definition, obj) {
            out.decode_errors.push(DecodeError { message, path: String::new(), fatal: false });
        }
    }
    out
}

/// The typed structs refuse another `apiVersion` or `kind`; the API server
/// deals with those itself, so the backstop runs only when they agree.
fn type_meta_matches(definition: &str, obj: &Value) -> bool {
    let Some(gvk) = super::kind_of_definition(definition) else {
        return false;
    };
    let api_version = match gvk.group {
        "" => gvk.version.to_string(),
        group => format!("{group}/{}", gvk.version),
    };
    let agrees = |key: &str, want: &str| obj.get(key).is_none_or(|v| v.as_str() == Some(want));
    agrees("apiVersion", &api_version) && agrees("kind", gvk.kind)
}

/// The compact form of the schemas that the checks walk.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    defs: HashMap<String, Def>,
}

#[derive(Debug)]
pub(crate) struct Def {
    /// The Go struct's name, for messages: `ContainerPort`.
    go_struct: String,
    /// `None` for definitions that take any JSON (RawExtension, FieldsV1,
    /// Patch) and for those with their own decoder.
    fields: Option<HashMap<String, Node>>,
}

#[derive(Debug)]
pub(crate) struct Node {
    shape: Shape,
    /// Go's name of the type when the schema does not tell it
    /// (`v1.Protocol` for a string).
    go: Option<&'static str>,
}

#[derive(Debug)]
enum Shape {
    Any,
    Bool,
    Int32,
    Int64,
    Float,
    String,
    Bytes,
    Array(Box<Node>),
    Map(Box<Node>),
    Ref(String),
}

impl Registry {
    pub(crate) fn compile(defs: BTreeMap<String, Value>) -> Registry {
        let mut out = Registry::default();
        for (name, schema) in defs {
            let go_struct = name.rsplit('.').next().unwrap_or(&name).to_string();
            let fields = schema.get("properties").and_then(Value::as_object).map(|props| {
                props
                    .iter()
                    .map(|(field, s)| {
                        let mut node = Node::compile(s);
                        if let Some(t) = tables::go_type(&name, field) {
                            node.go = Some(t.go);
                            if let (Some(elem), Shape::Array(inner) | Shape::Map(inner)) = (t.elem, &mut node.shape) {
                                inner.go = Some(elem);
                            }
                        }
                        (field.clone(), node)
                    })
                    .collect()
            });
            let def = Def { go_struct, fields };
            out.defs.insert(name, def);
        }
        out
    }

    pub(crate) fn get(&self, definition: &str) -> Option<&Def> {
        self.defs.get(definition)
    }

    /// The definition of a struct a node holds, directly or as the items
    /// of a list or the values of a map.
    pub(crate) fn struct_name_of<'a>(&'a self, node: &'a Node) -> Option<&'a str> {
        match &node.shape {
            Shape::Array(inner) | Shape::Map(inner) => self.struct_name_of(inner),
            Shape::Ref(name) => {
                let (key, def) = self.defs.get_key_value(name)?;
                def.fields.as_ref().map(|_| key.as_str())
            }
            _ => None,
        }
    }

    fn go_name(&self, node: &Node) -> String {
        if let Some(go) = node.go {
            return go.to_string();
        }
        match &node.shape {
            Shape::Any => "interface {}".into(),
            Shape::Bool => "bool".into(),
            Shape::Int32 => "int32".into(),
            Shape::Int64 => "int64".into(),
            Shape::Float => "float64".into(),
            Shape::String => "string".into(),
            Shape::Bytes => "[]uint8".into(),
            Shape::Array(inner) => format!("[]{}", self.go_name(inner)),
            Shape::Map(inner) => format!("map[string]{}", self.go_name(inner)),
            Shape::Ref(name) => go_type_name(name),
        }
    }
}

impl Def {
    pub(crate) fn field(&self, name: &str) -> Option<&Node> {
        self.fields.as_ref()?.get(name)
    }
}

impl Node {
    fn compile(schema: &Value) -> Node {
        Node { shape: Shape::compile(schema), go: None }
    }
}

impl Shape {
    fn compile(s: &Value) -> Shape {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            return Shape::Ref(r.strip_prefix(REF_PREFIX).unwrap_or(r).to_string());
        }
        if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return Shape::Any;
        }
        let format = s.get("format").and_then(Value::as_str);
        match s.get("type").and_then(Value::as_str) {
            Some("boolean") => Shape::Bool,
            Some("integer") if format == Some("int32") => Shape::Int32,
            Some("integer") => Shape::Int64,
            Some("number") => Shape::Float,
            Some("string") if format == Some("byte") => Shape::Bytes,
            Some("string") => Shape::String,
            Some("array") => match s.get("items") {
                Some(items) => Shape::Array(Box::new(Node::compile(items))),
                None => Shape::Any,
            },
            Some("object") => match s.get("additionalProperties") {
                Some(v @ Value::Object(_)) => Shape::Map(Box::new(Node::compile(v))),
                _ => Shape::Any,
            },
            _ => Shape::Any,
        }
    }
}

/// Go's name of the type of a definition: package and name,
/// `io.k8s.api.core.v1.PodSpec` → `v1.PodSpec`.
fn go_type_name(definition: &str) -> String {
    let mut parts = definition.rsplit('.');
    match (parts.next(), parts.next()) {
        (Some(name), Some(package)) => format!("{package}.{name}"),
        _ => definition.to_string(),
    }
}

/// How Go's decoder names a JSON value in its messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

struct Walk<'r> {
    reg: &'r Registry,
    /// JSON names of the struct fields entered, without indices or map
    /// keys: Go's error context.
    field_stack: Vec<&'r str>,
    /// The strict-decoding path: `spec.containers[0].env[1]`.
    path: String,
    out: CheckOutcome,
    /// A type's own decoder failed: Go stops there.
    stopped: bool,
}

impl<'r> Walk<'r> {
    /// Checks `v` against `node`; `go_struct` is the struct whose field is
    /// being decoded (Go's error context), `None` at the top.
    fn value(&mut self, node: &'r Node, v: &'r Value, go_struct: Option<&'r str>) {
        if self.stopped || v.is_null() {
            // Go's decoder leaves the zero value for null, whatever the type.
            return;
        }
        match &node.shape {
            Shape::Any => {}
            Shape::Bool => {
                if !v.is_boolean() {
                    self.mismatch(json_kind(v), node, go_struct);
                }
            }
            Shape::String => {
                if !v.is_string() {
                    self.mismatch(json_kind(v), node, go_struct);
                }
            }
            Shape::Float => {
                if !v.is_number() {
                    self.mismatch(json_kind(v), node, go_struct);
                }
            }
            Shape::Int32 | Shape::Int64 => match v {
                Value::Number(n) => {
                    let fits = match node.shape {
                        Shape::Int32 => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                        _ => n.as_i64().is_some(),
                    };
                    if !fits {
                        self.mismatch(&format!("number {n}"), node, go_struct);
                    }
                }
                _ => self.mismatch(json_kind(v), node, go_struct),
            },
            Shape::Bytes => match v {
                Value::String(s) => {
                    if let Some(message) = golang::base64_error(s) {
                        self.error(message, false);
                    }
                }
                // Go decodes a list of numbers into a []byte too.
                Value::Array(items) => {
                    let byte = Node { shape: Shape::Int32, go: Some("uint8") };
                    for (i, item) in items.iter().enumerate() {
                        let fits = item.as_u64().is_some_and(|b| b <= 255);
                        if !fits && !item.is_null() {
                            let len = self.path.len();
                            self.path.push_str(&format!("[{i}]"));
                            match item {
                                Value::Number(n) => self.mismatch(&format!("number {n}"), &byte, go_struct),
                                _ => self.mismatch(json_kind(item), &byte, go_struct),
                            }
                            self.path.truncate(len);
                        }
                    }
                }
                _ => self.mismatch(json_kind(v), node, go_struct),
            },
            Shape::Array(inner) => match v {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let len = self.path.len();
                        self.path.push_str(&format!("[{i}]"));
                        self.value(inner, item, go_struct);
                        self.path.truncate(len);
                    }
                }
                _ => self.mismatch(json_kind(v), node, go_struct),
            },
            Shape::Map(inner) => match v {
                Value::Object(entries) => {
                    for (key, item) in entries {
                        let len = self.push_key(key);
                        self.value(inner, item, go_struct);
                        self.path.truncate(len);
                    }
                }
                _ => self.mismatch(json_kind(v), node, go_struct),
            },
            Shape::Ref(name) => self.definition(name, node, v, go_struct),
        }
    }

    fn definition(&mut self, name: &'r str, node: &'r Node, v: &'r Value, go_struct: Option<&'r str>) {
        match name {
            INT_OR_STRING => return self.int_or_string(v),
            QUANTITY => return self.quantity(v),
            TIME => return self.time(v, golang::RFC3339),
            MICRO_TIME => return self.time(v, golang::RFC3339_MICRO),
            _ => {}
        }
        let Some(def) = self.reg.get(name) else {
            return;
        };
        let Some(fields) = &def.fields else { return };
        let Value::Object(entries) = v else {
            return self.mismatch(json_kind(v), node, go_struct);
        };
        for (key, item) in entries {
            let len = self.push_key(key);
            match fields.get(key.as_str()) {
                Some(field) => {
                    self.field_stack.push(key);
                    self.value(field, item, Some(&def.go_struct));
                    self.field_stack.pop();
                }
                None => {
                    if self.out.unknown_fields.len() < MAX_UNKNOWN_FIELDS
                        && !self.out.unknown_fields.contains(&self.path)
                    {
                        self.out.unknown_fields.push(self.path.clone());
                    }
                }
            }
            self.path.truncate(len);
        }
    }

    /// `intstr.IntOrString.UnmarshalJSON`: a string, or else whatever
    /// `encoding/json` makes of the value as an int32.
    fn int_or_string(&mut self, v: &Value) {
        let what = match v {
            Value::String(_) => return,
            Value::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => return,
            Value::Number(n) => format!("number {n}"),
            other => json_kind(other).to_string(),
        };
        self.error(format!("json: cannot unmarshal {what} into Go value of type int32"), true);
    }

    /// `resource.Quantity.UnmarshalJSON`: the JSON text, unquoted, must
    /// parse as a quantity.
    fn quantity(&mut self, v: &Value) {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Err(message) = golang::parse_quantity(&text) {
            self.error(message.to_string(), true);
        }
    }

    /// `metav1.Time.UnmarshalJSON` and `metav1.MicroTime.UnmarshalJSON`.
    fn time(&mut self, v: &Value, layout: &str) {
        match v {
            Value::String(s) => {
                if let Err(message) = golang::parse_time(s, layout) {
                    self.error(message, true);
                }
            }
            other => {
                let message = format!("json: cannot unmarshal {} into Go value of type string", json_kind(other));
                self.error(message, true);
            }
        }
    }

    /// Appends a field name or map key to the strict path; returns the
    /// length to truncate back to.
    fn push_key(&mut self, key: &str) -> usize {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        len
    }

    /// Go's `UnmarshalTypeError`, with the error context Go adds.
    fn mismatch(&mut self, what: &str, node: &Node, go_struct: Option<&str>) {
        let go = self.reg.go_name(node);
        let message = match go_struct {
            Some(s) => format!(
                "json: cannot unmarshal {what} into Go struct field {s}.{} of type {go}",
                self.field_stack.join(".")
            ),
            None => format!("json: cannot unmarshal {what} into Go value of type {go}"),
        };
        self.error(message, false);
    }

    fn error(&mut self, message: String, fatal: bool) {
        self.out.decode_errors.push(DecodeError { message, path: self.path.clone(), fatal });
        if fatal {
            self.stopped = true;
        }
    }
}
