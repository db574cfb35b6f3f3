//! Typed paygate configuration (SPEC §2): a TOML file, overridden by
//! `PAYGATE_<SECTION>__<KEY>` environment variables, then validated. Every
//! problem names the key it is about.

mod env;
mod model;
mod validate;

pub use model::*;

use std::path::Path;

/// One problem with a configuration, named by its dotted key (`routes[1].upstream`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads `path`, applies the process environment and validates.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            "<file>",
            format!("{}: {e}", path.display()),
        )]
    })?;
    parse(&text, std::env::vars())
}

/// Parses TOML text with the given environment (so tests can pass their own).
pub fn parse(
    text: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, Vec<ConfigError>> {
    let mut value: toml::Value = toml::from_str(text).map_err(|e| {
        vec![ConfigError::new(
            "<file>",
            format!("not valid TOML: {}", e.message()),
        )]
    })?;
    env::apply_overrides(&mut value, vars)?;

    let mut errors = Vec::new();
    let mut unknown = Vec::new();
    // An optional section's keys come as `x402.?.key`: name them as written.
    let mut on_unknown =
        |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", ""));
    let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
    let parsed: Result<Config, _> = serde_path_to_error::deserialize(de);
    for key in unknown {
        errors.push(ConfigError::new(key, "unknown key"));
    }
    let config = match parsed {
        Ok(c) => c,
        Err(e) => {
            let key = e.path().to_string();
            errors.push(ConfigError::new(key, e.into_inner().message().to_string()));
            return Err(errors);
        }
    };
    errors.extend(validate::validate(&config));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
