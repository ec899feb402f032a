//! Network namespaces pinned by a bind mount (as `ip netns add` does, but at
//! any path: the agent keeps them under `<data-dir>/netns/<pod uid>`).
//!
//! A namespace is created by a dedicated thread that `unshare(CLONE_NEWNET)`s,
//! brings `lo` up over rtnetlink from inside, and bind-mounts its own
//! `/proc/thread-self/ns/net` onto the path; the thread then ends, and the
//! mount keeps the namespace alive until [`remove`]. The calling thread's
//! namespace never changes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::{Error, Result};

fn err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Netns { path: path.display().to_string(), message: message.to_string() }
}

/// Whether `path` is a pinned network namespace (an nsfs mount).
pub fn exists(path: &Path) -> bool {
    statfs(path).map(|s| s.filesystem_type() == NSFS_MAGIC).unwrap_or(false)
}

/// A new network namespace with `lo` up, pinned at `path`. Creating one where
/// one is already pinned changes nothing (so a restarted agent keeps its pods'
/// namespaces).
pub fn create(path: &Path) -> Result<()> {
    if exists(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| err(path, format!("creating {}: {e}", dir.display())))?;
        make_shared(dir).map_err(|e| err(path, format!("making {} a shared mount: {e}", dir.display())))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o444)
        .open(path)
        .map_err(|e| err(path, format!("creating the mount point: {e}")))?;
    let target = path.to_path_buf();
    let done = std::thread::Builder::new()
        .name("skiff-netns".into())
        .spawn(move || -> Result<()> {
            tracing::debug!(path = %target.display(), "unshare(CLONE_NEWNET)");
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| err(&target, format!("unshare: {e}")))?;
            loopback_up(&target)?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| err(&target, format!("bind-mounting the namespace: {e}")))?;
            Ok(())
        })
        .map_err(|e| err(path, format!("starting a thread: {e}")))?
        .join()
        .map_err(|_| err(path, "the namespace thread panicked"))?;
    if done.is_err() {
        let _ = fs::remove_file(path);
    }
    done
}

/// Make `dir` a shared mount (bind-mounting it onto itself first if it is
/// not a mount point), as `ip netns` does for /run/netns: mount namespaces
/// made later (every container's) then receive our unmounts, so a removed
/// namespace is gone everywhere and its mount point can be deleted.
fn make_shared(dir: &Path) -> nix::Result<()> {
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Err(nix::errno::Errno::EINVAL) => {
            tracing::debug!(dir = %dir.display(), "bind-mounting the netns directory onto itself");
            mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
            mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
        }
        other => other,
    }
}

/// Bring `lo` up in the current thread's network namespace.
fn loopback_up(path: &Path) -> Result<()> {
    let nl = |m: String| Error::Netlink { path: path.display().to_string(), message: m };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| nl(format!("starting a runtime: {e}")))?;
    rt.block_on(async {
        // the socket is opened here, on this thread, so it lives in the new namespace
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| nl(format!("opening a socket: {e}")))?;
        let conn = tokio::spawn(conn);
        tracing::debug!(path = %path.display(), "netlink: set lo up");
        let r = handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_name("lo").up().build())
            .execute()
            .await
            .map_err(|e| nl(format!("setting lo up: {e}")));
        conn.abort();
        r
    })
}

/// Unpin and delete the namespace at `path` (it goes away once no process is
/// left in it). Removing one that is not there is not an error.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(err(path, format!("unmounting: {e}"))),
    }
    // a mount namespace made before the directory was shared may hold a
    // copy of the mount for a moment (a container being set up): retry
    let mut last = None;
    for _ in 0..20 {
        match fs::remove_file(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(err(path, format!("removing the mount point: {}", last.map(|e| e.to_string()).unwrap_or_default())))
}

/// Run `f` on a thread that has joined the network namespace at `path`, and
/// return what it returns. Sockets `f` opens belong to that namespace for
/// their whole life, so `f` may hand them back (see [`connect_tcp`]).
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let ns = File::open(path).map_err(|e| err(path, format!("opening: {e}")))?;
    if !exists(path) {
        return Err(err(path, "not a network namespace"));
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("skiff-in-netns".into())
            .spawn_scoped(s, move || -> Result<T> {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| err(path, format!("setns: {e}")))?;
                Ok(f())
            })
            .map_err(|e| err(path, format!("starting a thread: {e}")))?
            .join()
            .map_err(|_| err(path, "the thread in the namespace panicked"))?
    })
}

/// A TCP connection opened from inside the namespace at `path`.
pub fn connect_tcp(path: &Path, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match run_in(path, move || TcpStream::connect_timeout(&addr, timeout)) {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    #[test]
    fn create_run_in_and_remove() {
        if !is_root() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "this test needs root (network namespaces)");
            eprintln!("skipped: needs root to create network namespaces");
            return;
        }
        let dir = tempfile::Builder::new().prefix("skiff-test-netns").tempdir().unwrap();
        let path = dir.path().join("ns1");
        create(&path).unwrap();
        assert!(exists(&path));
        // idempotent
        create(&path).unwrap();
        // a listener inside the namespace is reachable on its loopback (lo is up) ...
        let listener = run_in(&path, || std::net::TcpListener::bind("127.0.0.1:0")).unwrap().unwrap();
        let addr = listener.local_addr().unwrap();
        let conn = connect_tcp(&path, addr, Duration::from_secs(2));
        assert!(conn.is_ok(), "connect inside the namespace: {conn:?}");
        // ... and not from the host's namespace (the port is not bound here)
        let here = std::net::TcpListener::bind(addr);
        assert!(here.is_ok(), "the host's namespace must not see the pod's listener");
        // the namespace's identity differs from ours
        let inner = run_in(&path, || fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
        let outer = fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(inner, outer);
        remove(&path).unwrap();
        assert!(!exists(&path));
        assert!(!path.exists());
        remove(&path).unwrap();
        // create made the directory a (shared) mount of itself
        nix::mount::umount2(dir.path(), MntFlags::MNT_DETACH).unwrap();
    }

    #[test]
    fn run_in_a_missing_namespace_is_an_error() {
        let e = run_in(Path::new("/nonexistent/skiff-test-ns"), || ()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/skiff-test-ns"), "{e}");
    }
}
