//! An endpoint URL's origin: what logs, attempt errors, metrics and API error texts
//! may say about an endpoint.
//!
//! Endpoint URLs often carry credentials (a token in the path, as Slack and Discord
//! put it, or `?api_key=…`), so only the subscription itself, shown by the admin API,
//! holds the whole URL. Everything else names the scheme, host and port, which is what
//! an operator needs to tell a DNS, TLS or firewall problem from a receiver's, and
//! never the user info, path, query or fragment.

/// `scheme://host:port` of `url`, the port spelled out (the scheme's default when the
/// URL has none); `(unparsable url)` when there is no `scheme://host`.
pub fn origin(url: &str) -> String {
    const UNPARSABLE: &str = "(unparsable url)";
    let Some((scheme, rest)) = url.split_once("://") else {
        return UNPARSABLE.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return UNPARSABLE.to_owned();
    }
    // The authority ends at the path, query or fragment; a backslash counts as a path
    // separator, as browsers and the WHATWG parser read it for http(s).
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, after)) => (format!("[{addr}]"), after.strip_prefix(':')),
            None => return UNPARSABLE.to_owned(),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (host_port.to_owned(), None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return UNPARSABLE.to_owned();
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.to_owned(),
        Some(p) if !p.is_empty() => return UNPARSABLE.to_owned(),
        _ => match scheme.as_str() {
            "http" => "80".to_owned(),
            "https" => "443".to_owned(),
            _ => return format!("{scheme}://{}", host.to_ascii_lowercase()),
        },
    };
    format!("{scheme}://{}:{port}", host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_host_and_port_remain() {
        let cases = [
            (
                "https://hooks.slack.com/services/T000/B000/XXXX",
                "https://hooks.slack.com:443",
            ),
            (
                "http://127.0.0.1:9000/h?api_key=sk_live_1",
                "http://127.0.0.1:9000",
            ),
            (
                "https://discord.com/api/webhooks/1/tok#frag",
                "https://discord.com:443",
            ),
            ("HTTPS://Example.COM", "https://example.com:443"),
            ("http://example.com?token=x", "http://example.com:80"),
            (
                "http://user:pw@example.com:8080/x",
                "http://example.com:8080",
            ),
            ("http://[::1]:8443/p/secret", "http://[::1]:8443"),
            ("http://[2001:db8::1]/p", "http://[2001:db8::1]:80"),
            ("http://example.com\\secret/path", "http://example.com:80"),
            ("ftp://example.com/x", "ftp://example.com"),
            ("/relative/path?token=x", "(unparsable url)"),
            ("not a url", "(unparsable url)"),
            ("http://", "(unparsable url)"),
            ("http://host:port-with-secret/x", "(unparsable url)"),
            ("http://[::1/x", "(unparsable url)"),
        ];
        for (url, want) in cases {
            assert_eq!(origin(url), want, "{url}");
        }
    }

    /// Whatever follows the authority never comes back.
    #[test]
    fn nothing_after_the_authority_survives() {
        for tail in ["/SECRET", "?SECRET", "#SECRET", "/a?b=SECRET#c", "\\SECRET"] {
            for head in [
                "http://h",
                "https://h:1",
                "http://u:SECRET@h",
                "http://[::1]",
            ] {
                let url = format!("{head}{tail}");
                assert!(
                    !origin(&url).contains("SECRET"),
                    "{url} -> {}",
                    origin(&url)
                );
            }
        }
    }
}
