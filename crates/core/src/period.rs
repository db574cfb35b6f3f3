//! Billing periods: from the customer's anchor day (UTC midnight) to the same
//! day next month, clamped to the month's last day. A period is named `YYYY-MM`
//! after the month in which it starts.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// The period of a customer anchored on `anchor_day` (1..=31) that contains `now`.
    pub fn containing(anchor_day: u32, now: DateTime<Utc>) -> Self {
        let (y, m) = (now.year(), now.month());
        let this_month = period_start(anchor_day, y, m);
        let start_month = if now >= this_month {
            (y, m)
        } else {
            prev_month(y, m)
        };
        let start = period_start(anchor_day, start_month.0, start_month.1);
        let (ny, nm) = next_month(start_month.0, start_month.1);
        Self {
            start,
            end: period_start(anchor_day, ny, nm),
        }
    }

    /// `YYYY-MM` of the month the period starts in.
    pub fn name(&self) -> String {
        format!("{:04}-{:02}", self.start.year(), self.start.month())
    }

    pub fn seconds_left(&self, now: DateTime<Utc>) -> i64 {
        (self.end - now).num_seconds().max(0)
    }
}

fn next_month(y: i32, m: u32) -> (i32, u32) {
    if m == 12 {
        (y + 1, 1)
    } else {
        (y, m + 1)
    }
}

fn prev_month(y: i32, m: u32) -> (i32, u32) {
    if m == 1 {
        (y - 1, 12)
    } else {
        (y, m - 1)
    }
}

fn last_day(y: i32, m: u32) -> u32 {
    let (ny, nm) = next_month(y, m);
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(28)
}

fn period_start(anchor_day: u32, y: i32, m: u32) -> DateTime<Utc> {
    let d = anchor_day.clamp(1, 31).min(last_day(y, m));
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn anchored_mid_month() {
        let p = Period::containing(15, at(2026, 3, 20, 5));
        assert_eq!(p.start, at(2026, 3, 15, 0));
        assert_eq!(p.end, at(2026, 4, 15, 0));
        assert_eq!(p.name(), "2026-03");
        let p = Period::containing(15, at(2026, 3, 14, 23));
        assert_eq!(p.start, at(2026, 2, 15, 0));
        assert_eq!(p.name(), "2026-02");
    }

    #[test]
    fn anchor_31_clamps_to_short_months() {
        let p = Period::containing(31, at(2026, 2, 28, 1));
        assert_eq!(p.start, at(2026, 2, 28, 0));
        assert_eq!(p.end, at(2026, 3, 31, 0));
        let p = Period::containing(31, at(2026, 2, 27, 1));
        assert_eq!(p.start, at(2026, 1, 31, 0));
        assert_eq!(p.end, at(2026, 2, 28, 0));
    }

    #[test]
    fn year_boundary() {
        let p = Period::containing(10, at(2027, 1, 5, 0));
        assert_eq!(p.start, at(2026, 12, 10, 0));
        assert_eq!(p.end, at(2027, 1, 10, 0));
        assert_eq!(p.seconds_left(at(2027, 1, 9, 0)), 86_400);
    }
}
