//! The routing model: a pure function from Ingresses, IngressClasses,
//! Services, EndpointSlices and Secrets to an immutable [`Routes`] snapshot
//! that the proxy consults for every request.
//!
//! Matching follows the Ingress specification:
//! - hosts: an exact host beats a wildcard (`*.example.com` matches exactly
//!   one more label), which beats rules without a host; a request whose host
//!   has rules but no matching path falls through to the host-less rules and
//!   then to the default backend (as Traefik, k3s' ingress, does);
//! - paths: `Exact` matches the path as written; `Prefix` matches element-wise
//!   (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`; a trailing slash on
//!   either side is ignored); `ImplementationSpecific` turns a trailing `/*`
//!   into a prefix (`/foo/*` is the prefix `/foo`) and is otherwise a Prefix;
//!   the longest match wins and `Exact` beats a prefix of the same length;
//! - when two Ingresses claim the same host and path, or both name a default
//!   backend, the older one (creationTimestamp, then namespace/name) wins.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use kube::ResourceExt;
use rustls::sign::CertifiedKey;

/// The controller name of IngressClasses this proxy serves.
pub const CONTROLLER: &str = "skiff.io/ingress";
/// The annotation that marks an IngressClass as the cluster's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated annotation that names an Ingress' class.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Annotations that ask for HTTP→HTTPS redirects (value `"true"`).
pub const SSL_REDIRECT_ANNOTATIONS: [&str; 4] = [
    "ingress.kubernetes.io/ssl-redirect",
    "nginx.ingress.kubernetes.io/ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
    "skiff.io/ssl-redirect",
];

/// Everything the model is built from (reflector stores hand out `Arc`s).
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
}

/// The IngressClass this proxy creates when it is absent: controller
/// `skiff.io/ingress`, marked as the default class.
pub fn default_ingress_class(name: &str) -> IngressClass {
    let mut class = IngressClass::default();
    class.metadata.name = Some(name.to_string());
    class.metadata.annotations = Some([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())].into());
    class.spec = Some(k8s_openapi::api::networking::v1::IngressClassSpec {
        controller: Some(CONTROLLER.to_string()),
        parameters: None,
    });
    class
}

/// One ready endpoint of an upstream.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port`, built once so requests don't format it.
    pub(crate) authority: Authority,
}

/// The ready endpoints of one service port, with a round-robin cursor.
#[derive(Debug)]
pub struct Upstream {
    /// `namespace/service:port`, the `service` label of metrics and logs.
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    /// Why there are no endpoints, when there are none.
    pub problem: Option<String>,
    pub(crate) next: AtomicUsize,
}

impl Upstream {
    fn new(name: String, endpoints: Vec<SocketAddr>, problem: Option<String>) -> Upstream {
        let endpoints = endpoints
            .into_iter()
            .filter_map(|addr| Some(Endpoint { addr, authority: Authority::try_from(addr.to_string()).ok()? }))
            .collect();
        Upstream { name: name.into(), endpoints, problem, next: AtomicUsize::new(0) }
    }

    /// A fixed list of endpoints (tests and benchmarks).
    pub fn fixed(name: &str, endpoints: Vec<SocketAddr>) -> Arc<Upstream> {
        Arc::new(Upstream::new(name.to_string(), endpoints, None))
    }

    /// The endpoint at the round-robin cursor, advancing it.
    pub(crate) fn cursor(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// Where one matched rule sends a request.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name` of the Ingress the rule came from.
    pub ingress: Arc<str>,
    pub upstream: Arc<Upstream>,
    /// Plain-HTTP requests get a 308 to HTTPS.
    pub ssl_redirect: bool,
}

/// How a path rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    Exact,
    Prefix,
    ImplementationSpecific,
}

impl PathMatch {
    fn parse(s: Option<&str>) -> PathMatch {
        match s {
            Some("Exact") => PathMatch::Exact,
            Some("Prefix") => PathMatch::Prefix,
            _ => PathMatch::ImplementationSpecific,
        }
    }
}

/// The path rules of one host.
#[derive(Debug, Default)]
pub struct HostRules {
    exact: HashMap<String, Arc<Route>>,
    /// Keyed by the prefix without trailing slashes (`""` is `/`).
    prefix: HashMap<String, Arc<Route>>,
}

