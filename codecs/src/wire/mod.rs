//! The scanner wire protocol (`quire/1`), as pure encode/decode with no sockets.
//!
//! Every QUIC stream carries one request: the client writes frames and finishes its
//! send side, the server answers with frames and finishes. A frame is
//! `type: u8 | len: u32 big-endian | payload`. Page bytes travel in `Data` frames that
//! the [`Decoder`] hands out as slices of the buffers it was fed, never copied; every
//! other frame is bounded by [`MAX_CONTROL_LEN`]. `docs/PROTOCOL.md` is the reference.

use bytes::Bytes;
use educe::Educe;

mod admin;
mod decode;
mod encode;

pub use admin::{AdminDescription, AdminRequest};
pub use decode::Decoder;
pub(crate) use decode::{decode_control, Reader};
pub use encode::{encode, encode_data_header, encode_to_bytes};

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
/// QUIC application close code: the handshake and `Hello` did not arrive within the server's
/// deadline (a slow or lossy link, or an overloaded client). Not the credential's fault:
/// connect again. (Servers before this code closed such connections with
/// [`CLOSE_AUTH_FAILED`].)
pub const CLOSE_TOO_SLOW: u32 = 3;

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
    /// A store the server depends on failed (the object store, or its metadata database);
    /// the request was not carried out and may be retried.
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

/// Where a job is in its life, for `quire admin jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Pages are arriving; not committed yet.
    Open,
    /// Committed, not yet fetched by a delivery consumer.
    Committed,
    /// A delivery consumer acknowledged it.
    Delivered,
    /// Its objects were deleted (retention or delete-on-delivery).
    Deleted,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Open => "open",
            JobPhase::Committed => "committed",
            JobPhase::Delivered => "delivered",
            JobPhase::Deleted => "deleted",
        }
    }
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            JobPhase::Open => 0,
            JobPhase::Committed => 1,
            JobPhase::Delivered => 2,
            JobPhase::Deleted => 3,
        }
    }
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        [
            JobPhase::Open,
            JobPhase::Committed,
            JobPhase::Delivered,
            JobPhase::Deleted,
        ]
        .into_iter()
        .find(|p| p.to_u8() == v)
    }
}

/// One row of `quire admin jobs`: a job's phase, size and times (Unix seconds, 0 = not yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub job_id: String,
    pub phase: JobPhase,
    /// Under a legal hold (of the job or its tenant).
    pub held: bool,
    pub pages: u32,
    pub bytes: u64,
    pub created_unix: u64,
    pub committed_unix: u64,
    pub delivered_unix: u64,
    pub deleted_unix: u64,
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
    /// Parses [`DeviceState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            DeviceState::Pending,
            DeviceState::Enabled,
            DeviceState::Disabled,
            DeviceState::Revoked,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
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
    /// Client: a page whose SHA-256 comes after its bytes, in [`Frame::PageEndDigest`], so
    /// that a scanner reads each page file once and hashes it while sending. Otherwise as
    /// `PagePut`; servers older than this frame answer `Malformed`.
    PagePutDigestAfter {
        tenant: String,
        job_id: String,
        index: u32,
        name: String,
        size: u64,
        upload: UploadId,
    },
    /// Client: ends the bytes of a `PagePutDigestAfter` page with their SHA-256.
    PageEndDigest([u8; 32]),
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
    /// Server: jobs of a tenant and where each is in its life.
    AdminJobStates(Vec<JobState>),
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
    /// Server: what checking a tenant's audit chain found.
    AdminAuditReport(AuditReport),
    /// Either side: the request failed.
    Error { code: ErrorCode, message: String },
}

/// The outcome of `audit.verify`: the chain as far as it was read, and the first problem.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditReport {
    pub tenant: String,
    /// Chained records of the tenant.
    pub records: u64,
    /// Records written before chaining by an earlier version (not covered).
    pub legacy_records: u64,
    /// The last record's position in the chain.
    pub head_seq: u64,
    /// Signed checkpoints found and matched.
    pub checkpoints: u64,
    /// The newest checkpoint's record: later ones are not signed yet.
    pub last_checkpoint_seq: u64,
    /// The first problem found, naming the record; empty when the chain verified.
    pub problem: String,
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
    pub const PAGE_PUT_DIGEST_AFTER: u8 = 0x1c;
    pub const PAGE_END_DIGEST: u8 = 0x1d;
    pub const ADMIN: u8 = 0x30;
    pub const ADMIN_ISSUED: u8 = 0x31;
    pub const ADMIN_DEVICES: u8 = 0x32;
    pub const ADMIN_KEY: u8 = 0x33;
    pub const ADMIN_TOKEN: u8 = 0x34;
    pub const ADMIN_STATUS: u8 = 0x35;
    pub const ADMIN_JOBS: u8 = 0x36;
    pub const ADMIN_DELIVERED: u8 = 0x37;
    pub const ADMIN_JOB_STATES: u8 = 0x38;
    pub const ADMIN_AUDIT_REPORT: u8 = 0x39;
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

#[cfg(test)]
mod tests;
