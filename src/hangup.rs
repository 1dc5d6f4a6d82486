//! What SIGHUP does to a running server: read again what can change without dropping a
//! session — the TLS certificate, and the log filter from the settings file — and say in
//! the log what was read and what still needs a restart.

use crate::logs::Logs;
use crate::tls::Tls;
use std::path::PathBuf;

/// What a hang-up may read again.
pub struct Reloadable {
    /// The certificate of the main port, when it serves TLS.
    pub tls: Option<Tls>,
    /// The logs, whose filter the settings file may change.
    pub logs: Logs,
    /// The settings file the server started with, if any.
    pub settings: Option<PathBuf>,
    /// The settings file's contents at start, to name what changed since.
    pub started_with: toml::Table,
    /// Whether `--log` or `PARLEY_LOG` set the filter: they outrank the file, then as now.
    pub log_pinned: bool,
}

impl Reloadable {
    /// Read again what can change, logging each outcome; nothing here stops the server.
    pub fn hangup(&self) {
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.cert_path().display(),
                    "SIGHUP: TLS certificate read again; new connections use it"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded, the one in use stays"
                ),
            }
        }
        let Some(path) = &self.settings else {
            return tracing::info!("SIGHUP: no settings file to read again; still serving");
        };
        let table = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| text.parse::<toml::Table>().map_err(|e| e.to_string()))
        {
            Ok(table) => table,
            Err(e) => {
                return tracing::warn!(file = %path.display(), error = %e,
                    "SIGHUP: settings file not read; the settings in use stay")
            }
        };
        self.reload_log_filter(&table);
        let later = restart_needed(&self.started_with, &table);
        if !later.is_empty() {
            tracing::warn!(file = %path.display(), settings = %later.join(", "),
                "SIGHUP: these changed settings take effect at the next start");
        }
    }

    fn reload_log_filter(&self, table: &toml::Table) {
        if self.log_pinned {
            return;
        }
        let filter = match table.get("log") {
            Some(toml::Value::String(filter)) => filter.clone(),
            Some(other) => {
                return tracing::warn!(value = %other, "SIGHUP: `log` must be a string; filter kept")
            }
            None => crate::logs::default_filter(),
        };
        match self.logs.set_filter(&filter) {
            Ok(()) => tracing::warn!(%filter, "SIGHUP: log filter now in use"),
            Err(e) => tracing::warn!(error = %e, "SIGHUP: log filter kept"),
        }
    }
}

/// The settings other than `log` whose value in `now` differs from `then`, by name.
fn restart_needed(then: &toml::Table, now: &toml::Table) -> Vec<String> {
    let mut keys: Vec<&String> = then.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| key.as_str() != "log" && then.get(*key) != now.get(*key))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_changed_since_start_are_named_but_the_log_filter_is_not() {
        let then: toml::Table = "max_body_chars = 100\nlog = \"info\"\nretention = \"1d\"\n"
            .parse()
            .unwrap();
        let now: toml::Table = "max_body_chars = 200\nlog = \"debug\"\nretention = \"1d\"\nmetrics_listen = \"127.0.0.1:9000\"\n"
            .parse()
            .unwrap();
        assert_eq!(
            restart_needed(&then, &now),
            ["max_body_chars", "metrics_listen"]
        );
        assert!(restart_needed(&now, &now).is_empty());
    }
}
