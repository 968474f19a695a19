//! The operator's HTTP listener: `GET /metrics` (Prometheus text format), `/healthz` (the
//! process answers) and `/readyz` (it can take pages: metadata store, vault and every object
//! store reachable, spool below its high-water mark). hyper's HTTP/1 server, nothing else:
//! no TLS (bind it to loopback or a private interface) and no request body is ever read.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::{debug, warn};

use super::Operator;

/// Serves until the listener fails; each connection on a task of its own.
pub(crate) async fn serve(listener: tokio::net::TcpListener, state: Arc<dyn Operator>) {
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

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a static response builds")
}

async fn answer(
    state: &Arc<dyn Operator>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
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
            state.metrics_text(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let problems = state.readiness().await;
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
