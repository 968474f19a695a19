//! Scanners' connections run Quire's own congestion controller (README, "Performance"; the
//! controller's behaviour on lossy, shared and long links is tested in `net/src/congestion`).

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
