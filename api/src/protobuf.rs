//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl 1.32 and later sends from its typed clients (`kubectl create configmap`,
//! `create deployment`, ...), turned into the JSON the rest of the API server reads.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` message whose `typeMeta`
//! names the kind and whose `raw` holds the object's own message. The object is decoded
//! with the field tables in [`fields`], generated from Kubernetes' `.proto` files and Go
//! structs, into the JSON Kubernetes' Go code would write for the same object: fields
//! absent from the wire are absent from the JSON, and a non-pointer `omitempty` scalar
//! holding its zero value (which Go's protobuf code always writes) is left out.

mod fields;
#[cfg(test)]
mod tests;

use base64::Engine as _;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";
const UNKNOWN: &str = "io.k8s.apimachinery.pkg.runtime.Unknown";
const TYPE_META: &str = "io.k8s.apimachinery.pkg.runtime.TypeMeta";
/// Deeper than any message the tables can reach; guards against a table with a cycle.
const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("protobuf body: does not start with the magic bytes \"k8s\\0\"")]
    Magic,
    /// Malformed wire data; `at` names the field and message, and the object's path.
    #[error("protobuf body: {at}: {problem}")]
    Malformed { at: String, problem: String },
    #[error("protobuf body: the runtime.Unknown envelope names no apiVersion and kind")]
    NoKind,
    #[error("protobuf body: kind {kind:?} of apiVersion {api_version:?} is not served")]
    UnknownKind { api_version: String, kind: String },
    #[error("protobuf body: content encoding {0:?} of the embedded object is not supported")]
    ContentEncoding(String),
    #[error("protobuf body: content type {0:?} of the embedded object is not supported")]
    ContentType(String),
}

/// Whether a `Content-Type` names Kubernetes' protobuf encoding (parameters ignored).
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// Decodes a protobuf request body into the object's JSON, `kind` and `apiVersion` included.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtoError::Magic)?;
    let unknown = Unknown::parse(envelope)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtoError::ContentEncoding(unknown.content_encoding));
    }
    if !unknown.content_type.is_empty() && !is_protobuf(&unknown.content_type) {
        return Err(ProtoError::ContentType(unknown.content_type));
    }
    if unknown.api_version.is_empty() || unknown.kind.is_empty() {
        return Err(ProtoError::NoKind);
    }
    let message = root(&unknown.api_version, &unknown.kind).ok_or_else(|| ProtoError::UnknownKind {
        api_version: unknown.api_version.clone(),
        kind: unknown.kind.clone(),
    })?;
    let mut object = Map::new();
    object.insert("kind".into(), Value::String(unknown.kind));
    object.insert("apiVersion".into(), Value::String(unknown.api_version));
    object.extend(decode_message(message, unknown.raw, &Path::Root, 0)?);
    Ok(Value::Object(object))
}

/// The message of a served `(apiVersion, kind)`. `DeleteOptions` is registered in every
/// group version, so any apiVersion names it.
fn root(api_version: &str, kind: &str) -> Option<&'static Message> {
    if kind == "DeleteOptions" {
        return Some(&fields::META_V1_DELETE_OPTIONS);
    }
    fields::ROOTS.iter().find(|(v, k, _)| *v == api_version && *k == kind).map(|(_, _, message)| *message)
}

/// The fields of `runtime.Unknown` the decoder uses.
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Unknown<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ProtoError> {
        let mut unknown = Unknown {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut type_meta = Vec::new();
        let mut reader = Reader { bytes };
        while let Some((number, value)) = reader.field().map_err(|e| e.locate(UNKNOWN, &Path::Root))? {
            let bad = |problem: String| Problem { field: Some(number), problem }.locate(UNKNOWN, &Path::Root);
            match (number, value) {
                (1, Wire::Len(b)) => type_meta.extend_from_slice(b),
                (2, Wire::Len(b)) => unknown.raw = b,
                (3, Wire::Len(b)) => unknown.content_encoding = utf8(b).map_err(bad)?,
                (4, Wire::Len(b)) => unknown.content_type = utf8(b).map_err(bad)?,
                (1..=4, other) => return Err(bad(other.mismatch("a length-delimited value"))),
                _ => {}
            }
        }
        let mut reader = Reader { bytes: &type_meta };
        let path = Path::Field(&Path::Root, "typeMeta");
        while let Some((number, value)) = reader.field().map_err(|e| e.locate(TYPE_META, &path))? {
            let bad = |problem: String| Problem { field: Some(number), problem }.locate(TYPE_META, &path);
            match (number, value) {
                (1, Wire::Len(b)) => unknown.api_version = utf8(b).map_err(bad)?,
                (2, Wire::Len(b)) => unknown.kind = utf8(b).map_err(bad)?,
                (1 | 2, other) => return Err(bad(other.mismatch("a length-delimited value"))),
                _ => {}
            }
        }
        Ok(unknown)
    }
}

