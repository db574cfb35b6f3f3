//! Reconciliation: the store's counters (quota used this period, prepaid
//! credits) against the ledger they are a cache of. Drift is store minus
//! ledger. Calls in flight are reserved in the store before their usage
//! event reaches the ledger, so a busy system shows a small drift that comes
//! and goes; drift that stays is real (a gateway killed mid-call, counters
//! edited by hand, a Redis restored from an old snapshot).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use paygate_core::metering::{Counters, Snapshot};
use paygate_core::period::{Period, PeriodName};
use paygate_core::records::CustomerRecord;

#[cfg(doc)]
use crate::Database;

/// What the store answered when asked for one customer's counters (the
/// caller asks: this crate talks to no store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReading {
    Counters(Snapshot),
    /// The store holds no counters for the customer.
    NotSeeded,
}

/// The quota side of one customer's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaCheck {
    Compared {
        store: u64,
        ledger: u64,
    },
    /// The store keeps only the current period's counter.
    NotCurrentPeriod,
    /// The plan has no quota: nothing is counted.
    NoQuota,
}

/// The store's side, when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSide {
    Seen {
        quota: QuotaCheck,
        credits: i64,
    },
    /// The store holds no counters for the customer (rebuilt from the ledger
    /// on its next call): nothing to compare.
    NotSeeded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub customer_id: String,
    pub store: StoreSide,
    pub credits_ledger: i64,
}

impl Drift {
    /// Quota units the store counts beyond the ledger (negative: fewer).
    pub fn quota_drift(&self) -> i64 {
        match self.store {
            StoreSide::Seen {
                quota: QuotaCheck::Compared { store, ledger },
                ..
            } => i64::try_from(store)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(ledger).unwrap_or(i64::MAX)),
            _ => 0,
        }
    }

    /// Credits the store holds beyond the ledger's balance, in micros.
    pub fn credits_drift(&self) -> i64 {
        match self.store {
            StoreSide::Seen { credits, .. } => credits.saturating_sub(self.credits_ledger),
            StoreSide::NotSeeded => 0,
        }
    }

    pub fn is_clean(&self) -> bool {
        self.quota_drift() == 0 && self.credits_drift() == 0
    }
}

/// Absolute drift summed over customers, for the `paygate_usage_drift`
/// gauge: drifts of opposite sign must not cancel out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriftTotal {
    pub quota_units: i64,
    pub credits_micros: i64,
}

impl DriftTotal {
    pub fn add(&mut self, d: &Drift) {
        self.quota_units = self
            .quota_units
            .saturating_add(d.quota_drift().saturating_abs());
        self.credits_micros = self
            .credits_micros
            .saturating_add(d.credits_drift().saturating_abs());
    }
}

/// Compares one customer's store counters, read by the caller just before,
/// with the ledger's (`ledger`, as [`Database::counters_of`] read them at
/// `now`: credits, and quota used in the customer's current period);
/// `has_quota` whether the plan counts a quota.
pub fn compare(
    c: &CustomerRecord,
    store: StoreReading,
    ledger: Counters,
    has_quota: bool,
    period: PeriodName,
    now: DateTime<Utc>,
) -> Drift {
    let cid = c.id.as_str();
    let credits_ledger = ledger.credits_micros;
    let snapshot = match store {
        StoreReading::Counters(s) => s,
        StoreReading::NotSeeded => {
            return Drift {
                customer_id: cid.to_owned(),
                store: StoreSide::NotSeeded,
                credits_ledger,
            }
        }
    };
    let current = PeriodName::of(Period::containing(c.anchor_day, now).start);
    let quota = if !has_quota {
        QuotaCheck::NoQuota
    } else if period != current {
        QuotaCheck::NotCurrentPeriod
    } else {
        QuotaCheck::Compared {
            store: snapshot.quota_used,
            ledger: ledger.quota_used,
        }
    };
    Drift {
        customer_id: cid.to_owned(),
        store: StoreSide::Seen {
            quota,
            credits: snapshot.credits_micros,
        },
        credits_ledger,
    }
}

/// The table `paygate billing reconcile` prints: one line per customer.
pub fn table(period: PeriodName, rows: &[Drift]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reconcile {period}: store counters minus ledger (drift = store - ledger; calls in flight show as transient drift)"
    );
    let _ = writeln!(
        out,
        "{:<24} {:>12} {:>12} {:>8} {:>16} {:>16} {:>12}",
        "customer",
        "quota_store",
        "quota_ledger",
        "drift",
        "credits_store",
        "credits_ledger",
        "drift"
    );
    for d in rows {
        let (qs, ql, qd, cs) = match d.store {
            StoreSide::NotSeeded => (
                "not seeded".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "not seeded".to_owned(),
            ),
            StoreSide::Seen { quota, credits } => {
                let (qs, ql, qd) = match quota {
                    QuotaCheck::Compared { store, ledger } => (
                        store.to_string(),
                        ledger.to_string(),
                        d.quota_drift().to_string(),
                    ),
                    QuotaCheck::NotCurrentPeriod => ("n/a".into(), "n/a".into(), "-".into()),
                    QuotaCheck::NoQuota => ("no quota".into(), "-".into(), "-".into()),
                };
                (qs, ql, qd, credits.to_string())
            }
        };
        let cd = match d.store {
            StoreSide::NotSeeded => "-".to_owned(),
            StoreSide::Seen { .. } => d.credits_drift().to_string(),
        };
        let _ = writeln!(
            out,
            "{:<24} {qs:>12} {ql:>12} {qd:>8} {cs:>16} {:>16} {cd:>12}",
            d.customer_id, d.credits_ledger
        );
    }
    let drifting = rows.iter().filter(|d| !d.is_clean()).count();
    let _ = writeln!(out, "{} customer(s), {drifting} with drift", rows.len());
    out
}

