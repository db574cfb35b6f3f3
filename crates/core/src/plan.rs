//! Plans (SPEC §4): what a customer may call, how fast, how much, at what price.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Micros, PlanId, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    pub fn nanos(self) -> u64 {
        match self {
            Self::Second => 1_000_000_000,
            Self::Minute => 60_000_000_000,
            Self::Hour => 3_600_000_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[schema(minimum = 1)]
    pub requests: u32,
    pub per: Per,
    /// Calls that may be sent at once after a quiet period. Defaults to `requests`.
    #[serde(default)]
    #[schema(maximum = 10_000_000)]
    pub burst: u32,
}

impl RateLimit {
    /// GCRA emission interval: the steady-state spacing between two calls.
    pub fn emission_interval_ns(&self) -> u64 {
        self.per.nanos() / u64::from(self.requests.max(1))
    }

    pub fn capacity(&self) -> u32 {
        if self.burst == 0 {
            self.requests
        } else {
            self.burst
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[schema(minimum = 1)]
    pub calls: u64,
    #[serde(default = "default_period")]
    pub period: QuotaPeriod,
}

fn default_period() -> QuotaPeriod {
    QuotaPeriod::Month
}

/// What happens once the quota is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, utoipa::ToSchema)]
pub enum Overage {
    /// Refuse with 402 `quota_exhausted`.
    #[default]
    #[schema(rename = "block")]
    Block,
    /// Keep serving, billing each unit past the quota at this price.
    Price {
        #[schema(value_type = i64)]
        price_micros: Micros,
    },
}

impl Serialize for Overage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Block => s.serialize_str("block"),
            Self::Price { price_micros } => {
                serde_json::json!({ "price_micros": price_micros }).serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Overage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PriceForm {
            price_micros: Micros,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Word(String),
            Price(PriceForm),
        }
        match Form::deserialize(d)? {
            Form::Word(w) if w == "block" => Ok(Self::Block),
            Form::Word(w) => Err(serde::de::Error::custom(format!(
                "overage must be \"block\" or {{\"price_micros\": N}}, got \"{w}\""
            ))),
            Form::Price(p) => Ok(Self::Price {
                price_micros: p.price_micros,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub overage: Overage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub price_per_call_micros: Option<Micros>,
    #[serde(default)]
    #[schema(value_type = i64, minimum = 0)]
    pub monthly_fee_micros: Micros,
    #[serde(default = "all_routes")]
    #[schema(min_items = 1)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub max_websockets: u32,
}

fn all_routes() -> Vec<String> {
    vec!["*".to_string()]
}

impl Plan {
    /// Checks the invariants serde cannot express; names the first bad field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.name.trim().is_empty() {
            return Err(ValidationError::new("name", "must not be empty"));
        }
        if self.rate_limit.requests == 0 {
            return Err(ValidationError::new(
                "rate_limit.requests",
                "must be at least 1",
            ));
        }
        if self.rate_limit.burst > 10_000_000 {
            return Err(ValidationError::new(
                "rate_limit.burst",
                "must be at most 10000000",
            ));
        }
        if let Some(q) = &self.quota {
            if q.calls == 0 {
                return Err(ValidationError::new("quota.calls", "must be at least 1"));
            }
        }
        if let Overage::Price { price_micros } = self.overage {
            if price_micros < 0 {
                return Err(ValidationError::new(
                    "overage.price_micros",
                    "must not be negative",
                ));
            }
            if self.quota.is_none() {
                return Err(ValidationError::new(
                    "overage",
                    "an overage price needs a quota",
                ));
            }
        }
        if let Some(p) = self.price_per_call_micros {
            if p <= 0 {
                return Err(ValidationError::new(
                    "price_per_call_micros",
                    "must be positive",
                ));
            }
        }
        if self.monthly_fee_micros < 0 {
            return Err(ValidationError::new(
                "monthly_fee_micros",
                "must not be negative",
            ));
        }
        if self.routes.is_empty() {
            return Err(ValidationError::new(
                "routes",
                "must list route ids or [\"*\"]",
            ));
        }
        if self.routes.iter().any(|r| r.trim().is_empty()) {
            return Err(ValidationError::new(
                "routes",
                "route ids must not be empty",
            ));
        }
        Ok(())
    }

    pub fn allows_route(&self, route_id: &str) -> bool {
        self.routes.iter().any(|r| r == "*" || r == route_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Plan, String> {
        let p: Plan = serde_json::from_value(v).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn spec_example_round_trips() {
        let v = serde_json::json!({"id":"q3","name":"Q3","rate_limit":{"requests":10,"per":"second","burst":20},
            "quota":{"calls":3,"period":"month"},"overage":"block","routes":["*"],"max_websockets":0,
            "monthly_fee_micros":0});
        let p = parse(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), v);
    }

    #[test]
    fn overage_price_form() {
        let p = parse(
            serde_json::json!({"id":"p","name":"P","rate_limit":{"requests":1,"per":"minute"},
            "quota":{"calls":10},"overage":{"price_micros":200}}),
        )
        .unwrap();
        assert_eq!(p.overage, Overage::Price { price_micros: 200 });
        assert_eq!(p.rate_limit.capacity(), 1);
        assert_eq!(p.rate_limit.emission_interval_ns(), 60_000_000_000);
        assert_eq!(
            serde_json::to_value(p.overage).unwrap(),
            serde_json::json!({"price_micros":200})
        );
    }

    #[test]
    fn bad_plans_name_the_field() {
        let base =
            serde_json::json!({"id":"p","name":"P","rate_limit":{"requests":1,"per":"second"}});
        let cases = [
            (
                "rate_limit.requests",
                serde_json::json!({"rate_limit":{"requests":0,"per":"second"}}),
            ),
            ("overage", serde_json::json!({"overage":{"price_micros":5}})),
            (
                "price_per_call_micros",
                serde_json::json!({"price_per_call_micros":0}),
            ),
            ("routes", serde_json::json!({"routes":[]})),
        ];
        for (field, patch) in cases {
            let mut v = base.clone();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = parse(v).unwrap_err();
            assert!(err.starts_with(field), "{err} should name {field}");
        }
        assert!(parse(serde_json::json!({"id":"p","name":"P","rate_limit":{"requests":1,"per":"second"},"overage":"nope"})).is_err());
        assert!(parse(serde_json::json!({"id":"p","name":"P","rate_limit":{"requests":1,"per":"second"},"bogus":1})).is_err());
    }
}
