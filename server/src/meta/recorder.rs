//! Group commit of page rows: pages stored at the same time are recorded in one metadata
//! transaction, with one sync for all of them instead of one each.
//!
//! One thread takes every row waiting, records them together and answers each; while it
//! commits, the next rows gather. Nothing waits for a batch to fill: a page that arrives
//! alone is recorded at once, so a lightly loaded server answers as fast as before. A
//! page is acknowledged to its scanner only after the commit holding its row returns.

use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{MetaError, MetaStore, StoredPage};

/// Rows one transaction takes at most: bounds the time a commit holds the database.
const MAX_BATCH: usize = 256;

/// Hands stored pages to the recording thread. Dropping it stops the thread and waits for it,
/// so that the metadata store it holds is closed when the server is (a restart in the same
/// process, or a tool opening the database next, finds it free).
#[derive(Debug)]
pub struct PageRecorder {
    queue: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Request {
    page: StoredPage,
    done: oneshot::Sender<Result<(), MetaError>>,
}

impl PageRecorder {
    /// Starts the recording thread over `meta`.
    pub fn start(meta: Arc<dyn MetaStore>) -> std::io::Result<PageRecorder> {
        PageRecorder::committing(move |pages| meta.record_pages(pages))
    }

    /// Starts the recording thread with `commit` recording each batch.
    fn committing(
        commit: impl FnMut(&[StoredPage]) -> Result<Vec<usize>, MetaError> + Send + 'static,
    ) -> std::io::Result<PageRecorder> {
        let (queue, requests) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("quire-recorder".into())
            .spawn(move || record_batches(requests, commit))?;
        Ok(PageRecorder {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Records `page`; returns once the transaction holding it is committed.
    /// [`MetaError::NotHeld`] if the page's holder no longer held the job then.
    pub async fn record(&self, page: StoredPage) -> Result<(), MetaError> {
        let (done, answer) = oneshot::channel();
        let stopped = || MetaError::Db("the page recorder stopped (see the log)".into());
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { page, done })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for PageRecorder {
    fn drop(&mut self) {
        drop(self.queue.take()); // the thread's `recv` ends once the queue is empty
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn record_batches(
    requests: mpsc::Receiver<Request>,
    mut commit: impl FnMut(&[StoredPage]) -> Result<Vec<usize>, MetaError>,
) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (pages, answers): (Vec<StoredPage>, Vec<_>) =
            batch.into_iter().map(|r| (r.page, r.done)).unzip();
        let result = commit(&pages);
        for (at, done) in answers.into_iter().enumerate() {
            let answer = match &result {
                Ok(refused) if refused.contains(&at) => Err(MetaError::NotHeld {
                    job: pages[at].job.clone(),
                }),
                Ok(_) => Ok(()),
                Err(e) => Err(e.clone()),
            };
            let _ = done.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Meta;
    use quire_codecs::wire::PageEntry;

    fn page(job: &str, index: u32) -> StoredPage {
        StoredPage {
            tenant: "acme".into(),
            job: job.into(),
            entry: PageEntry {
                index,
                name: format!("p{index}"),
                size: 10,
                sha256: [index as u8; 32],
            },
            object_key: format!("k/{job}/{index}"),
            stored_bytes: 50,
            upload: None,
            holder: None,
        }
    }

    /// Many pages recorded at once from many tasks: every one is on record when its call
    /// returns, with its own row, whichever batch carried it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_page_is_on_record_when_its_call_returns() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(Meta::open(&dir.path().join("m.redb")).unwrap());
        let recorder = Arc::new(PageRecorder::start(meta.clone()).unwrap());
        let tasks: Vec<_> = (0..400u32)
            .map(|i| {
                let (recorder, meta) = (recorder.clone(), meta.clone());
                tokio::spawn(async move {
                    let job = format!("j{}", i % 7);
                    recorder.record(page(&job, i)).await.unwrap();
                    assert!(meta.page_recorded("acme", &job, i).unwrap(), "page {i}");
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut total = 0;
        for j in 0..7 {
            let pages = meta.pages("acme", &format!("j{j}")).unwrap();
            for p in &pages {
                assert_eq!(p.sha256, [p.index as u8; 32]);
                assert_eq!(p.index % 7, j);
            }
            total += pages.len();
        }
        assert_eq!(total, 400);
    }

    /// Once the recorder is dropped, nothing of it holds the database: it opens again at once
    /// (redb allows one open per file).
    #[tokio::test]
    async fn dropping_the_recorder_lets_go_of_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        let meta: Arc<dyn MetaStore> = Arc::new(Meta::open(&path).unwrap());
        let recorder = PageRecorder::start(meta).unwrap();
        recorder.record(page("j", 0)).await.unwrap();
        drop(recorder);
        let again = Meta::open(&path).expect("the database is free");
        assert!(again.page_recorded("acme", "j", 0).unwrap());
    }

    /// A failing commit fails every page it carried (none is acknowledged unrecorded), the
    /// next batch is tried afresh, and a recorder whose thread died says so instead of
    /// hanging.
    #[tokio::test]
    async fn a_failed_commit_fails_its_pages_and_only_those() {
        let mut calls = 0;
        let recorder = PageRecorder::committing(move |pages| {
            calls += 1;
            match calls {
                1 => Err(MetaError::Db(format!("disk gone ({} pages)", pages.len()))),
                2 => Ok(Vec::new()),
                _ => panic!("the database code had a bug"),
            }
        })
        .unwrap();
        let first = recorder.record(page("j", 0)).await.unwrap_err();
        assert!(first.to_string().contains("disk gone (1 pages)"), "{first}");
        recorder.record(page("j", 1)).await.unwrap();
        let died = recorder.record(page("j", 2)).await.unwrap_err();
        assert!(died.to_string().contains("recorder stopped"), "{died}");
        let after = recorder.record(page("j", 3)).await.unwrap_err();
        assert!(after.to_string().contains("recorder stopped"), "{after}");
    }
}
