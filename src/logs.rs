//! The server's logs: text or JSON lines on standard error, through a filter in
//! `RUST_LOG`'s syntax that can be changed while the server runs (SIGHUP reads it again
//! from the settings file), so an operator can turn on `debug` for a moment without
//! dropping every session.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter used when neither the settings nor `RUST_LOG` name one.
pub const DEFAULT_FILTER: &str = "info";

/// A filter that is not one.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter `{filter}`: {why}")]
pub struct FilterError {
    filter: String,
    why: String,
}

/// The installed logs, whose filter may be replaced.
pub struct Logs {
    filter: reload::Handle<EnvFilter, Registry>,
}

/// The filter a server starts with when its settings name none: `RUST_LOG`, else
/// [`DEFAULT_FILTER`].
pub fn default_filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned())
}

fn parse(filter: &str) -> Result<EnvFilter, FilterError> {
    EnvFilter::builder().parse(filter).map_err(|e| FilterError {
        filter: filter.to_owned(),
        why: e.to_string(),
    })
}

/// Install the process's logs: JSON lines or text, through `filter`.
pub fn init(json: bool, filter: &str) -> Result<Logs, FilterError> {
    let (layer, handle) = reload::Layer::new(parse(filter)?);
    // Colour codes only for a person at a terminal, never into a file or a journal.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
    });
    let lines = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(layer)
        .with(text)
        .with(lines)
        .init();
    Ok(Logs { filter: handle })
}

impl Logs {
    /// Filter from now on with `filter`; a bad one leaves the filter in use.
    pub fn set_filter(&self, filter: &str) -> Result<(), FilterError> {
        let parsed = parse(filter)?;
        self.filter.reload(parsed).map_err(|e| FilterError {
            filter: filter.to_owned(),
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_rust_logs_syntax_are_read_and_others_refused() {
        assert!(parse("info").is_ok());
        assert!(parse("parley=debug,tower=warn,info").is_ok());
        let refused = parse("parley=loud").unwrap_err().to_string();
        assert!(refused.contains("parley=loud"), "{refused}");
    }
}
