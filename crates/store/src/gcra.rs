//! Generic cell rate algorithm, as in Redis-cell and Stripe's limiter: one
//! timestamp (the theoretical arrival time, TAT) per customer.

/// Result of testing one call against a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gcra {
    /// Admit and store `new_tat`.
    Conform {
        new_tat: u64,
        remaining: u32,
        reset_ns: u64,
    },
    Limited {
        retry_after_ns: u64,
        reset_ns: u64,
    },
}

/// `tat` and `now` in nanoseconds on the store's clock.
pub(crate) fn check(tat: u64, now: u64, interval: u64, capacity: u32) -> Gcra {
    let burst_window = interval.saturating_mul(u64::from(capacity));
    let new_tat = tat.max(now) + interval;
    let allow_at = new_tat.saturating_sub(burst_window);
    if now < allow_at {
        return Gcra::Limited {
            retry_after_ns: allow_at - now,
            reset_ns: tat.saturating_sub(now),
        };
    }
    let (remaining, reset_ns) = state(new_tat, now, interval, capacity);
    Gcra::Conform {
        new_tat,
        remaining,
        reset_ns,
    }
}

/// Calls that could be sent now and nanoseconds until the bucket is full.
pub(crate) fn state(tat: u64, now: u64, interval: u64, capacity: u32) -> (u32, u64) {
    let reset_ns = tat.saturating_sub(now);
    let used = reset_ns.div_ceil(interval.max(1));
    let remaining = u64::from(capacity).saturating_sub(used);
    (u32::try_from(remaining).unwrap_or(u32::MAX), reset_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_steady_rate() {
        let (interval, cap) = (S, 5);
        let mut tat = 0;
        let now = 100 * S;
        for i in 0..5 {
            match check(tat, now, interval, cap) {
                Gcra::Conform {
                    new_tat, remaining, ..
                } => {
                    assert_eq!(remaining, 4 - i);
                    tat = new_tat;
                }
                other => panic!("call {i} refused: {other:?}"),
            }
        }
        let Gcra::Limited {
            retry_after_ns,
            reset_ns,
        } = check(tat, now, interval, cap)
        else {
            panic!("sixth call admitted")
        };
        assert_eq!(retry_after_ns, S);
        assert_eq!(reset_ns, 5 * S);
        assert!(matches!(
            check(tat, now + S, interval, cap),
            Gcra::Conform { .. }
        ));
    }

    #[test]
    fn idle_bucket_is_full() {
        assert_eq!(state(0, 10 * S, S, 5), (5, 0));
    }
}
