//! The scanner wire protocol (`quire/1`), as pure encode/decode with no sockets.
//!
//! Every QUIC stream carries one request: the client writes frames and finishes its
//! send side, the server answers with frames and finishes. A frame is
//! `type: u8 | len: u32 big-endian | payload`. Page bytes travel in `Data` frames that
//! the [`Decoder`] hands out as slices of the buffers it was fed, never copied; every
//! other frame is bounded by [`MAX_CONTROL_LEN`]. `docs/PROTOCOL.md` is the reference.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use educe::Educe;

/// The ALPN identifier of this protocol version; a TLS handshake without it fails.
pub const ALPN: &[u8] = b"quire/1";
/// Largest payload of a control (non-`Data`) frame.
pub const MAX_CONTROL_LEN: u32 = 64 * 1024;
/// Largest payload of one `Data` frame.
pub const MAX_DATA_LEN: u32 = 4 * 1024 * 1024;
/// Bytes of frame header before the payload.
pub const FRAME_HEADER_LEN: usize = 5;
/// Longest tenant or device identifier.
pub const MAX_ID_LEN: usize = 64;
/// Longest job identifier.
pub const MAX_JOB_ID_LEN: usize = 128;
/// Longest page file name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// Longest stated reason for a support access or grant.
pub const MAX_REASON_LEN: usize = 512;
/// Most pages one job may hold.
pub const MAX_PAGES: u32 = 100_000;

/// QUIC application close code: a clean shutdown (or an enrollment's connection ending).
pub const CLOSE_SHUTDOWN: u32 = 0;
/// QUIC application close code: authentication failed; the reason is the close reason.
pub const CLOSE_AUTH_FAILED: u32 = 1;
/// QUIC application close code: an administrator disabled, revoked or rotated the device.
pub const CLOSE_DEVICE_DISABLED: u32 = 2;

/// A malformed or out-of-bounds frame. Always the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    #[error("frame type 0x{kind:02x} declares {len} bytes, more than the limit of {limit}")]
    FrameTooLong { kind: u8, len: u32, limit: u32 },
    #[error("frame type 0x{kind:02x} is malformed: {reason}")]
    Malformed { kind: u8, reason: &'static str },
    #[error("the stream ended inside a frame")]
    TruncatedFrame,
    #[error("invalid {field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
}

/// Machine-readable reason carried by an [`Frame::Error`] reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame could not be parsed or broke a protocol rule.
    Malformed,
    /// No device with that identifier is registered.
    UnknownDevice,
    /// The credential secret does not match.
    BadCredential,
    /// The device exists but an administrator has not enabled it, or disabled it.
    DeviceDisabled,
    /// The request names a tenant other than the authenticated device's.
    TenantMismatch,
    /// A request arrived before the connection was authenticated.
    NotAuthenticated,
    /// The page ended before its declared size, or carried more bytes.
    Truncated,
    /// The page bytes do not hash to the declared SHA-256.
    IntegrityMismatch,
    /// A page or job exceeds a configured limit.
    TooLarge,
    /// The job or page does not exist (for this tenant).
    NotFound,
    /// The job conflicts with what is already stored (e.g. a different page under the same index).
    Conflict,
    /// The object store failed; the page was not stored and may be retried.
    StoreUnavailable,
    /// The caller lacks the role for this request.
    Forbidden,
    /// Anything else on the server's side.
    Internal,
    /// A per-device or per-tenant limit (rate, concurrent jobs) is exceeded; retry later.
    LimitExceeded,
    /// The server's spool is full (the object store is slow or down); retry later.
    Busy,
    /// A stored object failed authentication: it was altered or damaged at rest. Retrying
    /// does not help; the operator must restore it from a backup.
    Corrupt,
    /// The server ran out of disk space; not the scanner's fault, retry later.
    ServerFull,
}

impl ErrorCode {
    /// Every code with its number on the wire, fixed once and for all.
    const NUMBERED: [(ErrorCode, u16); 18] = [
        (ErrorCode::Malformed, 1),
        (ErrorCode::UnknownDevice, 2),
        (ErrorCode::BadCredential, 3),
        (ErrorCode::DeviceDisabled, 4),
        (ErrorCode::TenantMismatch, 5),
        (ErrorCode::NotAuthenticated, 6),
        (ErrorCode::Truncated, 7),
        (ErrorCode::IntegrityMismatch, 8),
        (ErrorCode::TooLarge, 9),
        (ErrorCode::NotFound, 10),
        (ErrorCode::Conflict, 11),
        (ErrorCode::StoreUnavailable, 12),
        (ErrorCode::Forbidden, 13),
        (ErrorCode::Internal, 14),
        (ErrorCode::LimitExceeded, 15),
        (ErrorCode::Busy, 16),
        (ErrorCode::Corrupt, 17),
        (ErrorCode::ServerFull, 18),
    ];

    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        Self::NUMBERED
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, n)| *n)
            .expect("every code is numbered")
    }

    /// Parses a wire number; unknown numbers map to `Internal` so newer servers stay readable.
    pub fn from_u16(v: u16) -> Self {
        Self::NUMBERED
            .iter()
            .find(|(_, n)| *n == v)
            .map(|(c, _)| *c)
            .unwrap_or(ErrorCode::Internal)
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::StoreUnavailable
                | ErrorCode::Internal
                | ErrorCode::LimitExceeded
                | ErrorCode::Busy
                | ErrorCode::ServerFull
        )
    }
}

