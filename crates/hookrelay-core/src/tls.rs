//! TLS settings carried in database URLs, as the databases' own clients spell them.
//!
//! PostgreSQL: libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`. MySQL and
//! MariaDB: the URI parameters of MySQL's clients, `ssl-mode`, `ssl-ca`, `ssl-cert`,
//! `ssl-key`. Providers hand out URLs with these parameters; the drivers hookrelay
//! uses do not understand all of them, so they are taken out of the URL here (what
//! remains goes to the driver) and turned into plain data the connecting crates build
//! their rustls connector from. Pure parsing, no files are read: a value that cannot
//! mean anything is refused at start-up, with the parameter named.

use std::path::PathBuf;

/// A TLS parameter in a database URL that cannot be used as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsOptionError(String);

/// libpq's `sslmode`: how much of TLS a PostgreSQL connection insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext when it does not; no verification.
    Prefer,
    /// TLS or no connection; the certificate is not verified (unless `sslrootcert`
    /// names a CA file: then the chain is, as libpq does).
    Require,
    /// TLS, and the server's certificate chains to a trusted CA.
    VerifyCa,
    /// TLS, a trusted chain, and the certificate names the host connected to.
    VerifyFull,
}

impl PgSslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the CA certificates that a verifying mode trusts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// The operating system's trusted roots (`sslrootcert=system`).
    System,
}

impl std::fmt::Display for RootCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootCerts::File(p) => write!(f, "{}", p.display()),
            RootCerts::System => f.write_str("the system's trusted roots"),
        }
    }
}

/// A client certificate and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS part of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: PgSslMode,
    pub root_certs: Option<RootCerts>,
    pub client_cert: Option<ClientCert>,
}

impl PgTls {
    /// Is the certificate chain checked against `root_certs`?
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            PgSslMode::VerifyCa | PgSslMode::VerifyFull => true,
            // libpq: "if a root CA file exists, the behavior of sslmode=require will be
            // the same as that of verify-ca".
            PgSslMode::Require => matches!(self.root_certs, Some(RootCerts::File(_))),
            PgSslMode::Disable | PgSslMode::Prefer => false,
        }
    }

    /// Is the host name checked against the certificate?
    pub fn verifies_host(&self) -> bool {
        self.mode == PgSslMode::VerifyFull
    }

    /// Must the connection be encrypted (no plaintext fallback)?
    pub fn is_required(&self) -> bool {
        !matches!(self.mode, PgSslMode::Disable | PgSslMode::Prefer)
    }
}

/// A PostgreSQL URL split into what the driver reads and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL without `sslmode`, `sslrootcert`, `sslcert` and `sslkey`.
    pub url: String,
    pub tls: PgTls,
}

/// Splits the libpq TLS parameters out of a `postgres://` URL. The default mode is
/// libpq's, `prefer`; `sslrootcert=system` alone means `verify-full`, as in libpq.
pub fn parse_pg_url(url: &str) -> Result<PgUrl, TlsOptionError> {
    let (rest, params) = split_query(url, &["sslmode", "sslrootcert", "sslcert", "sslkey"])?;
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let root_certs = match get("sslrootcert") {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) if v == "system" => Some(RootCerts::System),
        Some(v) => Some(RootCerts::File(PathBuf::from(v))),
    };
    let mode = match get("sslmode").map(String::as_str) {
        None if root_certs == Some(RootCerts::System) => PgSslMode::VerifyFull,
        None => PgSslMode::Prefer,
        Some("disable") => PgSslMode::Disable,
        Some("prefer") => PgSslMode::Prefer,
        Some("require") => PgSslMode::Require,
        Some("verify-ca") => PgSslMode::VerifyCa,
        Some("verify-full") => PgSslMode::VerifyFull,
        Some(other) => {
            return Err(TlsOptionError(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    if matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull) && root_certs.is_none() {
        return Err(TlsOptionError(format!(
            "sslmode={} verifies the server's certificate and needs sslrootcert: the CA \
             file your provider gives you, or sslrootcert=system for the system's trusted roots",
            mode.as_str()
        )));
    }
    if root_certs == Some(RootCerts::System) && mode != PgSslMode::VerifyFull {
        return Err(TlsOptionError(format!(
            "sslrootcert=system trusts every public CA, so it needs sslmode=verify-full \
             (the host name check), not sslmode={}",
            mode.as_str()
        )));
    }
    let client_cert = client_cert(get("sslcert"), get("sslkey"), "sslcert", "sslkey")?;
    Ok(PgUrl {
        url: rest,
        tls: PgTls {
            mode,
            root_certs,
            client_cert,
        },
    })
}

/// MySQL's `ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MysqlSslMode {
    Disabled,
    /// TLS when the server offers it, no verification (MySQL's own default).
    Preferred,
    /// TLS or no connection, no verification.
    Required,
    /// TLS and a chain to a trusted CA.
    VerifyCa,
    /// TLS, a trusted chain and the host name.
    VerifyIdentity,
}

impl MysqlSslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MysqlSslMode::Disabled => "DISABLED",
            MysqlSslMode::Preferred => "PREFERRED",
            MysqlSslMode::Required => "REQUIRED",
            MysqlSslMode::VerifyCa => "VERIFY_CA",
            MysqlSslMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }
}

