//! When the scanner declares a page's SHA-256, and what it declared.

use tokio::sync::mpsc;

use super::PageInput;
use crate::erase;
use crate::hash::{self, PageHasher};
use crate::PipelineError;
use quire_codecs::wire::PageEntry;

/// When the scanner declares a page's SHA-256: in the entry, before the bytes, or after
/// them (so that it reads the page file once, hashing while sending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAt {
    Start,
    End,
}

/// The SHA-256 the scanner declared for a page: the entry's, or the one after its bytes.
pub(super) fn declared_digest(
    at: DigestAt,
    entry: &PageEntry,
    after: Option<[u8; 32]>,
) -> Result<[u8; 32], PipelineError> {
    match (at, after) {
        (DigestAt::Start, None) => Ok(entry.sha256),
        (DigestAt::Start, Some(d)) => hash::check_digest(entry.sha256, d).map(|()| d),
        (DigestAt::End, Some(d)) => Ok(d),
        (DigestAt::End, None) => Err(PipelineError::Internal(format!(
            "page {} ended without the digest its sender promised after the bytes",
            entry.index
        ))),
    }
}

/// The digest a page already stored (or spooled) is compared with: the entry's, or, when the
/// scanner declares it after the bytes, the one learnt by receiving the whole page (its
/// bytes checked against that digest and wiped).
pub(super) async fn digest_to_compare(
    entry: &PageEntry,
    at: DigestAt,
    input: &mut mpsc::Receiver<PageInput>,
) -> Result<[u8; 32], PipelineError> {
    if at == DigestAt::Start {
        return Ok(entry.sha256);
    }
    let mut hasher = PageHasher::new();
    loop {
        match input.recv().await {
            Some(PageInput::Data(b)) => {
                if hasher.len() + b.len() as u64 > entry.size {
                    return Err(PipelineError::Oversized {
                        declared: entry.size,
                    });
                }
                hasher.update(&b);
                erase::wipe_bytes(b);
            }
            Some(PageInput::End(after)) => {
                let (digest, len) = hasher.finish();
                hash::check_length(entry.size, len)?;
                let declared = declared_digest(DigestAt::End, entry, after)?;
                hash::check_digest(declared, digest)?;
                return Ok(declared);
            }
            None => return Err(PipelineError::Abandoned),
        }
    }
}