/// One upload of a job: a random id a client picks when it starts pushing a job and keeps
/// (in its push journal) across resumes. The server binds the job to the first upload that
/// claims it, so a second process of the same device pushing the same job id is refused
/// instead of mixing its pages in.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(pub [u8; 16]);

impl UploadId {
    /// A fresh id from the OS random source.
    pub fn random() -> UploadId {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the OS random source failed");
        UploadId(id)
    }

    /// The id as 32 lowercase hex digits (how journals and metadata rows keep it).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex digits; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<UploadId> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(UploadId(out))
    }
}

impl std::fmt::Debug for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadId({})", self.to_hex())
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One page of a job as the manifest and the job status record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageEntry {
    pub index: u32,
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// A device's role, fixed when its credential is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A scanner: pushes and reads back its tenant's jobs.
    Device,
    /// A tenant administrator: manages devices of its tenant.
    TenantAdmin,
    /// The service operator: manages tenants.
    ServiceAdmin,
    /// Read-only status of its own tenant.
    Operator,
    /// A support partner: read-only status of a tenant that granted it access, while the
    /// grant lasts.
    SupportPartner,
}

impl Role {
    fn to_u8(self) -> u8 {
        match self {
            Role::Device => 1,
            Role::TenantAdmin => 2,
            Role::ServiceAdmin => 3,
            Role::Operator => 4,
            Role::SupportPartner => 5,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Role::Device,
            2 => Role::TenantAdmin,
            3 => Role::ServiceAdmin,
            4 => Role::Operator,
            5 => Role::SupportPartner,
            _ => return None,
        })
    }
    /// The lowercase name used in credential files and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::TenantAdmin => "tenant-admin",
            Role::ServiceAdmin => "service-admin",
            Role::Operator => "operator",
            Role::SupportPartner => "support-partner",
        }
    }
    /// Parses [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Role::Device,
            Role::TenantAdmin,
            Role::ServiceAdmin,
            Role::Operator,
            Role::SupportPartner,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// An administrative request, sent by a credential with an admin role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// Create a tenant (service admin only).
    TenantCreate { name: String },
    /// Issue a new credential of `role` for `tenant`; the device starts disabled unless `enabled`.
    DeviceCreate {
        tenant: String,
        device_id: String,
        role: Role,
        enabled: bool,
    },
    /// Enable, disable or revoke a device.
    DeviceSetState {
        device_id: String,
        state: DeviceState,
    },
    /// List devices of a tenant.
    DeviceList { tenant: String },
    /// Add a new key-encryption key version for a tenant.
    KeyRotate { tenant: String },
    /// Re-wrap every stored data key of a tenant under its newest key version.
    KeyRewrap { tenant: String },
    /// Destroy every key of a tenant (crypto-shredding) and revoke its devices.
    TenantShred { tenant: String },
    /// Issue a one-time enrollment token for a tenant, valid for `ttl_secs`.
    TokenCreate { tenant: String, ttl_secs: u32 },
    /// Read-only status of a tenant; a support partner states why it looks.
    Status { tenant: String, reason: String },
    /// Let a support partner see a tenant's status for `hours`, for a stated reason.
    GrantCreate {
        tenant: String,
        partner: String,
        hours: u32,
        reason: String,
    },
    /// Withdraw a support partner's access at once.
    GrantRevoke { tenant: String, partner: String },
    /// Issue a new secret for a device; the old one stops working at once.
    DeviceRotate { device_id: String },
    /// Place a legal hold on a whole tenant (`job: None`) or one job: nothing under it is
    /// deleted, by any policy, until the hold is released.
    HoldSet {
        tenant: String,
        job: Option<String>,
        reason: String,
    },
    /// Release a legal hold.
    HoldRelease { tenant: String, job: Option<String> },
    /// The committed jobs of a tenant not yet acknowledged by a delivery consumer.
    DeliveryList { tenant: String },
    /// A delivery consumer has fetched and verified the job: record it, and apply the
    /// tenant's retention policy (e.g. delete on delivery).
    DeliveryAck { tenant: String, job_id: String },
    /// Abandon an uncommitted job: its stored pages are deleted and its id is free again.
    JobAbort { tenant: String, job_id: String },
}

/// One row of a delivery listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub job_id: String,
    pub pages: u32,
    pub bytes: u64,
    pub committed_unix: u64,
    /// Under a legal hold (of the job or its tenant).
    pub held: bool,
}

/// The life cycle of a device credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Registered, waiting for an administrator.
    Pending,
    /// May send.
    Enabled,
    /// Stopped by an administrator; may be enabled again.
    Disabled,
    /// Permanently withdrawn.
    Revoked,
}

