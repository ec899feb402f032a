//! Watch: newline-delimited JSON events over a chunked response, with
//! Kubernetes' resourceVersion semantics, selectors, bookmarks, timeouts and
//! Table events.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use skiff_store::{Event, EventKind, StoreError};

use crate::error::ApiError;
use crate::handlers::Filters;
use crate::objects;
use crate::query::{output, Output, Query};
use crate::request::Target;
use crate::table::{self, IncludeObject};
use crate::Api;

/// How one watch renders its events.
struct Renderer {
    target: Target,
    filters: Filters,
    out: Output,
    include: IncludeObject,
    /// The Table column definitions go only in the first event.
    sent_columns: bool,
}

impl Renderer {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(name) = &self.target.name {
            if objects::name_of(obj) != name {
                return false;
            }
        }
        self.filters.matches(obj)
    }

    fn line(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = match self.out {
            Output::Json => obj.clone(),
            Output::Table => {
                let row = table::row(self.target.rt, obj, self.include, chrono::Utc::now());
                let rv = objects::meta_str(obj, "resourceVersion").unwrap_or("").to_string();
                let t = table::table(self.target.rt, vec![row], json!({"resourceVersion": rv}), !self.sent_columns);
                self.sent_columns = true;
                t
            }
        };
        let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    /// Turn a store event into a watch event line, applying selectors:
    /// an object that stops matching is DELETED for this watcher, one that
    /// starts matching is ADDED.
    fn render(&mut self, ev: &Event) -> Option<Bytes> {
        let rt = self.target.rt;
        if self.out == Output::Json && self.filters.is_empty() && objects::splices(rt) {
            return splice_line(ev);
        }
        let now = ev.value.as_deref().and_then(|b| objects::decode(rt, b, ev.revision));
        let before = ev.prev_value.as_deref().and_then(|b| objects::decode(rt, b, ev.revision));
        let now_matches = now.as_ref().is_some_and(|o| self.matches(o));
        let before_matches = before.as_ref().is_some_and(|o| self.matches(o));
        match ev.kind {
            EventKind::Put => match (before_matches, now_matches, now) {
                (false, true, Some(o)) => Some(self.line("ADDED", &o)),
                (true, true, Some(o)) => Some(self.line("MODIFIED", &o)),
                (true, false, Some(o)) => Some(self.line("DELETED", &o)),
                _ => None,
            },
            EventKind::Delete => match (before_matches, before) {
                (true, Some(o)) => Some(self.line("DELETED", &o)),
                _ => None,
            },
        }
    }
}

/// The event line straight from the stored bytes, without parsing them:
/// the common case of a watch with no selectors (controllers, `-o json`).
/// The key prefix (or exact key) already chose the objects. Not for a view
/// (`objects::splices`), whose objects are converted from the stored ones.
fn splice_line(ev: &Event) -> Option<Bytes> {
    let (kind, stored): (&[u8], &[u8]) = match ev.kind {
        EventKind::Put if ev.prev_value.is_some() => (b"MODIFIED", ev.value.as_deref()?),
        EventKind::Put => (b"ADDED", ev.value.as_deref()?),
        EventKind::Delete => (b"DELETED", ev.prev_value.as_deref()?),
    };
    let mut out = Vec::with_capacity(stored.len() + 48);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"\",\"object\":");
    objects::write_with_rv(&mut out, stored, ev.revision);
    out.extend_from_slice(b"}\n");
    Some(Bytes::from(out))
}

fn error_line(e: &ApiError) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

pub async fn watch(api: &Api, t: &Target, query: &Query, headers: &HeaderMap) -> Result<Response, ApiError> {
    let out = output(headers)?;
    let filters = Filters::parse(t.rt, query)?;
    let mut renderer = Renderer {
        target: t.clone(),
        filters,
        out,
        include: IncludeObject::parse(query.get("includeObject")),
        sent_columns: false,
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = match query.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        // Kubernetes ends watches after a random 30-60 minutes
        _ => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let prefix = match &t.name {
        Some(name) => objects::key(t.rt, t.namespace.as_deref(), name),
        None => objects::prefix(t.rt, t.namespace.as_deref()),
    };
    let rv = query.get("resourceVersion").unwrap_or("");
    // rv "" or "0": start with the current state as synthetic ADDED events
    let (initial, start) = if rv.is_empty() || rv == "0" {
        let page = api.store.list(&prefix, None, 0).await.map_err(|e| ApiError::from_store(e, "", ""))?;
        let mut lines = Vec::new();
        for kv in &page.items {
            if t.name.is_some() && kv.key != prefix {
                continue;
            }
            if let Some(obj) = objects::decode_kv(t.rt, kv) {
                if renderer.matches(&obj) {
                    lines.push(renderer.line("ADDED", &obj));
                }
            }
        }
        (lines, page.revision)
    } else {
        let start: u64 = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
        (Vec::new(), start)
    };
    let stream = match api.store.watch(&prefix, start).await {
        Ok(s) => s,
        Err(StoreError::Expired { requested, oldest }) => {
            return Err(ApiError::gone(format!("too old resource version: {requested} ({oldest})")));
        }
        Err(e) => return Err(ApiError::from_store(e, "", "")),
    };
    let guard = api.metrics.watch_started(t.rt.plural);
    let exact_key = t.name.as_ref().map(|_| prefix.clone());
    let kind = t.rt.kind;
    let api_version = t.rt.api_version();
    let body = async_stream(initial, stream, renderer, exact_key, bookmarks, timeout, start, kind, api_version, guard);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, private")],
        Body::from_stream(body),
    )
        .into_response())
}

struct Live {
    events: skiff_store::WatchStream,
    renderer: Renderer,
    last_rev: u64,
    done: bool,
    _guard: crate::metrics::WatchGuard,
}

#[allow(clippy::too_many_arguments)]
fn async_stream(
    initial: Vec<Bytes>,
    events: skiff_store::WatchStream,
    renderer: Renderer,
    exact_key: Option<String>,
    bookmarks: bool,
    timeout: Duration,
    start: u64,
    kind: &'static str,
    api_version: String,
    guard: crate::metrics::WatchGuard,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let deadline = tokio::time::Instant::now() + timeout;
    let bookmark_every = Duration::from_secs(10);
    let live = Live { events, renderer, last_rev: start, done: false, _guard: guard };
    let initial = futures::stream::iter(initial.into_iter().map(Ok));
    let live = futures::stream::unfold(live, move |mut st| {
        let exact_key = exact_key.clone();
        let api_version = api_version.clone();
        async move {
            if st.done {
                return None;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return None,
                    _ = tokio::time::sleep(bookmark_every), if bookmarks => {
                        let line = bookmark(kind, &api_version, st.last_rev);
                        return Some((Ok(line), st));
                    }
                    next = st.events.next() => match next {
                        None => return None,
                        Some(Err(e)) => {
                            st.done = true;
                            let line = error_line(&ApiError::from_store(e, "", ""));
                            return Some((Ok(line), st));
                        }
                        Some(Ok(ev)) => {
                            st.last_rev = ev.revision;
                            if exact_key.as_ref().is_some_and(|k| *k != ev.key) {
                                continue;
                            }
                            if let Some(line) = st.renderer.render(&ev) {
                                return Some((Ok(line), st));
                            }
                        }
                    }
                }
            }
        }
    });
    initial.chain(live)
}

fn bookmark(kind: &str, api_version: &str, rev: u64) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rev.to_string()}},
    }))
    .unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
