//! Reading HealthRecords: from the health state store (what health agents wrote, e.g. the
//! SKE health agent's Git or bucket state store, kratix-lifecycle.md §1.3) and from the config
//! repo's classified objects.

use serde_json::Value;

use super::{HealthStoreSettings, Sourced};
use crate::config::Located;
use crate::model::{HealthRecord, KRATIX_API_VERSION};
use crate::status::HealthSource;

/// The records of the config repo's `HealthRecord` documents (`from`: `config <file>#<doc>`).
pub fn from_config(records: &[Located<HealthRecord>]) -> Vec<Sourced> {
    records
        .iter()
        .map(|h| sourced(&h.object, format!("config {}", h.origin)))
        .collect()
}

fn sourced(h: &HealthRecord, from: String) -> Sourced {
    Sourced {
        data: h.data.clone(),
        source: HealthSource {
            name: h.metadata.name.clone(),
            namespace: h
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        },
        from,
    }
}

/// The store-relative directory to read for `settings`: the store's `spec.path` joined with
/// `settings.path`.
pub fn prefix(store_path: &str, settings: &HealthStoreSettings) -> String {
    [
        store_path.trim_matches('/'),
        settings.path.trim_matches('/'),
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join("/")
}

/// Reads every `*.yaml`/`*.yml` file under `prefix` of `store` (named `label`, e.g.
/// `GitStateStore/health`) and keeps its `platform.kratix.io/v1alpha1` `HealthRecord`
/// documents. One bad file or document never hides the others: each is a warning naming the
/// store, file, document and field.
///
/// Errors: the store cannot be read (the message names it).
pub async fn read(
    store: &dyn statestores::StateStore,
    prefix: &str,
    label: &str,
) -> Result<(Vec<Sourced>, Vec<String>), String> {
    let files = store
        .read_files(prefix, &[".yaml", ".yml"])
        .await
        .map_err(|e| format!("healthStateStore {label}: {e}"))?;
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for f in files {
        let text = match std::str::from_utf8(&f.content) {
            Ok(t) => t,
            Err(_) => {
                warnings.push(format!(
                    "healthStateStore {label}: {}: not UTF-8; skipped",
                    f.path
                ));
                continue;
            }
        };
        let docs = match crate::config::parse_yaml_stream(text) {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!(
                    "healthStateStore {label}: {}: {e}; skipped",
                    f.path
                ));
                continue;
            }
        };
        for (i, doc) in docs.iter().enumerate() {
            let kind = doc.get("kind").and_then(Value::as_str);
            let api = doc.get("apiVersion").and_then(Value::as_str);
            if kind != Some("HealthRecord") || api != Some(KRATIX_API_VERSION) {
                continue;
            }
            match crate::config::from_value::<HealthRecord>(doc) {
                Ok(h) => records.push(sourced(
                    &h,
                    format!("healthStateStore {label} {}#{i}", f.path),
                )),
                Err((field, msg)) => {
                    let name = doc
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("?");
                    warnings.push(format!(
                        "healthStateStore {label}: {}#{i}: HealthRecord {name}: {field}: {msg}; skipped",
                        f.path
                    ));
                }
            }
        }
    }
    Ok((records, warnings))
}