impl DeviceState {
    fn to_u8(self) -> u8 {
        match self {
            DeviceState::Pending => 1,
            DeviceState::Enabled => 2,
            DeviceState::Disabled => 3,
            DeviceState::Revoked => 4,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => DeviceState::Pending,
            2 => DeviceState::Enabled,
            3 => DeviceState::Disabled,
            4 => DeviceState::Revoked,
            _ => return None,
        })
    }
    /// The lowercase name used in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Enabled => "enabled",
            DeviceState::Disabled => "disabled",
            DeviceState::Revoked => "revoked",
        }
    }
}

/// One row of a device listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub device_id: String,
    pub tenant: String,
    pub role: Role,
    pub state: DeviceState,
}

/// Every frame of the protocol. See `docs/PROTOCOL.md` for who sends which and when.
///
/// `Debug` never shows a secret, a token or page bytes (only their length), so a frame can
/// be logged.
#[derive(Educe, Clone, PartialEq, Eq)]
#[educe(Debug)]
pub enum Frame {
    /// Client, first stream of a connection: who I am.
    Hello {
        tenant: String,
        device_id: String,
        #[educe(Debug(method(redacted)))]
        secret: [u8; 32],
    },
    /// Server: the connection is authenticated.
    Welcome { tenant: String, role: Role },
    /// Client, first stream of a connection instead of `Hello`: enroll a new device with a
    /// one-time token. The answer is `AdminIssued` (the device starts pending) or `Error`.
    Enroll {
        #[educe(Debug(method(redacted)))]
        token: [u8; 32],
        device_id: String,
    },
    /// Client: I am about to push (or resume) this job; which pages do you already hold?
    JobOpen {
        tenant: String,
        job_id: String,
        /// The upload pushing it; `None` from clients older than the field.
        upload: Option<UploadId>,
    },
    /// Server: the pages of the job already stored and acknowledged.
    JobStatus {
        committed: bool,
        pages: Vec<PageEntry>,
    },
    /// Client: a page follows in `Data` frames, closed by `PageEnd`.
    PagePut {
        tenant: String,
        job_id: String,
        page: PageEntry,
        /// The upload this page belongs to; `None` from clients older than the field.
        upload: Option<UploadId>,
    },
    /// Page bytes (either direction).
    Data(#[educe(Debug(method(byte_count)))] Bytes),
    /// End of a page's bytes.
    PageEnd,
    /// Server: the page is durably stored; the client may forget it.
    PageStored { index: u32, sha256: [u8; 32] },
    /// Client: every page is sent; write the manifest.
    JobCommit {
        tenant: String,
        job_id: String,
        page_count: u32,
        /// The upload committing it; `None` from clients older than the field.
        upload: Option<UploadId>,
    },
    /// Server: the manifest is stored.
    JobCommitted { pages: u32, bytes: u64 },
    /// Client: send me this job's manifest and pages (all, or one).
    JobGet {
        tenant: String,
        job_id: String,
        page: Option<u32>,
        /// Why an operator or support partner reads (required of them, audited); empty for
        /// a scanner or tenant administrator. Sent only when not empty.
        reason: String,
    },
    /// Server: the job's manifest; for a `JobGet`, pages follow as `PageBegin`/`Data`/`PageEnd`.
    Manifest {
        job_id: String,
        pages: Vec<PageEntry>,
    },
    /// Server: one page of a `JobGet` follows.
    PageBegin(PageEntry),
    /// Server: the request is answered in full.
    Done,
    /// Client: an administrative request for the given tenant scope.
    Admin(AdminRequest),
    /// Server: a new credential's secret (sent once, never stored in clear).
    AdminIssued {
        device_id: String,
        tenant: String,
        role: Role,
        #[educe(Debug(method(redacted)))]
        secret: [u8; 32],
    },
    /// Server: a device listing.
    AdminDevices(Vec<DeviceInfo>),
    /// Server: a one-time enrollment token and when it expires (Unix seconds).
    AdminToken {
        #[educe(Debug(method(redacted)))]
        token: [u8; 32],
        expires_unix: u64,
    },
    /// Server: a tenant's status.
    AdminStatus {
        tenant: String,
        devices: u32,
        jobs: u32,
        committed_jobs: u32,
        committed_bytes: u64,
    },
    /// Server: jobs awaiting delivery.
    AdminJobs(Vec<JobInfo>),
    /// Server: a delivery was recorded; what the retention policy did with the job.
    AdminDelivered {
        deleted_objects: u32,
        /// Why the job was kept, empty if it was deleted.
        kept_because: String,
    },
    /// Server: the outcome of a key operation.
    AdminKey {
        tenant: String,
        version: u32,
        rewrapped: u64,
    },
    /// Either side: the request failed.
    Error { code: ErrorCode, message: String },
}

fn redacted(_: &[u8; 32], f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str("<redacted>")
}

fn byte_count(b: &Bytes, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    write!(f, "<{} bytes>", b.len())
}

pub(crate) mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const ENROLL: u8 = 0x03;
    pub const JOB_OPEN: u8 = 0x10;
    pub const JOB_STATUS: u8 = 0x11;
    pub const PAGE_PUT: u8 = 0x12;
    pub const DATA: u8 = 0x13;
    pub const PAGE_END: u8 = 0x14;
    pub const PAGE_STORED: u8 = 0x15;
    pub const JOB_COMMIT: u8 = 0x16;
    pub const JOB_COMMITTED: u8 = 0x17;
    pub const JOB_GET: u8 = 0x18;
    pub const MANIFEST: u8 = 0x19;
    pub const PAGE_BEGIN: u8 = 0x1a;
    pub const DONE: u8 = 0x1b;
    pub const ADMIN: u8 = 0x30;
    pub const ADMIN_ISSUED: u8 = 0x31;
    pub const ADMIN_DEVICES: u8 = 0x32;
    pub const ADMIN_KEY: u8 = 0x33;
    pub const ADMIN_TOKEN: u8 = 0x34;
    pub const ADMIN_STATUS: u8 = 0x35;
    pub const ADMIN_JOBS: u8 = 0x36;
    pub const ADMIN_DELIVERED: u8 = 0x37;
    pub const ERROR: u8 = 0x7f;
}

