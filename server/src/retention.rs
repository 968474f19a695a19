//! Retention: how long a tenant's committed jobs are kept, as pure decisions over timestamps.
//!
//! The policy is per tenant (`[tenants.T] retention = "…"` in the config). The sweeper in
//! `server::sweep` asks [`Policy::due`] about every job and deletes what is due, unless a legal
//! hold covers it; keeping the decision here, free of I/O and clocks, lets the tests walk
//! through years of calendar in microseconds.

use jiff::civil::Date;
use jiff::{Span, Timestamp, ToSpan};

/// What a tenant's committed jobs are kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Kept until an operator deletes them (the default: nothing is deleted automatically).
    #[default]
    Keep,
    /// Deleted once a delivery consumer has fetched, verified and acknowledged the job.
    DeleteOnDelivery,
    /// Kept for whole calendar years after commit (e.g. 7 or 10, legal retention).
    Years(u16),
    /// Kept for a fixed span after commit, in seconds (`30d`, `12h`, `90s`).
    Seconds(u64),
    /// Kept through the month of commit and the one after; deleted on the first of the next.
    CurrentAndPreviousMonth,
}

/// Why a job is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Acknowledged by a delivery consumer under `delete-on-delivery`.
    Delivered,
    /// Its retention period ended at this time (Unix seconds).
    Expired { at: i64 },
}

impl std::fmt::Display for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Due::Delivered => f.write_str("delivered (delete-on-delivery)"),
            Due::Expired { at } => match Timestamp::from_second(*at) {
                Ok(t) => write!(f, "retention period ended {t}"),
                Err(_) => write!(f, "retention period ended at {at}"),
            },
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    /// `keep`, `delete-on-delivery`, `7y`, `10y`, `30d`, `12h`, `15m`, `90s`, or
    /// `current+previous month`.
    fn from_str(s: &str) -> Result<Policy, String> {
        let t = s.trim();
        match t {
            "keep" => return Ok(Policy::Keep),
            "delete-on-delivery" => return Ok(Policy::DeleteOnDelivery),
            "current+previous month" | "current+previous-month" => {
                return Ok(Policy::CurrentAndPreviousMonth)
            }
            _ => {}
        }
        let bad = || {
            format!(
                "{s:?} is not a retention policy: use \"keep\", \"delete-on-delivery\", a period \
                 such as \"7y\", \"10y\", \"30d\", \"12h\", or \"current+previous month\""
            )
        };
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(format!(
                "{s:?}: a retention period must be longer than zero"
            ));
        }
        let secs = |mul: u64| n.checked_mul(mul).map(Policy::Seconds).ok_or_else(bad);
        match unit {
            "y" => u16::try_from(n)
                .ok()
                .filter(|y| *y <= 100)
                .map(Policy::Years)
                .ok_or_else(|| format!("{s:?}: at most 100 years")),
            "d" => secs(86_400),
            "h" => secs(3_600),
            "m" => secs(60),
            "s" => secs(1),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Keep => f.write_str("keep"),
            Policy::DeleteOnDelivery => f.write_str("delete-on-delivery"),
            Policy::Years(y) => write!(f, "{y}y"),
            Policy::Seconds(s) => write!(f, "{s}s"),
            Policy::CurrentAndPreviousMonth => f.write_str("current+previous month"),
        }
    }
}

fn date_of(unix: i64) -> Option<Date> {
    Some(
        Timestamp::from_second(unix)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date(),
    )
}

fn start_of(date: Date) -> Option<i64> {
    Some(
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_second(),
    )
}

impl Policy {
    /// When a job committed at `committed` (Unix seconds, UTC) stops being kept; `None` if
    /// time alone never ends it.
    pub fn expires_at(self, committed: i64) -> Option<i64> {
        match self {
            Policy::Keep | Policy::DeleteOnDelivery => None,
            Policy::Seconds(s) => committed.checked_add(i64::try_from(s).ok()?),
            Policy::Years(y) => {
                // Calendar years: 2026-02-28 10:00 + 7y = 2033-02-28 10:00; a 29 February
                // commit expires on 28 February of a non-leap year (jiff clamps the day).
                let t = Timestamp::from_second(committed).ok()?;
                let span: Span = i64::from(y).years();
                let z = t.to_zoned(jiff::tz::TimeZone::UTC).checked_add(span).ok()?;
                Some(z.timestamp().as_second())
            }
            Policy::CurrentAndPreviousMonth => {
                let d = date_of(committed)?;
                let first = d.first_of_month().checked_add(2.months()).ok()?;
                start_of(first)
            }
        }
    }

