//! Server settings and their defaults.

use parley_protocol::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The SPEC's defaults for every limit.
pub fn default_limits() -> Limits {
    Limits {
        recall_window_ms: 120_000,
        inmail_delete_window_ms: 600_000,
        recall_per_conversation: 1,
        recall_period_ms: 86_400_000,
        recall_throttle_messages: 30,
        recall_throttle_window_ms: 60_000,
        max_body_chars: 8_000,
        max_frame_bytes: 64 * 1024,
        max_sessions_per_user: 16,
        requests_per_second: 20,
        request_burst: 60,
        ping_interval_ms: 30_000,
        idle_timeout_ms: 90_000,
    }
}

/// Entries (messages, state changes, outstanding notifications) the conversation cache
/// holds by default: a few tens of MiB (BENCHMARKS.md, "State on disk").
pub const DEFAULT_CACHE_ENTRIES: usize = 300_000;

/// Everything `parley serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Secret that signs tokens.
    pub secret: Vec<u8>,
    /// Data directory (the generated secret lives here).
    pub data: PathBuf,
    /// Limits announced in `hello` and enforced.
    pub limits: Limits,
    /// Bytes a session may have queued before it is cut off as a slow consumer.
    pub max_queue_bytes: usize,
    /// Entries (messages, state changes, notifications) the conversation cache holds (a
    /// store that reads on demand only): beyond it the least recently used are forgotten.
    pub cache_entries: usize,
    /// Grace period for sessions to drain on shutdown.
    pub shutdown_grace: Duration,
    /// New connections per second one address may open (0: unlimited); bursts of ten times that.
    pub connections_per_ip_per_second: u32,
    /// Caps at TCP accept: request-head deadline, unfinished handshakes, open connections.
    pub edge: crate::admission::EdgeLimits,
    /// Web pages allowed to open sessions (by their `Origin`).
    pub allowed_origins: crate::origin::AllowedOrigins,
    /// Peers (reverse proxies) whose `Forwarded` / `X-Forwarded-For` name the client.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// Where `/metrics` is served instead of the main port (`None`: on the main port).
    pub metrics_listen: Option<SocketAddr>,
    /// TLS for the main port (`wss://`, `https://`); `None`: plain TCP.
    pub tls: Option<crate::tls::Tls>,
}

impl Config {
    /// Defaults for a given secret, suited to tests.
    pub fn with_secret(secret: impl Into<Vec<u8>>) -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            secret: secret.into(),
            data: PathBuf::from("parley-data"),
            limits: default_limits(),
            max_queue_bytes: 1024 * 1024,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            shutdown_grace: Duration::from_secs(5),
            connections_per_ip_per_second: 50,
            edge: crate::admission::EdgeLimits::default(),
            allowed_origins: crate::origin::AllowedOrigins::default(),
            trusted_proxies: crate::forwarded::TrustedProxies::default(),
            metrics_listen: None,
            tls: None,
        }
    }
}

/// A database or broker URL with its password replaced by `REDACTED`, for printing and
/// logs: `postgres://parley:REDACTED@db/parley`, and `password=REDACTED` in a key=value
/// connection string.
pub fn redacted(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.password().is_some() && parsed.set_password(Some("REDACTED")).is_ok() {
            return parsed.to_string();
        }
        if parsed.has_host() {
            return url.to_owned();
        }
    }
    url.split(' ')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turn a TOML settings file into extra command-line arguments. `known(key)` answers
/// `None` for a key that is no setting, `Some(true)` when the setting was already given
/// explicitly (flag or environment), which the file must not override.
pub fn file_arguments(
    text: &str,
    known: impl Fn(&str) -> Option<bool>,
) -> Result<Vec<std::ffi::OsString>, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
    let mut args = Vec::new();
    for (key, value) in table {
        let given = known(&key).ok_or_else(|| format!("unknown setting `{key}`"))?;
        if given {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => args.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => args.extend([flag.into(), s.into()]),
            toml::Value::Integer(i) => args.extend([flag.into(), i.to_string().into()]),
            other => return Err(format!("setting `{key}` has an unsupported value {other}")),
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted_and_nothing_else_changes() {
        assert_eq!(
            redacted("postgres://parley:s3cret@db.internal:5432/parley?sslmode=require"),
            "postgres://parley:REDACTED@db.internal:5432/parley?sslmode=require"
        );
        assert_eq!(
            redacted("redis://:hunter2@cache/0"),
            "redis://:REDACTED@cache/0"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(
            redacted("host=db user=parley password=s3cret dbname=parley"),
            "host=db user=parley password=REDACTED dbname=parley"
        );
    }

    #[test]
    fn file_settings_fill_in_only_what_was_not_given() {
        let text = "listen = \"127.0.0.1:9000\"\nrecall_window = \"30s\"\nmax_body_chars = 100\ndemo = true\n";
        let args = file_arguments(text, |k| match k {
            "listen" => Some(true),
            "recall_window" | "max_body_chars" | "demo" => Some(false),
            _ => None,
        })
        .unwrap();
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--demo",
                "--max-body-chars",
                "100",
                "--recall-window",
                "30s"
            ]
        );
        assert!(file_arguments("nope = 1", |_| None)
            .unwrap_err()
            .contains("unknown setting `nope`"));
        assert!(file_arguments("= broken", |_| Some(false)).is_err());
    }
}
