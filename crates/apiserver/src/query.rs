//! Query parameters of the verbs, and content negotiation.

use axum::http::HeaderMap;

use crate::error::ApiError;

/// All query parameters, decoded. Unknown ones are ignored, as Kubernetes does.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw.and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok()).unwrap_or_default();
        Query { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))),
        }
    }

    pub fn dry_run(&self) -> Result<bool, ApiError> {
        let values = self.get_all("dryRun");
        for v in &values {
            if *v != "All" {
                return Err(ApiError::bad_request(format!("Invalid dryRun value: {v:?}: supported values: \"All\"")));
            }
        }
        Ok(!values.is_empty())
    }

    /// `fieldValidation`: Strict, Warn (the default for non-kubectl clients) or Ignore.
    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported or invalid: {other:?}; supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// How a read answers: a plain object/list, or a `meta.k8s.io/v1` Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Table,
}

/// Choose the output from `Accept`, in the client's order of preference.
pub fn output(headers: &HeaderMap) -> Result<Output, ApiError> {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        let params: Vec<(&str, &str)> = params.filter_map(|p| p.split_once('=')).collect();
        let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| *pk == k && *pv == v);
        if !matches!(media, "application/json" | "application/*" | "*/*" | "application/yaml") {
            continue;
        }
        if has("as", "Table") {
            if has("g", "meta.k8s.io") && (has("v", "v1") || has("v", "v1beta1")) {
                return Ok(Output::Table);
            }
            continue;
        }
        if params.iter().any(|(k, _)| *k == "as") {
            // some other transformation (PartialObjectMetadata...) we don't serve
            continue;
        }
        return Ok(Output::Json);
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;g=meta.k8s.io;v=v1",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(accept: &str) -> Result<Output, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::ACCEPT, accept.parse().unwrap());
        output(&h)
    }

    #[test]
    fn table_negotiation_follows_kubectl() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(out(kubectl).unwrap(), Output::Table);
        assert_eq!(out("application/json").unwrap(), Output::Json);
        assert_eq!(out("application/vnd.kubernetes.protobuf,application/json").unwrap(), Output::Json);
        assert_eq!(
            out("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json").unwrap(),
            Output::Json
        );
        assert!(out("application/vnd.kubernetes.protobuf").is_err());
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier%21%3Ddb&limit=500&dryRun=All"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier!=db"));
        assert_eq!(q.int("limit").unwrap(), Some(500));
        assert!(q.dry_run().unwrap());
    }
}
