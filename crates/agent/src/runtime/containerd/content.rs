//! The content store: reading blobs, writing them (streamed, digest
//! checked by containerd at commit), and their garbage-collection labels.

use std::collections::HashMap;

use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AbortRequest, AddResourceRequest, Info, InfoRequest, ReadContentRequest, Resource, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::Request;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use super::oci::Descriptor;
use super::{is_already_exists, is_not_found, status_message, unique_suffix, ContainerdRuntime, Lease};
use crate::runtime::{Result, RuntimeError};

/// The largest manifest, index or config the runtime reads into memory.
const MAX_METADATA_BLOB: i64 = 16 << 20;

impl ContainerdRuntime {
    /// The blob's info, or `None` if the content store does not have it.
    pub(crate) async fn blob_info(&self, digest: &str) -> Result<Option<Info>> {
        match ContentClient::new(self.channel()).info(self.request(InfoRequest { digest: digest.to_string() })).await {
            Ok(resp) => Ok(resp.into_inner().info),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(RuntimeError::Other(format!("content {digest}: {}", status_message(&s)))),
        }
    }

    /// Reads a (small) blob whole.
    pub(crate) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let err = |m: String| RuntimeError::Other(format!("reading content {digest}: {m}"));
        let mut stream = ContentClient::new(self.channel())
            .read(self.request(ReadContentRequest { digest: digest.to_string(), offset: 0, size: 0 }))
            .await
            .map_err(|s| {
                if is_not_found(&s) {
                    err("not in the content store".to_string())
                } else {
                    err(status_message(&s))
                }
            })?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(|s| err(status_message(&s)))? {
            out.extend_from_slice(&chunk.data);
            if out.len() as i64 > MAX_METADATA_BLOB {
                return Err(err(format!("larger than {MAX_METADATA_BLOB} bytes")));
            }
        }
        Ok(out)
    }

    /// Reads a JSON blob.
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> Result<T> {
        let data = self.read_blob(digest).await?;
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Other(format!("content {digest}: invalid JSON: {e}")))
    }

    /// Sets labels on a blob (other labels are kept).
    pub(crate) async fn label_blob(&self, digest: &str, labels: &HashMap<String, String>) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = Info { digest: digest.to_string(), labels: labels.clone(), ..Default::default() };
        debug!(digest, ?labels, "labelling content");
        ContentClient::new(self.channel())
            .update(
                self.request(UpdateRequest { info: Some(info), update_mask: Some(prost_types::FieldMask { paths }) }),
            )
            .await
            .map_err(|s| RuntimeError::Other(format!("labelling content {digest}: {}", status_message(&s))))?;
        Ok(())
    }

    /// Makes sure the store has the blob, with `labels` set on it. If it is
    /// already there, it is only added to the lease and labelled; otherwise
    /// `source` is asked for its bytes. Returns whether it was written.
    pub(crate) async fn ensure_blob<F, Fut>(
        &self,
        lease: &Lease,
        desc: &Descriptor,
        labels: HashMap<String, String>,
        source: F,
    ) -> Result<bool>
    where
        F: FnOnce(BlobWriter) -> Fut,
        Fut: std::future::Future<Output = Result<BlobWriter>>,
    {
        if self.blob_info(&desc.digest).await?.is_some() {
            let resource = Resource { id: desc.digest.clone(), r#type: "content".to_string() };
            LeasesClient::new(self.channel())
                .add_resource(self.request(AddResourceRequest { id: lease.id.clone(), resource: Some(resource) }))
                .await
                .map_err(|s| {
                    RuntimeError::Other(format!("adding {} to a lease: {}", desc.digest, status_message(&s)))
                })?;
            self.label_blob(&desc.digest, &labels).await?;
            return Ok(false);
        }
        let writer = self.blob_writer(lease, desc);
        let reference = writer.reference.clone();
        let result = async { source(writer).await?.commit(labels.clone()).await }.await;
        match result {
            Ok(true) => Ok(true),
            Ok(false) => {
                // Someone else wrote it meanwhile: our labels still belong on it.
                self.label_blob(&desc.digest, &labels).await?;
                Ok(false)
            }
            Err(e) => {
                let _ = ContentClient::new(self.channel()).abort(self.request(AbortRequest { r#ref: reference })).await;
                Err(e)
            }
        }
    }

    /// Writes a blob held in memory (see [`Self::ensure_blob`]).
    pub(crate) async fn ensure_blob_bytes(
        &self,
        lease: &Lease,
        desc: &Descriptor,
        data: Bytes,
        labels: HashMap<String, String>,
    ) -> Result<bool> {
        self.ensure_blob(lease, desc, labels, |mut w| async move {
            w.write(data).await?;
            Ok(w)
        })
        .await
    }

    /// Opens a Content.Write stream for `desc`.
    fn blob_writer(&self, lease: &Lease, desc: &Descriptor) -> BlobWriter {
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let reference = format!("skiff-{}-{}", desc.digest.replace(':', "-"), unique_suffix());
        let mut client = ContentClient::new(self.channel());
        let request: Request<ReceiverStream<WriteContentRequest>> = self.leased(ReceiverStream::new(rx), lease);
        let digest = desc.digest.clone();
        debug!(digest, size = desc.size, "writing content");
        let call = tokio::spawn(async move {
            let mut responses = client
                .write(request)
                .await
                .map_err(|s| {
                    if is_already_exists(&s) {
                        WriteOutcome::AlreadyExists
                    } else {
                        WriteOutcome::Failed(status_message(&s))
                    }
                })?
                .into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(s) if is_already_exists(&s) => return Err(WriteOutcome::AlreadyExists),
                    Err(s) => return Err(WriteOutcome::Failed(status_message(&s))),
                }
            }
        });
        BlobWriter { tx, call, reference, digest, total: desc.size, offset: 0 }
    }
}

enum WriteOutcome {
    AlreadyExists,
    Failed(String),
}

/// One Content.Write stream: [`BlobWriter::write`] the bytes in order, then
/// [`BlobWriter::commit`]; containerd checks size and digest.
pub(crate) struct BlobWriter {
    tx: mpsc::Sender<WriteContentRequest>,
    call: JoinHandle<std::result::Result<(), WriteOutcome>>,
    reference: String,
    digest: String,
    total: i64,
    offset: i64,
}

impl BlobWriter {
    pub(crate) async fn write(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len() as i64;
        let req = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            total: self.total,
            expected: self.digest.clone(),
            offset: self.offset,
            data: data.to_vec(),
            labels: HashMap::new(),
        };
        if self.tx.send(req).await.is_err() {
            // The call ended early: its result says why.
            return Err(self.failure().await);
        }
        self.offset += len;
        Ok(())
    }

    async fn failure(&mut self) -> RuntimeError {
        let (tx, _) = mpsc::channel(1);
        self.tx = tx;
        let outcome = (&mut self.call).await;
        RuntimeError::Other(format!(
            "writing content {}: {}",
            self.digest,
            match outcome {
                Ok(Ok(())) => "the content store closed the write".to_string(),
                Ok(Err(WriteOutcome::AlreadyExists)) => "already exists".to_string(),
                Ok(Err(WriteOutcome::Failed(m))) => m,
                Err(e) => e.to_string(),
            }
        ))
    }

    /// Commits the blob: Ok(false) if it already existed.
    async fn commit(self, labels: HashMap<String, String>) -> Result<bool> {
        let BlobWriter { tx, call, reference, digest, total, offset } = self;
        let req = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: digest.clone(),
            offset,
            data: Vec::new(),
            labels,
        };
        let sent = tx.send(req).await;
        drop(tx);
        let outcome = call.await.map_err(|e| RuntimeError::Other(format!("writing content {digest}: {e}")))?;
        match outcome {
            Ok(()) if sent.is_ok() => Ok(true),
            Ok(()) => Err(RuntimeError::Other(format!("writing content {digest}: the content store closed the write"))),
            Err(WriteOutcome::AlreadyExists) => Ok(false),
            Err(WriteOutcome::Failed(m)) => Err(RuntimeError::Other(format!("writing content {digest}: {m}"))),
        }
    }
}