// ---- field tables (the generated `fields` module fills them in) ----

/// A protobuf message and the JSON fields of its wire fields, in Go struct order.
struct Message {
    /// The OpenAPI name (`io.k8s.api.core.v1.ConfigMap`), for error messages.
    name: &'static str,
    fields: &'static [Field],
}

#[derive(Clone, Copy)]
struct Field {
    number: u32,
    /// The JSON name; empty for an inlined field.
    json: &'static str,
    kind: Kind,
    shape: Shape,
}

const fn f(number: u32, json: &'static str, kind: Kind, shape: Shape) -> Field {
    Field { number, json, kind, shape }
}

/// The type of a field (of a map's values, for a map).
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// `[]byte`: base64 in JSON.
    Bytes,
    Bool,
    I32,
    I64,
    Msg(&'static Message),
    /// `metav1.Time`: RFC 3339 in seconds, `null` when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 in microseconds, `null` when zero.
    MicroTime,
    /// `metav1.FieldsV1`: the JSON it holds.
    FieldsV1,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Written to JSON whenever present on the wire.
    One,
    /// A non-pointer `omitempty` scalar: left out of JSON when zero.
    OmitZero,
    /// An embedded struct whose fields JSON writes inline (`json:",inline"`).
    Inline,
    Repeated,
    /// `map<string, kind>`.
    Map,
}

// ---- decoding ----

/// Where a message sits in the object, rendered only for error messages.
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
    Key(&'p Path<'p>, &'p str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(parent, "") => write!(out, "{parent}"),
            Path::Field(Path::Root, name) => write!(out, "{name}"),
            Path::Field(parent, name) => write!(out, "{parent}.{name}"),
            Path::Index(parent, i) => write!(out, "{parent}[{i}]"),
            Path::Key(parent, key) => write!(out, "{parent}[{key}]"),
        }
    }
}

/// What went wrong in a message, before the message's name and path are known.
struct Problem {
    field: Option<u32>,
    problem: String,
}

impl Problem {
    fn locate(self, message: &str, path: &Path<'_>) -> ProtoError {
        let mut at = match self.field {
            Some(number) => format!("field {number} of {message}"),
            None => message.to_string(),
        };
        if !matches!(path, Path::Root) {
            at.push_str(&format!(" at {path}"));
        }
        ProtoError::Malformed { at, problem: self.problem }
    }
}

fn decode_message(
    message: &Message,
    bytes: &[u8],
    path: &Path<'_>,
    depth: usize,
) -> Result<Map<String, Value>, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(Problem { field: None, problem: "messages nested too deeply".into() }.locate(message.name, path));
    }
    // Every wire value of each field, in wire order.
    let mut seen: Vec<Vec<Wire<'_>>> = vec![Vec::new(); message.fields.len()];
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.field().map_err(|e| e.locate(message.name, path))? {
        // Fields the table does not know are skipped, as protobuf decoders do.
        if let Some(i) = message.fields.iter().position(|f| f.number == number) {
            seen[i].push(value);
        }
    }
    let mut object = Map::new();
    for (field, values) in message.fields.iter().zip(&seen) {
        if values.is_empty() {
            continue;
        }
        let bad = |problem: String| Problem { field: Some(field.number), problem }.locate(message.name, path);
        let here = Path::Field(path, field.json);
        match field.shape {
            Shape::One | Shape::OmitZero | Shape::Inline => {
                let value = decode_single(field.kind, values, &here, depth).map_err(|e| e.or_else(bad))?;
                if field.shape == Shape::Inline {
                    if let Value::Object(inner) = value {
                        object.extend(inner);
                    }
                } else if field.shape == Shape::One || !is_zero(&value) {
                    object.insert(field.json.into(), value);
                }
            }
            Shape::Repeated => {
                let items = decode_repeated(field.kind, values, &here, depth).map_err(|e| e.or_else(bad))?;
                object.insert(field.json.into(), Value::Array(items));
            }
            Shape::Map => {
                let mut map = Map::new();
                for value in values {
                    let entry = value.len().map_err(bad)?;
                    let (key, value) = decode_entry(field.kind, entry, &here, depth).map_err(|e| e.or_else(bad))?;
                    map.insert(key, value);
                }
                object.insert(field.json.into(), Value::Object(map));
            }
        }
    }
    Ok(object)
}

