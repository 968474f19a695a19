//! Per-device and per-tenant limits: pages per second, bytes per second, jobs in progress.
//!
//! Rates are token buckets (burst = one second's worth). A page waits for its token up to
//! [`MAX_WAIT`], then is refused with `LimitExceeded`; page bytes wait for theirs, which
//! slows the reading of the stream and so, through QUIC flow control, the scanner. The
//! bucket arithmetic is pure (it is given `now`) and tested without a clock. With several
//! nodes on one database each node uses a share of every rate (`shares`).

pub(crate) mod shares;

use std::collections::{HashMap, HashSet};

use shares::Shares;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a page waits for a rate token before it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// Configured limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitConfig {
    pub device_pages_per_sec: f64,
    pub device_bytes_per_sec: f64,
    pub tenant_pages_per_sec: f64,
    pub tenant_bytes_per_sec: f64,
    pub device_concurrent_jobs: usize,
}

/// A token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: f64, now: Instant) -> Bucket {
        let burst = rate.max(1.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` tokens, going into debt if needed; returns how long the caller must wait
    /// for the debt to be paid (zero if there were enough).
    pub fn take(&mut self, n: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Moves the bucket to a new rate (this node's share changed); the burst follows it.
    fn set_rate(&mut self, rate: f64) {
        if (rate - self.rate).abs() > f64::EPSILON * rate.max(1.0) {
            self.rate = rate;
            self.burst = rate.max(1.0);
            self.tokens = self.tokens.min(self.burst);
        }
    }

    /// Returns tokens taken for work that was then refused.
    pub fn give_back(&mut self, n: f64) {
        self.tokens = (self.tokens + n).min(self.burst);
    }
}

/// Why admission was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded(pub String);

#[derive(Debug, Default)]
struct Buckets(HashMap<String, Bucket>);

impl Buckets {
    /// Takes `n` of `key`'s tokens at this node's share of `rate` (0: unlimited).
    fn take(&mut self, key: &str, rate: f64, n: f64, now: Instant, shares: &Shares) -> Duration {
        if rate <= 0.0 {
            return Duration::ZERO;
        }
        let mine = rate * shares.share(key);
        let bucket = self
            .0
            .entry(key.to_string())
            .or_insert_with(|| Bucket::new(mine, now));
        bucket.set_rate(mine);
        let wait = bucket.take(n, now);
        shares.note(key, n, !wait.is_zero(), rate);
        wait
    }

    fn give_back(&mut self, key: &str, n: f64) {
        if let Some(b) = self.0.get_mut(key) {
            b.give_back(n);
        }
    }
}

/// The server's limit state.
#[derive(Debug, Default)]
pub struct Limits {
    config: LimitConfig,
    pages: Mutex<Buckets>,
    bytes: Mutex<Buckets>,
    jobs: Mutex<HashMap<String, HashMap<String, usize>>>,
    /// Declared bytes of each device's pages in the pipeline now (see [`Limits::hold_bytes`]).
    in_flight: Mutex<HashMap<String, u64>>,
    /// This node's share of each rate, where other nodes use the same rates.
    pub(crate) shares: Shares,
}

/// The most of the spool one device's pages in flight may claim, in percent: a device
/// declaring huge pages and sending nothing cannot hold the spool for everyone.
pub const DEVICE_SHARE_PERCENT: u64 = 50;

/// A device's claim on spool room for one page; given back when dropped.
#[derive(Debug)]
pub struct BytesHeld<'a> {
    limits: &'a Limits,
    device: String,
    bytes: u64,
}

impl Drop for BytesHeld<'_> {
    fn drop(&mut self) {
        let mut m = self.limits.in_flight.lock().expect("limits lock poisoned");
        if let Some(n) = m.get_mut(&self.device) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                m.remove(&self.device);
            }
        }
    }
}

/// Holds a job's place among a device's jobs in progress while one of its pages is stored.
#[derive(Debug)]
pub struct JobPlace<'a> {
    limits: &'a Limits,
    device: String,
    job: String,
}

impl Drop for JobPlace<'_> {
    fn drop(&mut self) {
        let mut jobs = self.limits.jobs.lock().expect("limits lock poisoned");
        if let Some(per_job) = jobs.get_mut(&self.device) {
            if let Some(n) = per_job.get_mut(&self.job) {
                *n -= 1;
                if *n == 0 {
                    per_job.remove(&self.job);
                }
            }
            if per_job.is_empty() {
                jobs.remove(&self.device);
            }
        }
    }
}

impl Limits {
    /// Claims `bytes` (a page's declared size) of the device's share of a spool of
    /// `capacity` bytes. A device with nothing in flight always gets one page through.
    pub fn hold_bytes(
        &self,
        device: &str,
        bytes: u64,
        capacity: u64,
    ) -> Result<BytesHeld<'_>, Exceeded> {
        let share = capacity / 100 * DEVICE_SHARE_PERCENT;
        let mut m = self.in_flight.lock().expect("limits lock poisoned");
        let held = m.entry(device.to_string()).or_insert(0);
        if *held != 0 && *held + bytes > share {
            return Err(Exceeded(format!(
                "device {device} has {} bytes of pages in flight; its share of the server's spool is {share} bytes",
                *held
            )));
        }
        *held += bytes;
        Ok(BytesHeld {
            limits: self,
            device: device.to_string(),
            bytes,
        })
    }

    /// Whether any rate is limited (else there is nothing to share with other nodes).
    pub fn has_rates(&self) -> bool {
        let c = self.config;
        [
            c.device_pages_per_sec,
            c.device_bytes_per_sec,
            c.tenant_pages_per_sec,
            c.tenant_bytes_per_sec,
        ]
        .iter()
        .any(|r| *r > 0.0)
    }

    pub fn new(config: LimitConfig) -> Limits {
        Limits {
            config,
            ..Limits::default()
        }
    }

    /// Admits one more page of `job` for `device` of `tenant`, waiting for rate tokens.
    pub async fn admit_page(
        &self,
        device: &str,
        tenant: &str,
        job: &str,
    ) -> Result<JobPlace<'_>, Exceeded> {
        let c = self.config;
        {
            let mut jobs = self.jobs.lock().expect("limits lock poisoned");
            let per_job = jobs.entry(device.to_string()).or_default();
            if c.device_concurrent_jobs > 0
                && !per_job.contains_key(job)
                && per_job.len() >= c.device_concurrent_jobs
            {
                let open: HashSet<&String> = per_job.keys().collect();
                return Err(Exceeded(format!(
                    "device {device} already has {} jobs in progress, its limit is {}",
                    open.len(),
                    c.device_concurrent_jobs
                )));
            }
            *per_job.entry(job.to_string()).or_default() += 1;
        }
        let place = JobPlace {
            limits: self,
            device: device.to_string(),
            job: job.to_string(),
        };
        let now = Instant::now();
        let wait = {
            let mut p = self.pages.lock().expect("limits lock poisoned");
            let (dk, tk) = (format!("pages/d/{device}"), format!("pages/t/{tenant}"));
            let d = p.take(&dk, c.device_pages_per_sec, 1.0, now, &self.shares);
            let t = p.take(&tk, c.tenant_pages_per_sec, 1.0, now, &self.shares);
            let wait = d.max(t);
            if wait > MAX_WAIT {
                p.give_back(&dk, 1.0);
                p.give_back(&tk, 1.0);
            }
            wait
        };
        if wait > MAX_WAIT {
            let which = if c.device_pages_per_sec > 0.0 && c.tenant_pages_per_sec <= 0.0 {
                format!(
                    "device {device} exceeds its limit of {} pages/s",
                    c.device_pages_per_sec
                )
            } else {
                format!("pages/s limit exceeded for device {device} or its tenant")
            };
            return Err(Exceeded(which));
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(place)
    }

    /// Waits until `n` more page bytes of `device` of `tenant` fit their byte rates.
    pub async fn pace_bytes(&self, device: &str, tenant: &str, n: usize) {
        let c = self.config;
        if c.device_bytes_per_sec <= 0.0 && c.tenant_bytes_per_sec <= 0.0 {
            return;
        }
        let now = Instant::now();
        let wait = {
            let mut b = self.bytes.lock().expect("limits lock poisoned");
            let (dk, tk) = (format!("bytes/d/{device}"), format!("bytes/t/{tenant}"));
            let d = b.take(&dk, c.device_bytes_per_sec, n as f64, now, &self.shares);
            let t = b.take(&tk, c.tenant_bytes_per_sec, n as f64, now, &self.shares);
            d.max(t)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_claims_at_most_its_share_of_the_spool() {
        let l = Limits::default();
        let one = l.hold_bytes("d1", 400, 1000).unwrap();
        assert!(l.hold_bytes("d1", 200, 1000).is_err(), "over half");
        let other = l.hold_bytes("d2", 500, 1000).unwrap();
        drop(one);
        // Holding nothing, a device gets one page through whatever its size.
        let big = l.hold_bytes("d1", 5000, 1000).unwrap();
        assert!(l.hold_bytes("d1", 1, 1000).is_err());
        drop((big, other));
        assert!(l.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, t0);
        for _ in 0..10 {
            assert_eq!(b.take(1.0, t0), Duration::ZERO);
        }
        let wait = b.take(1.0, t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Half a second later five tokens have come back, minus the debt of one.
        assert_eq!(b.take(4.0, t0 + Duration::from_millis(600)), Duration::ZERO);
    }

    #[tokio::test]
    async fn concurrent_jobs_per_device_are_capped() {
        let l = Limits::new(LimitConfig {
            device_concurrent_jobs: 2,
            ..LimitConfig::default()
        });
        let a = l.admit_page("d", "t", "job-a").await.unwrap();
        let a2 = l.admit_page("d", "t", "job-a").await.unwrap();
        let b = l.admit_page("d", "t", "job-b").await.unwrap();
        let refused = l.admit_page("d", "t", "job-c").await.unwrap_err();
        assert!(refused.0.contains("2 jobs in progress"), "{}", refused.0);
        assert!(l.admit_page("other", "t", "job-c").await.is_ok());
        drop((a, a2));
        assert!(l.admit_page("d", "t", "job-c").await.is_ok());
        drop(b);
    }

    #[tokio::test]
    async fn a_page_rate_far_beyond_the_limit_is_refused() {
        let l = Limits::new(LimitConfig {
            device_pages_per_sec: 1.0,
            ..LimitConfig::default()
        });
        // Burst of one, then each page must wait a second; the sixth would wait over 5 s.
        let mut refused = 0;
        let now = Instant::now();
        let mut debt = Duration::ZERO;
        {
            let mut p = l.pages.lock().unwrap();
            for _ in 0..7 {
                debt = p.take("pages/d/x", 1.0, 1.0, now, &l.shares);
            }
        }
        assert!(debt > MAX_WAIT);
        if l.admit_page("x", "t", "j").await.is_err() {
            refused += 1;
        }
        assert_eq!(refused, 1);
    }
}