/// The x402 payments whose settlement is unknown, which `paygate billing
/// reconcile` lists after the drift table: each must be looked up on chain
/// (by payer and nonce) and, if the money moved, refunded or served.
pub fn unknown_payments_table(rows: &[crate::payments::PaymentRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "x402 payments with unknown settlement: {} (look each up on chain by payer and nonce)",
        rows.len()
    );
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<38} {:<28} {:<44} {:>14} {:<16} nonce",
        "request_id", "ts", "payer", "amount_micros", "network"
    );
    for p in rows {
        let _ = writeln!(
            out,
            "{:<38} {:<28} {:<44} {:>14} {:<16} {}",
            p.request_id,
            p.ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            p.payer,
            p.amount_micros,
            p.network,
            p.nonce
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_payments_are_listed_one_per_line() {
        let row = crate::payments::PaymentRow {
            request_id: "r1".into(),
            ts: chrono::Utc::now(),
            customer_id: "x402:0xab".into(),
            key_id: "x402".into(),
            route: "signals".into(),
            period: "2026-12".into(),
            payer: "0xab".into(),
            amount_micros: 17_000,
            amount_units: "17000".into(),
            asset: "0xa".into(),
            network: "eip155:84532".into(),
            nonce: "0x01".into(),
            valid_before: 1,
            transaction: None,
            state: "settlement_unknown".into(),
            reason: Some("timeout".into()),
        };
        let out = unknown_payments_table(&[row]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains("unknown settlement: 1"));
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cols[0], "r1");
        assert_eq!(cols[3], "17000");
        assert_eq!(cols[5], "0x01");
        assert_eq!(
            unknown_payments_table(&[]).lines().count(),
            1,
            "nothing to list: the summary line only"
        );
    }

    fn seen(quota: QuotaCheck, credits: i64, credits_ledger: i64) -> Drift {
        Drift {
            customer_id: "acme".into(),
            store: StoreSide::Seen { quota, credits },
            credits_ledger,
        }
    }

    #[test]
    fn drift_is_store_minus_ledger() {
        let d = seen(
            QuotaCheck::Compared {
                store: 7,
                ledger: 10,
            },
            500,
            200,
        );
        assert_eq!(d.quota_drift(), -3);
        assert_eq!(d.credits_drift(), 300);
        assert!(!d.is_clean());
        let clean = seen(
            QuotaCheck::Compared {
                store: 4,
                ledger: 4,
            },
            9,
            9,
        );
        assert!(clean.is_clean());
    }

    #[test]
    fn what_cannot_be_compared_is_no_drift() {
        for quota in [QuotaCheck::NoQuota, QuotaCheck::NotCurrentPeriod] {
            assert_eq!(seen(quota, 0, 0).quota_drift(), 0);
        }
        let unseeded = Drift {
            customer_id: "acme".into(),
            store: StoreSide::NotSeeded,
            credits_ledger: 1_000,
        };
        assert!(unseeded.is_clean());
    }

    #[test]
    fn extreme_values_saturate_instead_of_overflowing() {
        let d = seen(
            QuotaCheck::Compared {
                store: u64::MAX,
                ledger: 0,
            },
            i64::MIN,
            i64::MAX,
        );
        assert_eq!(d.quota_drift(), i64::MAX);
        assert_eq!(d.credits_drift(), i64::MIN);
        let mut total = DriftTotal::default();
        total.add(&d);
        total.add(&d);
        assert_eq!(total.quota_units, i64::MAX);
        assert_eq!(total.credits_micros, i64::MAX);
    }

    #[test]
    fn totals_add_absolute_drift_so_opposite_signs_do_not_cancel() {
        let mut total = DriftTotal::default();
        total.add(&seen(
            QuotaCheck::Compared {
                store: 5,
                ledger: 3,
            },
            10,
            0,
        ));
        total.add(&seen(
            QuotaCheck::Compared {
                store: 3,
                ledger: 5,
            },
            0,
            10,
        ));
        assert_eq!(
            total,
            DriftTotal {
                quota_units: 4,
                credits_micros: 20
            }
        );
    }

    #[test]
    fn table_has_one_line_per_customer_and_a_summary() {
        let rows = vec![
            seen(
                QuotaCheck::Compared {
                    store: 12,
                    ledger: 10,
                },
                0,
                0,
            ),
            seen(QuotaCheck::NoQuota, 1_000, 1_000),
            Drift {
                customer_id: "fresh".into(),
                store: StoreSide::NotSeeded,
                credits_ledger: 0,
            },
        ];
        let period: PeriodName = "2026-11".parse().unwrap();
        let out = table(period, &rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2 + rows.len() + 1, "{out}");
        assert!(lines[0].starts_with("reconcile 2026-11:"));
        let drifting: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(drifting, ["acme", "12", "10", "2", "0", "0", "0"]);
        let no_quota: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            no_quota,
            ["acme", "no", "quota", "-", "-", "1000", "1000", "0"]
        );
        assert!(lines[4].contains("not seeded"));
        assert_eq!(lines[5], "3 customer(s), 1 with drift");
    }
}
