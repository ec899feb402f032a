//! Startup, readiness and liveness probes, with the kubelet's semantics:
//! a probe runs every periodSeconds once initialDelaySeconds have passed since
//! the container started; a result changes only after successThreshold
//! (failureThreshold) consecutive successes (failures); readiness starts as
//! failure, liveness as success, startup as unknown; readiness and liveness
//! wait for the startup probe; a failed liveness or startup probe holds the
//! prober until the container is replaced. Each failed probe is a Warning
//! `Unhealthy` event.
//!
//! httpGet and tcpSocket connect from inside the pod's network namespace
//! (skiff-net's `run_in`). exec probes run their command in the container
//! through the runtime's exec (the container's user, env and working
//! directory): exit 0 is success, anything else failure with the command's
//! output (at most [`MAX_OUTPUT`] bytes) in the event; timeoutSeconds kills
//! the command and counts as a failure. A probe that cannot run at all (the
//! runtime refused the exec) is an `errored` event and is not counted, as
//! the kubelet does. grpc probes call grpc.health.v1.Health/Check over
//! HTTP/2 on the pod's address from its namespace ([`grpc_check`]): only
//! SERVING is success, with the kubelet's messages for every failure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use super::backoff::go_duration;
use crate::runtime::{ExecSpec, Runtime};

/// How much of an exec probe's or hook's output is kept (the kubelet's 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }

    pub fn probe(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => c.startup_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
        }
    }

    fn initial(self) -> Outcome {
        match self {
            ProbeKind::Startup => Outcome::Unknown,
            ProbeKind::Readiness => Outcome::Failure,
            ProbeKind::Liveness => Outcome::Success,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

/// A probe's timing, with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success: u32,
    pub failure: u32,
}

impl Thresholds {
    pub fn of(p: &Probe, kind: ProbeKind) -> Thresholds {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.filter(|v| *v > 0).unwrap_or(d) as u64);
        Thresholds {
            initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            // only readiness may ask for more than one success
            success: if kind == ProbeKind::Readiness {
                p.success_threshold.filter(|v| *v > 0).unwrap_or(1) as u32
            } else {
                1
            },
            failure: p.failure_threshold.filter(|v| *v > 0).unwrap_or(3) as u32,
        }
    }
}

/// The kubelet's probe worker bookkeeping: consecutive results and when the
/// reported result changes.
#[derive(Debug, Clone)]
pub struct Counter {
    kind: ProbeKind,
    last: Outcome,
    run: u32,
    pub result: Outcome,
    pub on_hold: bool,
}

impl Counter {
    pub fn new(kind: ProbeKind, initial: Option<Outcome>) -> Counter {
        Counter { kind, last: Outcome::Unknown, run: 0, result: initial.unwrap_or(kind.initial()), on_hold: false }
    }

    /// Record one probe outcome; returns the new result when it changes.
    pub fn observe(&mut self, outcome: Outcome, th: &Thresholds) -> Option<Outcome> {
        if outcome == self.last {
            self.run += 1;
        } else {
            self.last = outcome;
            self.run = 1;
        }
        if (outcome == Outcome::Failure && self.run < th.failure)
            || (outcome == Outcome::Success && self.run < th.success)
        {
            return None;
        }
        let changed = (self.result != outcome).then_some(outcome);
        self.result = outcome;
        if outcome == Outcome::Failure && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            self.on_hold = true;
            self.run = 0;
        }
        changed
    }
}

/// Probe results of a pod's containers, keyed by container id.
#[derive(Debug, Default)]
pub struct Results {
    map: Mutex<HashMap<(String, ProbeKind), Outcome>>,
}

impl Results {
    pub fn get(&self, id: &str, kind: ProbeKind) -> Option<Outcome> {
        self.map.lock().ok()?.get(&(id.to_string(), kind)).copied()
    }
    pub fn set(&self, id: &str, kind: ProbeKind, o: Outcome) {
        if let Ok(mut m) = self.map.lock() {
            m.insert((id.to_string(), kind), o);
        }
    }
    pub fn forget(&self, id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.retain(|(i, _), _| i != id);
        }
    }
}

