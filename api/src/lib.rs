//! skiff-api: the resource catalogue Skiff serves, how each kind prints as a
//! table, how objects are checked against their Kubernetes types, and the
//! OpenAPI documents kubectl reads. Depends on nothing else of Skiff's.

pub mod catalogue;
pub mod convert;

pub use catalogue::{ResourceType, Subresource};

/// The Kubernetes version whose types Skiff serves (k8s-openapi feature `v1_33`).
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "33";
pub const KUBERNETES_GIT_VERSION: &str = "v1.33.0+skiff";
pub mod defaults;
pub mod families;
pub mod openapi;
pub mod protobuf;
pub mod schema;
pub mod table;
pub mod validation;
