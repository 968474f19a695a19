//! Receive windows on real QUIC connections (`quire_server::windows`; the ledger's rules are
//! tested without sockets beside it): a scanner 80 ms away that its window holds back is
//! given a larger one while it sends, within the grown budget, and gives it back when it stops; a connection
//! beside it keeps its share. Pages the pipeline has not taken cannot starve the ones it has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use quire_codecs::wire::Frame;
use quire_net::stream::{write_data, FrameReader};
use quire_server::windows::{Windows, MIN_CONNECTION_WINDOW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_its_window_holds_back_across_a_long_link_gets_a_larger_one_and_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = quic_endpoints(dir.path());
    // An 80 ms round trip: what a window of 128 KiB holds to 1.6 MB/s.
    let addr =
        crate::common::delay::delay_relay(server.local_addr().unwrap(), Duration::from_millis(40))
            .await;

    // Two connections share 256 KiB: each has the smallest share, as in a fleet of 1,500.
    let grown_budget = 4 * 1024 * 1024;
    let windows = Windows::new(
        quire_server::gate::PRE_AUTH_WINDOW,
        2 * MIN_CONNECTION_WINDOW,
        grown_budget,
    );
    Windows::spawn_tuner(&windows);
    let connect_one = || async {
        let (client_side, server_side) = tokio::join!(
            async { client.connect(addr, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        (client_side, server_side)
    };
    let (scanner, sending) = connect_one().await;
    let (_other, idle) = connect_one().await;
    let flow = windows.connected(&sending);
    windows.connected(&idle);
    assert_eq!(windows.window(&sending), Some(MIN_CONNECTION_WINDOW));

    let (mut send, _) = scanner.open_bi().await.unwrap();
    // The server reads what arrives as the request layer does, counting it.
    let conn = sending.clone();
    let reading = tokio::spawn(async move {
        let (_, recv) = conn.accept_bi().await.unwrap();
        let mut reader = FrameReader::requests(recv).counting(flow.consumed.clone());
        let mut page_bytes = 0;
        while let Some(frame) = reader.next().await.unwrap() {
            if let Frame::Data(d) = frame {
                page_bytes += d.len();
            }
        }
        page_bytes
    });
    // Send until the window has grown (a generous limit: this is not a speed test).
    let chunk = bytes::Bytes::from(vec![0x42u8; 1024 * 1024]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let grown = loop {
        write_data(&mut send, chunk.clone()).await.unwrap();
        sent += chunk.len();
        let w = windows.window(&sending).unwrap();
        if w >= 1024 * 1024 {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "sent {sent} bytes and the window is still {w}"
        );
    };
    send.finish().unwrap();
    assert_eq!(reading.await.unwrap(), sent);
    assert!(
        scanner.stats().frame_tx.data_blocked > 0,
        "the scanner never reported its window closed, yet it grew to {grown}"
    );
    let (_, grown_credit) = windows.credit();
    assert!(
        grown_credit <= grown_budget,
        "{grown_credit} granted beyond the shares"
    );
    assert_eq!(windows.window(&idle), Some(MIN_CONNECTION_WINDOW));

    // Stopped sending: the window halves back to the share.
    let deadline = Instant::now() + Duration::from_secs(30);
    while windows.window(&sending) != Some(MIN_CONNECTION_WINDOW) {
        assert!(
            Instant::now() < deadline,
            "the window stayed at {:?} after the scanner stopped",
            windows.window(&sending)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    windows.closed(&sending);
    windows.closed(&idle);
    assert_eq!(windows.credit(), (0, 0));
}

/// The pipeline stores one page at a time here; a scanner sends eight 6 MB pages at once on
/// one connection. The seven waiting can hold 4 MiB each of what was sent in QUIC's buffers,
/// more than the connection's 16 MiB window: the page being stored then got no more bytes
/// and the push stalled for good. Now the waiting pages give their place back (refused as
/// busy, sent again) and every page is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_the_pipeline_has_not_taken_do_not_starve_the_one_it_has() {
    use quire_client::push::{push_pages, Upload};
    let server = TestServer::in_process_with(
        "[pipeline]\nmax_active_pages = 1\n",
        Arc::new(quire_server::clock::SystemClock),
    );
    let conn = server.connect().await;
    let pages: Vec<(String, std::io::Cursor<Vec<u8>>)> = (0..8u32)
        .map(|i| {
            let body: Vec<u8> = (0..6_000_000u32)
                .map(|b| (b.wrapping_mul(2_654_435_761) >> (i + 3)) as u8)
                .collect();
            (format!("page-{i}.bin"), std::io::Cursor::new(body))
        })
        .collect();
    let upload = Upload::new("starving-job");
    // A bound on a hang, not a speed test: the push took under 10 s here.
    let pushed = tokio::time::timeout(
        Duration::from_secs(180),
        push_pages(&conn, &upload, pages, 8),
    )
    .await
    .expect("the push stalled: the page being stored got no bytes");
    pushed.unwrap();
    conn.close().await;
}

/// quinn 0.11 looks at the connection's credit before a stream's stop: a write the
/// connection's credit holds back, on a stream whose own credit is spent, did not see the
/// server stop that stream and waited for good. A scanner's page refused as busy (above)
/// hung its push that way about one run in six. Stream A spends its own credit, B the
/// connection's; the server lowers its window (as the windows do), so stopping A pays off
/// the lowered window and sends no credit; then reading B sends some, and only B may use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_connection_holds_back_still_sees_its_stream_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = quic_endpoints_with(dir.path(), |t| {
        t.stream_receive_window(16_384u32.into());
        t.receive_window(24_576u32.into());
    });
    let addr = server.local_addr().unwrap();
    let (scanner, served) = tokio::join!(
        async { client.connect(addr, "localhost").unwrap().await.unwrap() },
        async { server.accept().await.unwrap().await.unwrap() }
    );
    let page = bytes::Bytes::from(vec![0x42u8; 64 * 1024]);
    let spawn_writer = |mut send: quinn::SendStream| {
        let page = page.clone();
        tokio::spawn(async move {
            let written = write_data(&mut send, page).await;
            let _ = send.finish();
            written
        })
    };
    let (a, _) = scanner.open_bi().await.unwrap();
    let a_written = spawn_writer(a);
    let (_, mut a_recv) = served.accept_bi().await.unwrap();
    let (b, _) = scanner.open_bi().await.unwrap();
    let b_written = spawn_writer(b);
    let (_, mut b_recv) = served.accept_bi().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while scanner.stats().frame_tx.data_blocked == 0
        || scanner.stats().frame_tx.stream_data_blocked == 0
    {
        assert!(
            Instant::now() < deadline,
            "the writers never ran out of credit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.set_receive_window(8_192u32.into());
    a_recv.stop(0u32.into()).unwrap();
    // Time for the stop to reach the scanner while the connection's credit is spent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_read = b_recv.read_to_end(1024 * 1024).await.unwrap();
    assert!(b_read.len() > page.len());
    b_written.await.unwrap().unwrap();
    // A bound on a hang, not a speed test.
    let a_result = tokio::time::timeout(Duration::from_secs(30), a_written)
        .await
        .expect("the write on the stopped stream never returned")
        .unwrap();
    assert!(
        matches!(
            a_result,
            Err(quire_net::stream::StreamError::Write(
                quinn::WriteError::Stopped(_)
            ))
        ),
        "{a_result:?}"
    );
}
