//! The TCP port: QUIC carried over TLS over TCP for networks that drop UDP. With nothing
//! answering on UDP, `quire push` (transport `auto`) gets through over TCP and says so; TCP
//! and QUIC can each be forced; a server with `[tcp] listen = "off"` has no TCP port, and the
//! client says what failed each way. (scripts/test.sh also runs a set of the integration
//! tests a second time with `QUIRE_TRANSPORT=tcp`: the same behaviour over either transport.)

use std::time::Instant;

use crate::common::*;

fn sample_job(server: &TestServer) -> std::path::PathBuf {
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    for f in walk(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job")) {
        std::fs::copy(&f, job.join(f.file_name().unwrap())).unwrap();
    }
    job
}

#[test]
fn with_nothing_answering_on_udp_auto_gets_through_over_tcp() {
    // The TCP port on a number where no UDP socket listens: QUIC gets no answer there,
    // exactly as when a firewall drops UDP.
    let port = free_port();
    let server = TestServer::start_with_config(&format!("[tcp]\nlisten = \"127.0.0.1:{port}\"\n"));
    let job = sample_job(&server);
    let at = format!("127.0.0.1:{port}");
    let began = Instant::now();
    let o = server.quire(&[
        "push",
        job.to_str().unwrap(),
        "--no-progress",
        "--server",
        &at,
        "--transport",
        "auto",
    ]);
    let took = began.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("connected over TCP"), "{err}");
    eprintln!("push over the TCP fallback took {took:?}");
    let id = last_line(&o.stdout);
    let out = server.path().join("back");
    let o = server.quire(&[
        "get",
        "--job",
        &id,
        "--out",
        out.to_str().unwrap(),
        "--server",
        &at,
        "--transport",
        "auto",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    same_files(&job, &out);
}

#[test]
fn each_transport_can_be_forced_and_tcp_turned_off() {
    let server = TestServer::start();
    let job = sample_job(&server);
    for transport in ["tcp", "quic"] {
        let o = server.quire(&[
            "push",
            job.to_str().unwrap(),
            "--no-progress",
            "--again",
            "--transport",
            transport,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{transport}: {err}");
        // Only a fallback is announced; a forced transport is simply used.
        assert!(!err.contains("connected over TCP"), "{err}");
    }

    let off = TestServer::start_with_config("[tcp]\nlisten = \"off\"\n");
    let job = sample_job(&off);
    // Forced TCP does not quietly use QUIC.
    let o = off.quire(&[
        "push",
        job.to_str().unwrap(),
        "--no-progress",
        "--transport",
        "tcp",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("(TCP)") && err.contains("refused"), "{err}");
    // Auto still reaches it over QUIC.
    let o = off.quire(&[
        "push",
        job.to_str().unwrap(),
        "--no-progress",
        "--transport",
        "auto",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_tcp_port_without_tls_or_in_silence_costs_the_server_nothing_lasting() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    // Garbage instead of a TLS hello: the connection is closed, the server serves on.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    // Idle sockets beside a working push.
    let idle: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    let job = sample_job(&server);
    let o = server.quire(&[
        "push",
        job.to_str().unwrap(),
        "--no-progress",
        "--transport",
        "tcp",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(idle);
}

#[test]
fn the_tcp_port_speaks_tls_1_2_and_1_3_with_its_alpn_to_an_independent_client() {
    let server = TestServer::start();
    let ca = server.path().join("ca.pem");
    std::fs::write(&ca, &server.device_cred().server_ca).unwrap();
    for version in ["-tls1_2", "-tls1_3"] {
        let o = std::process::Command::new("openssl")
            .args([
                "s_client",
                version,
                "-alpn",
                "quire-tcp/1",
                "-servername",
                "localhost",
            ])
            .args(["-connect", &server.addr.to_string(), "-CAfile"])
            .arg(&ca)
            .arg("-verify_return_error")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let want = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(
            text.contains(&format!("Protocol  : {want}")) || text.contains(&format!(", {want}, ")),
            "{version}: {text}"
        );
        assert!(
            text.contains("ALPN protocol: quire-tcp/1"),
            "{version}: no ALPN: {text}"
        );
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{version}: {text}"
        );
    }
}
