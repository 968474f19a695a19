//! The jobs a connection has opened, remembered so that their later pages need no metadata
//! read: on a shared database that read was a round trip per page.
//!
//! A scanner opens a job (`JobOpen`: the job is claimed for its upload and its stored pages
//! are listed) and then sends its pages. After the open, what each page would read is known:
//! the job is this upload's, and which pages are on record (this connection adds those it
//! stores). What could change meanwhile is checked where it cannot be missed: the write
//! recording a page refuses it unless the device is still enabled and its upload still holds
//! the job uncommitted (`StoredPage::holder`), and a device disabled or revoked anywhere has
//! its connections closed (`cutoff.rs`). A page another connection stored meanwhile is found
//! by the store's conditional write, so "not on record" stays a safe guess.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use quire_codecs::wire::UploadId;
use quire_pipeline::Prior;

/// Jobs one connection remembers at most; the oldest opened is forgotten first. A scanner
/// pushes a few jobs at a time; a forgotten job's pages go the reading way again.
const MAX_OPEN: usize = 32;

/// One connection's open jobs.
#[derive(Debug, Default)]
pub(crate) struct OpenJobs {
    jobs: Mutex<HashMap<(String, String), OpenJob>>,
}

#[derive(Debug)]
struct OpenJob {
    upload: Option<UploadId>,
    recorded: HashSet<u32>,
    opened: u64,
}

impl OpenJobs {
    /// Remembers that this connection's `upload` holds the uncommitted job, whose pages
    /// `recorded` are on record.
    pub(crate) fn open(
        &self,
        tenant: &str,
        job: &str,
        upload: Option<UploadId>,
        recorded: impl IntoIterator<Item = u32>,
    ) {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        let opened = jobs.values().map(|j| j.opened + 1).max().unwrap_or(0);
        if jobs.len() >= MAX_OPEN && !jobs.contains_key(&key(tenant, job)) {
            let oldest = jobs
                .iter()
                .min_by_key(|(_, j)| j.opened)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                jobs.remove(&oldest);
            }
        }
        jobs.insert(
            key(tenant, job),
            OpenJob {
                upload,
                recorded: recorded.into_iter().collect(),
                opened,
            },
        );
    }

    /// What is known of page `index` if `upload` opened the job on this connection: whether
    /// it may already be stored. `None`: the job is not open here (for this upload), so the
    /// page reads the metadata store.
    pub(crate) fn prior(
        &self,
        tenant: &str,
        job: &str,
        upload: Option<UploadId>,
        index: u32,
    ) -> Option<Prior> {
        let jobs = self.jobs.lock().expect("not poisoned");
        let open = jobs.get(&key(tenant, job)).filter(|j| j.upload == upload)?;
        Some(match open.recorded.contains(&index) {
            true => Prior::Unknown,
            false => Prior::NotRecorded,
        })
    }

    /// Notes a page this connection recorded.
    pub(crate) fn recorded(&self, tenant: &str, job: &str, index: u32) {
        if let Some(open) = self
            .jobs
            .lock()
            .expect("not poisoned")
            .get_mut(&key(tenant, job))
        {
            open.recorded.insert(index);
        }
    }

    /// Forgets the job: it was committed, or its page was refused.
    pub(crate) fn close(&self, tenant: &str, job: &str) {
        self.jobs
            .lock()
            .expect("not poisoned")
            .remove(&key(tenant, job));
    }
}

fn key(tenant: &str, job: &str) -> (String, String) {
    (tenant.to_string(), job.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_job_answers_for_its_own_upload_only() {
        let open = OpenJobs::default();
        let (mine, theirs) = (Some(UploadId([1; 16])), Some(UploadId([2; 16])));
        assert_eq!(open.prior("acme", "j", mine, 0), None);
        open.open("acme", "j", mine, [0, 2]);
        assert_eq!(open.prior("acme", "j", mine, 0), Some(Prior::Unknown));
        assert_eq!(open.prior("acme", "j", mine, 1), Some(Prior::NotRecorded));
        assert_eq!(open.prior("acme", "j", theirs, 1), None);
        assert_eq!(open.prior("acme", "j", None, 1), None);
        assert_eq!(open.prior("other", "j", mine, 1), None);
        open.recorded("acme", "j", 1);
        assert_eq!(open.prior("acme", "j", mine, 1), Some(Prior::Unknown));
        open.close("acme", "j");
        assert_eq!(open.prior("acme", "j", mine, 0), None);
    }

    #[test]
    fn a_connection_remembers_a_bounded_number_of_jobs_forgetting_the_oldest() {
        let open = OpenJobs::default();
        for i in 0..MAX_OPEN + 5 {
            open.open("acme", &format!("j{i}"), None, []);
        }
        assert_eq!(open.jobs.lock().unwrap().len(), MAX_OPEN);
        for i in 0..5 {
            assert_eq!(open.prior("acme", &format!("j{i}"), None, 0), None, "j{i}");
        }
        for i in 5..MAX_OPEN + 5 {
            let j = format!("j{i}");
            assert_eq!(open.prior("acme", &j, None, 0), Some(Prior::NotRecorded));
        }
    }
}