impl HostRules {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty()
    }

    /// Add a rule; the first one for a path (the older Ingress) stays.
    pub fn insert(&mut self, path: &str, kind: PathMatch, route: Arc<Route>) {
        let (map, key) = match kind {
            PathMatch::Exact => (&mut self.exact, path),
            PathMatch::Prefix => (&mut self.prefix, path.trim_end_matches('/')),
            PathMatch::ImplementationSpecific => {
                let p = path.strip_suffix("/*").unwrap_or(path);
                (&mut self.prefix, p.trim_end_matches('/'))
            }
        };
        map.entry(key.to_string()).or_insert(route);
    }

    /// The longest match for `path`; an exact rule beats a prefix of the same
    /// length (an exact match is always at least as long as any prefix).
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // candidates, longest first: the path itself, then each prefix that
        // ends just before a '/'
        if !path.ends_with('/') {
            if let Some(r) = self.prefix.get(path) {
                return Some(r);
            }
        }
        let bytes = path.as_bytes();
        let mut i = bytes.len();
        while i > 0 {
            i -= 1;
            if bytes[i] == b'/' {
                if let Some(r) = self.prefix.get(&path[..i]) {
                    return Some(r);
                }
            }
        }
        None
    }
}

/// Certificates by server name.
#[derive(Debug, Default)]
pub struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Certs {
    /// Add a certificate for `host` (`*.` for wildcards); the first stays.
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(rest) => self.wildcard.entry(rest.to_string()).or_insert(key),
            None => self.exact.entry(host).or_insert(key),
        };
    }

    /// The certificate for an SNI name.
    pub fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.');
        if let Some(k) = self.exact.get(name) {
            return Some(k);
        }
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(rest)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One immutable routing snapshot.
#[derive(Debug, Default)]
pub struct Routes {
    hosts: HashMap<String, HostRules>,
    /// `*.example.com` under `example.com`.
    wildcards: HashMap<String, HostRules>,
    any_host: HostRules,
    default_backend: Option<Arc<Route>>,
    pub certs: Certs,
}

/// Lower-case `host`, without a port or trailing dot; borrowed when it
/// already is.
fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = if host.starts_with('[') {
        // [v6]:port
        host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

impl Routes {
    /// The rules of `host` (`""` for rules without one; `*.x` for wildcards).
    pub fn host_mut(&mut self, host: &str) -> &mut HostRules {
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            &mut self.any_host
        } else if let Some(rest) = host.strip_prefix("*.") {
            self.wildcards.entry(rest.to_string()).or_default()
        } else {
            self.hosts.entry(host).or_default()
        }
    }

    /// Set the default backend unless one is set.
    pub fn set_default_backend(&mut self, route: Arc<Route>) {
        self.default_backend.get_or_insert(route);
    }

    /// Where a request for `host` (a Host header: a port is ignored) and
    /// `path` goes; `None` is a 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = normalize_host(host);
        let path = if path.is_empty() { "/" } else { path };
        let exact = self.hosts.get(host.as_ref()).and_then(|h| h.find(path));
        if exact.is_some() {
            return exact;
        }
        let wildcard = host
            .split_once('.')
            .filter(|(first, _)| !first.is_empty())
            .and_then(|(_, rest)| self.wildcards.get(rest))
            .and_then(|h| h.find(path));
        if wildcard.is_some() {
            return wildcard;
        }
        self.any_host.find(path).or(self.default_backend.as_ref())
    }

    /// How many hosts have rules (for logs).
    pub fn host_count(&self) -> usize {
        self.hosts.len() + self.wildcards.len() + usize::from(!self.any_host.is_empty())
    }
}

/// What one build produced.
#[derive(Debug, Default)]
pub struct Built {
    pub routes: Routes,
    /// `(namespace, name)` of every Ingress this proxy serves.
    pub served: Vec<(String, String)>,
    /// Problems worth a log line (bad paths, unreadable TLS secrets).
    pub warnings: Vec<String>,
}

/// Whether this proxy serves `ingress`, given the class names it owns and
/// whether one of them is the default.
fn is_ours(ingress: &Ingress, ours: &BTreeSet<String>, default: bool) -> bool {
    if let Some(c) = ingress.annotations().get(CLASS_ANNOTATION) {
        return ours.contains(c);
    }
    match ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) {
        Some(c) => ours.contains(c),
        None => default,
    }
}

