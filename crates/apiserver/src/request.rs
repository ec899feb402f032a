//! Parse a Kubernetes REST path into what it addresses.

use skiff_api::catalogue::{self, ResourceType};

use crate::error::ApiError;

/// What a resource path addresses: `/api/v1/namespaces/default/pods/web/status`.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Paths that are not resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/api`
    CoreGroups,
    /// `/apis`
    Groups,
    /// `/api/v1` or `/apis/<g>/<v>`
    ResourceList { group: String, version: String },
    /// `/apis/<g>`
    Group(String),
}

pub enum Parsed {
    Resource(Target),
    Other(Route),
}

/// Parse the path after stripping the query. `None` for paths outside the API.
pub fn parse(path: &str) -> Result<Option<Parsed>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] => return Ok(Some(Parsed::Other(Route::CoreGroups))),
        ["apis"] => return Ok(Some(Parsed::Other(Route::Groups))),
        ["api", v] => {
            return Ok(Some(Parsed::Other(Route::ResourceList { group: String::new(), version: v.to_string() })))
        }
        ["apis", g] => return Ok(Some(Parsed::Other(Route::Group(g.to_string())))),
        ["apis", g, v] => {
            return Ok(Some(Parsed::Other(Route::ResourceList { group: g.to_string(), version: v.to_string() })))
        }
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Ok(None),
    };
    // namespaces/{ns}/{resource}[/{name}[/{sub}]] or {resource}[/{name}[/{sub}]]
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", _, "status" | "finalize"] => (None, rest),
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns), tail),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let rt = catalogue::find(group, version, resource).ok_or_else(ApiError::no_route)?;
    // `namespaces/x` addresses the namespace itself
    let (namespace, name, sub) = if rt.plural == "namespaces" {
        match (namespace, name, sub) {
            (None, n, s) => (None, n, s),
            _ => return Err(ApiError::no_route()),
        }
    } else if rt.namespaced {
        (namespace, name, sub)
    } else if namespace.is_some() {
        return Err(ApiError::no_route());
    } else {
        (None, name, sub)
    };
    if let Some(s) = sub {
        if rt.subresource(s).is_none() {
            return Err(ApiError::no_route());
        }
    }
    Ok(Some(Parsed::Resource(Target {
        rt,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(p: &str) -> Target {
        match parse(p).unwrap().unwrap() {
            Parsed::Resource(t) => t,
            Parsed::Other(_) => panic!("not a resource"),
        }
    }

    #[test]
    fn parses_resource_paths() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!((t.rt.plural, t.namespace.as_deref(), t.name.as_deref()), ("pods", Some("default"), Some("web")));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = target("/apis/apps/v1/deployments");
        assert_eq!((t.rt.plural, t.namespace.as_deref()), ("deployments", None));
        let t = target("/api/v1/nodes/n1");
        assert_eq!((t.rt.plural, t.name.as_deref()), ("nodes", Some("n1")));
        assert!(parse("/api/v1/namespaces/default/widgets").is_err());
        assert!(parse("/api/v1/namespaces/default/pods/web/frobnicate").is_err());
        let t = target("/api/v1/namespaces/kube-system/status");
        assert_eq!(
            (t.rt.plural, t.name.as_deref(), t.subresource.as_deref()),
            ("namespaces", Some("kube-system"), Some("status"))
        );
        assert!(parse("/healthz").unwrap().is_none());
    }
}
