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

    /// The period named `name` (`YYYY-MM`, the month it starts in) of a
    /// customer anchored on `anchor_day`.
    pub fn named(anchor_day: u32, name: PeriodName) -> Self {
        let start = period_start(anchor_day, name.year, name.month);
        let (ny, nm) = next_month(name.year, name.month);
        Self {
            start,
            end: period_start(anchor_day, ny, nm),
        }
    }

    /// Whole UTC days in the period (28 to 31).
    pub fn days(&self) -> i64 {
        (self.end.date_naive() - self.start.date_naive()).num_days()
    }

    /// The day of the period `t` falls on, from 0, clamped to `0..=days()`.
    pub fn day_index(&self, t: DateTime<Utc>) -> i64 {
        (t.date_naive() - self.start.date_naive())
            .num_days()
            .clamp(0, self.days())
    }

    /// `YYYY-MM` of the month the period starts in.
    pub fn name(&self) -> String {
        format!("{:04}-{:02}", self.start.year(), self.start.month())
    }

    pub fn seconds_left(&self, now: DateTime<Utc>) -> i64 {
        (self.end - now).num_seconds().max(0)
    }
}

/// A period's name, `YYYY-MM`: ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeriodName {
    year: i32,
    month: u32,
}

impl PeriodName {
    pub fn of(t: DateTime<Utc>) -> Self {
        Self {
            year: t.year(),
            month: t.month(),
        }
    }

    pub fn next(self) -> Self {
        let (year, month) = next_month(self.year, self.month);
        Self { year, month }
    }

    pub fn prev(self) -> Self {
        let (year, month) = prev_month(self.year, self.month);
        Self { year, month }
    }
}

impl std::str::FromStr for PeriodName {
    type Err = crate::ValidationError;

    /// Exactly `YYYY-MM`, month 01 to 12, year 2000 to 9999.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            crate::ValidationError::new(
                "period",
                format!("{s:?} is not a period: expected YYYY-MM"),
            )
        };
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !s[..4]
                .bytes()
                .chain(s[5..].bytes())
                .all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let month: u32 = s[5..].parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 2000 {
            return Err(bad());
        }
        Ok(Self { year, month })
    }
}

impl std::fmt::Display for PeriodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl serde::Serialize for PeriodName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
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
    fn names_parse_strictly_and_order_by_time() {
        let n: PeriodName = "2026-12".parse().unwrap();
        assert_eq!(n.next().to_string(), "2027-01");
        assert_eq!(n.prev().to_string(), "2026-11");
        assert!(n < n.next());
        for bad in [
            "2026-13", "2026-00", "2026-1", "26-01", "2026/01", "", "abcd-ef", "2026-011",
        ] {
            assert!(bad.parse::<PeriodName>().is_err(), "{bad}");
        }
        let p = Period::named(31, "2026-02".parse().unwrap());
        assert_eq!(p.start, at(2026, 2, 28, 0));
        assert_eq!(p.end, at(2026, 3, 31, 0));
        assert_eq!(p.days(), 31);
        assert_eq!(p.day_index(at(2026, 3, 1, 5)), 1);
        assert_eq!(p.day_index(at(2027, 1, 1, 0)), 31);
    }

    #[test]
    fn year_boundary() {
        let p = Period::containing(10, at(2027, 1, 5, 0));
        assert_eq!(p.start, at(2026, 12, 10, 0));
        assert_eq!(p.end, at(2027, 1, 10, 0));
        assert_eq!(p.seconds_left(at(2027, 1, 9, 0)), 86_400);
    }
}