/// The TLS part of a MySQL/MariaDB URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    pub mode: MysqlSslMode,
    /// `ssl-ca`; without it a verifying mode trusts the public CAs bundled with
    /// hookrelay (Mozilla's set).
    pub ca: Option<PathBuf>,
    pub client_cert: Option<ClientCert>,
}

/// A MySQL URL split into what the driver reads and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlUrl {
    /// `mysql://…` without the `ssl-*` parameters (`mariadb://` becomes `mysql://`).
    pub url: String,
    pub tls: MysqlTls,
}

/// The driver's own TLS switches, refused so there is one way to say it.
const MYSQL_DRIVER_TLS_PARAMS: &[&str] = &[
    "require_ssl",
    "verify_ca",
    "verify_identity",
    "built_in_roots",
];

/// Splits MySQL's TLS URI parameters out of a `mysql://` or `mariadb://` URL. The
/// default mode is MySQL's, `PREFERRED`.
pub fn parse_mysql_url(url: &str) -> Result<MysqlUrl, TlsOptionError> {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    let mut wanted = vec!["ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"];
    wanted.extend_from_slice(MYSQL_DRIVER_TLS_PARAMS);
    let (rest, params) = split_query(&url, &wanted)?;
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    if let Some((k, _)) = params
        .iter()
        .find(|(k, _)| MYSQL_DRIVER_TLS_PARAMS.contains(&k.as_str()))
    {
        return Err(TlsOptionError(format!(
            "{k} is not read; say it with ssl-mode (DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY) and ssl-ca"
        )));
    }
    let mode = match get("ssl-mode").map(|m| m.to_ascii_uppercase()) {
        None => MysqlSslMode::Preferred,
        Some(m) => match m.as_str() {
            "DISABLED" => MysqlSslMode::Disabled,
            "PREFERRED" => MysqlSslMode::Preferred,
            "REQUIRED" => MysqlSslMode::Required,
            "VERIFY_CA" => MysqlSslMode::VerifyCa,
            "VERIFY_IDENTITY" => MysqlSslMode::VerifyIdentity,
            _ => {
                return Err(TlsOptionError(format!(
                    "ssl-mode {m:?} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                )))
            }
        },
    };
    let client_cert = client_cert(get("ssl-cert"), get("ssl-key"), "ssl-cert", "ssl-key")?;
    Ok(MysqlUrl {
        url: rest,
        tls: MysqlTls {
            mode,
            ca: get("ssl-ca").filter(|v| !v.is_empty()).map(PathBuf::from),
            client_cert,
        },
    })
}

/// Takes the `wanted` parameters (percent-decoded) out of the URL's query string and
/// returns the URL with the others, as written.
fn split_query(
    url: &str,
    wanted: &[&str],
) -> Result<(String, Vec<(String, String)>), TlsOptionError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k)?;
        if wanted.contains(&key.as_str()) {
            if taken.iter().any(|(t, _)| *t == key) {
                return Err(TlsOptionError(format!("{key} is given twice")));
            }
            taken.push((key, decode(v)?));
        } else {
            kept.push(pair);
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, taken))
}

fn decode(s: &str) -> Result<String, TlsOptionError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| TlsOptionError(format!("{s:?} is not valid UTF-8 once decoded")))
}

