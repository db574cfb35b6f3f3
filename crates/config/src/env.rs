//! `PAYGATE_<SECTION>__<KEY>` overrides. The value is read as a TOML literal
//! when it is one (`2`, `true`, `["a"]`) and as a string otherwise, so
//! `PAYGATE_GATEWAY__LISTEN=0.0.0.0:80` and `PAYGATE_GATEWAY__THREADS=4` both work.

use crate::ConfigError;

const PREFIX: &str = "PAYGATE_";

pub(crate) fn apply_overrides(
    root: &mut toml::Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        // Only names with a section separator are config keys; PAYGATE_ADMIN_TOKEN
        // and friends are secrets referenced by `*_env` keys.
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if let Err(msg) = set_path(root, &path, literal(&raw)) {
            errors.push(ConfigError::new(format!("{name} (environment)"), msg));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn literal(raw: &str) -> toml::Value {
    #[derive(serde::Deserialize)]
    struct Wrap {
        v: toml::Value,
    }
    toml::from_str::<Wrap>(&format!("v = {raw}"))
        .map(|w| w.v)
        .unwrap_or_else(|_| toml::Value::String(raw.to_string()))
}

fn set_path(root: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut node = root;
    for p in parents {
        let table = node
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not inside a table"))?;
        node = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| format!("`{last}` is not inside a table"))?;
    table.insert(last.clone(), value);
    Ok(())
}
