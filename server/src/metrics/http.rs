//! The operator's HTTP listener: `GET /metrics` (Prometheus text format), `/healthz` (the
//! process answers) and `/readyz` (it can take pages: metadata store, vault and every object
//! store reachable, spool below its high-water mark). hyper's HTTP/1 server, nothing else:
//! no TLS (bind it to loopback or a private interface) and no request body is ever read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::{debug, warn};

use crate::edge::State;

/// Spool use above this share of its capacity makes the server unready: pages would soon wait
/// and then be refused as Busy.
pub const SPOOL_HIGH_WATER: f64 = 0.9;
/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the listener fails; each connection on a task of its own.
pub(crate) async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            // A scraper that holds its connection open forever holds nothing of ours for long.
            match tokio::time::timeout(Duration::from_secs(60), conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection ended"),
                Err(_) => debug!(%peer, "metrics connection closed after 60 s"),
            }
        });
    }
}

/// Binds the listener (an error names the address).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a static response builds")
}

async fn answer(state: &Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".into(),
            "text/plain",
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            state.metrics.encode(state),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let problems = readiness(state).await;
            if problems.is_empty() {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready:\n{}\n", problems.join("\n")),
                    "text/plain",
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "/metrics, /healthz or /readyz\n".into(),
            "text/plain",
        ),
    }
}

/// What keeps the server from taking pages now, one line each; empty when ready.
pub(crate) async fn readiness(state: &Arc<State>) -> Vec<String> {
    let mut problems = Vec::new();
    let meta = state.meta.clone();
    match tokio::time::timeout(
        CHECK_TIMEOUT,
        tokio::task::spawn_blocking(move || meta.tenants()),
    )
    .await
    {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => problems.push(format!("metadata store: {e}")),
        Ok(Err(e)) => problems.push(format!("metadata store: {e}")),
        Err(_) => problems.push("metadata store: no answer within 5 s".into()),
    }
    let vault = state.pipeline.vault.clone();
    match tokio::time::timeout(
        CHECK_TIMEOUT,
        tokio::task::spawn_blocking(move || vault.probe()),
    )
    .await
    {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => problems.push(format!("vault: {e}")),
        Ok(Err(e)) => problems.push(format!("vault: {e}")),
        Err(_) => problems.push("vault: no answer within 5 s".into()),
    }
    let pipeline = &state.pipeline;
    let stores = std::iter::once(&pipeline.store).chain(pipeline.routes.values());
    for store in stores {
        match tokio::time::timeout(CHECK_TIMEOUT, store.exists("quire-readiness-probe")).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("object store {}: {e}", store.name())),
            Err(_) => problems.push(format!(
                "object store {}: no answer within 5 s",
                store.name()
            )),
        }
    }
    let spool = &pipeline.spool;
    let capacity = spool.capacity().max(1);
    if spool.used() as f64 > SPOOL_HIGH_WATER * capacity as f64 {
        problems.push(format!(
            "spool: {} of {} bytes in use (over {:.0} %): the object store is not keeping up",
            spool.used(),
            capacity,
            SPOOL_HIGH_WATER * 100.0
        ));
    }
    problems
}