/// Where a probe connects: the pod's network namespace (None: the node's,
/// for hostNetwork pods) and its address.
#[derive(Debug, Clone)]
pub struct Target {
    pub netns: Option<PathBuf>,
    pub pod_ip: Option<IpAddr>,
}

/// Reports a probe's events (type Warning, reason, message).
pub type Report = Arc<dyn Fn(&'static str, &'static str, String) + Send + Sync>;

/// What a probe worker needs.
pub struct Worker {
    pub kind: ProbeKind,
    pub probe: Probe,
    pub container: Container,
    pub container_id: String,
    pub started_at: DateTime<Utc>,
    pub target: Target,
    pub results: Arc<Results>,
    pub notify: Arc<Notify>,
    pub report: Report,
    /// The result to start from (an adopted container keeps its readiness).
    pub initial: Option<Outcome>,
    /// Runs exec probes.
    pub runtime: Arc<dyn Runtime>,
}

/// Why a probe cannot run here, if it cannot.
pub fn unsupported(p: &Probe) -> Option<&'static str> {
    if p.http_get.is_none() && p.tcp_socket.is_none() && p.exec.is_none() && p.grpc.is_none() {
        Some("the probe has no handler")
    } else {
        None
    }
}

impl Worker {
    pub async fn run(self) {
        let th = Thresholds::of(&self.probe, self.kind);
        let mut counter = Counter::new(self.kind, self.initial);
        self.results.set(&self.container_id, self.kind, counter.result);
        if let Some(why) = unsupported(&self.probe) {
            (self.report)(
                "Warning",
                "Unhealthy",
                format!(
                    "{} probe errored: {why}; the container is treated as {}",
                    self.kind.title(),
                    match self.kind {
                        ProbeKind::Liveness => "alive",
                        _ => "not ready",
                    }
                ),
            );
            return;
        }
        let has_startup = self.container.startup_probe.is_some();
        loop {
            let waiting_for_startup = has_startup
                && self.kind != ProbeKind::Startup
                && self.results.get(&self.container_id, ProbeKind::Startup) != Some(Outcome::Success);
            let too_early = (Utc::now() - self.started_at).to_std().unwrap_or(Duration::ZERO) < th.initial_delay;
            if !waiting_for_startup && !too_early {
                let (outcome, output) = match &self.probe.exec {
                    Some(e) => {
                        let command = e.command.clone().unwrap_or_default();
                        exec_probe(self.runtime.as_ref(), &self.container_id, &command, th.timeout).await
                    }
                    None => run_probe(&self.probe, &self.container, &self.target, th.timeout).await,
                };
                if outcome == Outcome::Failure {
                    (self.report)("Warning", "Unhealthy", format!("{} probe failed: {output}", self.kind.title()));
                }
                if outcome == Outcome::Unknown {
                    // the kubelet throws an errored probe's result away
                    (self.report)("Warning", "Unhealthy", format!("{} probe errored: {output}", self.kind.title()));
                } else if let Some(new) = counter.observe(outcome, &th) {
                    tracing::debug!(container = %self.container.name, kind = ?self.kind, result = ?new, "probe result changed");
                    self.results.set(&self.container_id, self.kind, new);
                    self.notify.notify_one();
                }
                if counter.on_hold || (self.kind == ProbeKind::Startup && counter.result == Outcome::Success) {
                    return;
                }
            }
            tokio::time::sleep(th.period).await;
        }
    }
}

fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {name:?} in container {:?}", c.name))
        }
    }
}

fn default_host(t: &Target) -> IpAddr {
    t.pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn dial_error(addr: SocketAddr, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "i/o timeout".to_string(),
        _ => format!("connect: {e}"),
    };
    format!("dial tcp {addr}: {what}")
}

