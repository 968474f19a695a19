//! Lists longer than one control frame holds.
//!
//! A 100,000-page manifest with 255-byte names is about 30 MB, far beyond the 64 KiB a
//! control frame may carry. So the sender splits a list frame (`JobStatus`, `Manifest`,
//! `AdminDevices`, `AdminJobs`) into consecutive frames of the same type, each within
//! [`MAX_CONTROL_LEN`], and the receiver joins them again with a
//! [`Reassembler`] before it acts on the list. Each part is an ordinary frame, so the
//! decoder's bounds stay what they are; the reassembler bounds the joined list.

use crate::wire::{
    DeviceInfo, Frame, JobInfo, JobState, PageEntry, WireError, MAX_CONTROL_LEN, MAX_PAGES,
};

/// Most rows of a joined device or delivery listing.
pub const MAX_LIST_ROWS: usize = 100_000;

/// Encoded bytes of one page entry (`index | name | size | sha256`).
pub(crate) fn entry_len(p: &PageEntry) -> usize {
    4 + 2 + p.name.len() + 8 + 32
}

fn device_len(d: &DeviceInfo) -> usize {
    2 + d.device_id.len() + 2 + d.tenant.len() + 2
}

fn job_len(j: &JobInfo) -> usize {
    2 + j.job_id.len() + 4 + 8 + 8 + 1
}

fn job_state_len(j: &JobState) -> usize {
    2 + j.job_id.len() + 1 + 1 + 4 + 8 + 4 * 8
}

/// Cuts `items` into runs whose encoded size, after `header` bytes, fits a control frame.
/// Always at least one run, so an empty list is still sent as one frame.
fn runs<T: Clone>(items: &[T], header: usize, len: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let budget = MAX_CONTROL_LEN as usize - header;
    let mut out = vec![Vec::new()];
    let mut used = 0;
    for item in items {
        let n = len(item);
        if used + n > budget && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
            used = 0;
        }
        used += n;
        out.last_mut().expect("one run at least").push(item.clone());
    }
    out
}

/// The frames that carry `frame`: itself, or for a list too long for one frame, its parts in
/// order. Only list frames are ever split.
pub fn split(frame: &Frame) -> Vec<Frame> {
    match frame {
        Frame::JobStatus { committed, pages } => runs(pages, 1 + 4, entry_len)
            .into_iter()
            .map(|pages| Frame::JobStatus {
                committed: *committed,
                pages,
            })
            .collect(),
        Frame::Manifest { job_id, pages } => runs(pages, 2 + job_id.len() + 4, entry_len)
            .into_iter()
            .map(|pages| Frame::Manifest {
                job_id: job_id.clone(),
                pages,
            })
            .collect(),
        Frame::AdminDevices(list) => runs(list, 4, device_len)
            .into_iter()
            .map(Frame::AdminDevices)
            .collect(),
        Frame::AdminJobs(list) => runs(list, 4, job_len)
            .into_iter()
            .map(Frame::AdminJobs)
            .collect(),
        Frame::AdminJobStates(list) => runs(list, 4, job_state_len)
            .into_iter()
            .map(Frame::AdminJobStates)
            .collect(),
        other => vec![other.clone()],
    }
}

fn is_list(f: &Frame) -> bool {
    matches!(
        f,
        Frame::JobStatus { .. }
            | Frame::Manifest { .. }
            | Frame::AdminDevices(_)
            | Frame::AdminJobs(_)
            | Frame::AdminJobStates(_)
    )
}

fn too_long() -> WireError {
    WireError::InvalidField {
        field: "list",
        reason: "more entries than the limit",
    }
}

fn extend<T>(held: &mut Vec<T>, more: Vec<T>, limit: usize) -> Result<(), WireError> {
    if held.len() + more.len() > limit {
        return Err(too_long());
    }
    held.extend(more);
    Ok(())
}

/// Joins the parts of a split list frame as frames are decoded, sans-IO: feed each decoded
/// frame to [`push`](Reassembler::push), hand out what it returns, then what
/// [`take_ready`](Reassembler::take_ready) holds, and at the end of the stream what
/// [`finish`](Reassembler::finish) returns. A list is complete when any other frame or the
/// end of the stream follows it; other frames pass straight through.
#[derive(Debug, Default)]
pub struct Reassembler {
    held: Option<Frame>,
    ready: Option<Frame>,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next decoded frame; returns a frame that is complete, if any.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Frame>, WireError> {
        let Some(held) = self.held.as_mut() else {
            if is_list(&frame) {
                self.held = Some(frame);
                return Ok(None);
            }
            return Ok(Some(frame));
        };
        match (held, frame) {
            (
                Frame::JobStatus { committed, pages },
                Frame::JobStatus {
                    committed: c,
                    pages: more,
                },
            ) if *committed == c => extend(pages, more, MAX_PAGES as usize)?,
            (
                Frame::Manifest { job_id, pages },
                Frame::Manifest {
                    job_id: j,
                    pages: more,
                },
            ) if *job_id == j => extend(pages, more, MAX_PAGES as usize)?,
            (Frame::AdminDevices(list), Frame::AdminDevices(more)) => {
                extend(list, more, MAX_LIST_ROWS)?
            }
            (Frame::AdminJobs(list), Frame::AdminJobs(more)) => extend(list, more, MAX_LIST_ROWS)?,
            (Frame::AdminJobStates(list), Frame::AdminJobStates(more)) => {
                extend(list, more, MAX_LIST_ROWS)?
            }
            (_, next) => {
                let done = self.held.take();
                if is_list(&next) {
                    self.held = Some(next);
                } else {
                    self.ready = Some(next);
                }
                return Ok(done);
            }
        }
        Ok(None)
    }

