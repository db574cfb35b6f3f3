//! Rating: from a customer's plan history and aggregated usage to invoice
//! lines. Pure functions, no I/O.
//!
//! Usage is priced when the call is admitted (the store decides, in the same
//! step that counts the quota, whether a unit is included, overage or paid
//! from credits) and the ledger keeps that price. Rating groups those charges
//! into lines and adds the monthly fee, prorated by day across plan changes.
//!
//! Rounding: everything is integer micros and exact, except proration, which
//! is `fee × days ÷ days_in_period` rounded down to the micro.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use paygate_core::period::Period;
use paygate_core::Micros;
use serde::Serialize;

use crate::aggregate::Sums;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    Fee,
    Proration,
    Usage,
    Overage,
    Payg,
    /// Calls paid with x402, each at the time of the call: shown, never due.
    X402,
    Adjustment,
}

/// What a line bills; an adjustment line bills one of the usage charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Charge {
    Fee,
    Usage,
    Overage,
    Payg,
    X402,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fee => "fee",
            Self::Proration => "proration",
            Self::Usage => "usage",
            Self::Overage => "overage",
            Self::Payg => "payg",
            Self::X402 => "x402",
            Self::Adjustment => "adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Fee,
            Self::Proration,
            Self::Usage,
            Self::Overage,
            Self::Payg,
            Self::X402,
            Self::Adjustment,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl Charge {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fee => "fee",
            Self::Usage => "usage",
            Self::Overage => "overage",
            Self::Payg => "payg",
            Self::X402 => "x402",
        }
    }

    /// Already paid when the call was made: listed, never part of the total.
    pub fn is_prepaid_elsewhere(self) -> bool {
        self == Self::X402
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Fee,
            Self::Usage,
            Self::Overage,
            Self::Payg,
            Self::X402,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    fn line_kind(self) -> LineKind {
        match self {
            Self::Fee => LineKind::Fee,
            Self::Usage => LineKind::Usage,
            Self::Overage => LineKind::Overage,
            Self::Payg => LineKind::Payg,
            Self::X402 => LineKind::X402,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Line {
    pub kind: LineKind,
    #[serde(skip)]
    pub charge: Charge,
    /// The period whose fee or usage the line bills (another one for adjustments).
    pub source_period: String,
    pub description: String,
    #[schema(required = true)]
    pub route: Option<String>,
    pub quantity: i64,
    #[schema(value_type = i64)]
    pub unit_price_micros: Micros,
    #[schema(value_type = i64)]
    pub amount_micros: Micros,
}

/// A plan the customer moved to, with its fee at that time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSpan {
    pub plan_id: String,
    pub monthly_fee_micros: Micros,
    pub effective: DateTime<Utc>,
}

/// Fee lines of `period`: the full fee when one plan covers it, else one
/// proration line per plan, by whole UTC days. The day of a change is billed
/// at the new plan. `history` is sorted by `effective`.
pub fn fee_lines(period: &Period, name: &str, history: &[PlanSpan]) -> Vec<Line> {
    // The plan in force at the period start, then the changes inside it.
    let first = history
        .iter()
        .rposition(|s| s.effective <= period.start)
        .unwrap_or(0);
    let spans: Vec<&PlanSpan> = history[first..]
        .iter()
        .filter(|s| s.effective < period.end)
        .collect();
    let days = period.days();
    let mut lines = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        let from = if i == 0 {
            0
        } else {
            period.day_index(span.effective)
        };
        let to = spans
            .get(i + 1)
            .map_or(days, |next| period.day_index(next.effective));
        let span_days = (to - from).max(0);
        if span_days == 0 || span.monthly_fee_micros == 0 {
            continue;
        }
        let (kind, amount, description) = if span_days == days {
            (
                LineKind::Fee,
                span.monthly_fee_micros,
                format!("Plan {} monthly fee", span.plan_id),
            )
        } else {
            (
                LineKind::Proration,
                prorate(span.monthly_fee_micros, span_days, days),
                format!("Plan {} fee, {span_days} of {days} days", span.plan_id),
            )
        };
        lines.push(Line {
            kind,
            charge: Charge::Fee,
            source_period: name.to_owned(),
            description,
            route: None,
            quantity: 1,
            unit_price_micros: amount,
            amount_micros: amount,
        });
    }
    lines
}

/// `fee × days ÷ period_days`, rounded down to the micro.
pub fn prorate(fee: Micros, days: i64, period_days: i64) -> Micros {
    if period_days <= 0 {
        return 0;
    }
    let exact = i128::from(fee) * i128::from(days) / i128::from(period_days);
    Micros::try_from(exact).unwrap_or(Micros::MAX)
}

/// A usage charge: what one (route, charge, unit price) adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    pub quantity: i64,
    pub amount_micros: Micros,
}