/// A TCP connection to `addr` from the probe's namespace.
pub async fn connect(target: &Target, addr: SocketAddr, timeout: Duration) -> Result<tokio::net::TcpStream, String> {
    let std_stream = match &target.netns {
        Some(ns) => {
            let ns = ns.clone();
            tokio::task::spawn_blocking(move || skiff_net::netns::connect_tcp(&ns, addr, timeout))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| dial_error(addr, &e))?
        }
        None => {
            return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(r) => r.map_err(|e| dial_error(addr, &e)),
                Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
            }
        }
    };
    std_stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(std_stream).map_err(|e| e.to_string())
}

/// Read `r` to its end, keeping at most [`MAX_OUTPUT`] bytes in `buf` (the
/// rest is read and dropped, so that the process never blocks on a full pipe).
async fn drain(r: Option<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>>, buf: &Mutex<Vec<u8>>) {
    let Some(mut r) = r else { return };
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut b) = buf.lock() {
                    let room = MAX_OUTPUT.saturating_sub(b.len());
                    b.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
    }
}

/// Why an exec did not give an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// It ran longer than its timeout and was killed.
    TimedOut,
    /// The runtime could not run it.
    Failed(String),
}

/// Run `command` in container `id` with stdout and stderr captured together
/// (at most [`MAX_OUTPUT`] bytes); returns its exit code and output. With a
/// timeout, a command still running then is killed. The exec process is
/// removed in every case.
pub async fn exec_in(
    rt: &dyn Runtime,
    id: &str,
    command: &[String],
    timeout: Option<Duration>,
) -> Result<(i32, String), ExecError> {
    if command.is_empty() {
        return Err(ExecError::Failed("the exec handler has no command".into()));
    }
    let spec = ExecSpec { command: command.to_vec(), stdout: true, stderr: true, ..Default::default() };
    let exec = rt.exec(id, &spec).await.map_err(|e| ExecError::Failed(e.to_string()))?;
    let control = exec.control.clone();
    let buf = Mutex::new(Vec::new());
    let run = async {
        let reads = async { tokio::join!(drain(exec.stdout, &buf), drain(exec.stderr, &buf)) };
        let wait = control.wait();
        tokio::pin!(reads, wait);
        let (mut code, mut read) = (None, false);
        loop {
            tokio::select! {
                c = &mut wait, if code.is_none() => {
                    code = Some(c);
                    if read { break; }
                }
                _ = &mut reads, if !read => {
                    read = true;
                    if code.is_some() { break; }
                }
                // a background child may hold the pipes open after the command exited
                _ = tokio::time::sleep(Duration::from_secs(1)), if code.is_some() => break,
            }
        }
        code.unwrap_or(Ok(-1))
    };
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, run).await.map_err(|_| ExecError::TimedOut),
        None => Ok(run.await),
    };
    control.finish().await;
    let code = result?.map_err(|e| ExecError::Failed(e.to_string()))?;
    let out = buf.into_inner().unwrap_or_default();
    Ok((code, String::from_utf8_lossy(&out).trim().to_string()))
}

/// Run an exec probe once, as the kubelet does: exit 0 is success; a
/// timeout is a failure; a command the runtime could not run is Unknown.
pub async fn exec_probe(rt: &dyn Runtime, id: &str, command: &[String], timeout: Duration) -> (Outcome, String) {
    match exec_in(rt, id, command, Some(timeout)).await {
        Ok((0, out)) => (Outcome::Success, out),
        Ok((code, out)) if out.is_empty() => {
            (Outcome::Failure, format!("command {:?} exited with {code}", command.join(" ")))
        }
        Ok((_, out)) => (Outcome::Failure, out),
        Err(ExecError::TimedOut) => (Outcome::Failure, format!("command {:?} timed out", command.join(" "))),
        Err(ExecError::Failed(e)) => (Outcome::Unknown, e),
    }
}