    /// Whether a job must be deleted at `now`, and why. A legal hold is the caller's check:
    /// it overrides every answer here.
    pub fn due(self, committed: i64, delivered: Option<i64>, now: i64) -> Option<Due> {
        if self == Policy::DeleteOnDelivery && delivered.is_some() {
            return Some(Due::Delivered);
        }
        let at = self.expires_at(committed)?;
        (now >= at).then_some(Due::Expired { at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn policies_parse_and_print() {
        for (text, p) in [
            ("keep", Policy::Keep),
            ("delete-on-delivery", Policy::DeleteOnDelivery),
            ("7y", Policy::Years(7)),
            ("10y", Policy::Years(10)),
            ("30d", Policy::Seconds(30 * 86_400)),
            ("12h", Policy::Seconds(43_200)),
            ("2s", Policy::Seconds(2)),
            ("current+previous month", Policy::CurrentAndPreviousMonth),
        ] {
            assert_eq!(text.parse::<Policy>().unwrap(), p, "{text}");
        }
        for bad in ["", "7", "y", "0d", "7w", "-1d", "101y", "forever and ever"] {
            let e = bad.parse::<Policy>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn legal_periods_are_calendar_years() {
        let c = unix("2026-11-22T10:15:00Z");
        assert_eq!(
            Policy::Years(7).expires_at(c),
            Some(unix("2033-11-22T10:15:00Z"))
        );
        assert_eq!(
            Policy::Years(10).expires_at(c),
            Some(unix("2036-11-22T10:15:00Z"))
        );
        // A leap day clamps to the end of February.
        assert_eq!(
            Policy::Years(7).expires_at(unix("2028-02-29T00:00:00Z")),
            Some(unix("2035-02-28T00:00:00Z"))
        );
        let p = Policy::Years(7);
        assert_eq!(p.due(c, None, unix("2033-11-22T10:14:59Z")), None);
        assert!(matches!(
            p.due(c, None, unix("2033-11-22T10:15:00Z")),
            Some(Due::Expired { .. })
        ));
        // Delivery does not shorten a legal retention period.
        assert_eq!(p.due(c, Some(c + 60), c + 86_400), None);
    }

    #[test]
    fn current_and_previous_month_ends_on_the_first_of_the_month_after_next() {
        let p = Policy::CurrentAndPreviousMonth;
        for (committed, expiry) in [
            ("2026-11-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("2026-11-30T23:59:59Z", "2027-01-01T00:00:00Z"),
            ("2026-12-15T12:00:00Z", "2027-02-01T00:00:00Z"),
            ("2027-01-31T08:00:00Z", "2027-03-01T00:00:00Z"),
        ] {
            assert_eq!(
                p.expires_at(unix(committed)),
                Some(unix(expiry)),
                "{committed}"
            );
        }
        let c = unix("2026-11-22T10:00:00Z");
        assert_eq!(p.due(c, None, unix("2026-12-31T23:59:59Z")), None);
        assert!(p.due(c, None, unix("2027-01-01T00:00:00Z")).is_some());
    }

    #[test]
    fn delete_on_delivery_waits_for_the_acknowledgement_only() {
        let p = Policy::DeleteOnDelivery;
        let c = unix("2026-11-22T10:00:00Z");
        assert_eq!(p.due(c, None, c + 100 * 365 * 86_400), None);
        assert_eq!(p.due(c, Some(c + 5), c + 5), Some(Due::Delivered));
    }

    #[test]
    fn keep_never_expires() {
        assert_eq!(Policy::Keep.due(0, Some(1), i64::MAX / 2), None);
    }
}