fn ssl_redirect(ingress: &Ingress) -> bool {
    let a = ingress.annotations();
    SSL_REDIRECT_ANNOTATIONS.iter().any(|k| a.get(*k).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")))
}

/// Build the routing snapshot. `class` is this proxy's IngressClass name.
pub fn build(objects: &Objects, class: &str) -> Built {
    let mut out = Built::default();
    // the classes we own: ours by name, and any naming our controller
    let mut ours = BTreeSet::new();
    ours.insert(class.to_string());
    let mut default = false;
    for c in &objects.classes {
        let controller = c.spec.as_ref().and_then(|s| s.controller.as_deref());
        let name = c.name_any();
        if controller == Some(CONTROLLER) || name == class {
            let is_default = c.annotations().get(DEFAULT_CLASS_ANNOTATION).is_some_and(|v| v == "true");
            default |= is_default;
            ours.insert(name);
        }
    }
    let index = Index::new(objects);
    let mut ingresses: Vec<&Arc<Ingress>> = objects
        .ingresses
        .iter()
        .filter(|i| is_ours(i, &ours, default) && i.metadata.deletion_timestamp.is_none())
        .collect();
    ingresses.sort_by(|a, b| {
        let key = |i: &Ingress| (i.metadata.creation_timestamp.as_ref().map(|t| t.0), i.namespace(), i.name_any());
        key(a).cmp(&key(b))
    });
    let mut upstreams: HashMap<(String, String, String), Arc<Upstream>> = HashMap::new();
    for ing in ingresses {
        let ns = ing.namespace().unwrap_or_default();
        let name = ing.name_any();
        let id: Arc<str> = format!("{ns}/{name}").into();
        out.served.push((ns.clone(), name.clone()));
        let redirect = ssl_redirect(ing);
        let Some(spec) = &ing.spec else { continue };
        let mut route_for = |backend: &IngressBackend, warnings: &mut Vec<String>| -> Arc<Route> {
            let upstream = match &backend.service {
                Some(svc) => {
                    let port = svc.port.as_ref();
                    let port_key = match (port.and_then(|p| p.number), port.and_then(|p| p.name.as_deref())) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(n)) => n.to_string(),
                        (None, None) => String::new(),
                    };
                    upstreams
                        .entry((ns.clone(), svc.name.clone(), port_key))
                        .or_insert_with(|| Arc::new(index.upstream(&ns, &svc.name, port)))
                        .clone()
                }
                None => {
                    warnings.push(format!("ingress {id}: only service backends are supported"));
                    Arc::new(Upstream::new(
                        format!("{ns}/<resource>"),
                        Vec::new(),
                        Some("resource backends are not supported".into()),
                    ))
                }
            };
            Arc::new(Route { ingress: id.clone(), upstream, ssl_redirect: redirect })
        };
        if let Some(backend) = &spec.default_backend {
            let r = route_for(backend, &mut out.warnings);
            out.routes.set_default_backend(r);
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.as_deref().unwrap_or("");
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let path = p.path.as_deref().unwrap_or("/");
                if !path.starts_with('/') {
                    out.warnings.push(format!("ingress {id}: path {path:?} does not start with '/'; ignored"));
                    continue;
                }
                let r = route_for(&p.backend, &mut out.warnings);
                out.routes.host_mut(host).insert(path, PathMatch::parse(Some(p.path_type.as_str())), r);
            }
        }
        for tls in spec.tls.iter().flatten() {
            let Some(secret) = tls.secret_name.as_deref() else { continue };
            let key = match index.secrets.get(&(ns.as_str(), secret)) {
                Some(s) => match certified_key_from_secret(s) {
                    Ok(k) => Arc::new(k),
                    Err(e) => {
                        out.warnings.push(format!("ingress {id}: secret {ns}/{secret}: {e}"));
                        continue;
                    }
                },
                None => {
                    out.warnings.push(format!("ingress {id}: TLS secret {ns}/{secret} not found"));
                    continue;
                }
            };
            // no hosts: the certificate serves the Ingress' rule hosts
            let hosts: Vec<&str> = match &tls.hosts {
                Some(h) if !h.is_empty() => h.iter().map(String::as_str).collect(),
                _ => spec.rules.iter().flatten().filter_map(|r| r.host.as_deref()).collect(),
            };
            for h in hosts {
                out.routes.certs.insert(h, key.clone());
            }
        }
    }
    out
}

