//! `kubectl exec`: another process in a running container through
//! containerd's Tasks.Exec, with its stdio on FIFOs the agent makes and the
//! shim opens (`<tmp>/skiff-exec/<exec id>/{stdin,stdout,stderr}`).
//!
//! Order matters with FIFOs: the agent opens the read ends without blocking
//! before Tasks.Start (the shim's blocking open of the write ends then
//! returns at once), and reads only after Start, when the shim holds them:
//! EOF then means the shim closed them, after the process exited. The shim
//! keeps its own write end of stdin open, so the end of input is Tasks.CloseIO.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest, StartRequest, WaitRequest,
};
use tokio::sync::OnceCell;
use tracing::debug;

use super::{is_not_found, status_message, unique_suffix, ContainerdRuntime};
use crate::runtime::{Exec, ExecControl, ExecSpec, Result, RuntimeError};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const SIGKILL: u32 = 9;

fn exec_error(id: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Container { id: id.to_string(), message: message.into() }
}

/// The directory of an exec's FIFOs.
fn fifo_dir(exec_id: &str) -> PathBuf {
    std::env::temp_dir().join("skiff-exec").join(exec_id)
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(std::io::Error::from)
}

/// The container's process spec with `spec`'s command and terminal.
fn process_spec(container_spec: &[u8], spec: &ExecSpec) -> std::result::Result<Vec<u8>, String> {
    let oci: serde_json::Value =
        serde_json::from_slice(container_spec).map_err(|e| format!("its OCI spec is not readable: {e}"))?;
    let mut process = oci.get("process").cloned().ok_or("its OCI spec has no process")?;
    process["args"] = spec.command.clone().into();
    process["terminal"] = spec.tty.into();
    if let Some(obj) = process.as_object_mut() {
        obj.remove("consoleSize");
    }
    if spec.tty {
        let env = process["env"].as_array().cloned().unwrap_or_default();
        if !env.iter().any(|e| e.as_str().is_some_and(|s| s.starts_with("TERM="))) {
            let mut env = env;
            env.push("TERM=xterm".into());
            process["env"] = env.into();
        }
    }
    serde_json::to_vec(&process).map_err(|e| e.to_string())
}

impl ContainerdRuntime {
    pub(crate) async fn exec_process(&self, id: &str, spec: &ExecSpec) -> Result<Exec> {
        if spec.command.is_empty() {
            return Err(exec_error(id, "exec needs a command"));
        }
        let container = self.get_container(id).await?;
        let container_spec = container.spec.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        let process = process_spec(&container_spec, spec).map_err(|m| exec_error(id, m))?;
        let exec_id = format!("skiff-exec-{}", unique_suffix());
        let dir = fifo_dir(&exec_id);
        std::fs::create_dir_all(&dir).map_err(|e| exec_error(id, format!("creating {}: {e}", dir.display())))?;
        let control = Arc::new(ContainerdExec {
            runtime: self.clone(),
            container: id.to_string(),
            exec_id: exec_id.clone(),
            dir: dir.clone(),
            exit: OnceCell::new(),
            finished: OnceCell::new(),
        });
        match self.start_exec(&control, spec, process).await {
            Ok(exec) => Ok(exec),
            Err(e) => {
                control.finish().await;
                Err(e)
            }
        }
    }

    async fn start_exec(&self, control: &Arc<ContainerdExec>, spec: &ExecSpec, process: Vec<u8>) -> Result<Exec> {
        let id = control.container.as_str();
        let dir = &control.dir;
        let fifo = |name: &str, wanted: bool| -> Result<Option<PathBuf>> {
            if !wanted {
                return Ok(None);
            }
            let path = dir.join(name);
            mkfifo(&path).map_err(|e| exec_error(id, format!("creating FIFO {}: {e}", path.display())))?;
            Ok(Some(path))
        };
        let stdin_path = fifo("stdin", spec.stdin)?;
        let stdout_path = fifo("stdout", spec.stdout || spec.tty)?;
        let stderr_path = fifo("stderr", spec.stderr && !spec.tty)?;
        let open_err = |p: &Path, e: std::io::Error| exec_error(id, format!("opening FIFO {}: {e}", p.display()));
        let reader = |p: &Option<PathBuf>| -> Result<Option<tokio::net::unix::pipe::Receiver>> {
            p.as_ref()
                .map(|p| tokio::net::unix::pipe::OpenOptions::new().open_receiver(p).map_err(|e| open_err(p, e)))
                .transpose()
        };
        let stdout = reader(&stdout_path)?;
        let stderr = reader(&stderr_path)?;
        // read-write, so the open does not wait for the shim
        let stdin = stdin_path
            .as_ref()
            .map(|p| {
                tokio::net::unix::pipe::OpenOptions::new().read_write(true).open_sender(p).map_err(|e| open_err(p, e))
            })
            .transpose()?;
        let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let mut tasks = TasksClient::new(self.channel());
        debug!(id, exec_id = %control.exec_id, command = ?spec.command, tty = spec.tty, "Tasks.Exec");
        tasks
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: path_str(&stdin_path),
                stdout: path_str(&stdout_path),
                stderr: path_str(&stderr_path),
                terminal: spec.tty,
                spec: Some(prost_types::Any { type_url: PROCESS_TYPE_URL.to_string(), value: process }),
                exec_id: control.exec_id.clone(),
            }))
            .await
            .map_err(|s| exec_error(id, format!("exec: {}", status_message(&s))))?;
        debug!(id, exec_id = %control.exec_id, "Tasks.Start");
        tasks
            .start(self.request(StartRequest { container_id: id.to_string(), exec_id: control.exec_id.clone() }))
            .await
            .map_err(|s| exec_error(id, format!("starting exec: {}", status_message(&s))))?;
        type R = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;
        type W = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;
        Ok(Exec {
            stdin: stdin.map(|s| Box::pin(s) as W),
            stdout: stdout.map(|s| Box::pin(s) as R),
            stderr: stderr.map(|s| Box::pin(s) as R),
            control: control.clone(),
        })
    }
}

