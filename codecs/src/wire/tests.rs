use super::*;
use bytes::{BufMut, BytesMut};

fn entry(i: u32) -> PageEntry {
    PageEntry {
        index: i,
        name: format!("Größe {i}.tif"),
        size: 1234 + i as u64,
        sha256: [i as u8; 32],
    }
}

fn all_frames() -> Vec<Frame> {
    let mut frames = frames_first_half();
    frames.extend(frames_of_pages_and_jobs());
    frames.extend(frames_of_admin());
    frames
}

/// Every frame type at least once, in two tables (so neither function grows without bound).
fn frames_first_half() -> Vec<Frame> {
    vec![
        Frame::Hello {
            tenant: "acme".into(),
            device_id: "scanner-1".into(),
            secret: [7; 32],
        },
        Frame::Welcome {
            tenant: "acme".into(),
            role: Role::Device,
        },
        Frame::JobOpen {
            tenant: "acme".into(),
            job_id: "job.2026-11-22_x".into(),
            upload: Some(UploadId([4; 16])),
        },
        Frame::JobOpen {
            tenant: "acme".into(),
            job_id: "older-client".into(),
            upload: None,
        },
        Frame::Enroll {
            token: [3; 32],
            device_id: "scanner-9".into(),
        },
        Frame::AdminToken {
            token: [4; 32],
            expires_unix: 1_800_000_000,
        },
        Frame::Admin(AdminRequest::TokenCreate {
            tenant: "acme".into(),
            ttl_secs: 3600,
        }),
        Frame::Admin(AdminRequest::Status {
            tenant: "acme".into(),
            reason: "ticket 42".into(),
        }),
        Frame::Admin(AdminRequest::GrantCreate {
            tenant: "acme".into(),
            partner: "helpdesk-1".into(),
            hours: 4,
            reason: "scanner jams".into(),
        }),
        Frame::Admin(AdminRequest::GrantRevoke {
            tenant: "acme".into(),
            partner: "helpdesk-1".into(),
        }),
        Frame::Admin(AdminRequest::DeviceRotate {
            device_id: "scanner-1".into(),
        }),
        Frame::Admin(AdminRequest::HoldSet {
            tenant: "acme".into(),
            job: Some("job-7".into()),
            reason: "court order 12/2026".into(),
        }),
        Frame::Admin(AdminRequest::HoldSet {
            tenant: "acme".into(),
            job: None,
            reason: "audit".into(),
        }),
        Frame::Admin(AdminRequest::HoldRelease {
            tenant: "acme".into(),
            job: None,
        }),
        Frame::Admin(AdminRequest::DeliveryList {
            tenant: "acme".into(),
        }),
        Frame::Admin(AdminRequest::DeliveryAck {
            tenant: "acme".into(),
            job_id: "job-7".into(),
        }),
        Frame::Admin(AdminRequest::JobAbort {
            tenant: "acme".into(),
            job_id: "job-8".into(),
        }),
        Frame::Admin(AdminRequest::TlsReload {}),
        Frame::AdminJobs(vec![JobInfo {
            job_id: "job-7".into(),
            pages: 3,
            bytes: 1 << 20,
            committed_unix: 1_790_000_000,
            held: true,
        }]),
        Frame::AdminJobStates(
            [
                JobPhase::Open,
                JobPhase::Committed,
                JobPhase::Delivered,
                JobPhase::Deleted,
            ]
            .into_iter()
            .enumerate()
            .map(|(i, phase)| JobState {
                job_id: format!("job.{i}"),
                phase,
                held: i == 1,
                pages: 3,
                bytes: 1 << 20,
                created_unix: 1_789_000_000,
                committed_unix: 1_790_000_000 * (i > 0) as u64,
                delivered_unix: 1_791_000_000 * (i > 1) as u64,
                deleted_unix: 1_792_000_000 * (i > 2) as u64,
            })
            .collect(),
        ),
        Frame::AdminDelivered {
            deleted_objects: 4,
            kept_because: String::new(),
        },
        Frame::AdminStatus {
            tenant: "acme".into(),
            devices: 3,
            jobs: 9,
            committed_jobs: 8,
            committed_bytes: 1 << 33,
        },
        Frame::JobStatus {
            committed: true,
            pages: vec![entry(0), entry(5)],
        },
    ]
}