/// An error from decoding a field's value: either already located in a nested message,
/// or a problem with the field itself, located by the caller.
enum FieldError {
    Located(ProtoError),
    Here(String),
}

impl FieldError {
    fn or_else(self, locate: impl FnOnce(String) -> ProtoError) -> ProtoError {
        match self {
            FieldError::Located(e) => e,
            FieldError::Here(problem) => locate(problem),
        }
    }
}

impl From<ProtoError> for FieldError {
    fn from(e: ProtoError) -> Self {
        FieldError::Located(e)
    }
}

impl From<String> for FieldError {
    fn from(problem: String) -> Self {
        FieldError::Here(problem)
    }
}

/// A singular field: the last scalar wins, and the parts of a message are merged, as
/// protobuf does (decoding their concatenation is the same as merging them).
fn decode_single(kind: Kind, values: &[Wire<'_>], path: &Path<'_>, depth: usize) -> Result<Value, FieldError> {
    if is_length_delimited(kind) {
        let mut joined = Vec::new();
        for value in values {
            joined.extend_from_slice(value.len()?);
        }
        return decode_value(kind, &joined, path, depth);
    }
    match values.last() {
        Some(value) => Ok(scalar(kind, value.varint()?)),
        None => Ok(Value::Null),
    }
}

fn decode_repeated(kind: Kind, values: &[Wire<'_>], path: &Path<'_>, depth: usize) -> Result<Vec<Value>, FieldError> {
    let mut items = Vec::with_capacity(values.len());
    for value in values {
        match (value, is_length_delimited(kind)) {
            (Wire::Len(bytes), true) => {
                items.push(decode_value(kind, bytes, &Path::Index(path, items.len()), depth)?);
            }
            // A packed run of varints.
            (Wire::Len(bytes), false) => {
                let mut reader = Reader { bytes };
                while !reader.bytes.is_empty() {
                    items.push(scalar(kind, reader.varint()?));
                }
            }
            (other, false) => items.push(scalar(kind, other.varint()?)),
            (other, true) => return Err(other.mismatch("a length-delimited value").into()),
        }
    }
    Ok(items)
}

/// A map entry: a message with the key as field 1 and the value as field 2.
fn decode_entry(kind: Kind, bytes: &[u8], path: &Path<'_>, depth: usize) -> Result<(String, Value), FieldError> {
    let mut key = Vec::new();
    let mut values = Vec::new();
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.field().map_err(|p| format!("map entry: {}", p.problem))? {
        match number {
            1 => key = value.len().map_err(|p| format!("map entry key: {p}"))?.to_vec(),
            2 => values.push(value),
            _ => {}
        }
    }
    let key = utf8(&key)?;
    let here = Path::Key(path, &key);
    let value = if values.is_empty() {
        decode_value(kind, &[], &here, depth)
    } else {
        decode_single(kind, &values, &here, depth)
    };
    match value {
        Ok(value) => Ok((key, value)),
        Err(FieldError::Here(problem)) => Err(FieldError::Here(format!("value of key {key:?}: {problem}"))),
        Err(located) => Err(located),
    }
}

fn is_length_delimited(kind: Kind) -> bool {
    !matches!(kind, Kind::Bool | Kind::I32 | Kind::I64)
}

/// The JSON of a varint scalar. int32 is sign-extended on the wire; truncating is what
/// protobuf decoders do.
fn scalar(kind: Kind, raw: u64) -> Value {
    match kind {
        Kind::Bool => Value::Bool(raw != 0),
        Kind::I32 => Value::from(raw as i64 as i32),
        _ => Value::from(raw as i64),
    }
}

/// The JSON of a length-delimited value (a missing map value decodes from no bytes).
fn decode_value(kind: Kind, bytes: &[u8], path: &Path<'_>, depth: usize) -> Result<Value, FieldError> {
    Ok(match kind {
        Kind::Str => Value::String(utf8(bytes)?),
        Kind::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Kind::Bool | Kind::I32 | Kind::I64 => scalar(kind, 0),
        Kind::Msg(message) => Value::Object(decode_message(message, bytes, path, depth + 1)?),
        Kind::Time => time(bytes, false)?,
        Kind::MicroTime => time(bytes, true)?,
        Kind::FieldsV1 => match last_field_1(bytes, "FieldsV1")? {
            Some(raw) => serde_json::from_slice(raw).map_err(|e| format!("FieldsV1 does not hold json: {e}"))?,
            None => Value::Null,
        },
        Kind::Quantity => match last_field_1(bytes, "Quantity")? {
            Some(raw) => Value::String(utf8(raw)?),
            None => Value::String("0".into()),
        },
        Kind::IntOrString => int_or_string(bytes)?,
    })
}

/// The last length-delimited value of field 1 of a small message such as `Quantity`.
fn last_field_1<'a>(bytes: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, String> {
    let mut last = None;
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.field().map_err(|p| format!("{name}: {}", p.problem))? {
        if number == 1 {
            last = Some(value.len().map_err(|p| format!("{name}: {p}"))?);
        }
    }
    Ok(last)
}

/// `metav1.Time` (`{seconds, nanos}`; Kubernetes ignores nanos) or `metav1.MicroTime`.
fn time(bytes: &[u8], micro: bool) -> Result<Value, String> {
    let name = if micro { "MicroTime" } else { "Time" };
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.field().map_err(|p| format!("{name}: {}", p.problem))? {
        match number {
            1 => seconds = value.varint().map_err(|p| format!("{name}: {p}"))? as i64,
            2 => nanos = i64::from(value.varint().map_err(|p| format!("{name}: {p}"))? as i64 as i32),
            _ => {}
        }
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let nanos = if micro { nanos - nanos % 1_000 } else { 0 };
    let at = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, nanos.rem_euclid(1_000_000_000) as u32))
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| format!("{name}: {seconds} seconds is out of range"))?;
    // Go's zero time.Time, which Kubernetes' JSON writes as null.
    if at.timestamp() == -62_135_596_800 && at.timestamp_subsec_nanos() == 0 {
        return Ok(Value::Null);
    }
    let format = if micro { SecondsFormat::Micros } else { SecondsFormat::Secs };
    Ok(Value::String(at.to_rfc3339_opts(format, true)))
}