/// Services, slices and secrets by namespace and name.
struct Index<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
}

impl<'a> Index<'a> {
    fn new(objects: &'a Objects) -> Index<'a> {
        let key = |m: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
        };
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in &objects.slices {
            if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
                slices.entry((s.metadata.namespace.as_deref().unwrap_or(""), svc.as_str())).or_default().push(s);
            }
        }
        Index {
            services: objects.services.iter().map(|s| (key(&s.metadata), &**s)).collect(),
            slices,
            secrets: objects.secrets.iter().map(|s| (key(&s.metadata), &**s)).collect(),
        }
    }

    /// The ready endpoints behind `service`'s port (by number or name).
    fn upstream(
        &self,
        ns: &str,
        service: &str,
        port: Option<&k8s_openapi::api::networking::v1::ServiceBackendPort>,
    ) -> Upstream {
        let wanted = match (port.and_then(|p| p.number), port.and_then(|p| p.name.as_deref())) {
            (Some(n), _) => n.to_string(),
            (None, Some(n)) => n.to_string(),
            (None, None) => "<no port>".to_string(),
        };
        let name = format!("{ns}/{service}:{wanted}");
        let fail = |problem: String| Upstream::new(name.clone(), Vec::new(), Some(problem));
        let Some(svc) = self.services.get(&(ns, service)) else {
            return fail(format!("service {ns}/{service} not found"));
        };
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        let sp = ports.iter().find(|p| match (port.and_then(|p| p.number), port.and_then(|p| p.name.as_deref())) {
            (Some(n), _) => p.port == n,
            (None, Some(n)) => p.name.as_deref() == Some(n),
            (None, None) => false,
        });
        let Some(sp) = sp else {
            return fail(format!("service {ns}/{service} has no port {wanted}"));
        };
        if sp.protocol.as_deref().is_some_and(|p| p != "TCP") {
            return fail(format!("service {ns}/{service} port {wanted} is not TCP"));
        }
        let port_name = sp.name.as_deref().unwrap_or("");
        let mut endpoints = Vec::new();
        for slice in self.slices.get(&(ns, service)).into_iter().flatten() {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let Some(number) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in &slice.endpoints {
                // ready unset means "unknown": Kubernetes treats it as ready
                if !ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        endpoints.push(SocketAddr::new(ip, number));
                    }
                }
            }
        }
        endpoints.sort();
        endpoints.dedup();
        let problem = endpoints.is_empty().then(|| format!("service {ns}/{service} has no ready endpoints"));
        Upstream::new(name, endpoints, problem)
    }
}

/// Why a TLS Secret can't be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no {0} in data")]
    Missing(&'static str),
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    #[error("tls.key holds no PEM private key")]
    NoKey,
    #[error("reading PEM: {0}")]
    Pem(std::io::Error),
    #[error("tls.key: {0}")]
    Key(rustls::Error),
}

/// Parse `kubernetes.io/tls` data into a rustls certified key.
pub fn certified_key_from_secret(secret: &Secret) -> Result<CertifiedKey, CertError> {
    let data = secret.data.as_ref();
    let crt = data.and_then(|d| d.get("tls.crt")).ok_or(CertError::Missing("tls.crt"))?;
    let key = data.and_then(|d| d.get("tls.key")).ok_or(CertError::Missing("tls.key"))?;
    certified_key_from_pem(&crt.0, &key.0)
}