fn frames_of_pages_and_jobs() -> Vec<Frame> {
    vec![
        Frame::PagePut {
            tenant: "acme".into(),
            job_id: "j1".into(),
            page: entry(3),
            upload: Some(UploadId([5; 16])),
        },
        Frame::PagePut {
            tenant: "acme".into(),
            job_id: "j1".into(),
            page: entry(3),
            upload: None,
        },
        Frame::Data(Bytes::from_static(b"hello page")),
        Frame::PageEnd,
        Frame::PagePutDigestAfter {
            tenant: "acme".into(),
            job_id: "j1".into(),
            index: 99_999,
            name: "é".repeat(127),
            size: 100 << 20,
            upload: UploadId([7; 16]),
        },
        Frame::PageEndDigest([3; 32]),
        Frame::PageStored {
            index: 3,
            sha256: [9; 32],
        },
        Frame::JobCommit {
            tenant: "acme".into(),
            job_id: "j1".into(),
            page_count: 7,
            upload: Some(UploadId([6; 16])),
        },
        Frame::JobCommit {
            tenant: "acme".into(),
            job_id: "j1".into(),
            page_count: 7,
            upload: None,
        },
        Frame::JobCommitted {
            pages: 7,
            bytes: 1 << 40,
        },
        Frame::JobGet {
            tenant: "acme".into(),
            job_id: "j1".into(),
            page: Some(2),
            reason: String::new(),
        },
        Frame::JobGet {
            tenant: "acme".into(),
            job_id: "j1".into(),
            page: None,
            reason: "ticket 4711: customer asks why page 3 is blank".into(),
        },
        Frame::JobGet {
            tenant: "acme".into(),
            job_id: "j1".into(),
            page: None,
            reason: String::new(),
        },
        Frame::Manifest {
            job_id: "j1".into(),
            pages: vec![entry(1)],
        },
        Frame::PageBegin(entry(2)),
        Frame::Done,
    ]
}

fn frames_of_admin() -> Vec<Frame> {
    vec![
        Frame::Admin(AdminRequest::TenantCreate {
            tenant: "beta".into(),
        }),
        Frame::Admin(AdminRequest::DeviceCreate {
            tenant: "beta".into(),
            device_id: "d-1".into(),
            role: Role::TenantAdmin,
            enabled: true,
        }),
        Frame::Admin(AdminRequest::DeviceSetState {
            device_id: "d-1".into(),
            state: DeviceState::Disabled,
        }),
        Frame::Admin(AdminRequest::DeviceList {
            tenant: "beta".into(),
        }),
        Frame::Admin(AdminRequest::KeyRotate {
            tenant: "beta".into(),
        }),
        Frame::Admin(AdminRequest::JobList {
            tenant: "acme".into(),
            job: Some("job.1".into()),
        }),
        Frame::Admin(AdminRequest::JobList {
            tenant: "acme".into(),
            job: None,
        }),
        Frame::Admin(AdminRequest::KeyRetire {
            tenant: "acme".into(),
            version: 3,
        }),
        Frame::Admin(AdminRequest::KeyRewrap {
            tenant: "beta".into(),
        }),
        Frame::Admin(AdminRequest::TenantShred {
            tenant: "beta".into(),
        }),
        Frame::AdminKey {
            tenant: "beta".into(),
            version: 3,
            rewrapped: 12,
        },
        Frame::Admin(AdminRequest::AuditVerify {
            tenant: "beta".into(),
        }),
        Frame::Admin(AdminRequest::AuditExport {
            tenant: "beta".into(),
            since_unix_ms: 1_790_000_000_000,
        }),
        Frame::Admin(AdminRequest::ManifestGet {
            tenant: "beta".into(),
            job_id: "Rechnung-17.2026".into(),
            reason: "ticket 4711".into(),
        }),
        Frame::Admin(AdminRequest::SigningKeyExport {
            tenant: "beta".into(),
        }),
        Frame::Admin(AdminRequest::Scrub {
            tenant: "beta".into(),
            after: Some("job-7".into()),
            max_mb_per_s: 50,
        }),
        Frame::Admin(AdminRequest::BackupCreate {}),
        Frame::Admin(AdminRequest::ScrubRepair {
            tenant: "beta".into(),
            after: None,
            max_mb_per_s: 0,
        }),
        Frame::AdminAuditReport(AuditReport {
            tenant: "beta".into(),
            records: 10,
            legacy_records: 2,
            head_seq: 10,
            checkpoints: 3,
            last_checkpoint_seq: 9,
            problem: "line 5, record 3: edited".into(),
        }),
        Frame::AdminIssued {
            device_id: "d-1".into(),
            tenant: "beta".into(),
            role: Role::Device,
            secret: [1; 32],
        },
        Frame::AdminDevices(vec![DeviceInfo {
            device_id: "d-1".into(),
            tenant: "beta".into(),
            role: Role::ServiceAdmin,
            state: DeviceState::Pending,
        }]),
        Frame::Error {
            code: ErrorCode::TenantMismatch,
            message: "no".into(),
        },
    ]
}