    /// A frame that arrived right behind a completed list, to be handed out next.
    pub fn take_ready(&mut self) -> Option<Frame> {
        self.ready.take()
    }

    /// The stream ended: the list being joined, if any, is complete.
    pub fn finish(&mut self) -> Option<Frame> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Decoder};

    fn entry(i: u32) -> PageEntry {
        PageEntry {
            index: i,
            // 255 bytes of UTF-8, non-ASCII: the longest name a page may have.
            name: format!("{i:06}-{}", "é".repeat(124)),
            size: u64::from(i) * 7,
            sha256: [i as u8; 32],
        }
    }

    /// Encodes `frame`, decodes it again through a decoder and a reassembler.
    fn through_the_wire(frames: &[Frame]) -> Vec<Frame> {
        let mut buf = bytes::BytesMut::new();
        for f in frames {
            wire::encode(f, &mut buf);
        }
        let mut d = Decoder::new();
        d.feed(buf.freeze());
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            if let Some(done) = r.push(f).unwrap() {
                out.push(done);
            }
            out.extend(r.take_ready());
        }
        d.finish().unwrap();
        out.extend(r.finish());
        out
    }

    #[test]
    fn a_manifest_of_the_page_limit_with_the_longest_names_crosses_intact() {
        let pages: Vec<_> = (0..MAX_PAGES).map(entry).collect();
        assert_eq!(entry(0).name.len(), 255);
        let m = Frame::Manifest {
            job_id: "j".repeat(128),
            pages,
        };
        let parts = split(&m);
        assert!(parts.len() > 400, "{} parts", parts.len());
        for p in &parts {
            assert!(wire::encode_to_bytes(p).len() <= MAX_CONTROL_LEN as usize + 5);
        }
        let begin = Frame::PageBegin(entry(3));
        assert_eq!(
            through_the_wire(&[m.clone(), begin.clone(), Frame::Done]),
            vec![m, begin, Frame::Done]
        );
    }

    #[test]
    fn job_status_and_listings_are_joined_and_short_ones_stay_one_frame() {
        let status = Frame::JobStatus {
            committed: false,
            pages: (0..3000).map(entry).collect(),
        };
        assert_eq!(
            through_the_wire(std::slice::from_ref(&status)),
            vec![status]
        );
        let empty = Frame::JobStatus {
            committed: true,
            pages: vec![],
        };
        assert_eq!(split(&empty).len(), 1);
        assert_eq!(through_the_wire(std::slice::from_ref(&empty)), vec![empty]);
        let jobs = Frame::AdminJobs(
            (0..5000)
                .map(|i| JobInfo {
                    job_id: format!("job-{i}-{}", "x".repeat(100)),
                    pages: i,
                    bytes: 1,
                    committed_unix: 2,
                    held: i % 2 == 0,
                })
                .collect(),
        );
        assert!(split(&jobs).len() > 1);
        assert_eq!(through_the_wire(std::slice::from_ref(&jobs)), vec![jobs]);
        let states = Frame::AdminJobStates(
            (0..5000)
                .map(|i| wire::JobState {
                    job_id: format!("job-{i}-{}", "z".repeat(100)),
                    phase: wire::JobPhase::Committed,
                    held: false,
                    pages: i,
                    bytes: 1,
                    created_unix: 1,
                    committed_unix: 2,
                    delivered_unix: 0,
                    deleted_unix: 0,
                })
                .collect(),
        );
        assert!(split(&states).len() > 1);
        assert_eq!(
            through_the_wire(std::slice::from_ref(&states)),
            vec![states]
        );
        let devices = Frame::AdminDevices(
            (0..3000)
                .map(|i| DeviceInfo {
                    device_id: format!("d{i}-{}", "y".repeat(50)),
                    tenant: "t".repeat(64),
                    role: wire::Role::Device,
                    state: wire::DeviceState::Enabled,
                })
                .collect(),
        );
        assert_eq!(
            through_the_wire(std::slice::from_ref(&devices)),
            vec![devices]
        );
    }

    #[test]
    fn two_lists_in_a_row_stay_apart() {
        let a = Frame::Manifest {
            job_id: "a".into(),
            pages: vec![entry(0)],
        };
        let b = Frame::Manifest {
            job_id: "b".into(),
            pages: vec![entry(0)],
        };
        assert_eq!(through_the_wire(&[a.clone(), b.clone()]), vec![a, b]);
    }

    #[test]
    fn a_joined_list_beyond_the_page_limit_is_refused() {
        let part = Frame::JobStatus {
            committed: false,
            pages: (0..200).map(entry).collect(),
        };
        let mut r = Reassembler::new();
        let mut refused = false;
        for _ in 0..=(MAX_PAGES / 200) {
            match r.push(part.clone()) {
                Ok(_) => {}
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "a list over {MAX_PAGES} entries must be refused");
    }
}
