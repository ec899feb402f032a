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
//! the kubelet does. grpc probes are not supported yet: they are reported
//! once as an event, and a container with such a readiness or startup probe
//! stays unready.

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
    if p.grpc.is_some() {
        Some("grpc probes are not supported yet")
    } else if p.http_get.is_none() && p.tcp_socket.is_none() && p.exec.is_none() {
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
    (Outcome::Unknown, unsupported(p).unwrap_or("unsupported probe").to_string())
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
    fn grpc_probes_are_reported_unsupported() {
        let p: Probe = serde_json::from_value(serde_json::json!({"exec": {"command": ["true"]}})).unwrap();
        assert_eq!(unsupported(&p), None);
        let p: Probe = serde_json::from_value(serde_json::json!({"grpc": {"port": 9000}})).unwrap();
        assert_eq!(unsupported(&p), Some("grpc probes are not supported yet"));
    }
}
