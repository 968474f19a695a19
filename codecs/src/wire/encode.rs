//! Frames to bytes.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

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

pub(super) fn put_str(out: &mut BytesMut, s: &str) {
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
        Frame::AdminToken { .. }
        | Frame::AdminIssued { .. }
        | Frame::AdminDevices(_)
        | Frame::AdminJobs(_)
        | Frame::AdminJobStates(_)
        | Frame::AdminDelivered { .. }
        | Frame::AdminKey { .. }
        | Frame::AdminAuditReport(_)
        | Frame::AdminStatus { .. } => encode_admin_answer(frame, out),
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
        Frame::PagePutDigestAfter {
            tenant,
            job_id,
            index,
            name,
            size,
            upload,
        } => {
            put_str(out, tenant);
            put_str(out, job_id);
            out.put_u32(*index);
            put_str(out, name);
            out.put_u64(*size);
            out.put_slice(&upload.0);
            kind::PAGE_PUT_DIGEST_AFTER
        }
        Frame::PageEndDigest(sha256) => {
            out.put_slice(sha256);
            kind::PAGE_END_DIGEST
        }
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
            req.put(out);
            kind::ADMIN
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

/// The bodies of the server's answers to administrative requests.
fn encode_admin_answer(frame: &Frame, out: &mut BytesMut) -> u8 {
    match frame {
        Frame::AdminToken {
            token,
            expires_unix,
        } => {
            out.put_slice(token);
            out.put_u64(*expires_unix);
            kind::ADMIN_TOKEN
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
        Frame::AdminJobStates(list) => {
            out.put_u32(list.len() as u32);
            for j in list {
                put_str(out, &j.job_id);
                out.put_u8(j.phase.to_u8());
                out.put_u8(j.held as u8);
                out.put_u32(j.pages);
                out.put_u64(j.bytes);
                for t in [
                    j.created_unix,
                    j.committed_unix,
                    j.delivered_unix,
                    j.deleted_unix,
                ] {
                    out.put_u64(t);
                }
            }
            kind::ADMIN_JOB_STATES
        }
        Frame::AdminDelivered {
            deleted_objects,
            kept_because,
        } => {
            out.put_u32(*deleted_objects);
            put_str(out, kept_because);
            kind::ADMIN_DELIVERED
        }
        Frame::AdminAuditReport(a) => {
            put_str(out, &a.tenant);
            for n in [
                a.records,
                a.legacy_records,
                a.head_seq,
                a.checkpoints,
                a.last_checkpoint_seq,
            ] {
                out.put_u64(n);
            }
            put_str(out, &a.problem);
            kind::ADMIN_AUDIT_REPORT
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
        _ => unreachable!("routed here by encode_body for admin answers only"),
    }
}