/// The client certificate and key given together, or neither; one alone is refused,
/// naming both URL parameters (`cert_param`, `key_param`).
fn client_cert(
    cert: Option<&String>,
    key: Option<&String>,
    cert_param: &str,
    key_param: &str,
) -> Result<Option<ClientCert>, TlsOptionError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(ClientCert {
            cert: cert.into(),
            key: key.into(),
        })),
        (Some(_), None) => Err(TlsOptionError(format!(
            "{cert_param} is given without {key_param} (the client certificate's private key)"
        ))),
        (None, Some(_)) => Err(TlsOptionError(format!(
            "{key_param} is given without {cert_param} (the client certificate)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls() {
        let cases: &[(&str, &str, PgSslMode, Option<RootCerts>)] = &[
            ("postgres://u@h/db", "postgres://u@h/db", PgSslMode::Prefer, None),
            (
                "postgres://u@h/db?sslmode=require",
                "postgres://u@h/db",
                PgSslMode::Require,
                None,
            ),
            (
                "postgres://u@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
                "postgres://u@h/db?application_name=x&connect_timeout=5",
                PgSslMode::VerifyFull,
                Some(RootCerts::File("/etc/ca.pem".into())),
            ),
            (
                "postgres://u@h/db?sslrootcert=system",
                "postgres://u@h/db",
                PgSslMode::VerifyFull,
                Some(RootCerts::System),
            ),
            (
                "postgres://u@h/db?sslmode=verify-ca&sslrootcert=ca.pem",
                "postgres://u@h/db",
                PgSslMode::VerifyCa,
                Some(RootCerts::File("ca.pem".into())),
            ),
            (
                "postgres://u@h/db?sslmode=disable",
                "postgres://u@h/db",
                PgSslMode::Disable,
                None,
            ),
        ];
        for (url, rest, mode, roots) in cases {
            let got = parse_pg_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(got.url, *rest, "{url}");
            assert_eq!(got.tls.mode, *mode, "{url}");
            assert_eq!(got.tls.root_certs, *roots, "{url}");
        }
        let cert = parse_pg_url("postgres://u@h/db?sslcert=c.pem&sslkey=k.pem&sslmode=require")
            .expect("client cert");
        assert_eq!(
            cert.tls.client_cert,
            Some(ClientCert {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
    }

    #[test]
    fn postgres_refusals_say_why() {
        let cases = [
            ("postgres://h/db?sslmode=verify", "not one of disable"),
            ("postgres://h/db?sslmode=verify-full", "needs sslrootcert"),
            ("postgres://h/db?sslmode=verify-ca", "needs sslrootcert"),
            (
                "postgres://h/db?sslmode=require&sslrootcert=system",
                "needs sslmode=verify-full",
            ),
            ("postgres://h/db?sslcert=c.pem", "without sslkey"),
            ("postgres://h/db?sslkey=k.pem", "without sslcert"),
            ("postgres://h/db?sslmode=require&sslmode=disable", "twice"),
        ];
        for (url, want) in cases {
            let err = parse_pg_url(url).expect_err(url).to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn which_modes_verify() {
        let tls = |mode, root_certs| PgTls {
            mode,
            root_certs,
            client_cert: None,
        };
        let file = Some(RootCerts::File("ca.pem".into()));
        // (mode, roots, chain, host, required)
        let cases = [
            (PgSslMode::Disable, None, false, false, false),
            (PgSslMode::Prefer, file.clone(), false, false, false),
            (PgSslMode::Require, None, false, false, true),
            (PgSslMode::Require, file.clone(), true, false, true),
            (PgSslMode::VerifyCa, file.clone(), true, false, true),
            (PgSslMode::VerifyFull, file, true, true, true),
        ];
        for (mode, roots, chain, host, required) in cases {
            let t = tls(mode, roots);
            assert_eq!(t.verifies_chain(), chain, "{mode:?}");
            assert_eq!(t.verifies_host(), host, "{mode:?}");
            assert_eq!(t.is_required(), required, "{mode:?}");
        }
    }

    #[test]
    fn mysql_urls() {
        let got = parse_mysql_url(
            "mariadb://u:p@h:3306/shop?ssl-mode=verify_identity&ssl-ca=%2Fca.pem&prefer_socket=false",
        )
        .expect("url");
        assert_eq!(got.url, "mysql://u:p@h:3306/shop?prefer_socket=false");
        assert_eq!(got.tls.mode, MysqlSslMode::VerifyIdentity);
        assert_eq!(got.tls.ca, Some("/ca.pem".into()));
        let plain = parse_mysql_url("mysql://u@h/db").expect("url");
        assert_eq!(plain.tls.mode, MysqlSslMode::Preferred);
        assert_eq!(plain.url, "mysql://u@h/db");
        for (url, want) in [
            ("mysql://h/db?ssl-mode=ON", "not one of DISABLED"),
            ("mysql://h/db?require_ssl=true", "say it with ssl-mode"),
            ("mysql://h/db?ssl-cert=c.pem", "without ssl-key"),
        ] {
            let err = parse_mysql_url(url).expect_err(url).to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }
}
