//! Identifiers. Ids are chosen by admins (plans, customers) or minted by paygate
//! (keys), and travel in URLs, headers and log lines, so they are restricted to a
//! small safe alphabet.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

use crate::ValidationError;

const MAX_ID_LEN: usize = 64;

fn check_id(field: &str, s: &str) -> Result<(), ValidationError> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(ValidationError::new(
            field,
            "may contain only letters, digits, '_', '-' and '.'",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($name:ident, $field:literal) => {
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
                let s = s.into();
                check_id($field, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(CustomerId, "id");
id_type!(PlanId, "plan_id");
id_type!(KeyId, "key_id");
id_type!(RouteId, "route");

impl KeyId {
    /// A fresh, time-ordered key id (`key_` + UUIDv7 simple form).
    pub fn generate() -> Self {
        Self(format!("key_{}", uuid::Uuid::now_v7().simple()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_safe_alphabet_only() {
        assert!(CustomerId::new("acme-1_x.y").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(CustomerId::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn generated_key_ids_are_unique_and_valid() {
        let a = KeyId::generate();
        let b = KeyId::generate();
        assert_ne!(a, b);
        assert!(KeyId::new(a.as_str()).is_ok());
    }
}