#[test]
fn every_frame_round_trips_even_fed_one_byte_at_a_time() {
    let frames = all_frames();
    let mut wire = BytesMut::new();
    for f in &frames {
        encode(f, &mut wire);
    }
    let wire = wire.freeze();
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut data = Vec::new();
    for i in 0..wire.len() {
        d.feed(wire.slice(i..i + 1));
        while let Some(f) = d.next_frame().unwrap() {
            match f {
                Frame::Data(b) => data.extend_from_slice(&b),
                other => {
                    if !data.is_empty() {
                        out.push(Frame::Data(Bytes::from(std::mem::take(&mut data))));
                    }
                    out.push(other)
                }
            }
        }
    }
    assert_eq!(out, frames);
    assert!(d.finish().is_ok());
}

#[test]
fn data_payload_is_not_copied() {
    let payload = Bytes::from(vec![42u8; 1000]);
    let mut head = BytesMut::new();
    encode_data_header(1000, &mut head);
    let mut d = Decoder::new();
    d.feed(head.freeze());
    d.feed(payload.clone());
    match d.next_frame().unwrap() {
        Some(Frame::Data(b)) => assert_eq!(b.as_ptr(), payload.as_ptr()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_frames_are_refused_before_buffering() {
    let mut d = Decoder::new();
    d.feed(Bytes::from_static(&[kind::HELLO, 0xff, 0xff, 0xff, 0xff]));
    assert!(matches!(
        d.next_frame(),
        Err(WireError::FrameTooLong { .. })
    ));
    let mut d = Decoder::new();
    let mut b = vec![kind::DATA];
    b.extend_from_slice(&(MAX_DATA_LEN + 1).to_be_bytes());
    d.feed(Bytes::from(b));
    assert!(matches!(
        d.next_frame(),
        Err(WireError::FrameTooLong { .. })
    ));
}

#[test]
fn malformed_frames_get_typed_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x55, 0, 0, 0, 0], "unknown type"),
        (vec![kind::HELLO, 0, 0, 0, 2, 0, 9], "short"),
        (vec![kind::PAGE_END, 0, 0, 0, 1, 0], "trailing"),
        (
            vec![kind::JOB_OPEN, 0, 0, 0, 6, 0, 1, b'a', 0, 1, b'/'],
            "bad job id",
        ),
        (
            vec![kind::JOB_GET, 0, 0, 0, 7, 0, 1, b'a', 0, 1, b'j', 7],
            "bad bool",
        ),
        (
            [vec![kind::PAGE_END_DIGEST, 0, 0, 0, 31], vec![0; 31]].concat(),
            "short digest",
        ),
        (
            digest_after_without_upload(),
            "a digest-after page without its upload",
        ),
    ];
    for (bytes, what) in cases {
        let mut d = Decoder::new();
        d.feed(Bytes::from(bytes));
        assert!(d.next_frame().is_err(), "{what} accepted");
        assert!(d.next_frame().is_err(), "{what}: decoder recovered");
    }
}

/// A `PagePutDigestAfter` cut before its (required) upload id.
fn digest_after_without_upload() -> Vec<u8> {
    let whole = encode_to_bytes(&Frame::PagePutDigestAfter {
        tenant: "a".into(),
        job_id: "j".into(),
        index: 0,
        name: "p".into(),
        size: 1,
        upload: UploadId([1; 16]),
    });
    let mut cut = whole[..whole.len() - 16].to_vec();
    let len = (cut.len() - 5) as u32;
    cut[1..5].copy_from_slice(&len.to_be_bytes());
    cut
}

#[test]
fn truncation_is_reported_at_finish() {
    let wire = encode_to_bytes(&Frame::JobOpen {
        tenant: "acme".into(),
        job_id: "j".into(),
        upload: None,
    });
    let mut d = Decoder::new();
    d.feed(wire.slice(..wire.len() - 1));
    assert_eq!(d.next_frame().unwrap(), None);
    assert_eq!(d.finish(), Err(WireError::TruncatedFrame));
}

