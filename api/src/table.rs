//! Server-side tables: the columns and cells `kubectl get` prints for each
//! kind.
//!
//! kubectl upper-cases the column names and prints the cells verbatim, so the
//! server formats everything: ages (`3d`, `5m20s`), `1/2`, `<none>`,
//! `80:30956/TCP`. The columns, their order, the wide-only columns
//! (`priority: 1`) and every cell follow Kubernetes 1.33's own printers
//! (`pkg/printers/internalversion/printers.go`). The API server always prints
//! wide, as Kubernetes' `TableConvertor` does, and kubectl hides the
//! priority-1 columns unless asked for `-o wide`; so `cells` returns one cell
//! per column.
//!
//! Objects are read in their stored JSON form. Where a field the printer
//! reads is absent, the value Kubernetes' defaulting or create strategy would
//! have stored is used (a Service's type `ClusterIP`, a port's protocol `TCP`,
//! `replicas: 1`, a Secret's type `Opaque`, a Namespace's phase `Active`, a
//! Pod's phase `Pending`).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::catalogue::ResourceType;

/// One column of a Table, as in `meta.k8s.io/v1` `TableColumnDefinition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer` or `date`; Kubernetes does not always match it to
    /// the cells (its `Restarts` column is a string column).
    pub type_: &'static str,
    /// `name` for the column that holds the object's name, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 always shows; 1 shows only with `-o wide`.
    pub priority: i32,
}

impl Column {
    const fn new(name: &'static str, type_: &'static str, description: &'static str) -> Self {
        Column { name, type_, format: "", description, priority: 0 }
    }

    const fn name() -> Self {
        Column { format: "name", ..Column::new("Name", "string", NAME_DESC) }
    }

    const fn age() -> Self {
        Column::new("Age", "string", AGE_DESC)
    }

    /// The column shown only with `-o wide`.
    const fn wide(self) -> Self {
        Column { priority: 1, ..self }
    }
}

/// The columns `kubectl get` shows for a resource type.
pub fn columns(rt: &ResourceType) -> Vec<Column> {
    printer(rt).columns.to_vec()
}

/// The cells of `obj`'s row, one per column of [`columns`]; ages are counted
/// up to `now`.
pub fn cells(rt: &ResourceType, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    (printer(rt).cells)(obj, now)
}

/// The Table's `columnDefinitions` array.
pub fn column_definitions_json(rt: &ResourceType) -> Value {
    Value::Array(
        printer(rt)
            .columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// A short, human-readable duration with two or three significant figures,
/// exactly as `k8s.io/apimachinery/pkg/util/duration.HumanDuration` makes it:
/// `45s`, `5m20s`, `75m`, `3h5m`, `20h`, `2d1h`, `300d`, `2y1d`, `9y`.
pub fn human_duration(d: Duration) -> String {
    // Truncated toward zero, like Go's int(d.Seconds()). Less than two
    // seconds in the future still counts as now, to tolerate clocks that
    // disagree a little.
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            dy => format!("{years}y{dy}d"),
        };
    }
    format!("{years}y")
}

/// How one kind prints.
struct Printer {
    columns: &'static [Column],
    cells: CellsFn,
}

type CellsFn = fn(&Value, DateTime<Utc>) -> Vec<Value>;

fn printer(rt: &ResourceType) -> Printer {
    let (columns, cells): (&'static [Column], CellsFn) = match (rt.group, rt.kind) {
        ("", "Namespace") => (NAMESPACE_COLUMNS, namespace_cells),
        ("", "Pod") => (POD_COLUMNS, pod_cells),
        ("", "Service") => (SERVICE_COLUMNS, service_cells),
        ("", "Endpoints") => (ENDPOINTS_COLUMNS, endpoints_cells),
        ("", "Secret") => (SECRET_COLUMNS, secret_cells),
        ("", "ConfigMap") => (CONFIGMAP_COLUMNS, configmap_cells),
        ("", "ServiceAccount") => (SERVICEACCOUNT_COLUMNS, serviceaccount_cells),
        ("", "Node") => (NODE_COLUMNS, node_cells),
        ("", "Event") => (EVENT_COLUMNS, event_cells),
        ("apps", "Deployment") => (DEPLOYMENT_COLUMNS, deployment_cells),
        ("apps", "ReplicaSet") => (REPLICASET_COLUMNS, replicaset_cells),
        ("networking.k8s.io", "Ingress") => (INGRESS_COLUMNS, ingress_cells),
        ("networking.k8s.io", "IngressClass") => (INGRESSCLASS_COLUMNS, ingressclass_cells),
        ("discovery.k8s.io", "EndpointSlice") => (ENDPOINTSLICE_COLUMNS, endpointslice_cells),
        ("coordination.k8s.io", "Lease") => (LEASE_COLUMNS, lease_cells),
        // one storage, one table convertor: Kubernetes prints both views of
        // an Event with the core printer
        ("events.k8s.io", "Event") => (EVENT_COLUMNS, events_v1_cells),
        _ => (DEFAULT_COLUMNS, default_cells),
    };
    Printer { columns, cells }
}

// Descriptions are the first sentences of the Kubernetes API documentation
// of the field each column shows.
const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some \
     resources may allow a client to request the generation of an appropriate name automatically.";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created.";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";

static NAMESPACE_COLUMNS: &[Column] =
    &[Column::name(), Column::new("Status", "string", "The status of the namespace"), Column::age()];

static POD_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    Column::new("Status", "string", "The aggregate status of the containers in this pod."),
    Column::new(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in \
         this pod has restarted.",
    ),
    Column::age(),
    Column::new("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster.").wide(),
    Column::new("Node", "string", "NodeName indicates in which node this pod is scheduled.").wide(),
    Column::new(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be \
         scheduled right away as preemption victims receive their graceful termination periods.",
    )
    .wide(),
    Column::new("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.")
        .wide(),
];

static SERVICE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP."),
    Column::new("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    Column::new(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this \
         service.",
    ),
    Column::new("Port(s)", "string", "The list of ports that are exposed by this service."),
    Column::age(),
    Column::new(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    )
    .wide(),
];

static ENDPOINTS_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Endpoints", "string", "The set of all endpoints is the union of all subsets."),
    Column::age(),
];

static SECRET_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Type", "string", "Used to facilitate programmatic handling of secret data."),
    Column::new(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    Column::age(),
];

static SERVICEACCOUNT_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are \
         allowed to use. Pods are only limited to this list if this service account has a \
         \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \
         \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate \
         namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated \
         service account token secrets for use outside of pods. Instead, tokens can be requested directly using \
         the TokenRequest API, or service account token secrets can be manually created. More info: \
         https://kubernetes.io/docs/concepts/configuration/secret",
    ),
    Column::age(),
];

static CONFIGMAP_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    Column::age(),
];

const NODE_ADDRESSES_DESC: &str = "List of addresses reachable to the node.";

static NODE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Status", "string", "The status of the node"),
    Column::new("Roles", "string", "The roles of the node"),
    Column::age(),
    Column::new("Version", "string", "Kubelet Version reported by the node."),
    Column::new("Internal-IP", "string", NODE_ADDRESSES_DESC).wide(),
    Column::new("External-IP", "string", NODE_ADDRESSES_DESC).wide(),
    Column::new(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    )
    .wide(),
    Column::new(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    )
    .wide(),
    Column::new(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    )
    .wide(),
];

