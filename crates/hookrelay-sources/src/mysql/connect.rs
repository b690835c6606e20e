//! Every connection of a MySQL/MariaDB source (metadata, binlog stream, `check`) is
//! made here, with the TLS that the URL's `ssl-mode` asks for.
//!
//! ```text
//!  url ──parse_mysql_url──▶ driver URL + MysqlTls ──▶ mysql_async Opts with SslOpts
//!  (built once; the driver builds its rustls connector once per Opts and shares it)
//! ```
//!
//! Modes as MySQL's clients define them: `PREFERRED` (the default) uses TLS when the
//! server offers it and does not verify; `REQUIRED` insists on TLS without
//! verifying; `VERIFY_CA` checks the chain; `VERIFY_IDENTITY` the chain and the host
//! name. The CA, certificate and key files are read once, when the source is built.
//!
//! `VERIFY_CA` and the driver: `mysql_async` skips the host-name check by matching
//! the text of rustls's error, which newer rustls words differently, so a certificate
//! for another name is refused even under `VERIFY_CA`. The chain is verified before
//! the name, so such a refusal means the chain was good; hookrelay then connects
//! again naming the host as the certificate does (the chain is verified again on
//! that connection), and keeps that name for later connections.

use std::{sync::Mutex, time::Duration};

use hookrelay_core::tls::{parse_mysql_url, MysqlSslMode, MysqlTls, RootCerts};
use hookrelay_store::connect::{
    explain_certificate_error, find_rustls_error, load_client_cert, presented_name, read_pem_certs,
};
use mysql_async::{
    prelude::Queryable, ClientIdentity, Conn, DriverError, Opts, OptsBuilder, SslOpts,
};
use rustls::CertificateError;

use crate::SourceError;

/// How to open connections to one MySQL/MariaDB URL. One per source.
pub struct MysqlConnector {
    /// With the TLS settings (the driver's connector is cached inside and shared by
    /// every clone); under `VERIFY_CA` the host name may be replaced once (above).
    opts: Mutex<Opts>,
    /// For `PREFERRED` against a server without TLS.
    plain: Opts,
    tls: MysqlTls,
    host: String,
}