#[test]
fn an_upload_id_is_whole_or_absent() {
    let whole = encode_to_bytes(&Frame::JobCommit {
        tenant: "acme".into(),
        job_id: "j".into(),
        page_count: 2,
        upload: Some(UploadId([7; 16])),
    });
    // Cut inside the id, with the header's length adjusted: never read as "no upload".
    for cut in [1, 8, 15] {
        let mut b = BytesMut::from(&whole[..whole.len() - cut]);
        let len = (b.len() - FRAME_HEADER_LEN) as u32;
        b[1..5].copy_from_slice(&len.to_be_bytes());
        let mut d = Decoder::new();
        d.feed(b.freeze());
        assert!(d.next_frame().is_err(), "cut {cut} accepted");
    }
    // Anything after the id is trailing garbage.
    let mut b = BytesMut::from(&whole[..]);
    b.put_u8(0);
    let len = (b.len() - FRAME_HEADER_LEN) as u32;
    b[1..5].copy_from_slice(&len.to_be_bytes());
    let mut d = Decoder::new();
    d.feed(b.freeze());
    assert!(d.next_frame().is_err());
    assert_eq!(
        UploadId::from_hex(&UploadId([0xc3; 16]).to_hex()),
        Some(UploadId([0xc3; 16]))
    );
    assert_eq!(UploadId::from_hex("c3"), None);
    assert_eq!(UploadId::from_hex(&"g".repeat(32)), None);
}

#[test]
fn identifiers_cannot_escape_their_prefix() {
    for bad in [
        "",
        "..",
        "../x",
        "a/b",
        ".hidden",
        "a b",
        "é",
        &"x".repeat(129),
    ] {
        assert!(validate_job_id(bad).is_err(), "{bad:?}");
    }
    for good in ["j", "job-1", "2026.11.22_scan"] {
        assert!(validate_job_id(good).is_ok(), "{good:?}");
    }
    assert!(validate_id("tenant", "a.b").is_err());
    for bad in ["..", ".", "a/b", "a\\b", "a\nb", ""] {
        assert!(validate_page_name(bad).is_err(), "{bad:?}");
    }
    assert!(validate_page_name("Lieferschein Nr. 5 – Größe (Kopie) 北京.jpg").is_ok());
}

#[test]
fn debug_never_shows_secrets_tokens_or_page_bytes() {
    let secret = [0xab; 32];
    let shown = [
        Frame::Hello {
            tenant: "acme".into(),
            device_id: "d1".into(),
            secret,
        },
        Frame::Enroll {
            token: secret,
            device_id: "d1".into(),
        },
        Frame::AdminIssued {
            device_id: "d1".into(),
            tenant: "acme".into(),
            role: Role::Device,
            secret,
        },
        Frame::AdminToken {
            token: secret,
            expires_unix: 1,
        },
        Frame::Data(Bytes::from_static(b"CONFIDENTIAL INVOICE")),
    ]
    .iter()
    .map(|f| format!("{f:?} {f:#?}"))
    .collect::<String>();
    assert!(
        shown.contains("<redacted>") && shown.contains("<20 bytes>"),
        "{shown}"
    );
    for needle in ["171", "ab, ab", "abab", "CONFIDENTIAL"] {
        assert!(!shown.contains(needle), "{needle} in {shown}");
    }
    assert!(shown.contains("acme") && shown.contains("d1"));
}

#[test]
fn error_codes_round_trip() {
    for (c, n) in ErrorCode::NUMBERED {
        assert_eq!(ErrorCode::from_u16(c.to_u16()), c);
        assert_eq!(c.to_u16(), n);
    }
    // Numbers are never reused: each appears once, and they run 1..=N.
    let mut numbers: Vec<u16> = ErrorCode::NUMBERED.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=ErrorCode::NUMBERED.len() as u16).collect::<Vec<_>>()
    );
    assert_eq!(ErrorCode::Corrupt.to_u16(), 17);
    assert!(!ErrorCode::Corrupt.is_retryable());
    assert!(ErrorCode::ServerFull.is_retryable());
    assert_eq!(ErrorCode::from_u16(999), ErrorCode::Internal);
}

#[test]
fn every_admin_operation_is_in_the_round_trip() {
    let mut seen: Vec<u8> = all_frames()
        .iter()
        .filter_map(|f| match f {
            Frame::Admin(req) => Some(req.op()),
            _ => None,
        })
        .collect();
    seen.sort();
    seen.dedup();
    let all: Vec<u8> = AdminRequest::ALL.iter().map(|(op, _)| *op).collect();
    assert_eq!(seen, all);
}
