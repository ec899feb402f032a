//! What only the etcd store does: several stores (servers) on one etcd,
//! watches that survive an etcd restart, periodic compaction shared by
//! several servers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::testing::{EtcdServer, ServerTls};
use skiff_store::{EtcdOptions, EtcdStore, EtcdTls, Event, Store, StoreError, WatchStream, COMPACT_KEY};

const PATIENCE: Duration = Duration::from_secs(30);

async fn connect(server: &EtcdServer, compact_interval: Duration) -> anyhow::Result<Arc<EtcdStore>> {
    let options = EtcdOptions { compact_interval, ..EtcdOptions::new(vec![server.endpoint()]) };
    Ok(EtcdStore::connect(options).await?)
}

async fn next(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("no event within {PATIENCE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_etcd_see_each_other() -> anyhow::Result<()> {
    let server = EtcdServer::start().map_err(anyhow::Error::msg)?;
    let a = connect(&server, Duration::ZERO).await?;
    let b = connect(&server, Duration::ZERO).await?;
    let start = b.current_revision();
    let mut watch_b = b.watch("/x/", start).await?;

    let rev = a.create("/x/1", Bytes::from_static(b"one")).await?;
    assert_eq!(b.get("/x/1").await?.map(|kv| kv.mod_revision), Some(rev), "a read through b sees a's write at once");
    assert_eq!(next(&mut watch_b).await.revision, rev);

    // Compare-and-swap is decided by etcd, whichever store asks.
    let err = b.create("/x/1", Bytes::from_static(b"again")).await.expect_err("exists");
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    let updated = b.update("/x/1", Bytes::from_static(b"two"), Some(rev)).await?;
    let err = a.update("/x/1", Bytes::from_static(b"stale"), Some(rev)).await.expect_err("stale");
    assert!(matches!(err, StoreError::Conflict { actual, .. } if actual == updated), "{err:?}");
    assert_eq!(next(&mut watch_b).await.revision, updated);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_without_a_gap_after_etcd_restarts() -> anyhow::Result<()> {
    let mut server = EtcdServer::start().map_err(anyhow::Error::msg)?;
    let store = connect(&server, Duration::ZERO).await?;
    let base = store.current_revision();
    let mut stream = store.watch("/r/", base).await?;
    let first = store.create("/r/1", Bytes::from_static(b"1")).await?;
    assert_eq!(next(&mut stream).await.revision, first);

    server.restart().map_err(anyhow::Error::msg)?;
    // The store reconnects by itself; writes fail until etcd answers again.
    let mut written = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while written.len() < 5 {
        match store.create(&format!("/r/after-{}", written.len()), Bytes::from_static(b"v")).await {
            Ok(rev) => written.push(rev),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("while etcd restarts: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for rev in written {
        assert_eq!(next(&mut stream).await.revision, rev, "every write after the restart, in order");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_compaction_keeps_one_interval_and_runs_once_per_interval() -> anyhow::Result<()> {
    let server = EtcdServer::start().map_err(anyhow::Error::msg)?;
    let interval = Duration::from_millis(700);
    let a = connect(&server, interval).await?;
    let b = connect(&server, interval).await?;
    let early = a.create("/c/early", Bytes::from_static(b"v")).await?;
    // After a few intervals the history before `early` is gone...
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        a.create(&format!("/c/{}", a.current_revision()), Bytes::from_static(b"v")).await?;
        if a.oldest_watchable() > early && b.oldest_watchable() > early {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no compaction within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = b.watch("/c/", early - 1).await.err();
    assert!(matches!(err, Some(StoreError::Expired { .. })), "{err:?}");
    // ...while a revision from the current interval is still watchable.
    let recent = a.current_revision();
    let mut stream = b.watch("/c/", recent).await?;
    let newer = a.create("/c/newer", Bytes::from_static(b"v")).await?;
    assert_eq!(next(&mut stream).await.revision, newer);
    // The coordination key's version counts compaction rounds: with two
    // servers it grows by about one per interval, not two.
    let started = tokio::time::Instant::now();
    let v0 = key_version(&server).await?;
    tokio::time::sleep(interval * 6).await;
    let rounds = key_version(&server).await? - v0;
    let intervals = started.elapsed().as_secs_f64() / interval.as_secs_f64();
    assert!(rounds as f64 <= intervals + 1.0, "{rounds} compaction rounds in {intervals:.1} intervals");
    Ok(())
}

/// The version of the compaction coordination key, read with a third client.
async fn key_version(server: &EtcdServer) -> anyhow::Result<i64> {
    let mut client = etcd_client::Client::connect([server.endpoint()], None).await?;
    let resp = client.get(COMPACT_KEY, None).await?;
    Ok(resp.kvs().first().map(|kv| kv.version()).unwrap_or(0))
}

/// A CA, etcd's serving certificate for 127.0.0.1 and a client certificate,
/// as PEM files in `dir`.
fn certificates(dir: &std::path::Path) -> anyhow::Result<(ServerTls, EtcdTls)> {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |eku: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.extended_key_usages = vec![eku];
        Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth)?;
    let write = |name: &str, pem: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    let ca_file = write("ca.crt", &ca.pem())?;
    let server = ServerTls {
        cert_file: write("server.crt", &server_cert)?,
        key_file: write("server.key", &server_key)?,
        client_ca_file: ca_file.clone(),
    };
    let client = EtcdTls {
        ca_file: Some(ca_file),
        cert_file: Some(write("client.crt", &client_cert)?),
        key_file: Some(write("client.key", &client_key)?),
    };
    Ok((server, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (server_tls, client_tls) = certificates(dir.path())?;
    let server = EtcdServer::start_tls(server_tls).map_err(anyhow::Error::msg)?;
    let options = |tls: Option<EtcdTls>| EtcdOptions {
        compact_interval: Duration::ZERO,
        timeout: Duration::from_secs(3),
        tls,
        ..EtcdOptions::new(vec![server.endpoint()])
    };
    let store = EtcdStore::connect(options(Some(client_tls.clone()))).await?;
    let rev = store.create("/tls/a", Bytes::from_static(b"v")).await?;
    assert_eq!(store.get("/tls/a").await?.map(|kv| kv.mod_revision), Some(rev));

    // Without a client certificate etcd refuses the connection.
    let no_cert = EtcdTls { cert_file: None, key_file: None, ..client_tls };
    let refused = EtcdStore::connect(options(Some(no_cert))).await.err();
    assert!(matches!(refused, Some(StoreError::Backend(_))), "connected without a client certificate");
    Ok(())
}