/// A process started by Tasks.Exec.
struct ContainerdExec {
    runtime: ContainerdRuntime,
    container: String,
    exec_id: String,
    dir: PathBuf,
    exit: OnceCell<i32>,
    finished: OnceCell<()>,
}

impl ContainerdExec {
    fn tasks(&self) -> TasksClient<containerd_client::tonic::transport::Channel> {
        TasksClient::new(self.runtime.channel())
    }

    async fn kill(&self) {
        debug!(id = %self.container, exec_id = %self.exec_id, "Tasks.Kill");
        let _ = self
            .tasks()
            .kill(self.runtime.request(KillRequest {
                container_id: self.container.clone(),
                exec_id: self.exec_id.clone(),
                signal: SIGKILL,
                all: false,
            }))
            .await;
    }
}

#[async_trait::async_trait]
impl ExecControl for ContainerdExec {
    async fn resize(&self, width: u16, height: u16) -> Result<()> {
        debug!(id = %self.container, exec_id = %self.exec_id, width, height, "Tasks.ResizePty");
        self.tasks()
            .resize_pty(self.runtime.request(ResizePtyRequest {
                container_id: self.container.clone(),
                exec_id: self.exec_id.clone(),
                width: u32::from(width),
                height: u32::from(height),
            }))
            .await
            .map(|_| ())
            .map_err(|s| exec_error(&self.container, format!("resizing the terminal: {}", status_message(&s))))
    }

    async fn close_stdin(&self) -> Result<()> {
        debug!(id = %self.container, exec_id = %self.exec_id, "Tasks.CloseIO");
        match self
            .tasks()
            .close_io(self.runtime.request(CloseIoRequest {
                container_id: self.container.clone(),
                exec_id: self.exec_id.clone(),
                stdin: true,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(exec_error(&self.container, format!("closing stdin: {}", status_message(&s)))),
        }
    }

    async fn wait(&self) -> Result<i32> {
        self.exit
            .get_or_try_init(|| async {
                let resp = self
                    .tasks()
                    .wait(
                        self.runtime.request(WaitRequest {
                            container_id: self.container.clone(),
                            exec_id: self.exec_id.clone(),
                        }),
                    )
                    .await
                    .map_err(|s| exec_error(&self.container, format!("waiting for exec: {}", status_message(&s))))?;
                Ok(i32::try_from(resp.into_inner().exit_status).unwrap_or(i32::MAX))
            })
            .await
            .copied()
    }

    async fn finish(&self) {
        self.finished
            .get_or_init(|| async {
                if self.exit.get().is_none() {
                    self.kill().await;
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.wait()).await;
                }
                debug!(id = %self.container, exec_id = %self.exec_id, "Tasks.DeleteProcess");
                if let Err(s) = self
                    .tasks()
                    .delete_process(self.runtime.request(DeleteProcessRequest {
                        container_id: self.container.clone(),
                        exec_id: self.exec_id.clone(),
                    }))
                    .await
                {
                    if !is_not_found(&s) {
                        tracing::warn!(id = %self.container, exec_id = %self.exec_id, "deleting exec process: {}", status_message(&s));
                    }
                }
                let _ = std::fs::remove_dir_all(&self.dir);
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_spec_takes_the_containers_and_replaces_the_command() {
        let spec = serde_json::json!({"process": {"args": ["httpd"], "env": ["PATH=/bin"], "cwd": "/w", "terminal": false, "consoleSize": {"height": 1, "width": 1}}});
        let exec = ExecSpec { command: vec!["sh".into(), "-c".into(), "id".into()], tty: true, ..Default::default() };
        let out: serde_json::Value =
            serde_json::from_slice(&process_spec(&serde_json::to_vec(&spec).unwrap(), &exec).unwrap()).unwrap();
        assert_eq!(out["args"], serde_json::json!(["sh", "-c", "id"]));
        assert_eq!(out["terminal"], true);
        assert_eq!(out["cwd"], "/w");
        assert_eq!(out["env"], serde_json::json!(["PATH=/bin", "TERM=xterm"]));
        assert!(out.get("consoleSize").is_none());
        assert!(process_spec(b"{}", &exec).is_err());
    }
}
