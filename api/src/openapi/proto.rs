//! The Swagger 2.0 document as gnostic's `openapi.v2.Document` protobuf
//! (github.com/google/gnostic-models, `openapiv2/OpenAPIv2.proto`), which
//! kubectl 1.27 and 1.28 read from `/openapi/v2`.
//!
//! Only the messages and fields Skiff fills are declared; their field
//! numbers are those of the `.proto`. Vendor extensions and other free-form
//! values travel as `Any.yaml`, the field kube-openapi and kubectl read
//! (`Any.value`, a `google.protobuf.Any`, stays empty); JSON is valid YAML,
//! so each value is written as JSON.

// The oneofs mirror the protobuf messages; the document is built once.
#![allow(clippy::large_enum_variant)]

use serde_json::Value;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(string, repeated, tag = "6")]
    pub consumes: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub produces: Vec<String>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    #[prost(message, repeated, tag = "16")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub description: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "6")]
    pub options: Option<Operation>,
    #[prost(message, optional, tag = "7")]
    pub head: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "10")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "2")]
    pub summary: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(bool, tag = "11")]
    pub deprecated: bool,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    #[prost(oneof = "parameters_item::Oneof", tags = "1, 2")]
    pub oneof: Option<parameters_item::Oneof>,
}

pub mod parameters_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Parameter(super::Parameter),
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct JsonReference {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub description: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

pub mod parameter {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        BodyParameter(super::BodyParameter),
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
    #[prost(message, repeated, tag = "6")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

pub mod non_body_parameter {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::QueryParameterSubSchema),
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::PathParameterSubSchema),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(string, tag = "7")]
    pub format: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "23")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PathParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(string, tag = "6")]
    pub format: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "22")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
    #[prost(message, repeated, tag = "2")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    #[prost(oneof = "response_value::Oneof", tags = "1, 2")]
    pub oneof: Option<response_value::Oneof>,
}

pub mod response_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Response(super::Response),
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
    #[prost(message, repeated, tag = "5")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    #[prost(oneof = "schema_item::Oneof", tags = "1")]
    pub oneof: Option<schema_item::Oneof>,
}

pub mod schema_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(super::Schema),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

pub mod additional_properties_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(super::Schema),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// `google.protobuf.Any`; never filled.
    #[prost(message, optional, tag = "1")]
    pub value: Option<ProtobufAny>,
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtobufAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// Converts the Swagger 2.0 JSON document into its protobuf form.
pub fn document(doc: &Value) -> Document {
    let info = doc.get("info").map(|i| Info {
        title: string(i, "title"),
        version: string(i, "version"),
        description: string(i, "description"),
    });
    let paths = doc.get("paths").and_then(Value::as_object).map(|paths| Paths {
        vendor_extension: Vec::new(),
        path: paths
            .iter()
            .map(|(name, item)| NamedPathItem { name: name.clone(), value: Some(path_item(item)) })
            .collect(),
    });
    let definitions = doc.get("definitions").and_then(Value::as_object).map(|defs| Definitions {
        additional_properties: defs
            .iter()
            .map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) })
            .collect(),
    });
    Document {
        swagger: string(doc, "swagger"),
        info,
        consumes: strings(doc, "consumes"),
        produces: strings(doc, "produces"),
        paths,
        definitions,
        vendor_extension: extensions(doc),
    }
}

fn path_item(item: &Value) -> PathItem {
    let op = |method: &str| item.get(method).map(operation);
    PathItem {
        r#ref: String::new(),
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        options: op("options"),
        head: op("head"),
        patch: op("patch"),
        parameters: parameters(item),
        vendor_extension: extensions(item),
    }
}

fn operation(op: &Value) -> Operation {
    let responses = op.get("responses").and_then(Value::as_object).map(|codes| Responses {
        response_code: codes
            .iter()
            .map(|(code, r)| NamedResponseValue {
                name: code.clone(),
                value: Some(ResponseValue {
                    oneof: Some(response_value::Oneof::Response(Response {
                        description: string(r, "description"),
                        schema: r
                            .get("schema")
                            .map(|s| SchemaItem { oneof: Some(schema_item::Oneof::Schema(schema(s))) }),
                        vendor_extension: extensions(r),
                    })),
                }),
            })
            .collect(),
        vendor_extension: Vec::new(),
    });
    Operation {
        tags: strings(op, "tags"),
        summary: string(op, "summary"),
        description: string(op, "description"),
        operation_id: string(op, "operationId"),
        produces: strings(op, "produces"),
        consumes: strings(op, "consumes"),
        parameters: parameters(op),
        responses,
        schemes: strings(op, "schemes"),
        deprecated: op.get("deprecated").and_then(Value::as_bool).unwrap_or(false),
        vendor_extension: extensions(op),
    }
}

