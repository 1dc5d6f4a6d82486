//! TLS to PostgreSQL, chosen by the URL's `sslmode` as libpq reads it, over rustls.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` but not `verify-full`, and no
//! `sslrootcert`: those two are taken out of the URL here and turned into the rustls
//! client that checks the server.

use crate::store::StoreError;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a node talks TLS to its database.
pub struct DatabaseTls {
    /// The URL as tokio-postgres reads it (without `sslmode=verify-full` or `sslrootcert`).
    pub url: String,
    /// Whether TLS is used (`Prefer`, the default: when the server offers it); `None` for
    /// a key=value string, whose own `sslmode` tokio-postgres reads.
    pub mode: Option<SslMode>,
    /// What checks the server's certificate.
    pub connector: MakeRustlsConnect,
}

/// `url`'s TLS settings: `sslmode` `disable`, `prefer` (the default) and `require` encrypt
/// without checking the server's certificate, as libpq does; `verify-full` checks it
/// against `sslrootcert` (a PEM file, required) and the host name. Anything else is
/// refused rather than read as something weaker.
pub fn database_tls(url: &str) -> Result<DatabaseTls, StoreError> {
    let refused = |why: String| StoreError::refused("database URL", why);
    let Ok(mut parsed) = url::Url::parse(url) else {
        // The key=value form: tokio-postgres reads its `sslmode` itself.
        return Ok(DatabaseTls {
            url: url.to_owned(),
            mode: None,
            connector: MakeRustlsConnect::new(crate::tls::unauthenticated_client()),
        });
    };
    let mut mode = None;
    let mut root = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, v)| match k.as_ref() {
            "sslmode" => {
                mode = Some(v.to_string());
                false
            }
            "sslrootcert" => {
                root = Some(v.to_string());
                false
            }
            _ => true,
        })
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let unauthenticated = || MakeRustlsConnect::new(crate::tls::unauthenticated_client());
    let (mode, connector) = match (mode.as_deref(), root) {
        (None | Some("prefer"), _) => (SslMode::Prefer, unauthenticated()),
        (Some("disable"), _) => (SslMode::Disable, unauthenticated()),
        (Some("require"), _) => (SslMode::Require, unauthenticated()),
        (Some("verify-full"), Some(root)) => {
            let client = crate::tls::verifying_client(std::path::Path::new(&root))
                .map_err(|e| refused(e.to_string()))?;
            (SslMode::Require, MakeRustlsConnect::new(client))
        }
        (Some("verify-full"), None) => {
            return Err(refused(
                "sslmode=verify-full needs sslrootcert=FILE (the CA certificates, PEM)".into(),
            ))
        }
        (Some(other), _) => {
            return Err(refused(format!(
                "sslmode={other} is not supported: use disable, prefer, require or verify-full"
            )))
        }
    };
    Ok(DatabaseTls {
        url: parsed.into(),
        mode: Some(mode),
        connector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_and_the_root_leave_the_url_and_other_parameters_stay() {
        let dir = std::env::temp_dir();
        let missing = dir.join("parley-no-such-root.pem");
        let url = format!(
            "postgres://u@db:5432/x?application_name=p&sslmode=verify-full&sslrootcert={}",
            missing.display()
        );
        // The root file is read: a missing one is refused, naming it.
        let Err(e) = database_tls(&url) else {
            panic!("a missing root file was accepted")
        };
        assert!(e.to_string().contains("parley-no-such-root.pem"), "{e}");
        let plain = database_tls("postgres://u@db/x?sslmode=require&application_name=p").unwrap();
        assert_eq!(plain.url, "postgres://u@db/x?application_name=p");
        assert!(matches!(plain.mode, Some(SslMode::Require)));
        let default = database_tls("postgres://u@db/x").unwrap();
        assert_eq!(default.url, "postgres://u@db/x");
        assert!(matches!(default.mode, Some(SslMode::Prefer)));
    }

    #[test]
    fn weaker_or_unknown_modes_are_refused_not_guessed() {
        for url in [
            "postgres://u@db/x?sslmode=verify-full",
            "postgres://u@db/x?sslmode=verify-ca",
            "postgres://u@db/x?sslmode=allow",
        ] {
            let Err(e) = database_tls(url) else {
                panic!("{url} accepted")
            };
            assert!(e.to_string().contains("sslmode"), "{url}: {e}");
        }
    }
}