/// Checks a tenant or device identifier: 1 to 64 of `[A-Za-z0-9_-]`, so that it is safe in
/// object keys and file names.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), WireError> {
    validate_token(field, id, MAX_ID_LEN, false)
}

/// Checks a job identifier: 1 to 128 of `[A-Za-z0-9._-]`, not starting with a dot, so that it
/// can never climb out of its tenant's prefix.
pub fn validate_job_id(id: &str) -> Result<(), WireError> {
    validate_token("job id", id, MAX_JOB_ID_LEN, true)
}

fn validate_token(field: &'static str, s: &str, max: usize, dots: bool) -> Result<(), WireError> {
    let bad = |reason| Err(WireError::InvalidField { field, reason });
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > max {
        return bad("too long");
    }
    if s.starts_with('.') || s.starts_with('-') {
        return bad("must start with a letter, digit or underscore");
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.'));
    if !ok {
        return bad("only letters, digits, '_' and '-' (and '.' in job ids) are allowed");
    }
    Ok(())
}

/// Checks a page file name: valid UTF-8 of 1 to 255 bytes, no path separator, no control
/// character, not `.` or `..`. Names are metadata only; they never form object keys.
pub fn validate_page_name(name: &str) -> Result<(), WireError> {
    let bad = |reason| {
        Err(WireError::InvalidField {
            field: "page name",
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1 to 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return bad("must not contain '/', '\\' or control characters");
    }
    Ok(())
}

/// Appends the encoding of `frame` to `out`.
///
/// For large pages prefer [`encode_data_header`] followed by the payload itself, which
/// avoids copying page bytes.
///
/// A list frame too long for one control frame is written as several frames of its type
/// (see [`crate::lists`]); the receiver joins them with a [`crate::lists::Reassembler`].
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    if let Frame::Data(bytes) = frame {
        encode_data_header(bytes.len() as u32, out);
        out.extend_from_slice(bytes);
        return;
    }
    let start = out.len();
    encode_one(frame, out);
    if out.len() - start - FRAME_HEADER_LEN > MAX_CONTROL_LEN as usize {
        out.truncate(start);
        for part in crate::lists::split(frame) {
            encode_one(&part, out);
        }
    }
}

fn encode_one(frame: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u8(0);
    out.put_u32(0);
    let k = encode_body(frame, out);
    out[start] = k;
    let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start + 1..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Convenience: the encoding of one frame as `Bytes`.
pub fn encode_to_bytes(frame: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    encode(frame, &mut b);
    b.freeze()
}

/// Appends the header of a `Data` frame carrying `len` bytes; the caller sends the bytes.
pub fn encode_data_header(len: u32, out: &mut BytesMut) {
    debug_assert!(len <= MAX_DATA_LEN);
    out.put_u8(kind::DATA);
    out.put_u32(len);
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// A trailing optional upload id: present or absent, never a flag byte, so that requests of
/// older clients (which end before it) still decode.
fn put_upload(out: &mut BytesMut, upload: &Option<UploadId>) {
    if let Some(u) = upload {
        out.put_slice(&u.0);
    }
}

fn put_entry(out: &mut BytesMut, p: &PageEntry) {
    out.put_u32(p.index);
    put_str(out, &p.name);
    out.put_u64(p.size);
    out.put_slice(&p.sha256);
}

fn put_entries(out: &mut BytesMut, pages: &[PageEntry]) {
    out.put_u32(pages.len() as u32);
    for p in pages {
        put_entry(out, p);
    }
}

fn encode_body(frame: &Frame, out: &mut BytesMut) -> u8 {
    match frame {
        Frame::Hello {
            tenant,
            device_id,
            secret,
        } => {
            put_str(out, tenant);
            put_str(out, device_id);
            out.put_slice(secret);
            kind::HELLO
        }
        Frame::Welcome { tenant, role } => {
            put_str(out, tenant);
            out.put_u8(role.to_u8());
            kind::WELCOME
        }
        Frame::JobOpen {
            tenant,
            job_id,
            upload,
        } => {
            put_str(out, tenant);
            put_str(out, job_id);
            put_upload(out, upload);
            kind::JOB_OPEN
        }
        Frame::Enroll { token, device_id } => {
            out.put_slice(token);
            put_str(out, device_id);
            kind::ENROLL
        }
        Frame::AdminToken {
            token,
            expires_unix,
        } => {
            out.put_slice(token);
            out.put_u64(*expires_unix);
            kind::ADMIN_TOKEN
        }
        Frame::JobStatus { committed, pages } => {
            out.put_u8(*committed as u8);
            put_entries(out, pages);
            kind::JOB_STATUS
        }
        Frame::PagePut {
            tenant,
            job_id,
            page,
            upload,
        } => {
            put_str(out, tenant);
            put_str(out, job_id);
            put_entry(out, page);
            put_upload(out, upload);
            kind::PAGE_PUT
        }
        Frame::Data(_) => unreachable!("handled by encode"),
        Frame::PageEnd => kind::PAGE_END,
        Frame::PageStored { index, sha256 } => {
            out.put_u32(*index);
            out.put_slice(sha256);
            kind::PAGE_STORED
        }
        Frame::JobCommit {
            tenant,
            job_id,
            page_count,
            upload,
        } => {
            put_str(out, tenant);
            put_str(out, job_id);
            out.put_u32(*page_count);
            put_upload(out, upload);
            kind::JOB_COMMIT
        }
        Frame::JobCommitted { pages, bytes } => {
            out.put_u32(*pages);
            out.put_u64(*bytes);
            kind::JOB_COMMITTED
        }
        Frame::JobGet {
            tenant,
            job_id,
            page,
            reason,
        } => {
            put_str(out, tenant);
            put_str(out, job_id);
            match page {
                Some(p) => {
                    out.put_u8(1);
                    out.put_u32(*p);
                }
                None => out.put_u8(0),
            }
            if !reason.is_empty() {
                put_str(out, reason);
            }
            kind::JOB_GET
        }
        Frame::Manifest { job_id, pages } => {
            put_str(out, job_id);
            put_entries(out, pages);
            kind::MANIFEST
        }
        Frame::PageBegin(p) => {
            put_entry(out, p);
            kind::PAGE_BEGIN
        }
        Frame::Done => kind::DONE,
        Frame::Admin(req) => {
            match req {
                AdminRequest::TenantCreate { name } => {
                    out.put_u8(1);
                    put_str(out, name);
                }
                AdminRequest::DeviceCreate {
                    tenant,
                    device_id,
                    role,
                    enabled,
                } => {
                    out.put_u8(2);
                    put_str(out, tenant);
                    put_str(out, device_id);
                    out.put_u8(role.to_u8());
                    out.put_u8(*enabled as u8);
                }
                AdminRequest::DeviceSetState { device_id, state } => {
                    out.put_u8(3);
                    put_str(out, device_id);
                    out.put_u8(state.to_u8());
                }
                AdminRequest::DeviceList { tenant } => {
                    out.put_u8(4);
                    put_str(out, tenant);
                }
                AdminRequest::KeyRotate { tenant } => {
                    out.put_u8(5);
                    put_str(out, tenant);
                }
                AdminRequest::KeyRewrap { tenant } => {
                    out.put_u8(6);
                    put_str(out, tenant);
                }
                AdminRequest::TenantShred { tenant } => {
                    out.put_u8(7);
                    put_str(out, tenant);
                }
                AdminRequest::TokenCreate { tenant, ttl_secs } => {
                    out.put_u8(8);
                    put_str(out, tenant);
                    out.put_u32(*ttl_secs);
                }
                AdminRequest::Status { tenant, reason } => {
                    out.put_u8(9);
                    put_str(out, tenant);
                    put_str(out, reason);
                }
                AdminRequest::GrantCreate {
                    tenant,
                    partner,
                    hours,
                    reason,
                } => {
                    out.put_u8(10);
                    put_str(out, tenant);
                    put_str(out, partner);
                    out.put_u32(*hours);
                    put_str(out, reason);
                }
                AdminRequest::GrantRevoke { tenant, partner } => {
                    out.put_u8(11);
                    put_str(out, tenant);
                    put_str(out, partner);
                }
                AdminRequest::DeviceRotate { device_id } => {
                    out.put_u8(12);
                    put_str(out, device_id);
                }
                AdminRequest::HoldSet {
                    tenant,
                    job,
                    reason,
                } => {
                    out.put_u8(13);
                    put_str(out, tenant);
                    put_str(out, job.as_deref().unwrap_or(""));
                    put_str(out, reason);
                }
                AdminRequest::HoldRelease { tenant, job } => {
                    out.put_u8(14);
                    put_str(out, tenant);
                    put_str(out, job.as_deref().unwrap_or(""));
                }
                AdminRequest::DeliveryList { tenant } => {
                    out.put_u8(15);
                    put_str(out, tenant);
                }
                AdminRequest::DeliveryAck { tenant, job_id } => {
                    out.put_u8(16);
                    put_str(out, tenant);
                    put_str(out, job_id);
                }
                AdminRequest::JobAbort { tenant, job_id } => {
                    out.put_u8(17);
                    put_str(out, tenant);
                    put_str(out, job_id);
                }
            }
            kind::ADMIN
        }
        Frame::AdminIssued {
            device_id,
            tenant,
            role,
            secret,
        } => {
            put_str(out, device_id);
            put_str(out, tenant);
            out.put_u8(role.to_u8());
            out.put_slice(secret);
            kind::ADMIN_ISSUED
        }
        Frame::AdminDevices(list) => {
            out.put_u32(list.len() as u32);
            for d in list {
                put_str(out, &d.device_id);
                put_str(out, &d.tenant);
                out.put_u8(d.role.to_u8());
                out.put_u8(d.state.to_u8());
            }
            kind::ADMIN_DEVICES
        }
        Frame::AdminJobs(list) => {
            out.put_u32(list.len() as u32);
            for j in list {
                put_str(out, &j.job_id);
                out.put_u32(j.pages);
                out.put_u64(j.bytes);
                out.put_u64(j.committed_unix);
                out.put_u8(j.held as u8);
            }
            kind::ADMIN_JOBS
        }
        Frame::AdminDelivered {
            deleted_objects,
            kept_because,
        } => {
            out.put_u32(*deleted_objects);
            put_str(out, kept_because);
            kind::ADMIN_DELIVERED
        }
        Frame::AdminKey {
            tenant,
            version,
            rewrapped,
        } => {
            put_str(out, tenant);
            out.put_u32(*version);
            out.put_u64(*rewrapped);
            kind::ADMIN_KEY
        }
        Frame::AdminStatus {
            tenant,
            devices,
            jobs,
            committed_jobs,
            committed_bytes,
        } => {
            put_str(out, tenant);
            out.put_u32(*devices);
            out.put_u32(*jobs);
            out.put_u32(*committed_jobs);
            out.put_u64(*committed_bytes);
            kind::ADMIN_STATUS
        }
        Frame::Error { code, message } => {
            out.put_u16(code.to_u16());
            // Bounded so that an error can always be encoded within MAX_CONTROL_LEN.
            let mut end = message.len().min(4096);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            put_str(out, &message[..end]);
            kind::ERROR
        }
    }
}

/// Cursor over one control frame's payload; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    kind: u8,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor over `buf`, reporting errors as frame type `kind`'s.
    pub(crate) fn new(kind: u8, buf: &'a [u8]) -> Self {
        Reader { kind, buf }
    }
    fn err(&self, reason: &'static str) -> WireError {
        WireError::Malformed {
            kind: self.kind,
            reason,
        }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.err("payload shorter than its fields"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A trailing upload id, absent in requests of clients older than the field.
    fn optional_upload(&mut self) -> Result<Option<UploadId>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let raw = self.take(16)?;
        Ok(Some(UploadId(raw.try_into().expect("took 16 bytes"))))
    }
    fn array32(&mut self) -> Result<[u8; 32], WireError> {
        Ok(self.take(32)?.try_into().unwrap())
    }
    fn string(&mut self, max: usize) -> Result<String, WireError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(self.err("string longer than its limit"));
        }
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    fn id(&mut self, field: &'static str) -> Result<String, WireError> {
        let s = self.string(MAX_ID_LEN)?;
        validate_id(field, &s)?;
        Ok(s)
    }
    pub(crate) fn job_id(&mut self) -> Result<String, WireError> {
        let s = self.string(MAX_JOB_ID_LEN)?;
        validate_job_id(&s)?;
        Ok(s)
    }
    /// A job id, or the empty string for "none".
    fn optional_job_id(&mut self) -> Result<Option<String>, WireError> {
        let s = self.string(MAX_JOB_ID_LEN)?;
        if s.is_empty() {
            return Ok(None);
        }
        validate_job_id(&s)?;
        Ok(Some(s))
    }
    fn entry(&mut self) -> Result<PageEntry, WireError> {
        let index = self.u32()?;
        if index >= MAX_PAGES {
            return Err(self.err("page index beyond the page limit"));
        }
        let name = self.string(MAX_NAME_LEN)?;
        validate_page_name(&name)?;
        Ok(PageEntry {
            index,
            name,
            size: self.u64()?,
            sha256: self.array32()?,
        })
    }
    pub(crate) fn entries(&mut self) -> Result<Vec<PageEntry>, WireError> {
        let n = self.u32()?;
        if n > MAX_PAGES {
            return Err(self.err("more pages than the page limit"));
        }
        // Each entry is at least 46 bytes, so the count cannot make us allocate beyond the payload.
        let mut v = Vec::with_capacity((n as usize).min(self.buf.len() / 46));
        for _ in 0..n {
            v.push(self.entry()?);
        }
        Ok(v)
    }
    fn role(&mut self) -> Result<Role, WireError> {
        let v = self.u8()?;
        Role::from_u8(v).ok_or_else(|| self.err("unknown role"))
    }
    fn state(&mut self) -> Result<DeviceState, WireError> {
        let v = self.u8()?;
        DeviceState::from_u8(v).ok_or_else(|| self.err("unknown device state"))
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err("boolean is neither 0 nor 1")),
        }
    }
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes after the last field"))
        }
    }
}