pub type ChargeKey = (String, Charge, Micros);

/// The usage charges in ledger sums grouped by route and prices.
pub fn usage_charges(groups: &[Sums]) -> BTreeMap<ChargeKey, Amount> {
    let mut out: BTreeMap<ChargeKey, Amount> = BTreeMap::new();
    let mut add = |route: &str, charge, price, quantity, amount_micros| {
        let a = out.entry((route.to_owned(), charge, price)).or_default();
        a.quantity += quantity;
        a.amount_micros += amount_micros;
    };
    for g in groups {
        let route = g.route.as_deref().unwrap_or("");
        let included = g.units - g.overage_units;
        if g.unit_price_micros == 0 && included > 0 {
            add(route, Charge::Usage, 0, included, 0);
        }
        if g.overage_units > 0 {
            add(
                route,
                Charge::Overage,
                g.overage_price_micros,
                g.overage_units,
                g.amount_micros - g.credits_micros,
            );
        }
        if g.unit_price_micros > 0 {
            add(
                route,
                Charge::Payg,
                g.unit_price_micros,
                g.units,
                g.credits_micros,
            );
        }
        if g.x402_calls > 0 {
            // One price per route in the common case; a price changed
            // within the period shows as its average, the amount exact.
            add(
                route,
                Charge::X402,
                g.x402_amount_micros / g.x402_calls,
                g.x402_calls,
                g.x402_amount_micros,
            );
        }
    }
    out
}

fn describe(charge: Charge, route: &str) -> String {
    match charge {
        Charge::Usage => format!("{route}: units included in the plan"),
        Charge::Overage => format!("{route}: units past the quota"),
        Charge::Payg => format!("{route}: pay-per-call units, paid from credits"),
        Charge::X402 => format!("{route}: calls paid with x402 at the time of the call"),
        Charge::Fee => format!("{route}: fee"),
    }
}

pub fn usage_lines(name: &str, charges: &BTreeMap<ChargeKey, Amount>) -> Vec<Line> {
    charges
        .iter()
        .map(|((route, charge, price), a)| Line {
            kind: charge.line_kind(),
            charge: *charge,
            source_period: name.to_owned(),
            description: describe(*charge, route),
            route: Some(route.clone()),
            quantity: a.quantity,
            unit_price_micros: *price,
            amount_micros: a.amount_micros,
        })
        .collect()
}

/// The fee adjustment of a finalized period: what its plan history gives
/// now (`fee_now`, the sum of its fee lines) minus what invoices billed for
/// it (`fee_billed`, fee lines and earlier fee adjustments). Non-zero after a
/// plan change dated inside a period that was closed before the change.
pub fn fee_adjustment(source_period: &str, fee_now: Micros, fee_billed: Micros) -> Option<Line> {
    let amount = fee_now - fee_billed;
    (amount != 0).then(|| Line {
        kind: LineKind::Adjustment,
        charge: Charge::Fee,
        source_period: source_period.to_owned(),
        description: format!(
            "Plan fee of {source_period} after a plan change made once it was invoiced"
        ),
        route: None,
        quantity: 1,
        unit_price_micros: amount,
        amount_micros: amount,
    })
}