/// Parse a PEM certificate chain and private key into a rustls certified key.
pub fn certified_key_from_pem(crt: &[u8], key: &[u8]) -> Result<CertifiedKey, CertError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &crt[..]).collect::<Result<_, _>>().map_err(CertError::Pem)?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut &key[..]).map_err(CertError::Pem)?.ok_or(CertError::NoKey)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(CertError::Key)?;
    Ok(CertifiedKey::new(certs, signing))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn upstream(name: &str) -> Arc<Upstream> {
        Upstream::fixed(name, Vec::new())
    }

    fn route(name: &str) -> Arc<Route> {
        Arc::new(Route { ingress: "default/i".into(), upstream: upstream(name), ssl_redirect: false })
    }

    fn target<'a>(routes: &'a Routes, host: &str, path: &str) -> Option<&'a str> {
        routes.route(host, path).map(|r| &*r.upstream.name)
    }

    /// Rules (path, type), request path, index of the rule that must win.
    type Case = (&'static [(&'static str, PathMatch)], &'static str, Option<usize>);

    /// The table of the Kubernetes documentation's "Examples" section, plus
    /// ImplementationSpecific and the trailing-slash rules.
    #[test]
    fn path_precedence_table() {
        use PathMatch::*;
        let cases: &[Case] = &[
            (&[("/", Prefix)], "/anything", Some(0)),
            (&[("/foo", Exact)], "/foo", Some(0)),
            (&[("/foo", Exact)], "/bar", None),
            (&[("/foo", Exact)], "/foo/", None),
            (&[("/foo/", Exact)], "/foo", None),
            (&[("/foo", Prefix)], "/foo", Some(0)),
            (&[("/foo", Prefix)], "/foo/", Some(0)),
            (&[("/foo/", Prefix)], "/foo", Some(0)),
            (&[("/foo/", Prefix)], "/foo/", Some(0)),
            (&[("/aaa/bb", Prefix)], "/aaa/bbb", None),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbb", Some(0)),
            (&[("/aaa/bbb/", Prefix)], "/aaa/bbb", Some(0)),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbb/", Some(0)),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbb/ccc", Some(0)),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbbxyz", None),
            (&[("/", Prefix), ("/aaa", Prefix)], "/aaa/ccc", Some(1)),
            (&[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)], "/aaa/bbb", Some(2)),
            (&[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)], "/ccc", Some(0)),
            (&[("/aaa", Prefix)], "/ccc", None),
            (&[("/foo", Prefix), ("/foo", Exact)], "/foo", Some(1)),
            (&[("/foo", Exact), ("/foo", Prefix)], "/foo", Some(0)),
            (&[("/foo", Exact), ("/foo", Prefix)], "/foo/x", Some(1)),
            (&[("/foo/bar", Prefix), ("/foo", Exact)], "/foo/bar", Some(0)),
            (&[("/foo/*", ImplementationSpecific)], "/foo/bar", Some(0)),
            (&[("/foo/*", ImplementationSpecific)], "/foo", Some(0)),
            (&[("/foo/*", ImplementationSpecific)], "/foobar", None),
            (&[("/*", ImplementationSpecific)], "/x/y", Some(0)),
            (&[("/foo", ImplementationSpecific)], "/foo/bar", Some(0)),
            (&[("/foo", ImplementationSpecific)], "/foobar", None),
            (&[("/foo/*", ImplementationSpecific), ("/foo/bar", Exact)], "/foo/bar", Some(1)),
            (&[("/foo/*", ImplementationSpecific), ("/foo/bar", Prefix)], "/foo/bar/x", Some(1)),
        ];
        for (rules, path, want) in cases {
            let mut routes = Routes::default();
            for (i, (p, kind)) in rules.iter().enumerate() {
                routes.host_mut("").insert(p, *kind, route(&i.to_string()));
            }
            let got = target(&routes, "any", path).map(|s| s.parse::<usize>().unwrap());
            assert_eq!(got, *want, "rules {rules:?}, request {path}");
        }
    }

    #[test]
    fn hosts_exact_wildcard_and_fallthrough() {
        let mut routes = Routes::default();
        routes.host_mut("foo.bar.com").insert("/", PathMatch::Prefix, route("exact"));
        routes.host_mut("*.bar.com").insert("/", PathMatch::Prefix, route("wild"));
        routes.host_mut("*.bar.com").insert("/only", PathMatch::Exact, route("wild-only"));
        routes.host_mut("").insert("/any", PathMatch::Prefix, route("any"));
        routes.set_default_backend(route("default"));
        assert_eq!(target(&routes, "foo.bar.com", "/x"), Some("exact"));
        assert_eq!(target(&routes, "FOO.bar.com:8080", "/x"), Some("exact"));
        assert_eq!(target(&routes, "foo.bar.com.", "/x"), Some("exact"));
        assert_eq!(target(&routes, "baz.bar.com", "/x"), Some("wild"));
        // a wildcard matches exactly one label
        assert_eq!(target(&routes, "bar.com", "/x"), Some("default"));
        assert_eq!(target(&routes, "a.baz.bar.com", "/x"), Some("default"));
        assert_eq!(target(&routes, ".bar.com", "/x"), Some("default"));
        // host-less rules and the default backend catch the rest
        assert_eq!(target(&routes, "other.com", "/any/thing"), Some("any"));
        assert_eq!(target(&routes, "other.com", "/else"), Some("default"));
        assert_eq!(target(&routes, "[::1]:80", "/any"), Some("any"));
    }

    #[test]
    fn no_default_backend_is_a_404() {
        let mut routes = Routes::default();
        routes.host_mut("a.com").insert("/x", PathMatch::Exact, route("x"));
        assert!(routes.route("a.com", "/y").is_none());
        assert!(routes.route("b.com", "/x").is_none());
    }

    fn objects(ingresses: Vec<serde_json::Value>) -> Objects {
        let svc = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "admin", "port": 81}]}
        });
        let slice = json!({
            "metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}}
            ]
        });
        Objects {
            ingresses: ingresses.into_iter().map(|v| Arc::new(serde_json::from_value(v).unwrap())).collect(),
            classes: vec![Arc::new(default_ingress_class("skiff"))],
            services: vec![Arc::new(serde_json::from_value(svc).unwrap())],
            slices: vec![Arc::new(serde_json::from_value(slice).unwrap())],
            secrets: Vec::new(),
        }
    }

    fn ingress(
        name: &str,
        class: Option<&str>,
        annotation: Option<&str>,
        port: serde_json::Value,
    ) -> serde_json::Value {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "annotations": {}},
            "spec": {"rules": [{"host": format!("{name}.example.com"), "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": port}}}
            ]}}]}
        });
        if let Some(c) = class {
            v["spec"]["ingressClassName"] = json!(c);
        }
        if let Some(a) = annotation {
            v["metadata"]["annotations"][CLASS_ANNOTATION] = json!(a);
        }
        v
    }

    #[test]
    fn class_selection_and_port_resolution() {
        let o = objects(vec![
            ingress("byname", Some("skiff"), None, json!({"number": 80})),
            ingress("byannotation", None, Some("skiff"), json!({"name": "admin"})),
            ingress("classless", None, None, json!({"number": 80})),
            ingress("other", Some("nginx"), None, json!({"number": 80})),
            ingress("otherannotation", Some("skiff"), Some("nginx"), json!({"number": 80})),
            ingress("noport", Some("skiff"), None, json!({"number": 8080})),
        ]);
        let built = build(&o, "skiff");
        let served: Vec<_> = built.served.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(served.len(), 4, "{served:?}");
        for n in ["byname", "byannotation", "classless", "noport"] {
            assert!(served.contains(&n), "{n} not served: {served:?}");
        }
        let r = built.routes.route("byname.example.com", "/").unwrap();
        let eps: Vec<String> = r.upstream.endpoints.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(eps, ["10.0.0.1:8080", "10.0.0.2:8080"]);
        let r = built.routes.route("byannotation.example.com", "/").unwrap();
        let eps: Vec<String> = r.upstream.endpoints.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(eps, ["10.0.0.1:9090", "10.0.0.2:9090"]);
        let r = built.routes.route("noport.example.com", "/").unwrap();
        assert!(r.upstream.endpoints.is_empty());
        assert_eq!(r.upstream.problem.as_deref(), Some("service default/web has no port 8080"));
        assert!(built.routes.route("other.example.com", "/").is_none());

        // not the default class: class-less Ingresses are someone else's
        let mut o2 = o.clone();
        let mut class = default_ingress_class("skiff");
        class.metadata.annotations = None;
        o2.classes = vec![Arc::new(class)];
        let built = build(&o2, "skiff");
        assert!(!built.served.iter().any(|(_, n)| n == "classless"));
    }

    #[test]
    fn older_ingress_wins_a_conflict() {
        let mut a = ingress("a", Some("skiff"), None, json!({"number": 80}));
        let mut b = ingress("b", Some("skiff"), None, json!({"name": "admin"}));
        a["spec"]["rules"][0]["host"] = json!("same.com");
        b["spec"]["rules"][0]["host"] = json!("same.com");
        a["metadata"]["creationTimestamp"] = json!("2024-01-02T00:00:00Z");
        b["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        let built = build(&objects(vec![a, b]), "skiff");
        assert_eq!(&*built.routes.route("same.com", "/").unwrap().ingress, "default/b");
    }
}