static EVENT_COLUMNS: &[Column] = &[
    Column::new("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    Column::new("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    Column::new(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into \
         the object's current status.",
    ),
    Column::new("Object", "string", "The object that this event is about."),
    Column::new(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid \
         JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    )
    .wide(),
    Column::new(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    )
    .wide(),
    Column::new("Message", "string", "A human-readable description of the status of this operation."),
    Column::new(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    )
    .wide(),
    Column::new("Count", "string", "The number of times this event has occurred.").wide(),
    Column::name().wide(),
];

static DEPLOYMENT_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Ready", "string", "Number of the pod with ready state"),
    Column::new(
        "Up-to-date",
        "string",
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
    ),
    Column::new(
        "Available",
        "string",
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this \
         deployment.",
    ),
    Column::age(),
    Column::new("Containers", "string", CONTAINERS_DESC).wide(),
    Column::new("Images", "string", IMAGES_DESC).wide(),
    Column::new("Selector", "string", "Label selector for pods.").wide(),
];

static REPLICASET_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Desired", "integer", "Replicas is the number of desired pods."),
    Column::new("Current", "integer", "Replicas is the most recently observed number of non-terminating pods."),
    Column::new(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    Column::age(),
    Column::new("Containers", "string", CONTAINERS_DESC).wide(),
    Column::new("Images", "string", IMAGES_DESC).wide(),
    Column::new("Selector", "string", "Selector is a label query over pods that should match the replica count.")
        .wide(),
];

static INGRESS_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    Column::new("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    Column::new("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    Column::new("Ports", "string", "Ports of TLS configurations that open"),
    Column::age(),
];

static INGRESSCLASS_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Controller", "string", "Controller that is responsible for handling this class"),
    Column::new("Parameters", "string", "A reference to a resource with additional parameters"),
    Column::age(),
];

static ENDPOINTSLICE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
    Column::new("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    Column::new("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
    Column::age(),
];

static LEASE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."),
    Column::age(),
];

/// The columns of a kind without its own printer, as the API server's default
/// table convertor makes them.
static DEFAULT_COLUMNS: &[Column] = &[Column::name(), Column::new("Created At", "date", AGE_DESC)];

// ---------------------------------------------------------------------------
// Reading the stored JSON.