/// Adjustment lines for a finalized period: what its ledger says now minus
/// what its invoices billed. Usage recorded after the close shows up here,
/// and only here, once.
pub fn adjustment_lines(
    source_period: &str,
    now: &BTreeMap<ChargeKey, Amount>,
    billed: &BTreeMap<ChargeKey, Amount>,
) -> Vec<Line> {
    let mut keys: Vec<&ChargeKey> = now.keys().chain(billed.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let n = now.get(k).copied().unwrap_or_default();
            let b = billed.get(k).copied().unwrap_or_default();
            let quantity = n.quantity - b.quantity;
            let amount = n.amount_micros - b.amount_micros;
            if quantity == 0 && amount == 0 {
                return None;
            }
            let (route, charge, price) = k;
            Some(Line {
                kind: LineKind::Adjustment,
                charge: *charge,
                source_period: source_period.to_owned(),
                description: format!(
                    "{} (usage of {source_period} recorded after it was invoiced)",
                    describe(*charge, route)
                ),
                route: Some(route.clone()),
                quantity,
                unit_price_micros: *price,
                amount_micros: amount,
            })
        })
        .collect()
}

/// Microseconds since the epoch as a time (for plan history rows).
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fee_adjustment_is_the_difference_and_none_without_one() {
        assert_eq!(fee_adjustment("2026-11", 50, 50), None);
        let up = fee_adjustment("2026-11", 50_000_000, 30_000_000).unwrap();
        assert_eq!(up.kind, LineKind::Adjustment);
        assert_eq!(up.charge, Charge::Fee);
        assert_eq!(
            (up.quantity, up.unit_price_micros, up.amount_micros),
            (1, 20_000_000, 20_000_000)
        );
        let down = fee_adjustment("2026-11", 10, 30).unwrap();
        assert_eq!(down.amount_micros, -20);
    }

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn span(plan: &str, fee: Micros, t: DateTime<Utc>) -> PlanSpan {
        PlanSpan {
            plan_id: plan.into(),
            monthly_fee_micros: fee,
            effective: t,
        }
    }

    #[test]
    fn one_plan_is_the_full_fee() {
        let p = Period::named(1, "2026-09".parse().unwrap());
        let lines = fee_lines(&p, "2026-09", &[span("a", 1000, at(2026, 8, 3, 9))]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].kind, LineKind::Fee);
        assert_eq!(lines[0].amount_micros, 1000);
    }

    #[test]
    fn a_change_prorates_by_day_rounding_down() {
        // September has 30 days; the change on the 11th bills 10 days old, 20 new.
        let p = Period::named(1, "2026-09".parse().unwrap());
        let h = [
            span("a", 83_332_500, at(2026, 8, 1, 0)),
            span("b", 166_665_833, at(2026, 9, 11, 15)),
        ];
        let lines = fee_lines(&p, "2026-09", &h);
        let amounts: Vec<_> = lines.iter().map(|l| l.amount_micros).collect();
        // 83,332,500 × 10 / 30 = 27,777,500; 166,665,833 × 20 / 30 = 111,110,555.33 → 111,110,555
        assert_eq!(amounts, vec![27_777_500, 111_110_555]);
        assert!(lines.iter().all(|l| l.kind == LineKind::Proration));
    }

    #[test]
    fn two_changes_on_one_day_bill_the_last() {
        let p = Period::named(1, "2026-09".parse().unwrap());
        let h = [
            span("a", 300, at(2026, 8, 1, 0)),
            span("b", 600, at(2026, 9, 16, 1)),
            span("c", 900, at(2026, 9, 16, 2)),
        ];
        let lines = fee_lines(&p, "2026-09", &h);
        let amounts: Vec<_> = lines
            .iter()
            .map(|l| (l.description.clone(), l.amount_micros))
            .collect();
        assert_eq!(amounts.len(), 2, "{amounts:?}");
        assert_eq!(amounts[0].1, 150);
        assert_eq!(amounts[1].1, 450);
    }

    #[test]
    fn adjustments_are_the_difference_and_vanish_when_billed() {
        let k = ("r".to_string(), Charge::Overage, 200);
        let now = BTreeMap::from([(
            k.clone(),
            Amount {
                quantity: 5,
                amount_micros: 1000,
            },
        )]);
        let billed = BTreeMap::from([(
            k.clone(),
            Amount {
                quantity: 3,
                amount_micros: 600,
            },
        )]);
        let adj = adjustment_lines("2026-09", &now, &billed);
        assert_eq!(adj.len(), 1);
        assert_eq!((adj[0].quantity, adj[0].amount_micros), (2, 400));
        assert!(adjustment_lines("2026-09", &now, &now).is_empty());
    }
}
