//! A private etcd for tests and benchmarks (feature `testing`): Debian's
//! `etcd` binary on loopback, with its own data directory and free ports,
//! killed by PID when dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the etcd binary is: `$SKIFF_ETCD`, else `etcd` on `PATH`, else
/// `/usr/bin/etcd`. `None` when there is none (install Debian's `etcd-server`).
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SKIFF_ETCD") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()))
}

/// PEM files etcd serves clients with: its certificate and key, and the CA
/// that client certificates must be signed by.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

/// A running single-member etcd.
pub struct EtcdServer {
    child: Option<Child>,
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<ServerTls>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

impl EtcdServer {
    /// Start an etcd in a fresh temporary directory and wait until it
    /// accepts connections.
    pub fn start() -> Result<EtcdServer, String> {
        Self::start_with(None)
    }

    /// Start an etcd that serves clients over TLS only and requires a client
    /// certificate.
    pub fn start_tls(tls: ServerTls) -> Result<EtcdServer, String> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Result<EtcdServer, String> {
        let binary = etcd_binary().ok_or("etcd is not installed: apt-get install etcd-server (or set SKIFF_ETCD)")?;
        let mut last = String::new();
        // A free port can be taken between probing and etcd binding it: retry.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("skiff-test-etcd")
                .tempdir()
                .map_err(|e| format!("temporary directory for etcd: {e}"))?;
            let (client_port, peer_port) = match (free_port(), free_port()) {
                (Ok(c), Ok(p)) if c != p => (c, p),
                _ => continue,
            };
            let mut server =
                EtcdServer { child: None, binary: binary.clone(), dir, client_port, peer_port, tls: tls.clone() };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `127.0.0.1:port` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill etcd (SIGKILL, by PID) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start etcd again on the same ports and data directory.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The end of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn launch(&mut self) -> Result<(), String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = open_log(&self.log_path())?;
        let err = log.try_clone().map_err(|e| format!("etcd log: {e}"))?;
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca_file)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "skiff-test", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("skiff-test={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("etcd exited at start ({status}):\n{}", self.log_tail()));
                }
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(format!("etcd did not listen on {address} within 30 s:\n{}", self.log_tail()))
    }
}

fn open_log(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("etcd log {}: {e}", path.display()))
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
