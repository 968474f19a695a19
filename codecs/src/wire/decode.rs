//! Bytes to frames: the bounded field reader and the incremental [`Decoder`].

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

use super::*;

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
    pub(super) fn err(&self, reason: &'static str) -> WireError {
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
    pub(super) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A trailing upload id, absent in requests of clients older than the field.
    pub(super) fn optional_upload(&mut self) -> Result<Option<UploadId>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let raw = self.take(16)?;
        Ok(Some(UploadId(raw.try_into().expect("took 16 bytes"))))
    }
    pub(super) fn array32(&mut self) -> Result<[u8; 32], WireError> {
        Ok(self.take(32)?.try_into().unwrap())
    }
    pub(crate) fn array64(&mut self) -> Result<[u8; 64], WireError> {
        Ok(self.take(64)?.try_into().unwrap())
    }
    pub(crate) fn string(&mut self, max: usize) -> Result<String, WireError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(self.err("string longer than its limit"));
        }
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    pub(crate) fn id(&mut self, field: &'static str) -> Result<String, WireError> {
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
    pub(super) fn optional_job_id(&mut self) -> Result<Option<String>, WireError> {
        let s = self.string(MAX_JOB_ID_LEN)?;
        if s.is_empty() {
            return Ok(None);
        }
        validate_job_id(&s)?;
        Ok(Some(s))
    }
    pub(super) fn index_and_name(&mut self) -> Result<(u32, String), WireError> {
        let index = self.u32()?;
        if index >= MAX_PAGES {
            return Err(self.err("page index beyond the page limit"));
        }
        let name = self.string(MAX_NAME_LEN)?;
        validate_page_name(&name)?;
        Ok((index, name))
    }
    pub(super) fn entry(&mut self) -> Result<PageEntry, WireError> {
        let (index, name) = self.index_and_name()?;
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
    pub(super) fn role(&mut self) -> Result<Role, WireError> {
        let v = self.u8()?;
        Role::from_u8(v).ok_or_else(|| self.err("unknown role"))
    }
    pub(super) fn state(&mut self) -> Result<DeviceState, WireError> {
        let v = self.u8()?;
        DeviceState::from_u8(v).ok_or_else(|| self.err("unknown device state"))
    }
    pub(super) fn bool(&mut self) -> Result<bool, WireError> {
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
        kind::PAGE_PUT_DIGEST_AFTER => {
            let tenant = r.id("tenant")?;
            let job_id = r.job_id()?;
            let (index, name) = r.index_and_name()?;
            Frame::PagePutDigestAfter {
                tenant,
                job_id,
                index,
                name,
                size: r.u64()?,
                upload: UploadId(r.take(16)?.try_into().expect("took 16 bytes")),
            }
        }
        kind::PAGE_END_DIGEST => Frame::PageEndDigest(r.array32()?),
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
        kind::ADMIN => Frame::Admin(AdminRequest::get(&mut r)?),
        kind::ADMIN_ISSUED..=kind::ADMIN_AUDIT_REPORT => decode_admin_answer(k, &mut r)?,
        kind::ERROR => Frame::Error {
            code: ErrorCode::from_u16(r.u16()?),
            message: r.string(4096)?,
        },
        other => return Err(WireError::UnknownFrameType(other)),
    };
    r.finish()?;
    Ok(frame)
}

/// The answers to administrative requests (frame types `ADMIN_ISSUED` to
/// `ADMIN_AUDIT_REPORT`).
fn decode_admin_answer(k: u8, r: &mut Reader<'_>) -> Result<Frame, WireError> {
    Ok(match k {
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
        kind::ADMIN_JOB_STATES => {
            let n = r.u32()?;
            let mut v = Vec::with_capacity((n as usize).min(r.buf.len() / 49));
            for _ in 0..n {
                v.push(JobState {
                    job_id: r.job_id()?,
                    phase: {
                        let p = r.u8()?;
                        JobPhase::from_u8(p).ok_or_else(|| r.err("unknown job phase"))?
                    },
                    held: r.bool()?,
                    pages: r.u32()?,
                    bytes: r.u64()?,
                    created_unix: r.u64()?,
                    committed_unix: r.u64()?,
                    delivered_unix: r.u64()?,
                    deleted_unix: r.u64()?,
                });
            }
            Frame::AdminJobStates(v)
        }
        kind::ADMIN_DELIVERED => Frame::AdminDelivered {
            deleted_objects: r.u32()?,
            kept_because: r.string(MAX_REASON_LEN)?,
        },
        kind::ADMIN_AUDIT_REPORT => Frame::AdminAuditReport(AuditReport {
            tenant: r.id("tenant")?,
            records: r.u64()?,
            legacy_records: r.u64()?,
            head_seq: r.u64()?,
            checkpoints: r.u64()?,
            last_checkpoint_seq: r.u64()?,
            problem: r.string(4096)?,
        }),
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
        other => return Err(WireError::UnknownFrameType(other)),
    })
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

    pub(super) fn peek(&self, out: &mut [u8]) {
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

    pub(super) fn consume(&mut self, mut n: usize) {
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