/// `intstr.IntOrString`: `{type, intVal, strVal}`, type 0 an int and 1 a string.
fn int_or_string(bytes: &[u8]) -> Result<Value, String> {
    let (mut kind, mut int, mut string) = (0u64, 0i32, String::new());
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.field().map_err(|p| format!("IntOrString: {}", p.problem))? {
        let bad = |p: String| format!("IntOrString: {p}");
        match number {
            1 => kind = value.varint().map_err(bad)?,
            2 => int = value.varint().map_err(bad)? as i64 as i32,
            3 => string = utf8(value.len().map_err(bad)?)?,
            _ => {}
        }
    }
    match kind {
        0 => Ok(Value::from(int)),
        1 => Ok(Value::String(string)),
        other => Err(format!("IntOrString type {other} is neither 0 (int) nor 1 (string)")),
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "string is not valid utf-8".to_string())
}

// ---- wire format ----

/// A value as it sits on the wire.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Len(&'a [u8]),
    Fixed32,
}

impl<'a> Wire<'a> {
    fn len(&self) -> Result<&'a [u8], String> {
        match self {
            Wire::Len(bytes) => Ok(bytes),
            other => Err(other.mismatch("a length-delimited value")),
        }
    }

    fn varint(&self) -> Result<u64, String> {
        match self {
            Wire::Varint(v) => Ok(*v),
            other => Err(other.mismatch("a varint")),
        }
    }

    fn mismatch(&self, expected: &str) -> String {
        let found = match self {
            Wire::Varint(_) => "a varint",
            Wire::Fixed64 => "a fixed64 value",
            Wire::Len(_) => "a length-delimited value",
            Wire::Fixed32 => "a fixed32 value",
        };
        format!("{found} where {expected} was expected")
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next field's number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>, Problem> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint().map_err(|problem| Problem { field: None, problem: format!("field key: {problem}") })?;
        let number = u32::try_from(key >> 3).unwrap_or(0);
        let problem = |problem: &str| Problem { field: Some(number), problem: problem.to_string() };
        if number == 0 {
            return Err(Problem { field: None, problem: format!("invalid field key {key}") });
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint().map_err(|p| problem(&p))?),
            1 => {
                self.take(8).ok_or_else(|| problem("truncated fixed64 value"))?;
                Wire::Fixed64
            }
            2 => {
                let len = self.varint().map_err(|p| problem(&p))?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                Wire::Len(self.take(len).ok_or_else(|| problem("truncated length-delimited value"))?)
            }
            5 => {
                self.take(4).ok_or_else(|| problem("truncated fixed32 value"))?;
                Wire::Fixed32
            }
            other => return Err(problem(&format!("unsupported wire type {other}"))),
        };
        Ok(Some((number, value)))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for (i, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(value);
            }
        }
        if self.bytes.len() >= 10 {
            Err("varint longer than 10 bytes".into())
        } else {
            Err("truncated varint".into())
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
}
