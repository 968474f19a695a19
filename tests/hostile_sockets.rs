//! Sockets that never authenticate cannot lock the fleet out: 100 connections that finish
//! the handshake and then sit idle, and 32 tasks re-opening connections without ever
//! sending a `Hello`, while a real scanner pushes a job. The push must succeed; how long it
//! took is printed (speed is measured, not asserted: see docs/PERFORMANCE.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use quire_codecs::wire::ALPN;

/// A client endpoint on its own loopback address, so the attackers are other sources than
/// the scanner (127.0.0.1) as they would be on a real network.
fn endpoint(source: &str, ca_pem: &str) -> quinn::Endpoint {
    let bind: SocketAddr = format!("{source}:0").parse().unwrap();
    let mut e = quinn::Endpoint::client(bind).unwrap();
    let mut cfg = quire_client::tls::client_config(ca_pem, ALPN).unwrap();
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(20).try_into().unwrap()));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    cfg.transport_config(Arc::new(t));
    e.set_default_client_config(cfg);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_reconnecting_strangers_do_not_lock_a_scanner_out() {
    let server = TestServer::start();
    let ca = server.device_cred().server_ca.clone();
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (handshakes, closed_by_server) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // 100 idle connections from four sources; each reconnects when the server drops it.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let e = endpoint(&format!("127.0.0.{}", 2 + i % 4), &ca);
        let (stop, handshakes, closed) =
            (stop.clone(), handshakes.clone(), closed_by_server.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(connecting) = e.connect(addr, "localhost") else {
                    break;
                };
                match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                    Ok(Ok(conn)) => {
                        handshakes.fetch_add(1, Ordering::Relaxed);
                        // Say nothing; wait to be thrown out.
                        let _ = tokio::time::timeout(Duration::from_secs(15), conn.closed()).await;
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    // 32 tasks opening connection after connection, dropping each right after the handshake.
    for i in 0..32 {
        let e = endpoint(&format!("127.0.0.{}", 10 + i % 4), &ca);
        let (stop, handshakes) = (stop.clone(), handshakes.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(connecting) = e.connect(addr, "localhost") else {
                    break;
                };
                if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await
                {
                    handshakes.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    conn.close(0u32.into(), b"");
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    for i in 0..5 {
        write_random_file(&job.join(format!("p{i}.tif")), 200_000, i);
    }
    let started = Instant::now();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let dir = server.path().to_path_buf();
        let job = job.clone();
        move || run(&dir, &["push", job.to_str().unwrap(), "--no-progress"])
    })
    .await
    .unwrap();
    let took = started.elapsed();
    // Long enough for the hello deadline to throw the idle ones out at least once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    eprintln!(
        "push under 100 idle + 32 reconnecting strangers: {:.2} s; {} stranger handshakes, {} idle ones closed by the server",
        took.as_secs_f64(),
        handshakes.load(Ordering::Relaxed),
        closed_by_server.load(Ordering::Relaxed)
    );
    assert!(ok, "the push failed under the flood: {stderr}");
    assert!(stdout.trim().starts_with("job-"), "{stdout}");
    assert!(
        closed_by_server.load(Ordering::Relaxed) > 0,
        "idle connections were never thrown out"
    );
}

/// A connection that completes its handshake and never says `Hello` is closed at the hello
/// deadline with the code that tells a client to connect again (a slow link), not the one for
/// a refused credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_as_too_slow_not_as_a_bad_credential() {
    let server = TestServer::start();
    let ca = server.device_cred().server_ca.clone();
    let e = endpoint("127.0.0.2", &ca);
    let conn = e.connect(server.addr, "localhost").unwrap().await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the server closes a silent connection");
    match why {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quire_server::CLOSE_TOO_SLOW.into(), "{c:?}");
            let reason = String::from_utf8_lossy(&c.reason);
            assert!(reason.contains("no hello within"), "{reason}");
        }
        other => panic!("closed by {other:?}"),
    }
}

/// A server that answers over UDP only to refuse (CONNECTION_REFUSED: busy, or too many
/// handshakes from this address, as for scanners behind one branch office's NAT connecting at
/// once) is reachable over UDP: a scanner on `auto` keeps trying QUIC, backing off, instead of
/// going over TCP (slow on lossy links, and kept for the whole session). Here UDP at the port
/// is an endpoint that refuses everything and TCP at the same port is a real server, so a
/// scanner that took TCP would connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_refused_over_udp_keeps_to_quic_rather_than_take_tcp() {
    let port = free_port();
    let server = TestServer::start_with_config(&format!("[tcp]\nlisten = \"127.0.0.1:{port}\"\n"));
    let at: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refuser = quinn::Endpoint::server(dev_quic_server_config(dir.path()).0, at).unwrap();
    let refusals = Arc::new(AtomicU64::new(0));
    tokio::spawn({
        let refusals = refusals.clone();
        async move {
            while let Some(incoming) = refuser.accept().await {
                refusals.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
            }
        }
    });
    // The command line's own `--transport auto` (the suite also runs with QUIRE_TRANSPORT=tcp).
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    write_random_file(&job.join("p0.tif"), 10_000, 1);
    let (ok, _, err) = tokio::task::spawn_blocking({
        let (dir, job, at) = (server.path().to_path_buf(), job.clone(), at.to_string());
        move || {
            let job = job.to_str().unwrap();
            run(
                &dir,
                &[
                    "push",
                    job,
                    "--no-progress",
                    "--server",
                    &at,
                    "--transport",
                    "auto",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        !ok,
        "the push went through: a refusal over UDP sent the scanner to TCP: {err}"
    );
    assert!(
        err.contains("refused") && err.contains("not tried"),
        "{err}"
    );
    assert!(
        refusals.load(Ordering::Relaxed) > 1,
        "QUIC was not tried again"
    );
}
