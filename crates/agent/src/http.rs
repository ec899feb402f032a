//! The agent's HTTP endpoints, for the API server to proxy to (pods/log,
//! exec and port-forward).
//! TLS and the listener are the caller's: this is a plain axum router.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;

use crate::logs::{container_logs, find_pod_log_dir, serve_logs, LogOptions, StillRunning};
use crate::runtime::{Runtime, TaskState, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_UID};

/// What the endpoints need.
#[derive(Clone)]
pub struct State {
    pub pods_dir: PathBuf,
    pub node_name: String,
    pub runtime: Arc<dyn Runtime>,
}

/// `GET /containerLogs/{namespace}/{pod}/{container}` with kubectl's log
/// query parameters (follow, previous, tailLines, sinceSeconds, sinceTime,
/// timestamps, limitBytes).
///
/// `GET /exec/{namespace}/{pod}/{container}` and `GET /portForward/{namespace}/{pod}`
/// are WebSockets ([`crate::stream`]).
pub fn router(state: State) -> Router {
    Router::new()
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs))
        .route("/exec/{namespace}/{pod}/{container}", get(crate::stream::exec))
        .route("/attach/{namespace}/{pod}/{container}", get(crate::stream::attach))
        .route("/portForward/{namespace}/{pod}", get(crate::stream::port_forward))
        .with_state(state)
}

fn text(code: StatusCode, msg: String) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

async fn logs(
    AxState(s): AxState<State>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    query: Result<Query<LogOptions>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let opts = match query {
        Ok(Query(o)) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid log options: {e}")),
    };
    let Some((dir, uid)) = find_pod_log_dir(&s.pods_dir, &namespace, &pod) else {
        return text(StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} has no logs on node {:?}", s.node_name));
    };
    let all = container_logs(&dir, &container);
    let chosen = if opts.previous { all.get(1) } else { all.first() };
    let Some((attempt, files)) = chosen.cloned() else {
        let msg = if opts.previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is waiting to start: no logs yet")
        };
        return text(StatusCode::BAD_REQUEST, msg);
    };
    let runtime = s.runtime.clone();
    let labels: BTreeMap<String, String> = [
        (LABEL_NODE.to_string(), s.node_name.clone()),
        (LABEL_POD_UID.to_string(), uid),
        (LABEL_CONTAINER.to_string(), container),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]
    .into_iter()
    .collect();
    let running: StillRunning = Box::new(move || {
        let runtime = runtime.clone();
        let labels = labels.clone();
        Box::pin(async move {
            match runtime.list(&labels).await {
                Ok(cs) => cs.iter().any(|c| matches!(c.state, TaskState::Running { .. })),
                Err(_) => false,
            }
        })
    });
    let stream = serve_logs(files, opts, running).map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let code = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn container_logs_with_kubectl_options() {
        let dir = tempfile::Builder::new().prefix("skiff-test-http").tempdir().unwrap();
        let logs = dir.path().join("default_web_u-1").join("app");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("0.log"), "2026-01-01T00:00:01Z stdout F before the crash\n").unwrap();
        std::fs::write(
            logs.join("1.log"),
            "2026-01-01T00:00:02Z stdout F first\n2026-01-01T00:00:03Z stderr F second\n",
        )
        .unwrap();
        let state = State {
            pods_dir: dir.path().to_path_buf(),
            node_name: "n1".into(),
            runtime: Arc::new(crate::pods::tests::FakeRuntime::default()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        assert_eq!(get(addr, "/containerLogs/default/web/app").await, (200, "first\nsecond\n".into()));
        assert_eq!(
            get(addr, "/containerLogs/default/web/app?tailLines=1&timestamps=true").await,
            (200, "2026-01-01T00:00:03Z second\n".into())
        );
        assert_eq!(get(addr, "/containerLogs/default/web/app?previous=true").await, (200, "before the crash\n".into()));
        assert_eq!(get(addr, "/containerLogs/default/web/app?limitBytes=3").await, (200, "fir".into()));
        // the container no longer runs: follow ends after what is there
        assert_eq!(get(addr, "/containerLogs/default/web/app?follow=true").await, (200, "first\nsecond\n".into()));
        let (code, msg) = get(addr, "/containerLogs/default/gone/app").await;
        assert_eq!(code, 404, "{msg}");
        let (code, msg) = get(addr, "/containerLogs/default/web/app?tailLines=x").await;
        assert_eq!(code, 400, "{msg}");
    }
}