impl std::fmt::Debug for MysqlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConnector")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Keepalive probes after this much silence on a connection, so a server that
/// vanished (a host crash, a partition) fails a query instead of hanging it; the binlog
/// stream has its own, tighter silence limit (`binlog::HEARTBEAT`).
const KEEPALIVE: Duration = Duration::from_secs(5);
/// How long a new connection may take, handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl MysqlConnector {
    /// Parses `url` (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key` included) and reads
    /// the files it names.
    pub fn from_url(url: &str) -> Result<Self, SourceError> {
        let parsed = parse_mysql_url(url).map_err(|e| SourceError::Setup(format!("url: {e}")))?;
        let plain: Opts = OptsBuilder::from_opts(
            Opts::from_url(&parsed.url).map_err(|e| SourceError::Setup(format!("url: {e}")))?,
        )
        .tcp_keepalive(Some(KEEPALIVE))
        .into();
        let host = plain.ip_or_hostname().to_owned();
        let tls = parsed.tls;
        let opts = match ssl_opts(&tls)? {
            None => plain.clone(),
            // The driver would otherwise move a connection to the server's Unix socket
            // (`@@socket`) when that path exists here, leaving TLS behind.
            Some(ssl) => OptsBuilder::from_opts(plain.clone())
                .prefer_socket(false)
                .ssl_opts(ssl)
                .into(),
        };
        Ok(Self {
            opts: Mutex::new(opts),
            plain,
            tls,
            host,
        })
    }

    fn opts(&self) -> Opts {
        match self.opts.lock() {
            Ok(o) => o.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Opens one connection, encrypted as the mode asks, within `CONNECT_TIMEOUT`.
    pub async fn connect(&self) -> Result<Conn, SourceError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_unbounded()).await {
            Ok(conn) => conn,
            Err(_) => Err(SourceError::Database {
                message: format!("no connection to {} within {CONNECT_TIMEOUT:?}", self.host),
                transient: true,
            }),
        }
    }

    async fn connect_unbounded(&self) -> Result<Conn, SourceError> {
        let opts = self.opts();
        match Conn::new(opts.clone()).await {
            Ok(c) => Ok(c),
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
                if self.tls.mode == MysqlSslMode::Preferred =>
            {
                Ok(Conn::new(self.plain.clone()).await?)
            }
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) => {
                Err(SourceError::Setup(format!(
                    "ssl-mode={}: the server at {} does not offer TLS",
                    self.tls.mode.as_str(),
                    self.host
                )))
            }
            Err(e) => {
                if let Some(name) = self.name_to_retry_with(&e) {
                    let retry: Opts = match opts.ssl_opts() {
                        Some(ssl) => OptsBuilder::from_opts(opts.clone())
                            .ssl_opts(
                                ssl.clone()
                                    .with_danger_tls_hostname_override(Some(name.clone())),
                            )
                            .into(),
                        None => return Err(self.refusal(e)),
                    };
                    let conn = Conn::new(retry.clone())
                        .await
                        .map_err(|e| self.refusal(e))?;
                    if let Ok(mut o) = self.opts.lock() {
                        *o = retry;
                    }
                    return Ok(conn);
                }
                Err(self.refusal(e))
            }
        }
    }

    /// Under `VERIFY_CA`, a host-name refusal (the chain was good): a name the
    /// certificate lists, to connect again with.
    fn name_to_retry_with(&self, e: &mysql_async::Error) -> Option<String> {
        if self.tls.mode != MysqlSslMode::VerifyCa {
            return None;
        }
        match find_rustls_error(e)? {
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            }) => presented.first().map(|n| {
                let n = presented_name(n);
                match n.strip_prefix("*.") {
                    Some(rest) => format!("hookrelay.{rest}"),
                    None => n,
                }
            }),
            _ => None,
        }
    }

    /// A refused certificate says which host, which CA and what failed; anything
    /// else is the driver's error as it is.
    /// The user the URL names, for fix lines.
    pub fn user(&self) -> Option<&str> {
        self.plain.user()
    }

    fn refusal(&self, e: mysql_async::Error) -> SourceError {
        match find_rustls_error(&e) {
            Some(r) => SourceError::Setup(format!(
                "TLS to {} (ssl-mode={}): {}",
                self.host,
                self.tls.mode.as_str(),
                explain_certificate_error(r, &self.host, &self.roots())
            )),
            None => e.into(),
        }
    }

    fn roots(&self) -> String {
        match &self.tls.ca {
            Some(p) => p.display().to_string(),
            None => "the public CAs bundled with hookrelay (no ssl-ca given)".into(),
        }
    }

    /// What protects a connection: the session's TLS version and cipher as the
    /// server reports them, and what the mode verified.
    pub async fn tls_report(&self, conn: &mut Conn) -> Result<String, SourceError> {
        let rows: Vec<(String, String)> = conn
            .query("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
            .await?;
        let get = |k: &str| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let mode = self.tls.mode.as_str();
        Ok(match get("Ssl_version") {
            None => format!("not encrypted (ssl-mode={mode})"),
            Some(version) => {
                let verified = match self.tls.mode {
                    MysqlSslMode::VerifyIdentity => {
                        format!(
                            "certificate and host name verified against {}",
                            self.roots()
                        )
                    }
                    MysqlSslMode::VerifyCa => format!(
                        "certificate verified against {}, host name not checked",
                        self.roots()
                    ),
                    _ => "certificate not verified".into(),
                };
                format!(
                    "{version} {} (ssl-mode={mode}, {verified})",
                    get("Ssl_cipher").unwrap_or_default()
                )
            }
        })
    }
}

/// The driver's TLS settings for the mode; the files are read (and checked) now.
fn ssl_opts(tls: &MysqlTls) -> Result<Option<SslOpts>, SourceError> {
    let setup = |e: hookrelay_store::ConnectSetupError| SourceError::Setup(e.to_string());
    if tls.mode == MysqlSslMode::Disabled {
        return Ok(None);
    }
    let mut ssl = SslOpts::default();
    if let Some(ca) = &tls.ca {
        // Read and checked here; the driver gets the DER of each certificate.
        let certs = read_pem_certs(ca, "ssl-ca").map_err(setup)?;
        let _ = hookrelay_store::connect::load_roots(&RootCerts::File(ca.clone()), "ssl-ca")
            .map_err(setup)?;
        ssl = ssl
            .with_root_certs(certs.into_iter().map(|c| c.to_vec().into()).collect())
            .with_disable_built_in_roots(true);
    }
    if let Some(cc) = &tls.client_cert {
        load_client_cert(cc, ("ssl-cert", "ssl-key")).map_err(setup)?;
        let read = |p: &std::path::Path, key: &str| {
            std::fs::read(p)
                .map_err(|e| SourceError::Setup(format!("{key} {}: cannot read: {e}", p.display())))
        };
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            read(&cc.cert, "ssl-cert")?.into(),
            read(&cc.key, "ssl-key")?.into(),
        )));
    }
    Ok(Some(match tls.mode {
        MysqlSslMode::Preferred | MysqlSslMode::Required => {
            ssl.with_danger_accept_invalid_certs(true)
        }
        MysqlSslMode::VerifyCa => ssl.with_danger_skip_domain_validation(true),
        MysqlSslMode::VerifyIdentity | MysqlSslMode::Disabled => ssl,
    }))
}