/// Run a probe once.
pub async fn run_probe(p: &Probe, c: &Container, target: &Target, timeout: Duration) -> (Outcome, String) {
    if let Some(t) = &p.tcp_socket {
        let host = t.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(default_host(target));
        let port = match port(&t.port, c) {
            Ok(p) => p,
            Err(e) => return (Outcome::Failure, e),
        };
        return match connect(target, SocketAddr::new(host, port), timeout).await {
            Ok(_) => (Outcome::Success, String::new()),
            Err(e) => (Outcome::Failure, e),
        };
    }
    if let Some(h) = &p.http_get {
        return match http_get(h, c, target, timeout).await {
            Ok(code) if (200..400).contains(&code) => (Outcome::Success, String::new()),
            Ok(code) => (Outcome::Failure, format!("HTTP probe failed with statuscode: {code}")),
            Err(e) => (Outcome::Failure, e),
        };
    }
    if let Some(g) = &p.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return (Outcome::Failure, format!("invalid port {}", g.port));
        };
        let addr = SocketAddr::new(default_host(target), port);
        return grpc_check(target, addr, g.service.as_deref().unwrap_or(""), timeout).await;
    }
    (Outcome::Unknown, unsupported(p).unwrap_or("unsupported probe").to_string())
}

/// gRPC status code names, as grpc-go prints them.
fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(code as usize).copied().unwrap_or("Unknown")
}