/// Parses the payload of a control frame of type `k`.
pub(crate) fn decode_control(k: u8, payload: &[u8]) -> Result<Frame, WireError> {
    let mut r = Reader {
        kind: k,
        buf: payload,
    };
    let frame = match k {
        kind::HELLO => Frame::Hello {
            tenant: r.id("tenant")?,
            device_id: r.id("device id")?,
            secret: r.array32()?,
        },
        kind::WELCOME => Frame::Welcome {
            tenant: r.id("tenant")?,
            role: r.role()?,
        },
        kind::ENROLL => Frame::Enroll {
            token: r.array32()?,
            device_id: r.id("device id")?,
        },
        kind::ADMIN_TOKEN => Frame::AdminToken {
            token: r.array32()?,
            expires_unix: r.u64()?,
        },
        kind::JOB_OPEN => Frame::JobOpen {
            tenant: r.id("tenant")?,
            job_id: r.job_id()?,
            upload: r.optional_upload()?,
        },
        kind::JOB_STATUS => Frame::JobStatus {
            committed: r.bool()?,
            pages: r.entries()?,
        },
        kind::PAGE_PUT => Frame::PagePut {
            tenant: r.id("tenant")?,
            job_id: r.job_id()?,
            page: r.entry()?,
            upload: r.optional_upload()?,
        },
        kind::PAGE_END => Frame::PageEnd,
        kind::PAGE_STORED => Frame::PageStored {
            index: r.u32()?,
            sha256: r.array32()?,
        },
        kind::JOB_COMMIT => Frame::JobCommit {
            tenant: r.id("tenant")?,
            job_id: r.job_id()?,
            page_count: r.u32()?,
            upload: r.optional_upload()?,
        },
        kind::JOB_COMMITTED => Frame::JobCommitted {
            pages: r.u32()?,
            bytes: r.u64()?,
        },
        kind::JOB_GET => Frame::JobGet {
            tenant: r.id("tenant")?,
            job_id: r.job_id()?,
            page: if r.bool()? { Some(r.u32()?) } else { None },
            // Absent in requests of clients older than the field.
            reason: if r.buf.is_empty() {
                String::new()
            } else {
                r.string(MAX_REASON_LEN)?
            },
        },
        kind::MANIFEST => Frame::Manifest {
            job_id: r.job_id()?,
            pages: r.entries()?,
        },
        kind::PAGE_BEGIN => Frame::PageBegin(r.entry()?),
        kind::DONE => Frame::Done,
        kind::ADMIN => Frame::Admin(match r.u8()? {
            1 => AdminRequest::TenantCreate {
                name: r.id("tenant")?,
            },
            2 => AdminRequest::DeviceCreate {
                tenant: r.id("tenant")?,
                device_id: r.id("device id")?,
                role: r.role()?,
                enabled: r.bool()?,
            },
            3 => AdminRequest::DeviceSetState {
                device_id: r.id("device id")?,
                state: r.state()?,
            },
            4 => AdminRequest::DeviceList {
                tenant: r.id("tenant")?,
            },
            5 => AdminRequest::KeyRotate {
                tenant: r.id("tenant")?,
            },
            6 => AdminRequest::KeyRewrap {
                tenant: r.id("tenant")?,
            },
            7 => AdminRequest::TenantShred {
                tenant: r.id("tenant")?,
            },
            8 => AdminRequest::TokenCreate {
                tenant: r.id("tenant")?,
                ttl_secs: r.u32()?,
            },
            9 => AdminRequest::Status {
                tenant: r.id("tenant")?,
                reason: r.string(MAX_REASON_LEN)?,
            },
            10 => AdminRequest::GrantCreate {
                tenant: r.id("tenant")?,
                partner: r.id("device id")?,
                hours: r.u32()?,
                reason: r.string(MAX_REASON_LEN)?,
            },
            11 => AdminRequest::GrantRevoke {
                tenant: r.id("tenant")?,
                partner: r.id("device id")?,
            },
            12 => AdminRequest::DeviceRotate {
                device_id: r.id("device id")?,
            },
            13 => AdminRequest::HoldSet {
                tenant: r.id("tenant")?,
                job: r.optional_job_id()?,
                reason: r.string(MAX_REASON_LEN)?,
            },
            14 => AdminRequest::HoldRelease {
                tenant: r.id("tenant")?,
                job: r.optional_job_id()?,
            },
            15 => AdminRequest::DeliveryList {
                tenant: r.id("tenant")?,
            },
            16 => AdminRequest::DeliveryAck {
                tenant: r.id("tenant")?,
                job_id: r.job_id()?,
            },
            17 => AdminRequest::JobAbort {
                tenant: r.id("tenant")?,
                job_id: r.job_id()?,
            },
            _ => return Err(r.err("unknown admin request")),
        }),
        kind::ADMIN_ISSUED => Frame::AdminIssued {
            device_id: r.id("device id")?,
            tenant: r.id("tenant")?,
            role: r.role()?,
            secret: r.array32()?,
        },
        kind::ADMIN_DEVICES => {
            let n = r.u32()?;
            let mut v = Vec::with_capacity((n as usize).min(r.buf.len() / 8));
            for _ in 0..n {
                v.push(DeviceInfo {
                    device_id: r.id("device id")?,
                    tenant: r.id("tenant")?,
                    role: r.role()?,
                    state: r.state()?,
                });
            }
            Frame::AdminDevices(v)
        }
        kind::ADMIN_JOBS => {
            let n = r.u32()?;
            let mut v = Vec::with_capacity((n as usize).min(r.buf.len() / 25));
            for _ in 0..n {
                v.push(JobInfo {
                    job_id: r.job_id()?,
                    pages: r.u32()?,
                    bytes: r.u64()?,
                    committed_unix: r.u64()?,
                    held: r.bool()?,
                });
            }
            Frame::AdminJobs(v)
        }
        kind::ADMIN_DELIVERED => Frame::AdminDelivered {
            deleted_objects: r.u32()?,
            kept_because: r.string(MAX_REASON_LEN)?,
        },
        kind::ADMIN_KEY => Frame::AdminKey {
            tenant: r.id("tenant")?,
            version: r.u32()?,
            rewrapped: r.u64()?,
        },
        kind::ADMIN_STATUS => Frame::AdminStatus {
            tenant: r.id("tenant")?,
            devices: r.u32()?,
            jobs: r.u32()?,
            committed_jobs: r.u32()?,
            committed_bytes: r.u64()?,
        },
        kind::ERROR => Frame::Error {
            code: ErrorCode::from_u16(r.u16()?),
            message: r.string(4096)?,
        },
        other => return Err(WireError::UnknownFrameType(other)),
    };
    r.finish()?;
    Ok(frame)
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Data { remaining: usize },
    Failed,
}

