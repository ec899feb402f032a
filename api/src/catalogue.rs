//! The resources Skiff serves: group, version, kind, plural, scope, short
//! names, categories and subresources, as Kubernetes' discovery reports them.

/// A subresource such as `status` or `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind the subresource speaks (`Scale` in `autoscaling/v1` for scale).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` is the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The plural resource name used in URLs (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// The OpenAPI definition name of the kind (`io.k8s.api.core.v1.Pod`).
    pub definition: &'static str,
    /// The `apiVersion` of the resource this one is another view of, when
    /// the store holds its objects in that resource's form under that
    /// resource's keys (`events.k8s.io/v1` events are core/v1 Events, as in
    /// Kubernetes); `None` for resources stored as themselves. A view has the
    /// same kind and plural as the resource it shows.
    pub view_of: Option<&'static str>,
}

pub const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const fn status(group: &'static str, kind: &'static str) -> Subresource {
    Subresource { name: "status", group, version: "v1", kind, verbs: STATUS_VERBS }
}

const SCALE: Subresource =
    Subresource { name: "scale", group: "autoscaling", version: "v1", kind: "Scale", verbs: STATUS_VERBS };

const ALL: &[&str] = &["all"];

macro_rules! rt {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr, $short:expr, $cat:expr, $sub:expr, $def:expr) => {
        ResourceType {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            definition: $def,
            view_of: None,
        }
    };
}

static CATALOGUE: &[ResourceType] = &[
    rt!(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        &[],
        &[
            status("", "Namespace"),
            Subresource { name: "finalize", group: "", version: "v1", kind: "Namespace", verbs: &["update"] }
        ],
        "io.k8s.api.core.v1.Namespace"
    ),
    rt!(
        "",
        "Pod",
        "pods",
        "pod",
        true,
        &["po"],
        ALL,
        &[
            status("", "Pod"),
            Subresource { name: "binding", group: "", version: "v1", kind: "Binding", verbs: &["create"] },
            Subresource { name: "eviction", group: "policy", version: "v1", kind: "Eviction", verbs: &["create"] },
            Subresource { name: "log", group: "", version: "v1", kind: "Pod", verbs: &["get"] },
        ],
        "io.k8s.api.core.v1.Pod"
    ),
    rt!(
        "",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        ALL,
        &[status("", "Service")],
        "io.k8s.api.core.v1.Service"
    ),
    rt!("", "Endpoints", "endpoints", "endpoints", true, &["ep"], &[], &[], "io.k8s.api.core.v1.Endpoints"),
    rt!("", "Secret", "secrets", "secret", true, &[], &[], &[], "io.k8s.api.core.v1.Secret"),
    rt!("", "ConfigMap", "configmaps", "configmap", true, &["cm"], &[], &[], "io.k8s.api.core.v1.ConfigMap"),
    rt!("", "Node", "nodes", "node", false, &["no"], &[], &[status("", "Node")], "io.k8s.api.core.v1.Node"),
    rt!("", "Event", "events", "event", true, &["ev"], &[], &[], "io.k8s.api.core.v1.Event"),
    rt!(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        &[],
        &[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"]
        }],
        "io.k8s.api.core.v1.ServiceAccount"
    ),
    rt!(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        ALL,
        &[status("apps", "Deployment"), SCALE],
        "io.k8s.api.apps.v1.Deployment"
    ),
    rt!(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        ALL,
        &[status("apps", "ReplicaSet"), SCALE],
        "io.k8s.api.apps.v1.ReplicaSet"
    ),
    rt!(
        "networking.k8s.io",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &["ing"],
        &[],
        &[status("networking.k8s.io", "Ingress")],
        "io.k8s.api.networking.v1.Ingress"
    ),
    rt!(
        "networking.k8s.io",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        &[],
        &[],
        &[],
        "io.k8s.api.networking.v1.IngressClass"
    ),
    rt!(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        &[],
        &[],
        &[],
        "io.k8s.api.discovery.v1.EndpointSlice"
    ),
    rt!("coordination.k8s.io", "Lease", "leases", "lease", true, &[], &[], &[], "io.k8s.api.coordination.v1.Lease"),
    // Kubernetes serves core Events a second time, renamed (see `crate::convert`),
    // from the same storage; its discovery gives this view the short name `ev` too.
    ResourceType {
        view_of: Some("v1"),
        ..rt!("events.k8s.io", "Event", "events", "event", true, &["ev"], &[], &[], "io.k8s.api.events.v1.Event")
    },
];

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name Kubernetes uses in messages: `pods`, `deployments.apps`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The group as used in store keys (`core` for the core group); a view
    /// uses the keys of the resource it shows.
    pub fn storage_group(&self) -> &'static str {
        let group = match self.view_of {
            Some(api_version) => api_version.rsplit_once('/').map_or("", |(g, _)| g),
            None => self.group,
        };
        if group.is_empty() {
            "core"
        } else {
            group
        }
    }

    /// Whether the store holds this resource's objects in another
    /// resource's form (see [`ResourceType::view_of`]).
    pub fn is_view(&self) -> bool {
        self.view_of.is_some()
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether `metadata.generation` tracks spec changes for this kind.
    pub fn has_generation(&self) -> bool {
        matches!(self.kind, "Deployment" | "ReplicaSet" | "Ingress" | "IngressClass" | "EndpointSlice")
    }

    /// Whether the kind has a status subresource (then the main resource
    /// ignores writes to `status`, and the subresource ignores the rest).
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }
}

/// Every served resource type.
pub fn all() -> &'static [ResourceType] {
    CATALOGUE
}

/// Look up a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    CATALOGUE.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Look up a resource by `apiVersion` and kind.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    CATALOGUE.iter().find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The served group/versions, core first, in the order discovery lists them.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in CATALOGUE {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_unique_per_group() {
        for (i, a) in CATALOGUE.iter().enumerate() {
            for b in &CATALOGUE[i + 1..] {
                assert!(!(a.group == b.group && a.plural == b.plural), "{} twice", a.plural);
            }
        }
    }

    #[test]
    fn qualified_names_match_kubernetes_messages() {
        assert_eq!(
            find("apps", "v1", "deployments").map(|r| r.qualified_plural()).as_deref(),
            Some("deployments.apps")
        );
        assert_eq!(find("", "v1", "pods").map(|r| r.qualified_plural()).as_deref(), Some("pods"));
        assert_eq!(find_kind("networking.k8s.io/v1", "Ingress").map(|r| r.plural), Some("ingresses"));
    }

    #[test]
    fn views_share_the_keys_of_what_they_show() {
        for view in CATALOGUE.iter().filter(|r| r.is_view()) {
            let shown = view.view_of.and_then(|v| find_kind(v, view.kind)).expect("a view shows a served kind");
            assert!(!shown.is_view(), "{}: a view of a view", view.qualified_plural());
            assert_eq!(
                (view.storage_group(), view.plural, view.namespaced),
                (shown.storage_group(), shown.plural, shown.namespaced)
            );
        }
        let ev = find("events.k8s.io", "v1", "events").expect("events.k8s.io/v1 events");
        assert_eq!((ev.storage_group(), ev.api_version().as_str()), ("core", "events.k8s.io/v1"));
    }
}