/// grpc.health.v1.HealthCheckResponse.ServingStatus names.
fn serving_status_name(v: u64) -> String {
    match v {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// A gRPC call's failure: its status code and message.
#[derive(Debug, PartialEq, Eq)]
struct GrpcStatus {
    code: u32,
    message: String,
}

/// The gRPC code for a non-200 HTTP answer (gRPC's HTTP-to-gRPC mapping).
fn code_of_http(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// The status a response's headers or trailers carry, if any.
fn grpc_status_of(h: &http::HeaderMap) -> Option<GrpcStatus> {
    let code = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let message = h.get("grpc-message").and_then(|m| m.to_str().ok()).map(percent_decode).unwrap_or_default();
    Some(GrpcStatus { code, message })
}

/// grpc-message is percent-encoded UTF-8.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A protobuf varint at the start of `b`: its value and length.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The `status` field (1) of an encoded HealthCheckResponse; 0 (UNKNOWN)
/// when absent, as proto3 defaults it. Other fields are skipped.
fn health_status(mut msg: &[u8]) -> Result<u64, String> {
    let bad = || "grpc: failed to unmarshal the received message".to_string();
    let mut status = 0;
    while !msg.is_empty() {
        let (key, n) = varint(msg).ok_or_else(bad)?;
        msg = &msg[n..];
        match key & 7 {
            0 => {
                let (v, n) = varint(msg).ok_or_else(bad)?;
                if key >> 3 == 1 {
                    status = v;
                }
                msg = &msg[n..];
            }
            1 => msg = msg.get(8..).ok_or_else(bad)?,
            2 => {
                let (len, n) = varint(msg).ok_or_else(bad)?;
                let end = n.checked_add(usize::try_from(len).map_err(|_| bad())?).ok_or_else(bad)?;
                msg = msg.get(end..).ok_or_else(bad)?;
            }
            5 => msg = msg.get(4..).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(status)
}

/// An encoded HealthCheckRequest in its gRPC frame (uncompressed).
fn health_request(service: &str) -> bytes::Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut len = service.len() as u64;
        while len >= 0x80 {
            msg.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        msg.push(len as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed.into()
}

/// One Health/Check call on an HTTP/2 connection: the serving status, or
/// the call's gRPC status when it failed.
async fn health_call<S>(stream: S, addr: SocketAddr, service: &str) -> Result<Result<u64, GrpcStatus>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "kube-probe/1.33 grpc-skiff")
        .body(http_body_util::Full::new(health_request(service)))
        .map_err(|e| e.to_string())?;
    let result = async {
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if res.status() != http::StatusCode::OK {
            let code = code_of_http(res.status().as_u16());
            let message = format!("unexpected HTTP status code received from server: {}", res.status().as_u16());
            return Ok(Err(GrpcStatus { code, message }));
        }
        // trailers-only: the status is in the headers
        if let Some(st) = grpc_status_of(res.headers()).filter(|s| s.code != 0) {
            return Ok(Err(st));
        }
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        let status = body.trailers().and_then(grpc_status_of);
        match status {
            Some(st) if st.code != 0 => return Ok(Err(st)),
            None => {
                let message = "server closed the stream without sending trailers".to_string();
                return Ok(Err(GrpcStatus { code: 13, message }));
            }
            Some(_) => {}
        }
        let data = body.to_bytes();
        let frame = data.get(5..).filter(|_| data.first() == Some(&0));
        let Some(msg) = frame else {
            let message = "grpc: failed to decode the received message".to_string();
            return Ok(Err(GrpcStatus { code: 13, message }));
        };
        Ok(health_status(msg).map_err(|message| GrpcStatus { code: 13, message }))
    }
    .await;
    task.abort();
    result
}

/// A gRPC health check as the kubelet makes it (pkg/probe/grpc): plaintext
/// HTTP/2 to the pod's address; SERVING is success, anything else failure.
pub async fn grpc_check(target: &Target, addr: SocketAddr, service: &str, timeout: Duration) -> (Outcome, String) {
    let within = go_duration(timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, connect(target, addr, timeout)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if !e.ends_with("i/o timeout") => {
            return (Outcome::Failure, format!("error: failed to connect service at {:?}: {e}", addr.to_string()))
        }
        // the dial itself timed out, or ran past the deadline
        Ok(Err(_)) | Err(_) => {
            let msg = format!(
                "timeout: failed to connect service {:?} within {within}: context deadline exceeded",
                addr.to_string()
            );
            return (Outcome::Failure, msg);
        }
    };
    match tokio::time::timeout_at(deadline, health_call(stream, addr, service)).await {
        Err(_) => (Outcome::Failure, format!("timeout: health rpc did not complete within {within}")),
        Ok(Err(e)) => {
            (Outcome::Failure, format!("error: health rpc probe failed: rpc error: code = Unavailable desc = {e}"))
        }
        Ok(Ok(Ok(1))) => (Outcome::Success, "service healthy".into()),
        Ok(Ok(Ok(other))) => {
            (Outcome::Failure, format!("service unhealthy (responded with {:?})", serving_status_name(other)))
        }
        Ok(Ok(Err(st))) if st.code == 12 => (
            Outcome::Failure,
            format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                st.message
            ),
        ),
        Ok(Ok(Err(st))) if st.code == 4 => {
            (Outcome::Failure, format!("timeout: health rpc did not complete within {within}"))
        }
        Ok(Ok(Err(st))) => (
            Outcome::Failure,
            format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {}",
                grpc_code_name(st.code),
                st.message
            ),
        ),
    }
}

/// An HTTP GET as the kubelet's prober makes it; returns the status code.
pub async fn http_get(h: &HTTPGetAction, c: &Container, target: &Target, timeout: Duration) -> Result<u16, String> {
    let host: IpAddr = h.host.as_deref().and_then(|s| s.parse().ok()).unwrap_or(default_host(target));
    let port = port(&h.port, c)?;
    let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
    let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let addr = SocketAddr::new(host, port);
    let url = format!("{scheme}://{addr}{path}");
    let fut = async {
        let stream = connect(target, addr, timeout).await?;
        let mut req = http::Request::get(&path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "kube-probe/1.33")
            .header(http::header::ACCEPT, "*/*");
        for hd in h.http_headers.iter().flatten() {
            req = req.header(hd.name.as_str(), hd.value.as_str());
        }
        let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
        let code = if scheme == "https" {
            let tls = tokio_rustls::TlsConnector::from(crate::client::insecure_tls());
            let name = rustls::pki_types::ServerName::IpAddress(host.into());
            let s = tls.connect(name, stream).await.map_err(|e| e.to_string())?;
            send(s, req).await?
        } else {
            send(stream, req).await?
        };
        Ok::<u16, String>(code)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => Err(format!("Get {url:?}: {e}")),
        Err(_) => {
            Err(format!("Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"))
        }
    }
}

async fn send<S>(stream: S, req: http::Request<http_body_util::Empty<bytes::Bytes>>) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| e.to_string());
    task.abort();
    Ok(res?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(success: u32, failure: u32) -> Thresholds {
        Thresholds {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success,
            failure,
        }
    }

    #[test]
    fn readiness_needs_consecutive_results() {
        let mut c = Counter::new(ProbeKind::Readiness, None);
        assert_eq!(c.result, Outcome::Failure);
        let t = th(2, 3);
        assert_eq!(c.observe(Outcome::Success, &t), None);
        assert_eq!(c.observe(Outcome::Success, &t), Some(Outcome::Success));
        assert_eq!(c.observe(Outcome::Success, &t), None);
        assert_eq!(c.observe(Outcome::Failure, &t), None);
        assert_eq!(c.observe(Outcome::Failure, &t), None);
        // a success in between restarts the count
        assert_eq!(c.observe(Outcome::Success, &t), None);
        assert_eq!(c.observe(Outcome::Failure, &t), None);
        assert_eq!(c.observe(Outcome::Failure, &t), None);
        assert_eq!(c.observe(Outcome::Failure, &t), Some(Outcome::Failure));
        assert!(!c.on_hold, "readiness keeps probing");
    }

    #[test]
    fn liveness_failure_holds_until_replaced() {
        let mut c = Counter::new(ProbeKind::Liveness, None);
        assert_eq!(c.result, Outcome::Success);
        let t = th(1, 2);
        assert_eq!(c.observe(Outcome::Failure, &t), None);
        assert_eq!(c.observe(Outcome::Failure, &t), Some(Outcome::Failure));
        assert!(c.on_hold);
        let mut s = Counter::new(ProbeKind::Startup, None);
        assert_eq!(s.result, Outcome::Unknown);
        assert_eq!(s.observe(Outcome::Success, &t), Some(Outcome::Success));
    }

    #[test]
    fn defaults_as_kubernetes() {
        let p = Probe::default();
        let t = Thresholds::of(&p, ProbeKind::Liveness);
        assert_eq!(
            (t.period, t.timeout, t.success, t.failure),
            (Duration::from_secs(10), Duration::from_secs(1), 1, 3)
        );
        let p = Probe { success_threshold: Some(3), ..Default::default() };
        assert_eq!(Thresholds::of(&p, ProbeKind::Liveness).success, 1);
        assert_eq!(Thresholds::of(&p, ProbeKind::Readiness).success, 3);
    }

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({"name": "web", "ports": [{"name": "http", "containerPort": 0}]}))
            .unwrap()
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let code = if req.starts_with("GET /healthz ") && req.contains("kube-probe/") {
                        "200 OK"
                    } else {
                        "500 Oops"
                    };
                    let _ = s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
                });
            }
        });
        let mut c = container();
        c.ports.as_mut().unwrap()[0].container_port = port as i32;
        let target = Target { netns: None, pod_ip: None };
        let probe = |path: &str| -> Probe {
            serde_json::from_value(serde_json::json!({"httpGet": {"path": path, "port": "http"}})).unwrap()
        };
        let t = Duration::from_secs(2);
        assert_eq!(run_probe(&probe("/healthz"), &c, &target, t).await.0, Outcome::Success);
        let (o, msg) = run_probe(&probe("/broken"), &c, &target, t).await;
        assert_eq!((o, msg.as_str()), (Outcome::Failure, "HTTP probe failed with statuscode: 500"));
        let tcp: Probe = serde_json::from_value(serde_json::json!({"tcpSocket": {"port": port}})).unwrap();
        assert_eq!(run_probe(&tcp, &c, &target, t).await.0, Outcome::Success);
        // a closed port: connection refused, as the kubelet words it
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let tcp: Probe = serde_json::from_value(serde_json::json!({"tcpSocket": {"port": closed}})).unwrap();
        let (o, msg) = run_probe(&tcp, &c, &target, t).await;
        assert_eq!(o, Outcome::Failure);
        assert_eq!(msg, format!("dial tcp 127.0.0.1:{closed}: connect: connection refused"));
    }

    #[test]
    fn probes_need_a_handler() {
        let p: Probe = serde_json::from_value(serde_json::json!({"exec": {"command": ["true"]}})).unwrap();
        assert_eq!(unsupported(&p), None);
        let p: Probe = serde_json::from_value(serde_json::json!({"grpc": {"port": 9000}})).unwrap();
        assert_eq!(unsupported(&p), None);
        let p: Probe = serde_json::from_value(serde_json::json!({"periodSeconds": 3})).unwrap();
        assert_eq!(unsupported(&p), Some("the probe has no handler"));
    }

    #[test]
    fn grpc_wire_helpers() {
        assert_eq!(percent_decode("not%20found%"), "not found%");
        assert_eq!(health_status(&[0x08, 0x02]), Ok(2));
        // unknown fields are skipped; an empty message is UNKNOWN
        assert_eq!(health_status(&[0x12, 0x01, 0x41, 0x08, 0x01]), Ok(1));
        assert_eq!(health_status(&[]), Ok(0));
        assert!(health_status(&[0x08]).is_err());
        assert_eq!(&health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&health_request("ab")[..], &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']);
    }

    fn grpc_probe(port: u16, service: Option<&str>) -> Probe {
        serde_json::from_value(serde_json::json!({"grpc": {"port": port, "service": service}})).unwrap()
    }

    #[tokio::test]
    async fn grpc_probes_against_a_real_grpc_health_server() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        reporter.set_service_status("skiff.Down", tonic_health::ServingStatus::NotServing).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(tonic::transport::Server::builder().add_service(health).serve_with_incoming(incoming));
        let c = container();
        let target = Target { netns: None, pod_ip: None };
        let t = Duration::from_secs(2);
        let (o, msg) = run_probe(&grpc_probe(port, None), &c, &target, t).await;
        assert_eq!((o, msg.as_str()), (Outcome::Success, "service healthy"));
        let (o, msg) = run_probe(&grpc_probe(port, Some("skiff.Down")), &c, &target, t).await;
        assert_eq!((o, msg.as_str()), (Outcome::Failure, "service unhealthy (responded with \"NOT_SERVING\")"));
        let (o, msg) = run_probe(&grpc_probe(port, Some("skiff.Missing")), &c, &target, t).await;
        assert_eq!(o, Outcome::Failure);
        assert!(msg.starts_with("error: health rpc probe failed: rpc error: code = NotFound desc = "), "{msg}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (o, msg) = run_probe(&grpc_probe(closed, None), &c, &target, t).await;
        assert_eq!(o, Outcome::Failure);
        assert_eq!(
            msg,
            format!(
                "error: failed to connect service at \"127.0.0.1:{closed}\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
            )
        );
    }

    #[tokio::test]
    async fn grpc_probes_against_servers_that_are_not_health_servers() {
        use hyper::service::service_fn;
        // answers every call as grpc-go does for an unregistered service (trailers-only, 12)
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        assert_eq!(req.headers()["te"], "trailers");
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "12")
                            .header("grpc-message", "unknown%20service%20grpc.health.v1.Health")
                            .body(http_body_util::Empty::<bytes::Bytes>::new())
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let c = container();
        let target = Target { netns: None, pod_ip: None };
        let (o, msg) = run_probe(&grpc_probe(port, None), &c, &target, Duration::from_secs(2)).await;
        assert_eq!(o, Outcome::Failure);
        assert_eq!(
            msg,
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
        );
        // a plain TCP server that never speaks HTTP/2: the call times out
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let started = std::time::Instant::now();
        let (o, msg) = run_probe(&grpc_probe(silent_port, None), &c, &target, Duration::from_secs(1)).await;
        assert_eq!((o, msg.as_str()), (Outcome::Failure, "timeout: health rpc did not complete within 1s"));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
