//! API errors and the one place they become Kubernetes `Status` objects.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use skiff_store::StoreError;

/// One cause of an Invalid or Conflict error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// An error answered to a client. `kind` is the qualified resource
/// (`deployments.apps`) used in messages and `details.kind`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    details: Box<Details>,
}

/// The `details` of a Status (boxed: errors travel through many `Result`s).
#[derive(Debug, Clone, Default)]
struct Details {
    name: Option<String>,
    group: Option<String>,
    kind: Option<String>,
    causes: Vec<Cause>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: Box::default() }
    }

    pub fn causes(&self) -> &[Cause] {
        &self.details.causes
    }

    fn about(mut self, qualified: &str, name: &str) -> Self {
        let (kind, group) = match qualified.split_once('.') {
            Some((k, g)) => (k.to_string(), Some(g.to_string())),
            None => (qualified.to_string(), None),
        };
        self.details.kind = Some(kind);
        self.details.group = group;
        if !name.is_empty() {
            self.details.name = Some(name.to_string());
        }
        self
    }

    pub fn not_found(qualified: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found")).about(qualified, name)
    }

    /// 404 for a path we do not serve.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    pub fn already_exists(qualified: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{qualified} \"{name}\" already exists")).about(qualified, name)
    }

    pub fn conflict(qualified: &str, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"))
            .about(qualified, name)
    }

    pub fn modified(qualified: &str, name: &str) -> Self {
        Self::conflict(
            qualified,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 with every cause: `Deployment.apps "x" is invalid: spec.replicas: Invalid value: ...`.
    /// `details` names the Kind (not the resource), as Kubernetes' NewInvalid does.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let mut parts: Vec<String> = Vec::with_capacity(causes.len());
        for c in &causes {
            let p = if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) };
            // Kubernetes lists a repeated message once (the causes keep every one)
            if !parts.contains(&p) {
                parts.push(p);
            }
        }
        let joined = if parts.len() == 1 { parts[0].clone() } else { format!("[{}]", parts.join(", ")) };
        let qualified_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let mut e = Self::new(422, "Invalid", format!("{qualified_kind} \"{name}\" is invalid: {joined}"))
            .about(&qualified_kind, name);
        e.details.causes = causes;
        e
    }

    /// 422 without field causes (a patch that cannot apply).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"))
    }

    pub fn unsupported_media_patch(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"))
    }

    /// 409 for a server-side apply conflict.
    pub fn apply_conflict(qualified: &str, name: &str, message: String, causes: Vec<Cause>) -> Self {
        let mut e = Self::new(409, "Conflict", message).about(qualified, name);
        e.details.causes = causes;
        e
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn too_large() -> Self {
        Self::new(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", message);
        e.details.retry_after = Some(1);
        e
    }

    /// Map a store error for the object `qualified`/`name`.
    pub fn from_store(err: StoreError, qualified: &str, name: &str) -> Self {
        match err {
            StoreError::AlreadyExists(_) => Self::already_exists(qualified, name),
            StoreError::NotFound(_) => Self::not_found(qualified, name),
            StoreError::Conflict { .. } => Self::modified(qualified, name),
            StoreError::Expired { requested, oldest } => {
                Self::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            StoreError::Closed => Self::unavailable("the storage is shutting down"),
            StoreError::Backend(m) => Self::internal(m),
        }
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut details = serde_json::Map::new();
        let d = &self.details;
        if let Some(n) = &d.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = &d.group {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &d.kind {
            details.insert("kind".into(), json!(k));
        }
        if !d.causes.is_empty() {
            let causes: Vec<Value> =
                d.causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = d.retry_after {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.status().to_string();
        let mut resp = (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(r) = self.details.retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&r.to_string()) {
                resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_matches_kubernetes() {
        let s = ApiError::not_found("deployments.apps", "web").status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["group"], "apps");
        assert_eq!(s["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_joins_causes_like_kubernetes() {
        let c =
            |f: &str| Cause { reason: "FieldValueInvalid".into(), message: "Invalid value: 1".into(), field: f.into() };
        let one = ApiError::invalid("Service", "", "s", vec![c("spec.a")]);
        assert_eq!(one.message, "Service \"s\" is invalid: spec.a: Invalid value: 1");
        let two = ApiError::invalid("Service", "", "s", vec![c("spec.a"), c("spec.b")]);
        assert_eq!(two.message, "Service \"s\" is invalid: [spec.a: Invalid value: 1, spec.b: Invalid value: 1]");
        let d = ApiError::invalid("Deployment", "apps", "d", vec![c("spec.a")]);
        assert_eq!(d.message, "Deployment.apps \"d\" is invalid: spec.a: Invalid value: 1");
        assert_eq!(d.status()["details"]["kind"], "Deployment");
        assert_eq!(d.status()["details"]["group"], "apps");
    }
}