fn parameters(v: &Value) -> Vec<ParametersItem> {
    let Some(params) = v.get("parameters").and_then(Value::as_array) else {
        return Vec::new();
    };
    params
        .iter()
        .map(|p| {
            let oneof = if let Some(r) = p.get("$ref").and_then(Value::as_str) {
                parameters_item::Oneof::JsonReference(JsonReference {
                    r#ref: r.to_string(),
                    description: String::new(),
                })
            } else {
                parameters_item::Oneof::Parameter(Parameter { oneof: Some(parameter(p)) })
            };
            ParametersItem { oneof: Some(oneof) }
        })
        .collect()
}

fn parameter(p: &Value) -> parameter::Oneof {
    let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
    let unique_items = p.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false);
    match p.get("in").and_then(Value::as_str) {
        Some("body") => parameter::Oneof::BodyParameter(BodyParameter {
            description: string(p, "description"),
            name: string(p, "name"),
            r#in: "body".into(),
            required,
            schema: p.get("schema").map(schema),
            vendor_extension: extensions(p),
        }),
        Some("path") => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(non_body_parameter::Oneof::PathParameterSubSchema(PathParameterSubSchema {
                required,
                r#in: "path".into(),
                description: string(p, "description"),
                name: string(p, "name"),
                r#type: string(p, "type"),
                format: string(p, "format"),
                unique_items,
                vendor_extension: extensions(p),
            })),
        }),
        // Every other parameter Skiff describes is in the query.
        _ => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(QueryParameterSubSchema {
                required,
                r#in: "query".into(),
                description: string(p, "description"),
                name: string(p, "name"),
                r#type: string(p, "type"),
                format: string(p, "format"),
                unique_items,
                vendor_extension: extensions(p),
            })),
        }),
    }
}

fn schema(s: &Value) -> Schema {
    let Some(m) = s.as_object() else {
        return Schema::default();
    };
    let additional_properties = match m.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            Some(Box::new(AdditionalPropertiesItem { oneof: Some(additional_properties_item::Oneof::Boolean(*b)) }))
        }
        Some(v @ Value::Object(_)) => Some(Box::new(AdditionalPropertiesItem {
            oneof: Some(additional_properties_item::Oneof::Schema(schema(v))),
        })),
        _ => None,
    };
    let r#type = match m.get("type") {
        Some(Value::String(t)) => Some(TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(ts)) => {
            Some(TypeItem { value: ts.iter().filter_map(Value::as_str).map(str::to_string).collect() })
        }
        _ => None,
    };
    let items = match m.get("items") {
        Some(Value::Array(list)) => Some(ItemsItem { schema: list.iter().map(schema).collect() }),
        Some(one) => Some(ItemsItem { schema: vec![schema(one)] }),
        None => None,
    };
    let properties = m.get("properties").and_then(Value::as_object).map(|props| Properties {
        additional_properties: props
            .iter()
            .map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) })
            .collect(),
    });
    Schema {
        r#ref: string(s, "$ref"),
        format: string(s, "format"),
        title: string(s, "title"),
        description: string(s, "description"),
        default: m.get("default").map(any),
        maximum: m.get("maximum").and_then(Value::as_f64).unwrap_or(0.0),
        minimum: m.get("minimum").and_then(Value::as_f64).unwrap_or(0.0),
        pattern: string(s, "pattern"),
        unique_items: m.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false),
        required: strings(s, "required"),
        r#enum: m.get("enum").and_then(Value::as_array).map(|e| e.iter().map(any).collect()).unwrap_or_default(),
        additional_properties,
        r#type,
        items,
        all_of: m.get("allOf").and_then(Value::as_array).map(|a| a.iter().map(schema).collect()).unwrap_or_default(),
        properties,
        read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
        example: m.get("example").map(any),
        vendor_extension: extensions(s),
    }
}

/// The `x-` keys of an object, as `NamedAny`s in the order they appear.
fn extensions(v: &Value) -> Vec<NamedAny> {
    let Some(m) = v.as_object() else {
        return Vec::new();
    };
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny { name: k.clone(), value: Some(any(v)) })
        .collect()
}

fn any(v: &Value) -> Any {
    Any { value: None, yaml: format!("{v}\n") }
}

fn string(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Reads an `Any.yaml` written by [`any`] back as JSON.
#[cfg(test)]
pub fn any_json(a: &Any) -> Value {
    serde_json::from_str(&a.yaml).unwrap_or(Value::Null)
}