/// The value at a JSON pointer, with `null` counted as absent (as Go's
/// decoder leaves a field unset for `null`).
fn get<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|x| !x.is_null())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    get(v, pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, pointer: &str) -> i64 {
    get(v, pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn bool_at(v: &Value, pointer: &str) -> bool {
    get(v, pointer).and_then(Value::as_bool).unwrap_or(false)
}

fn arr_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    get(v, pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn time_at(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    let s = get(v, pointer)?.as_str()?;
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

fn or_default<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

/// How long ago `t` was, or `<unknown>` when it is not set.
fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

fn name(obj: &Value) -> Value {
    Value::from(str_at(obj, "/metadata/name"))
}

fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    Value::from(since(time_at(obj, "/metadata/creationTimestamp"), now))
}

/// `replicas` of a spec, defaulted to 1 as the API server stores it.
fn desired_replicas(obj: &Value) -> i64 {
    get(obj, "/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// `k=v` pairs sorted by key and joined with `,`; `<none>` when empty
/// (`labels.FormatLabels`).
fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    pairs.sort();
    pairs.join(",")
}

/// A `LabelSelector` in selector syntax (`app=web,tier in (be,fe)`), as
/// `LabelSelectorAsSelector(..).String()` writes it: requirements sorted by
/// key, values sorted. `None` for a selector Kubernetes would reject.
fn label_selector_string(selector: Option<&Value>) -> Option<String> {
    let Some(selector) = selector else {
        return Some(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = get(selector, "/matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in arr_at(selector, "/matchExpressions") {
        let key = str_at(expr, "/key");
        let mut values: Vec<&str> = arr_at(expr, "/values").iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let text = match str_at(expr, "/operator") {
            "In" | "NotIn" if values.is_empty() => return None,
            "Exists" | "DoesNotExist" if !values.is_empty() => return None,
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Some(requirements.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` for an empty or absent selector.
fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        None => "<error>".to_string(),
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
    }
}

/// The names and the images of a pod template's containers, each joined
/// with `,`.
fn container_cells(obj: &Value) -> (Value, Value) {
    let containers = arr_at(obj, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

/// The first `max` items joined with `,`, then ` + N more...` for the rest;
/// `<unset>` when there are none.
fn list_with_more(items: &[String], max: usize) -> String {
    let shown = items[..items.len().min(max)].join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else if shown.is_empty() {
        "<unset>".to_string()
    } else {
        shown
    }
}

/// The distinct load-balancer ingress points (IP, else hostname), sorted and
/// joined with `,`. Not shortened: the server always prints wide.
fn load_balancer_addresses(obj: &Value) -> String {
    let mut addresses: Vec<&str> = arr_at(obj, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| or_default(str_at(i, "/ip"), str_at(i, "/hostname")))
        .filter(|a| !a.is_empty())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses.join(",")
}

/// `host:port`, with an IPv6 host in brackets (`net.JoinHostPort`).
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// ---------------------------------------------------------------------------
// The printers.

fn namespace_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(obj), Value::from(or_default(str_at(obj, "/status/phase"), "Active")), age(obj, now)]
}

/// What the READY, STATUS and RESTARTS columns of a pod summarise.
struct PodSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i64,
    last_restart: Option<DateTime<Utc>>,
}

/// An init container with `restartPolicy: Always` runs beside the app
/// containers for the pod's whole life.
fn is_sidecar(container: &Value) -> bool {
    str_at(container, "/restartPolicy") == "Always"
}

/// Whether the pod's first condition of this type is true.
fn first_condition_true(pod: &Value, type_: &str) -> bool {
    arr_at(pod, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == type_)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

/// Whether any condition of this type is true.
fn any_condition_true(pod: &Value, type_: &str) -> bool {
    arr_at(pod, "/status/conditions").iter().any(|c| str_at(c, "/type") == type_ && str_at(c, "/status") == "True")
}

fn later(latest: &mut Option<DateTime<Utc>>, t: Option<DateTime<Utc>>) {
    if t > *latest {
        *latest = t;
    }
}

/// The reason a terminated container gives, or its signal or exit code.
fn terminated_reason(terminated: &Value) -> String {
    match str_at(terminated, "/reason") {
        "" => match int_at(terminated, "/signal") {
            0 => format!("ExitCode:{}", int_at(terminated, "/exitCode")),
            signal => format!("Signal:{signal}"),
        },
        reason => reason.to_string(),
    }
}

fn pod_summary(pod: &Value) -> PodSummary {
    let init_specs = arr_at(pod, "/spec/initContainers");
    let mut summary = PodSummary {
        ready: 0,
        total: arr_at(pod, "/spec/containers").len() + init_specs.iter().filter(|c| is_sidecar(c)).count(),
        reason: or_default(str_at(pod, "/status/reason"), or_default(str_at(pod, "/status/phase"), "Pending"))
            .to_string(),
        restarts: 0,
        last_restart: None,
    };
    let gated = arr_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated");
    if gated {
        summary.reason = "SchedulingGated".to_string();
    }

    let mut sidecar_restarts = 0;
    let mut last_sidecar_restart = None;
    let mut initializing = false;
    for (i, status) in arr_at(pod, "/status/initContainerStatuses").iter().enumerate() {
        let restarts = int_at(status, "/restartCount");
        let finished = time_at(status, "/lastState/terminated/finishedAt");
        summary.restarts += restarts;
        later(&mut summary.last_restart, finished);
        let sidecar = init_specs.iter().find(|c| str_at(c, "/name") == str_at(status, "/name")).is_some_and(is_sidecar);
        if sidecar {
            sidecar_restarts += restarts;
            later(&mut last_sidecar_restart, finished);
        }
        let terminated = get(status, "/state/terminated");
        let waiting_reason = str_at(status, "/state/waiting/reason");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && bool_at(status, "/started") {
            if bool_at(status, "/ready") {
                summary.ready += 1;
            }
            continue;
        }
        summary.reason = match terminated {
            Some(t) => format!("Init:{}", terminated_reason(t)),
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    if !initializing || first_condition_true(pod, "Initialized") {
        summary.restarts = sidecar_restarts;
        summary.last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Backwards, so that the first container with a reason gives it.
        for status in arr_at(pod, "/status/containerStatuses").iter().rev() {
            summary.restarts += int_at(status, "/restartCount");
            later(&mut summary.last_restart, time_at(status, "/lastState/terminated/finishedAt"));
            let waiting_reason = str_at(status, "/state/waiting/reason");
            if !waiting_reason.is_empty() {
                summary.reason = waiting_reason.to_string();
            } else if let Some(terminated) = get(status, "/state/terminated") {
                summary.reason = terminated_reason(terminated);
            } else if bool_at(status, "/ready") && get(status, "/state/running").is_some() {
                has_running = true;
                summary.ready += 1;
            }
        }
        // A pod whose first container completed but another still runs.
        if summary.reason == "Completed" && has_running {
            summary.reason = if any_condition_true(pod, "Ready") { "Running" } else { "NotReady" }.to_string();
        }
    }

    if get(pod, "/metadata/deletionTimestamp").is_some() {
        if str_at(pod, "/status/reason") == "NodeLost" {
            summary.reason = "Unknown".to_string();
        } else if !matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed") {
            summary.reason = "Terminating".to_string();
        }
    }
    summary
}

/// The pod's first IP; `podIP` wins over `podIPs`, as in Kubernetes'
/// conversion.
fn pod_ip(pod: &Value) -> &str {
    or_default(
        str_at(pod, "/status/podIP"),
        arr_at(pod, "/status/podIPs").first().map(|ip| str_at(ip, "/ip")).unwrap_or(""),
    )
}

fn readiness_gates(pod: &Value) -> String {
    let gates = arr_at(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = arr_at(pod, "/status/conditions");
    let passed = gates
        .iter()
        .filter(|gate| {
            conditions
                .iter()
                .find(|c| str_at(c, "/type") == str_at(gate, "/conditionType"))
                .is_some_and(|c| str_at(c, "/status") == "True")
        })
        .count();
    format!("{passed}/{}", gates.len())
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let summary = pod_summary(pod);
    let restarts = match summary.last_restart {
        Some(t) if summary.restarts != 0 => {
            format!("{} ({} ago)", summary.restarts, human_duration(now - t))
        }
        _ => summary.restarts.to_string(),
    };
    vec![
        name(pod),
        Value::from(format!("{}/{}", summary.ready, summary.total)),
        Value::from(summary.reason),
        Value::from(restarts),
        age(pod, now),
        Value::from(or_default(pod_ip(pod), "<none>")),
        Value::from(or_default(str_at(pod, "/spec/nodeName"), "<none>")),
        Value::from(or_default(str_at(pod, "/status/nominatedNodeName"), "<none>")),
        Value::from(readiness_gates(pod)),
    ]
}

fn service_external_ip(svc: &Value, type_: &str) -> String {
    let external_ips: Vec<&str> = arr_at(svc, "/spec/externalIPs").iter().filter_map(Value::as_str).collect();
    match type_ {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let lb = load_balancer_addresses(svc);
            match (lb.is_empty(), external_ips.is_empty()) {
                (true, true) => "<pending>".to_string(),
                (false, true) => lb,
                (true, false) => external_ips.join(","),
                (false, false) => format!("{lb},{}", external_ips.join(",")),
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `80/TCP`, or `80:32213/TCP` with a node port, joined with `,`.
fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let protocol = or_default(str_at(p, "/protocol"), "TCP");
            match int_at(p, "/nodePort") {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    }
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let type_ = or_default(str_at(svc, "/spec/type"), "ClusterIP");
    // `clusterIP` wins over `clusterIPs`, as in Kubernetes' conversion.
    let cluster_ip = match str_at(svc, "/spec/clusterIP") {
        "" => arr_at(svc, "/spec/clusterIPs").first().map(|ip| ip.as_str().unwrap_or("")).unwrap_or("<none>"),
        ip => ip,
    };
    vec![
        name(svc),
        Value::from(type_),
        Value::from(cluster_ip),
        Value::from(service_external_ip(svc, type_)),
        Value::from(service_ports(svc)),
        age(svc, now),
        Value::from(format_labels(get(svc, "/spec/selector"))),
    ]
}

/// Up to three `ip:port` (one per ready address and port), then
/// ` + N more...`; `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut count = 0;
    for subset in subsets {
        let addresses = arr_at(subset, "/addresses");
        let ports = arr_at(subset, "/ports");
        if ports.is_empty() {
            // A headless service may have no ports.
            count += addresses.len();
            shown.extend(addresses.iter().map(|a| str_at(a, "/ip").to_string()).take(MAX - shown.len()));
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int_at(port, "/port");
            shown.extend(addresses.iter().map(|a| join_host_port(str_at(a, "/ip"), port)).take(MAX - shown.len()));
        }
    }
    let joined = shown.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints_cells(ep: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(ep), Value::from(format_endpoints(ep)), age(ep, now)]
}

fn map_len(v: &Value, pointer: &str) -> usize {
    get(v, pointer).and_then(Value::as_object).map_or(0, |m| m.len())
}

fn secret_cells(secret: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(secret),
        Value::from(or_default(str_at(secret, "/type"), "Opaque")),
        Value::from(map_len(secret, "/data")),
        age(secret, now),
    ]
}

fn serviceaccount_cells(sa: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let secrets = sa.pointer("/secrets").and_then(Value::as_array).map_or(0, Vec::len);
    vec![name(sa), Value::from(secrets), age(sa, now)]
}

fn configmap_cells(cm: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(cm), Value::from(map_len(cm, "/data") + map_len(cm, "/binaryData")), age(cm, now)]
}

/// `Ready`, `NotReady` or `Unknown` (no Ready condition), then
/// `,SchedulingDisabled` for a cordoned node.
fn node_status(node: &Value) -> String {
    let ready = arr_at(node, "/status/conditions").iter().rev().find(|c| str_at(c, "/type") == "Ready");
    let mut status = match ready {
        Some(c) if str_at(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if bool_at(node, "/spec/unschedulable") {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` labels and the
/// `kubernetes.io/role` label, sorted; `<none>` without any.
fn node_roles(node: &Value) -> String {
    const ROLE_PREFIX: &str = "node-role.kubernetes.io/";
    let mut roles: Vec<&str> = get(node, "/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix(ROLE_PREFIX) {
            Some(role) => Some(role),
            None if k == "kubernetes.io/role" => v.as_str(),
            None => None,
        })
        .filter(|role| !role.is_empty())
        .collect();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    arr_at(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == type_)
        .map_or("<none>", |a| str_at(a, "/address"))
        .to_string()
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let info = |field: &str| Value::from(or_default(str_at(node, &format!("/status/nodeInfo/{field}")), "<unknown>"));
    vec![
        name(node),
        Value::from(node_status(node)),
        Value::from(node_roles(node)),
        age(node, now),
        Value::from(str_at(node, "/status/nodeInfo/kubeletVersion")),
        Value::from(node_address(node, "InternalIP")),
        Value::from(node_address(node, "ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

fn event_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first_seen = since(time_at(ev, "/firstTimestamp").or_else(|| time_at(ev, "/eventTime")), now);
    let mut last_seen = match time_at(ev, "/lastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(ev, "/count");
    if let Some(series) = get(ev, "/series") {
        last_seen = since(time_at(series, "/lastObservedTime"), now);
        count = int_at(series, "/count");
    } else if count == 0 {
        // Events of the events.k8s.io API that happened once carry no count.
        count = 1;
    }
    let kind = str_at(ev, "/involvedObject/kind").to_lowercase();
    let object = match str_at(ev, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = or_default(str_at(ev, "/source/component"), str_at(ev, "/reportingComponent"));
    let source = match or_default(str_at(ev, "/source/host"), str_at(ev, "/reportingInstance")) {
        "" => component.to_string(),
        host => format!("{component}, {host}"),
    };
    vec![
        Value::from(last_seen),
        Value::from(str_at(ev, "/type")),
        Value::from(str_at(ev, "/reason")),
        Value::from(object),
        Value::from(str_at(ev, "/involvedObject/fieldPath")),
        Value::from(source),
        Value::from(str_at(ev, "/message").trim()),
        Value::from(first_seen),
        Value::from(count),
        name(ev),
    ]
}

fn events_v1_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    event_cells(&crate::convert::event_to_core(ev.clone()), now)
}

fn deployment_cells(deploy: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = container_cells(deploy);
    let selector = label_selector_string(get(deploy, "/spec/selector")).unwrap_or_else(|| "<invalid>".to_string());
    vec![
        name(deploy),
        Value::from(format!("{}/{}", int_at(deploy, "/status/readyReplicas"), desired_replicas(deploy))),
        Value::from(int_at(deploy, "/status/updatedReplicas")),
        Value::from(int_at(deploy, "/status/availableReplicas")),
        age(deploy, now),
        containers,
        images,
        Value::from(selector),
    ]
}

fn replicaset_cells(rs: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = container_cells(rs);
    vec![
        name(rs),
        Value::from(desired_replicas(rs)),
        Value::from(int_at(rs, "/status/replicas")),
        Value::from(int_at(rs, "/status/readyReplicas")),
        age(rs, now),
        containers,
        images,
        Value::from(format_label_selector(get(rs, "/spec/selector"))),
    ]
}

/// The rules' hosts, up to three, then ` + N more...` counting the rules
/// left; `*` without any host.
fn ingress_hosts(ing: &Value) -> String {
    const MAX: usize = 3;
    let rules = arr_at(ing, "/spec/rules");
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        more |= hosts.len() == MAX;
        let host = str_at(rule, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    }
}

fn ingress_cells(ing: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = if arr_at(ing, "/spec/tls").is_empty() { "80" } else { "80, 443" };
    vec![
        name(ing),
        Value::from(or_default(str_at(ing, "/spec/ingressClassName"), "<none>")),
        Value::from(ingress_hosts(ing)),
        Value::from(load_balancer_addresses(ing)),
        Value::from(ports),
        age(ing, now),
    ]
}

fn ingressclass_cells(class: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match get(class, "/spec/parameters") {
        None => "<none>".to_string(),
        Some(p) => {
            let mut kind = str_at(p, "/kind").to_string();
            if let Some(group) = get(p, "/apiGroup").and_then(Value::as_str) {
                kind = format!("{kind}.{group}");
            }
            format!("{kind}/{}", str_at(p, "/name"))
        }
    };
    vec![name(class), Value::from(str_at(class, "/spec/controller")), Value::from(parameters), age(class, now)]
}

fn endpointslice_cells(slice: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports: Vec<String> = arr_at(slice, "/ports")
        .iter()
        .map(|p| match (get(p, "/port").and_then(Value::as_i64), get(p, "/name").and_then(Value::as_str)) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = arr_at(slice, "/endpoints")
        .iter()
        .flat_map(|e| arr_at(e, "/addresses"))
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        name(slice),
        Value::from(str_at(slice, "/addressType")),
        Value::from(list_with_more(&ports, 3)),
        Value::from(list_with_more(&addresses, 3)),
        age(slice, now),
    ]
}

fn lease_cells(lease: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(lease), Value::from(str_at(lease, "/spec/holderIdentity")), age(lease, now)]
}

/// The name and creation time in RFC 3339 (Go's zero time when unset).
fn default_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let created = time_at(obj, "/metadata/creationTimestamp")
        .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    vec![name(obj), Value::from(created)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).single().expect("valid date")
    }

    /// The timestamp `d` before now, as the API server stores it.
    fn ago(d: Duration) -> String {
        (now() - d).to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn rt(kind: &str) -> &'static ResourceType {
        catalogue::all().iter().find(|r| r.kind == kind).expect("kind in catalogue")
    }

    /// The row as kubectl would get it, checked against the columns.
    fn row(kind: &str, obj: Value) -> Vec<Value> {
        let cells = cells(rt(kind), &obj, now());
        assert_eq!(cells.len(), columns(rt(kind)).len(), "{kind}: one cell per column");
        cells
    }

    /// The whole row as one JSON array.
    fn full(kind: &str, obj: Value) -> Value {
        Value::Array(row(kind, obj))
    }

    fn names(kind: &str, priority: i32) -> Vec<&'static str> {
        columns(rt(kind)).iter().filter(|c| c.priority == priority).map(|c| c.name).collect()
    }

    #[test]
    fn human_duration_matches_apimachinery() {
        let s = Duration::seconds;
        let m = Duration::minutes;
        let h = Duration::hours;
        let d = Duration::days;
        let cases = [
            (s(-3), "<invalid>"),
            (s(-2), "<invalid>"),
            (Duration::milliseconds(-1500), "0s"),
            (s(-1), "0s"),
            (s(0), "0s"),
            (Duration::milliseconds(999), "0s"),
            (s(1), "1s"),
            (s(70), "70s"),
            (s(119), "119s"),
            (s(120), "2m"),
            (s(190), "3m10s"),
            (m(5) + s(20), "5m20s"),
            (m(9) + s(59), "9m59s"),
            (m(10), "10m"),
            (m(10) + s(30), "10m"),
            (m(70), "70m"),
            (m(179), "179m"),
            (h(3), "3h"),
            (h(3) + m(5), "3h5m"),
            (h(7) + m(59), "7h59m"),
            (h(8), "8h"),
            (h(47) + m(59), "47h"),
            (h(48), "2d"),
            (h(49), "2d1h"),
            (d(7) + h(23), "7d23h"),
            (d(8) + h(2), "8d"),
            (d(367), "367d"),
            (d(729), "729d"),
            (d(730), "2y"),
            (d(365 * 2) + h(25), "2y1d"),
            (d(365 * 8) - h(1), "7y364d"),
            (d(365 * 8) + h(2), "8y"),
            (d(365 * 20 + 100), "20y"),
        ];
        for (duration, want) in cases {
            assert_eq!(human_duration(duration), want, "{duration:?}");
        }
    }

    #[test]
    fn every_kind_prints_one_cell_per_column_even_for_an_empty_object() {
        for rt in catalogue::all() {
            let cols = columns(rt);
            assert_eq!(cols[0].name, if rt.kind == "Event" { "Last Seen" } else { "Name" }, "{}", rt.kind);
            assert_eq!(cols.iter().filter(|c| c.format == "name").count(), 1, "{}", rt.kind);
            assert!(!std::ptr::eq(printer(rt).columns, DEFAULT_COLUMNS), "{} has its own printer", rt.kind);
            assert_eq!(cells(rt, &json!({}), now()).len(), cols.len(), "{}", rt.kind);
        }
    }

    #[test]
    fn columns_and_wide_columns_match_kubernetes() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("Namespace", &["Name", "Status", "Age"], &[]),
            (
                "Pod",
                &["Name", "Ready", "Status", "Restarts", "Age"],
                &["IP", "Node", "Nominated Node", "Readiness Gates"],
            ),
            ("Service", &["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], &["Selector"]),
            ("Endpoints", &["Name", "Endpoints", "Age"], &[]),
            ("Secret", &["Name", "Type", "Data", "Age"], &[]),
            ("ConfigMap", &["Name", "Data", "Age"], &[]),
            ("ServiceAccount", &["Name", "Secrets", "Age"], &[]),
            (
                "Node",
                &["Name", "Status", "Roles", "Age", "Version"],
                &["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"],
            ),
            (
                "Event",
                &["Last Seen", "Type", "Reason", "Object", "Message"],
                &["Subobject", "Source", "First Seen", "Count", "Name"],
            ),
            ("Deployment", &["Name", "Ready", "Up-to-date", "Available", "Age"], &["Containers", "Images", "Selector"]),
            ("ReplicaSet", &["Name", "Desired", "Current", "Ready", "Age"], &["Containers", "Images", "Selector"]),
            ("Ingress", &["Name", "Class", "Hosts", "Address", "Ports", "Age"], &[]),
            ("IngressClass", &["Name", "Controller", "Parameters", "Age"], &[]),
            ("EndpointSlice", &["Name", "AddressType", "Ports", "Endpoints", "Age"], &[]),
            ("Lease", &["Name", "Holder", "Age"], &[]),
        ];
        for (kind, always, wide) in cases {
            assert_eq!(names(kind, 0), *always, "{kind}");
            assert_eq!(names(kind, 1), *wide, "{kind}");
        }
        // Events interleave: the wide columns sit between the others.
        let events: Vec<_> = columns(rt("Event")).iter().map(|c| c.name).collect();
        assert_eq!(
            events,
            ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"]
        );
    }

    #[test]
    fn column_definitions_are_what_kubectl_reads() {
        let defs = column_definitions_json(rt("Service"));
        assert_eq!(defs.as_array().map(Vec::len), Some(7));
        assert_eq!(defs[0]["name"], "Name");
        assert_eq!(defs[0]["type"], "string");
        assert_eq!(defs[0]["format"], "name");
        assert_eq!(defs[0]["priority"], 0);
        assert!(defs[0]["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(defs[6]["name"], "Selector");
        assert_eq!(defs[6]["format"], "");
        assert_eq!(defs[6]["priority"], 1);
        let rs = column_definitions_json(rt("ReplicaSet"));
        assert_eq!(rs[1]["type"], "integer");
    }

    #[test]
    fn a_kind_without_a_printer_gets_name_and_created_at() {
        let widget = ResourceType { kind: "Widget", plural: "widgets", group: "example.com", ..*rt("Lease") };
        let cols = columns(&widget);
        assert_eq!(
            cols.iter().map(|c| (c.name, c.type_)).collect::<Vec<_>>(),
            [("Name", "string"), ("Created At", "date")]
        );
        let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2025-05-01T10:00:00Z"}});
        assert_eq!(cells(&widget, &obj, now()), [json!("w"), json!("2025-05-01T10:00:00Z")]);
    }

    #[test]
    fn namespaces() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(Duration::days(3))},
                        "status": {"phase": "Active"}});
        assert_eq!(full("Namespace", ns), json!(["default", "Active", "3d"]));
        let gone = json!({"metadata": {"name": "old", "creationTimestamp": ago(Duration::minutes(5))},
                          "status": {"phase": "Terminating"}});
        assert_eq!(full("Namespace", gone), json!(["old", "Terminating", "5m"]));
        assert_eq!(full("Namespace", json!({"metadata": {"name": "x"}})), json!(["x", "Active", "<unknown>"]));
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(Duration::seconds(5))},
               "spec": spec, "status": status})
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "web", "image": "nginx:1.27"}], "nodeName": "node-1"})
    }

    #[test]
    fn pod_creating_container() {
        let p = pod(
            one_container(),
            json!({"phase": "Pending", "hostIP": "10.0.0.5",
                   "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0, "image": "nginx:1.27",
                                          "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(
            full("Pod", p),
            json!(["web-1", "0/1", "ContainerCreating", "0", "5s", "<none>", "node-1", "<none>", "<none>"])
        );
    }

    #[test]
    fn pod_running_with_restarts() {
        let spec = json!({"containers": [{"name": "web"}, {"name": "log"}], "nodeName": "node-1"});
        let p = json!({"metadata": {"name": "web-1", "creationTimestamp": ago(Duration::days(3))},
            "spec": spec,
            "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "web", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(Duration::days(3))}}},
                    {"name": "log", "ready": true, "restartCount": 5, "state": {"running": {"startedAt": ago(Duration::minutes(5))}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(Duration::minutes(5))}}}]}});
        assert_eq!(
            full("Pod", p),
            json!(["web-1", "2/2", "Running", "5 (5m ago)", "3d", "10.244.1.7", "node-1", "<none>", "<none>"])
        );
    }

    #[test]
    fn pod_in_crash_loop() {
        let p = pod(
            one_container(),
            json!({"phase": "Running", "podIPs": [{"ip": "10.244.1.8"}],
                   "containerStatuses": [{"name": "web", "ready": false, "restartCount": 4,
                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                       "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(Duration::seconds(40))}}}]}),
        );
        let cells = row("Pod", p);
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "4 (40s ago)");
        assert_eq!(cells[5], "10.244.1.8", "podIPs alone give the IP");
    }

    #[test]
    fn pod_restarts_without_a_finish_time_have_no_ago() {
        let p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "web", "ready": true, "restartCount": 2,
                   "state": {"running": {}}}]}),
        );
        assert_eq!(row("Pod", p)[3], "2");
    }

    #[test]
    fn pod_that_completed_or_failed() {
        let done = pod(
            one_container(),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": ago(Duration::seconds(2))}}}]}),
        );
        assert_eq!(row("Pod", done.clone())[1..4], [json!("0/1"), json!("Completed"), json!("0")]);
        let failed = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        assert_eq!(row("Pod", failed)[2], "Error");
        let killed = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [{"name": "web", "state": {"terminated": {"exitCode": 137}}}]}),
        );
        assert_eq!(row("Pod", killed)[2], "ExitCode:137");
        let signalled = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [{"name": "web", "state": {"terminated": {"exitCode": 0, "signal": 9}}}]}),
        );
        assert_eq!(row("Pod", signalled)[2], "Signal:9");
        // A finished pod being deleted keeps its final status.
        let mut deleting = done;
        deleting["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(1)));
        assert_eq!(row("Pod", deleting)[2], "Completed");
    }

    #[test]
    fn pod_with_a_completed_container_and_a_running_one() {
        let spec = json!({"containers": [{"name": "job"}, {"name": "web"}]});
        let statuses = json!([
            {"name": "job", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "web", "ready": true, "state": {"running": {}}}]);
        let ready = pod(
            spec.clone(),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": statuses}),
        );
        assert_eq!(row("Pod", ready)[1..3], [json!("1/2"), json!("Running")]);
        let not_ready = pod(
            spec,
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": statuses}),
        );
        assert_eq!(row("Pod", not_ready)[2], "NotReady");
    }

    #[test]
    fn pod_being_deleted_is_terminating() {
        let mut p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                   "state": {"running": {}}}]}),
        );
        p["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(1)));
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        assert_eq!(row("Pod", p.clone())[1..3], [json!("1/1"), json!("Terminating")]);
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(row("Pod", p)[2], "Unknown");
    }

    #[test]
    fn pod_pending_and_gated() {
        let p = pod(json!({"containers": [{"name": "web"}]}), json!({"phase": "Pending"}));
        assert_eq!(
            full("Pod", p),
            json!(["web-1", "0/1", "Pending", "0", "5s", "<none>", "<none>", "<none>", "<none>"])
        );
        let gated = pod(
            json!({"containers": [{"name": "web"}], "schedulingGates": [{"name": "example.com/wait"}]}),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(row("Pod", gated)[2], "SchedulingGated");
        let evicted = pod(one_container(), json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(row("Pod", evicted)[2], "Evicted");
    }

    #[test]
    fn pod_initializing() {
        let spec = json!({"initContainers": [{"name": "migrate"}, {"name": "seed"}], "containers": [{"name": "web"}]});
        let waiting = json!({"waiting": {"reason": "PodInitializing"}});
        let running = pod(
            spec.clone(),
            json!({"phase": "Pending",
                   "initContainerStatuses": [{"name": "migrate", "ready": false, "restartCount": 0, "state": {"running": {}}},
                                             {"name": "seed", "ready": false, "restartCount": 0, "state": waiting}],
                   "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0, "state": waiting}]}),
        );
        assert_eq!(row("Pod", running)[1..4], [json!("0/1"), json!("Init:0/2"), json!("0")]);
        let second = pod(
            spec.clone(),
            json!({"phase": "Pending",
                   "initContainerStatuses": [{"name": "migrate", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                                             {"name": "seed", "state": {"running": {}}}]}),
        );
        assert_eq!(row("Pod", second)[2], "Init:1/2");
        let crashing = pod(
            spec.clone(),
            json!({"phase": "Pending",
                   "initContainerStatuses": [{"name": "migrate", "restartCount": 3,
                       "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                       "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(Duration::seconds(30))}}},
                       {"name": "seed", "state": waiting}],
                   "containerStatuses": [{"name": "web", "state": waiting}]}),
        );
        assert_eq!(row("Pod", crashing)[2..4], [json!("Init:CrashLoopBackOff"), json!("3 (30s ago)")]);
        let failed = pod(
            spec,
            json!({"phase": "Pending",
                   "initContainerStatuses": [{"name": "migrate", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}),
        );
        assert_eq!(row("Pod", failed)[2], "Init:Error");
    }

    #[test]
    fn pod_with_a_sidecar_counts_it_as_a_container() {
        let p = pod(
            json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "web"}]}),
            json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                   "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                       "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::hours(2))}}}],
                   "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        assert_eq!(row("Pod", p)[1..4], [json!("2/2"), json!("Running"), json!("1 (120m ago)")]);
    }

    #[test]
    fn pod_readiness_gates_and_nomination() {
        let p = pod(
            json!({"containers": [{"name": "web"}],
                   "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]}),
            json!({"phase": "Pending", "nominatedNodeName": "node-2",
                   "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/dns", "status": "False"}]}),
        );
        let cells = row("Pod", p);
        assert_eq!(cells[7], "node-2");
        assert_eq!(cells[8], "1/2");
    }

    fn service(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": ago(Duration::days(3))}, "spec": spec, "status": status})
    }

    #[test]
    fn services() {
        let kubernetes = service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                   "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(
            full("Service", kubernetes),
            json!(["web", "ClusterIP", "10.96.0.1", "<none>", "443/TCP", "3d", "<none>"])
        );
        let node_port = service(
            json!({"type": "NodePort", "clusterIP": "10.96.0.14",
                   "ports": [{"port": 80, "nodePort": 32213, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                   "selector": {"tier": "fe", "app": "web"}}),
            json!({}),
        );
        assert_eq!(
            full("Service", node_port),
            json!(["web", "NodePort", "10.96.0.14", "<none>", "80:32213/TCP,53/UDP", "3d", "app=web,tier=fe"])
        );
        let headless =
            service(json!({"clusterIP": "None", "ports": [{"port": 80}], "selector": {"app": "db"}}), json!({}));
        assert_eq!(
            row("Service", headless)[1..5],
            [json!("ClusterIP"), json!("None"), json!("<none>"), json!("80/TCP")]
        );
        let with_external = service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.20", "externalIPs": ["192.0.2.1", "192.0.2.2"], "ports": [{"port": 80}]}),
            json!({}),
        );
        assert_eq!(row("Service", with_external)[3], "192.0.2.1,192.0.2.2");
    }

    #[test]
    fn load_balancer_and_external_name_services() {
        let pending = service(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.30", "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(row("Service", pending)[3..5], [json!("<pending>"), json!("80:31000/TCP")]);
        let ready = service(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.30", "ports": [{"port": 80, "nodePort": 31000}]}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.10"}]}}),
        );
        // The server prints wide, so long addresses are not cut to 16 characters.
        assert_eq!(row("Service", ready)[3], "203.0.113.10,lb.example.com");
        let both = service(
            json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.9"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}),
        );
        assert_eq!(row("Service", both)[3], "203.0.113.10,192.0.2.9");
        let external = service(json!({"type": "ExternalName", "externalName": "db.example.com"}), json!({}));
        assert_eq!(
            full("Service", external),
            json!(["web", "ExternalName", "<none>", "db.example.com", "<none>", "3d", "<none>"])
        );
    }

    #[test]
    fn endpoints() {
        let addresses: Vec<Value> = (1..=5).map(|i| json!({"ip": format!("10.244.0.{i}")})).collect();
        let many = json!({"metadata": {"name": "web", "creationTimestamp": ago(Duration::hours(20))},
                          "subsets": [{"addresses": addresses, "ports": [{"port": 80, "protocol": "TCP"}]}]});
        assert_eq!(
            full("Endpoints", many),
            json!(["web", "10.244.0.1:80,10.244.0.2:80,10.244.0.3:80 + 2 more...", "20h"])
        );
        let two_ports = json!({"metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.244.0.1"}, {"ip": "10.244.0.2"}],
                         "notReadyAddresses": [{"ip": "10.244.0.9"}],
                         "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}]});
        assert_eq!(row("Endpoints", two_ports)[1], "10.244.0.1:80,10.244.0.2:80,10.244.0.1:443 + 1 more...");
        let exactly_three = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}, {"ip": "fd00::2"}, {"ip": "fd00::3"}],
                                                "ports": [{"port": 8080}]}]});
        assert_eq!(row("Endpoints", exactly_three)[1], "[fd00::1]:8080,[fd00::2]:8080,[fd00::3]:8080");
        let headless = json!({"subsets": [{"addresses": [{"ip": "10.244.0.1"}]}]});
        assert_eq!(row("Endpoints", headless)[1], "10.244.0.1");
        let none = json!({"metadata": {"name": "web"}});
        assert_eq!(row("Endpoints", none)[1], "<none>");
    }

    #[test]
    fn secrets_and_configmaps() {
        let secret = json!({"metadata": {"name": "db", "creationTimestamp": ago(Duration::minutes(10))},
                            "type": "Opaque", "data": {"user": "YWRtaW4=", "password": "czNjcjN0"}});
        assert_eq!(full("Secret", secret), json!(["db", "Opaque", 2, "10m"]));
        let tls = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                         "data": {"tls.crt": "", "tls.key": ""}, "stringData": {"extra": "x"}});
        assert_eq!(row("Secret", tls)[1..3], [json!("kubernetes.io/tls"), json!(2)]);
        let empty = json!({"metadata": {"name": "empty"}});
        assert_eq!(row("Secret", empty)[1..3], [json!("Opaque"), json!(0)]);

        let cm = json!({"metadata": {"name": "kube-root-ca.crt", "creationTimestamp": ago(Duration::days(3))},
                        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"}});
        assert_eq!(full("ConfigMap", cm), json!(["kube-root-ca.crt", 1, "3d"]));
        let mixed = json!({"metadata": {"name": "app"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AAE="}});
        assert_eq!(row("ConfigMap", mixed)[1], 3);
    }

    #[test]
    fn nodes() {
        let node = json!({"metadata": {"name": "node-1", "creationTimestamp": ago(Duration::days(3)),
                "labels": {"kubernetes.io/hostname": "node-1", "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "node-1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0+skiff", "osImage": "Ubuntu 24.04.1 LTS",
                             "kernelVersion": "6.8.0-45-generic", "containerRuntimeVersion": "containerd://1.7.22"}}});
        assert_eq!(
            full("Node", node),
            json!([
                "node-1",
                "Ready",
                "control-plane",
                "3d",
                "v1.33.0+skiff",
                "10.0.0.5",
                "<none>",
                "Ubuntu 24.04.1 LTS",
                "6.8.0-45-generic",
                "containerd://1.7.22"
            ])
        );
        let cordoned = json!({"metadata": {"name": "node-2",
                "labels": {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/etcd": "true", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                       "addresses": [{"type": "ExternalIP", "address": "198.51.100.7"}]}});
        assert_eq!(
            full("Node", cordoned),
            json!([
                "node-2",
                "NotReady,SchedulingDisabled",
                "etcd,worker",
                "<unknown>",
                "",
                "<none>",
                "198.51.100.7",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ])
        );
        let new = json!({"metadata": {"name": "node-3", "labels": {"kubernetes.io/role": "master"}}});
        assert_eq!(row("Node", new)[1..3], [json!("Unknown"), json!("master")]);
        let bare = json!({"metadata": {"name": "node-4"}, "spec": {"unschedulable": true}});
        assert_eq!(row("Node", bare)[1..3], [json!("Unknown,SchedulingDisabled"), json!("<none>")]);
    }

    #[test]
    fn core_events() {
        let ev = json!({"metadata": {"name": "web-1.17f3a2b4c5d6e7f8", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "message": "Container image \"nginx:1.27\" already present on machine\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(Duration::minutes(10)), "lastTimestamp": ago(Duration::minutes(2)),
            "count": 3, "type": "Normal"});
        assert_eq!(
            full("Event", ev),
            json!([
                "2m",
                "Normal",
                "Pulled",
                "pod/web-1",
                "spec.containers{web}",
                "kubelet, node-1",
                "Container image \"nginx:1.27\" already present on machine",
                "10m",
                3,
                "web-1.17f3a2b4c5d6e7f8"
            ])
        );
        let scaled = json!({"metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Deployment", "name": "web"}, "reason": "ScalingReplicaSet",
            "message": "Scaled up replica set web-5d4f8b7c9d from 0 to 3", "source": {"component": "deployment-controller"},
            "firstTimestamp": ago(Duration::seconds(30)), "type": "Normal"});
        assert_eq!(
            full("Event", scaled),
            json!([
                "30s",
                "Normal",
                "ScalingReplicaSet",
                "deployment/web",
                "",
                "deployment-controller",
                "Scaled up replica set web-5d4f8b7c9d from 0 to 3",
                "30s",
                1,
                "web.1"
            ])
        );
    }

    #[test]
    fn events_of_the_new_api() {
        let once = json!({"metadata": {"name": "node-1.abc"},
            "involvedObject": {"kind": "Node", "name": "node-1"}, "reason": "RegisteredNode", "type": "Normal",
            "message": "Node node-1 event: Registered Node node-1 in Controller",
            "eventTime": "2025-06-01T11:54:59.500000Z", "firstTimestamp": null, "lastTimestamp": null,
            "reportingComponent": "node-controller", "reportingInstance": "skiff-server", "source": {}});
        let cells = row("Event", once);
        assert_eq!(cells[0], "5m");
        assert_eq!(cells[3], "node/node-1");
        assert_eq!(cells[5], "node-controller, skiff-server");
        assert_eq!(cells[7], "5m");
        assert_eq!(cells[8], 1);
        let series = json!({"metadata": {"name": "web-1.def"},
            "involvedObject": {"kind": "Pod", "name": "web-1"}, "reason": "BackOff", "type": "Warning",
            "message": "Back-off restarting failed container", "eventTime": ago(Duration::hours(1)),
            "series": {"count": 42, "lastObservedTime": "2025-06-01T11:59:20.000000Z"}});
        let cells = row("Event", series);
        assert_eq!(cells[0], "40s");
        assert_eq!(cells[7], "60m");
        assert_eq!(cells[8], 42);
        let unknown = json!({"metadata": {"name": "x"}, "involvedObject": {"kind": "Namespace"}});
        let cells = row("Event", unknown);
        assert_eq!(cells[0], "<unknown>");
        assert_eq!(cells[3], "namespace");
    }

    #[test]
    fn events_k8s_io_prints_as_core_events() {
        let ev_v1 = catalogue::find("events.k8s.io", "v1", "events").expect("events.k8s.io/v1");
        assert_eq!(columns(ev_v1), columns(rt("Event")));
        let view = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web-1.def"},
            "eventTime": ago(Duration::minutes(10)), "reportingController": "skiff.io/agent",
            "reportingInstance": "node-1", "action": "Pulling", "reason": "Pulled", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "note": "pulled", "deprecatedCount": 2, "deprecatedLastTimestamp": ago(Duration::minutes(1))});
        let cells = cells(ev_v1, &view, now());
        assert_eq!(
            Value::Array(cells),
            json!([
                "60s",
                "Normal",
                "Pulled",
                "pod/web-1",
                "spec.containers{web}",
                "skiff.io/agent, node-1",
                "pulled",
                "10m",
                2,
                "web-1.def"
            ])
        );
    }

    fn template(containers: Value) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}})
    }

    #[test]
    fn deployments() {
        let deploy = json!({"metadata": {"name": "web", "creationTimestamp": ago(Duration::minutes(5) + Duration::seconds(20))},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": template(json!([{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox:1.36"}]))},
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}});
        assert_eq!(
            full("Deployment", deploy),
            json!(["web", "2/3", 3, 2, "5m20s", "web,log", "nginx:1.27,busybox:1.36", "app=web"])
        );
        let fresh = json!({"metadata": {"name": "api"},
            "spec": {"selector": {"matchLabels": {"app": "api"},
                                  "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                                       {"key": "canary", "operator": "DoesNotExist"},
                                                       {"key": "env", "operator": "NotIn", "values": ["dev"]}]},
                     "template": template(json!([{"name": "api", "image": "api:2"}]))}});
        // Requirements sort by key; `!` is not part of the key.
        assert_eq!(
            full("Deployment", fresh),
            json!(["api", "0/1", 0, 0, "<unknown>", "api", "api:2", "app=api,!canary,env notin (dev),tier in (be,fe)"])
        );
        let scaled_to_zero = json!({"metadata": {"name": "idle"}, "spec": {"replicas": 0}});
        assert_eq!(row("Deployment", scaled_to_zero)[1], "0/0");
        let invalid = json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
        assert_eq!(row("Deployment", invalid)[7], "<invalid>");
    }

    #[test]
    fn replicasets() {
        let rs = json!({"metadata": {"name": "web-5d4f8b7c9d", "creationTimestamp": ago(Duration::hours(1))},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"pod-template-hash": "5d4f8b7c9d", "app": "web"}},
                     "template": template(json!([{"name": "web", "image": "nginx:1.27"}]))},
            "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2}});
        assert_eq!(
            full("ReplicaSet", rs),
            json!(["web-5d4f8b7c9d", 3, 3, 2, "60m", "web", "nginx:1.27", "app=web,pod-template-hash=5d4f8b7c9d"])
        );
        let old = json!({"metadata": {"name": "web-old"}, "spec": {"replicas": 0, "selector": {}}, "status": {"replicas": 0}});
        assert_eq!(full("ReplicaSet", old), json!(["web-old", 0, 0, 0, "<unknown>", "", "", "<none>"]));
    }

    #[test]
    fn ingresses() {
        let ing = json!({"metadata": {"name": "web", "creationTimestamp": ago(Duration::hours(5) + Duration::minutes(3))},
            "spec": {"ingressClassName": "nginx",
                     "tls": [{"hosts": ["foo.example.com"], "secretName": "foo-tls"}],
                     "rules": [{"host": "foo.example.com", "http": {"paths": []}}, {"host": "bar.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.49.2"}]}}});
        assert_eq!(
            full("Ingress", ing),
            json!(["web", "nginx", "foo.example.com,bar.example.com", "192.168.49.2", "80, 443", "5h3m"])
        );
        let bare = json!({"metadata": {"name": "catch-all", "creationTimestamp": ago(Duration::seconds(30))},
                          "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}});
        assert_eq!(full("Ingress", bare), json!(["catch-all", "<none>", "*", "", "80", "30s"]));
        let many = json!({"spec": {"rules": [{"host": "a.example"}, {"host": "b.example"}, {"host": "c.example"}, {"host": "d.example"}]},
                          "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "10.0.0.1"}]}}});
        let cells = row("Ingress", many);
        assert_eq!(cells[2], "a.example,b.example,c.example + 1 more...");
        assert_eq!(cells[3], "10.0.0.1,lb.example.com");
        // A rule without a host is skipped without counting as "more".
        let gaps =
            json!({"spec": {"rules": [{"host": "a.example"}, {}, {"host": "b.example"}, {"host": "c.example"}]}});
        assert_eq!(row("Ingress", gaps)[2], "a.example,b.example,c.example");
    }

    #[test]
    fn ingress_classes() {
        let class = json!({"metadata": {"name": "nginx", "creationTimestamp": ago(Duration::days(2))},
                           "spec": {"controller": "k8s.io/ingress-nginx"}});
        assert_eq!(full("IngressClass", class), json!(["nginx", "k8s.io/ingress-nginx", "<none>", "2d"]));
        let with_params = json!({"metadata": {"name": "external-lb"},
            "spec": {"controller": "example.com/ingress-controller",
                     "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
        assert_eq!(row("IngressClass", with_params)[2], "IngressParameters.k8s.example.com/external-lb");
        let core_params = json!({"spec": {"parameters": {"kind": "ConfigMap", "name": "cfg", "scope": "Namespace", "namespace": "x"}}});
        assert_eq!(row("IngressClass", core_params)[2], "ConfigMap/cfg");
    }

    #[test]
    fn endpoint_slices() {
        let slice = json!({"metadata": {"name": "web-abcde", "creationTimestamp": ago(Duration::minutes(5))},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                          {"addresses": ["10.244.0.6"], "conditions": {"ready": false}}]});
        assert_eq!(full("EndpointSlice", slice), json!(["web-abcde", "IPv4", "80", "10.244.0.5,10.244.0.6", "5m"]));
        let empty = json!({"metadata": {"name": "web-empty"}, "addressType": "IPv6", "ports": null, "endpoints": []});
        assert_eq!(row("EndpointSlice", empty)[1..4], [json!("IPv6"), json!("<unset>"), json!("<unset>")]);
        let endpoints: Vec<Value> = (1..=5).map(|i| json!({"addresses": [format!("10.0.0.{i}")]})).collect();
        let big = json!({"addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "metrics"}, {}, {"port": 9090}],
            "endpoints": endpoints});
        let cells = row("EndpointSlice", big);
        assert_eq!(cells[2], "80,metrics,* + 1 more...");
        assert_eq!(cells[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...");
    }

    #[test]
    fn leases() {
        let lease = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease", "creationTimestamp": ago(Duration::days(3))},
                           "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
        assert_eq!(full("Lease", lease), json!(["node-1", "node-1", "3d"]));
        let free = json!({"metadata": {"name": "skiff-scheduler"}, "spec": {}});
        assert_eq!(full("Lease", free), json!(["skiff-scheduler", "", "<unknown>"]));
    }
}