/// Incremental frame decoder: feed it whatever the transport delivered, take frames out.
///
/// `Data` payloads are returned as zero-copy slices of the fed buffers, possibly split
/// into several `Frame::Data` items; control frames are returned whole. Memory held is
/// bounded by what was fed and not yet taken plus one control frame. After an error the
/// decoder stays failed.
#[derive(Debug)]
pub struct Decoder {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            chunks: VecDeque::new(),
            buffered: 0,
            state: State::Head,
        }
    }

    /// Adds bytes received from the peer.
    pub fn feed(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.buffered += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    /// Bytes fed and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Whether the decoder sits exactly between frames (so end of stream here is clean).
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Head) && self.buffered == 0
    }

    /// Reports the end of the stream: an error if it cut a frame short.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.at_frame_boundary() {
            Ok(())
        } else {
            Err(WireError::TruncatedFrame)
        }
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            match self.state {
                State::Failed => return Err(WireError::TruncatedFrame),
                State::Data { remaining } => {
                    if remaining == 0 {
                        self.state = State::Head;
                        continue;
                    }
                    let Some(front) = self.chunks.front_mut() else {
                        return Ok(None);
                    };
                    let n = remaining.min(front.len());
                    let part = front.split_to(n);
                    if front.is_empty() {
                        self.chunks.pop_front();
                    }
                    self.buffered -= n;
                    self.state = State::Data {
                        remaining: remaining - n,
                    };
                    return Ok(Some(Frame::Data(part)));
                }
                State::Head => {
                    if self.buffered < FRAME_HEADER_LEN {
                        return Ok(None);
                    }
                    let mut head = [0u8; FRAME_HEADER_LEN];
                    self.peek(&mut head);
                    let k = head[0];
                    let len = u32::from_be_bytes(head[1..].try_into().unwrap());
                    let limit = if k == kind::DATA {
                        MAX_DATA_LEN
                    } else {
                        MAX_CONTROL_LEN
                    };
                    if len > limit {
                        self.state = State::Failed;
                        return Err(WireError::FrameTooLong {
                            kind: k,
                            len,
                            limit,
                        });
                    }
                    if k == kind::DATA {
                        self.consume(FRAME_HEADER_LEN);
                        self.state = State::Data {
                            remaining: len as usize,
                        };
                        continue;
                    }
                    let total = FRAME_HEADER_LEN + len as usize;
                    if self.buffered < total {
                        return Ok(None);
                    }
                    self.consume(FRAME_HEADER_LEN);
                    let mut payload = vec![0u8; len as usize];
                    self.peek(&mut payload);
                    self.consume(len as usize);
                    return match decode_control(k, &payload) {
                        Ok(f) => Ok(Some(f)),
                        Err(e) => {
                            self.state = State::Failed;
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    fn peek(&self, out: &mut [u8]) {
        let mut filled = 0;
        for c in &self.chunks {
            let n = (out.len() - filled).min(c.len());
            out[filled..filled + n].copy_from_slice(&c[..n]);
            filled += n;
            if filled == out.len() {
                return;
            }
        }
    }

    fn consume(&mut self, mut n: usize) {
        self.buffered -= n;
        while n > 0 {
            let front = self.chunks.front_mut().expect("consume within buffered");
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u32) -> PageEntry {
        PageEntry {
            index: i,
            name: format!("Größe {i}.tif"),
            size: 1234 + i as u64,
            sha256: [i as u8; 32],
        }
    }

    fn all_frames() -> Vec<Frame> {
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
            Frame::AdminJobs(vec![JobInfo {
                job_id: "job-7".into(),
                pages: 3,
                bytes: 1 << 20,
                committed_unix: 1_790_000_000,
                held: true,
            }]),
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
            Frame::Admin(AdminRequest::TenantCreate {
                name: "beta".into(),
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
        ];
        for (bytes, what) in cases {
            let mut d = Decoder::new();
            d.feed(Bytes::from(bytes));
            assert!(d.next_frame().is_err(), "{what} accepted");
            assert!(d.next_frame().is_err(), "{what}: decoder recovered");
        }
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
}
