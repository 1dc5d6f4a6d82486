//! Which web pages may open a session: the `Origin` check made before the upgrade.
//!
//! A browser sends `Origin` with every WebSocket handshake and lets any page open a socket
//! to any server, so without this check a page on another site could act for a user whose
//! token it got hold of (or, with `?ticket=` links, trick a page into connecting). Clients
//! that are not browsers send no `Origin` and are not affected.

/// The origins allowed to connect, from `--allowed-origins`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// Only pages served from the host the handshake is addressed to (its `Host` header).
    #[default]
    SameHost,
    /// Any page (`*`).
    Any,
    /// Exactly these origins (`https://chat.example.com`), compared without case.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parse the setting: empty for the same host, `*` for any, else a comma-separated list.
    pub fn parse(setting: &str) -> Result<AllowedOrigins, String> {
        let setting = setting.trim();
        if setting.is_empty() {
            return Ok(AllowedOrigins::SameHost);
        }
        if setting == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let mut list = Vec::new();
        for origin in setting.split(',').map(str::trim) {
            let Some((scheme, host)) = origin.split_once("://") else {
                return Err(format!(
                    "allowed origin {origin:?} is not scheme://host[:port] (say https://chat.example.com)"
                ));
            };
            if host.is_empty() || host.contains('/') || !matches!(scheme, "http" | "https") {
                return Err(format!(
                    "allowed origin {origin:?} is not http(s)://host[:port], with no path"
                ));
            }
            list.push(canonical(origin));
        }
        Ok(AllowedOrigins::List(list))
    }

    /// Whether a handshake with this `Origin` (if any) addressed to `host` may go ahead.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.contains(&canonical(origin)),
            AllowedOrigins::SameHost => {
                let origin_host = origin.split_once("://").map(|(_, h)| h);
                match (origin_host, host) {
                    (Some(o), Some(h)) => without_default_port(o) == without_default_port(h),
                    _ => false,
                }
            }
        }
    }
}

/// An origin in lower case with its default port left out, as browsers send it.
fn canonical(origin: &str) -> String {
    let origin = origin.trim().to_ascii_lowercase();
    match origin.split_once("://") {
        Some((scheme @ "http", host)) if host.ends_with(":80") => {
            format!("{scheme}://{}", &host[..host.len() - 3])
        }
        Some((scheme @ "https", host)) if host.ends_with(":443") => {
            format!("{scheme}://{}", &host[..host.len() - 4])
        }
        _ => origin,
    }
}

/// `host[:port]` in lower case, without `:80` or `:443` (the scheme is not known here: a
/// TLS-terminating proxy may stand in front).
fn without_default_port(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    host.strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .map(str::to_owned)
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_only_pages_from_the_addressed_host_connect() {
        let same = AllowedOrigins::default();
        assert!(
            same.allows(None, Some("chat.example")),
            "no Origin: not a browser"
        );
        assert!(same.allows(Some("https://chat.example"), Some("chat.example")));
        assert!(same.allows(Some("https://Chat.Example"), Some("chat.example:443")));
        assert!(same.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!same.allows(Some("http://127.0.0.1:8081"), Some("127.0.0.1:8080")));
        assert!(!same.allows(Some("https://evil.example"), Some("chat.example")));
        assert!(!same.allows(Some("null"), Some("chat.example")));
        assert!(!same.allows(Some("https://chat.example"), None));
    }

    #[test]
    fn a_list_allows_exactly_its_origins_and_star_allows_any() {
        let list =
            AllowedOrigins::parse("https://chat.example.com, http://localhost:3000").unwrap();
        assert!(list.allows(Some("https://CHAT.example.com:443"), Some("api.internal")));
        assert!(list.allows(Some("http://localhost:3000"), None));
        assert!(!list.allows(Some("http://localhost:3001"), None));
        assert!(!list.allows(Some("https://evil.example"), Some("https://evil.example")));
        assert!(AllowedOrigins::parse("*")
            .unwrap()
            .allows(Some("https://x.y"), None));
        assert_eq!(
            AllowedOrigins::parse(" ").unwrap(),
            AllowedOrigins::SameHost
        );
    }

    #[test]
    fn a_malformed_origin_is_refused_with_the_form_expected() {
        let e = AllowedOrigins::parse("chat.example.com").unwrap_err();
        assert!(e.contains("scheme://host"), "{e}");
        assert!(AllowedOrigins::parse("https://chat.example.com/app").is_err());
        assert!(AllowedOrigins::parse("ftp://chat.example.com").is_err());
    }
}
