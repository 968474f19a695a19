//! Scanners' connections, and what the server sends back, run Quire's own congestion
//! controller (README, "Performance"; the controller's behaviour on lossy, shared and long
//! links is tested in `net/src/congestion`); a scanner alone has the largest receive window.

use crate::common::*;
use quire_client::push::{push_pages, Upload};
use quire_net::congestion::BdpController;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_pushes_with_the_bdp_controller_and_its_window_follows_the_acks() {
    let server = TestServer::in_process();
    let conn = server.connect().await;
    let initial = conn.congestion_controller().initial_window();
    let pages: Vec<(String, std::io::Cursor<Vec<u8>>)> = (0..4)
        .map(|i| {
            let body: Vec<u8> = (0..2_000_000u32).map(|b| (b * 7 + i) as u8).collect();
            (format!("page-{i}.bin"), std::io::Cursor::new(body))
        })
        .collect();
    let upload = Upload::new("congestion-job");
    push_pages(&conn, &upload, pages, 4).await.unwrap();
    let controller = conn.congestion_controller();
    let window = controller.window();
    assert!(
        controller.into_any().downcast::<BdpController>().is_ok(),
        "the scanner's connection does not use quire_net::congestion::BdpController \
         (is QUIRE_CONGESTION set?)"
    );
    assert!(
        window > initial,
        "8 MB acknowledged and the window is still {window} (initial {initial})"
    );
    conn.close().await;
}

/// What the server sends in bulk (pages to `quire get` and `deliver`) runs the same
/// controller: an endpoint with the server's own identity and transport settings sends 8 MB,
/// and its side of the connection has a `BdpController` whose window grew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sends_with_the_bdp_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = quic_endpoints(dir.path());
    let addr = server.local_addr().unwrap();
    let sending = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let initial = conn.congestion_state().initial_window();
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(&vec![0x5a; 8_000_000]).await.unwrap();
        send.finish().unwrap();
        send.stopped().await.unwrap();
        let controller = conn.congestion_state();
        (
            initial,
            controller.window(),
            controller.into_any().downcast::<BdpController>().is_ok(),
        )
    });
    let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
    let mut recv = conn.accept_uni().await.unwrap();
    assert_eq!(recv.read_to_end(10_000_000).await.unwrap().len(), 8_000_000);
    let (initial, window, bdp) = sending.await.unwrap();
    assert!(
        bdp,
        "the server's connection does not use quire_net::congestion::BdpController \
         (is QUIRE_CONGESTION set?)"
    );
    assert!(
        window > initial,
        "8 MB sent and the window is still {window} (initial {initial})"
    );
    conn.close(0u32.into(), b"done");
}

/// A scanner alone on the server has the largest receive window (16 MiB): an 8 MB page never
/// finds the connection's flow control closed, so the scanner sends no DATA_BLOCKED frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_alone_has_the_largest_receive_window() {
    let server = TestServer::in_process();
    let conn = server.connect().await;
    let page: Vec<u8> = (0..8_000_000u32).map(|b| (b * 13 + 5) as u8).collect();
    let upload = Upload::new("window-job");
    push_pages(
        &conn,
        &upload,
        vec![("big.bin".to_string(), std::io::Cursor::new(page))],
        1,
    )
    .await
    .unwrap();
    let stats = conn.transport_stats();
    assert_eq!(
        stats.frame_tx.data_blocked, 0,
        "the scanner waited for connection flow control: {:?}",
        stats.frame_tx
    );
    conn.close().await;
}
