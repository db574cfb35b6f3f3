//! Money in micro-dollars (1 USD = 1,000,000) to an asset's atomic units
//! (USDC has 6 decimals: one micro is one unit). Integer arithmetic only; a
//! price that the asset cannot represent exactly is refused, never rounded.

/// Why a price cannot be offered in an asset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("the price must be positive")]
    NotPositive,
    #[error("{micros} micros is not a whole number of atomic units of an asset with {decimals} decimals")]
    NotRepresentable { micros: i64, decimals: u32 },
    #[error("an asset with {0} decimals is not supported (at most 30)")]
    TooManyDecimals(u32),
    #[error("{micros} micros is too many atomic units of an asset with {decimals} decimals")]
    TooLarge { micros: i64, decimals: u32 },
}

/// The number of atomic units of an asset with `decimals` decimals that
/// make `micros` micro-dollars (the asset worth one dollar per whole unit).
pub fn atomic_units(micros: i64, decimals: u32) -> Result<u128, AmountError> {
    if micros <= 0 {
        return Err(AmountError::NotPositive);
    }
    if decimals > 30 {
        return Err(AmountError::TooManyDecimals(decimals));
    }
    let micros_u = u128::from(micros.unsigned_abs());
    if decimals >= 6 {
        micros_u
            .checked_mul(10u128.pow(decimals - 6))
            .ok_or(AmountError::TooLarge { micros, decimals })
    } else {
        let per_unit = 10u128.pow(6 - decimals);
        if micros_u % per_unit != 0 {
            return Err(AmountError::NotRepresentable { micros, decimals });
        }
        Ok(micros_u / per_unit)
    }
}

/// An amount as the wire carries it: a decimal string of atomic units.
pub fn parse_units(s: &str) -> Option<u128> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_decimals_is_one_to_one() {
        assert_eq!(atomic_units(17_000, 6), Ok(17_000));
        assert_eq!(atomic_units(1, 6), Ok(1));
    }

    #[test]
    fn more_decimals_scale_up_exactly() {
        assert_eq!(atomic_units(17_000, 18), Ok(17_000 * 10u128.pow(12)));
        assert_eq!(atomic_units(1_000_000, 30), Ok(10u128.pow(30)));
        assert_eq!(
            atomic_units(i64::MAX, 30),
            Err(AmountError::TooLarge {
                micros: i64::MAX,
                decimals: 30
            })
        );
    }

    #[test]
    fn fewer_decimals_refuse_what_they_cannot_hold() {
        // $0.017 is 17 thousandths, but not a whole number of cents.
        assert_eq!(atomic_units(17_000, 3), Ok(17));
        assert_eq!(
            atomic_units(17_000, 2),
            Err(AmountError::NotRepresentable {
                micros: 17_000,
                decimals: 2
            })
        );
        assert_eq!(atomic_units(10_000, 2), Ok(1));
        assert_eq!(
            atomic_units(15_000, 2),
            Err(AmountError::NotRepresentable {
                micros: 15_000,
                decimals: 2
            })
        );
    }

    #[test]
    fn nothing_free_and_nothing_absurd() {
        assert_eq!(atomic_units(0, 6), Err(AmountError::NotPositive));
        assert_eq!(atomic_units(-5, 6), Err(AmountError::NotPositive));
        assert_eq!(atomic_units(1, 31), Err(AmountError::TooManyDecimals(31)));
    }

    #[test]
    fn wire_amounts_are_plain_decimal_strings() {
        assert_eq!(parse_units("17000"), Some(17_000));
        assert_eq!(parse_units(""), None);
        assert_eq!(parse_units("-1"), None);
        assert_eq!(parse_units("1e3"), None);
        assert_eq!(parse_units(" 1"), None);
        assert_eq!(parse_units("340282366920938463463374607431768211456"), None);
    }
}
