//! Every PostgreSQL connection hookrelay opens (store pools, the lock session,
//! migrations, Postgres sources, `demo`, `check`) is built here, from the URL.
//!
//! ```text
//!  url ──hookrelay_core::tls::parse_pg_url──▶ driver URL ──▶ tokio_postgres::Config
//!                                       │        (bounded waits on both ends, `liveness`)
//!                                       └──▶ PgTls ──▶ rustls ClientConfig (built once)
//!  PgConnector { config, tls } ──connect()──▶ (Client, Connection)   every connection
//! ```
//!
//! TLS is rustls (no OpenSSL) through `tokio-postgres-rustls`, which also gives SCRAM
//! its channel binding. What each libpq `sslmode` means is kept: `prefer` uses TLS
//! when the server offers it and does not verify; `require` insists on TLS and does
//! not verify (unless `sslrootcert` names a CA file, as in libpq); `verify-ca` checks
//! the chain; `verify-full` the chain and the host name. Under `require` and the
//! verifying modes a server without TLS is an error, never a plaintext session.
//!
//! The connector (its `ClientConfig`: roots, client certificate) is built once per
//! URL and shared by every connection made from it; the CA and key files are read
//! then, so a missing file is an error at start-up, not at the first connection.

use std::{path::Path, sync::Arc};

use hookrelay_core::tls::{parse_pg_url, ClientCert, PgSslMode, PgTls, RootCerts};
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::{config::SslMode, tls::MakeTlsConnect, Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A database URL whose connector cannot be built: the URL or its TLS files.
#[derive(Debug, thiserror::Error)]
pub enum ConnectSetupError {
    #[error("url: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("url: {0}")]
    TlsOption(#[from] hookrelay_core::tls::TlsOptionError),
    #[error("{0}")]
    TlsFiles(String),
}

/// The stream of a connection made by a [`PgConnector`].
pub type PgStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// A connection made by a [`PgConnector`], to be spawned (or polled) by the caller.
pub type PgConnection = tokio_postgres::Connection<Socket, PgStream>;

/// How to open connections to one PostgreSQL URL: the driver's config and one TLS
/// connector, shared by every connection. Cheap to clone.
#[derive(Clone)]
pub struct PgConnector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    settings: Arc<PgTls>,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("tls", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PgConnector {
    /// Parses `url` (libpq's TLS parameters included) and builds its TLS connector,
    /// reading the CA, certificate and key files it names.
    pub fn from_url(url: &str) -> Result<Self, ConnectSetupError> {
        let parsed = parse_pg_url(url)?;
        let mut config: tokio_postgres::Config =
            parsed.url.parse().map_err(ConnectSetupError::Url)?;
        config.ssl_mode(match parsed.tls.mode {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Prefer => SslMode::Prefer,
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => SslMode::Require,
        });
        let tls = MakeRustlsConnect::new(client_config(&parsed.tls)?);
        Ok(Self {
            // keepalives and timeouts on both ends (see `liveness`)
            config: crate::liveness::bounded(config),
            tls,
            settings: Arc::new(parsed.tls),
        })
    }

    /// The driver's settings (host, user, options…), for callers that add to them.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The same connector with changed driver settings (the TLS part is shared).
    pub fn with_config(&self, config: tokio_postgres::Config) -> Self {
        Self {
            config,
            tls: self.tls.clone(),
            settings: self.settings.clone(),
        }
    }

    /// The TLS connector, for pools that open connections themselves.
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// The URL's TLS settings.
    pub fn tls_settings(&self) -> &PgTls {
        &self.settings
    }

    /// Opens one connection; the caller drives the returned connection.
    pub async fn connect(&self) -> Result<(Client, PgConnection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }

    /// What a session opened by this connector is protected by: `pg_stat_ssl` of the
    /// server's own backend, with what the mode verified.
    pub async fn tls_report(&self, client: &Client) -> Result<String, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "select version, cipher from pg_stat_ssl where pid = pg_backend_pid() and ssl",
                &[],
            )
            .await?;
        let mode = self.settings.mode.as_str();
        Ok(match row {
            None => format!("not encrypted (sslmode={mode})"),
            Some(row) => {
                let version: Option<String> = row.try_get("version")?;
                let cipher: Option<String> = row.try_get("cipher")?;
                format!(
                    "{} {} (sslmode={mode}, {})",
                    version.unwrap_or_else(|| "TLS".into()),
                    cipher.unwrap_or_default(),
                    verified(&self.settings)
                )
            }
        })
    }
}

/// What the mode checked of the server's certificate, in words.
fn verified(tls: &PgTls) -> String {
    let roots = tls
        .root_certs
        .as_ref()
        .map(|r| r.to_string())
        .unwrap_or_default();
    match (tls.verifies_chain(), tls.verifies_host()) {
        (true, true) => format!("certificate and host name verified against {roots}"),
        (true, false) => format!("certificate verified against {roots}, host name not checked"),
        _ => "certificate not verified".into(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client settings that the URL's TLS parameters mean.
fn client_config(tls: &PgTls) -> Result<ClientConfig, ConnectSetupError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if tls.verifies_chain() {
        let roots = match &tls.root_certs {
            Some(r) => r,
            // parse_pg_url refuses a verifying mode without sslrootcert.
            None => {
                return Err(ConnectSetupError::TlsFiles(
                    "a verifying sslmode needs sslrootcert".into(),
                ))
            }
        };
        let store = load_roots(roots, "sslrootcert")?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| ConnectSetupError::TlsFiles(format!("sslrootcert {roots}: {e}")))?;
        Arc::new(Verifier {
            check: if tls.verifies_host() {
                Check::ChainAndHost
            } else {
                Check::Chain
            },
            webpki: Some(webpki),
            roots: roots.to_string(),
            provider: provider.clone(),
        })
    } else {
        Arc::new(Verifier {
            check: Check::Nothing,
            webpki: None,
            roots: String::new(),
            provider: provider.clone(),
        })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectSetupError::TlsFiles(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(cc) => {
            let (certs, key) = load_client_cert(cc, ("sslcert", "sslkey"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                ConnectSetupError::TlsFiles(format!(
                    "sslcert {} / sslkey {}: {e}",
                    cc.cert.display(),
                    cc.key.display()
                ))
            })
        }
    }
}

/// The CA certificates to trust; `key` names the URL parameter in messages.
pub fn load_roots(roots: &RootCerts, key: &str) -> Result<RootCertStore, ConnectSetupError> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            for cert in read_certs(path, key)? {
                store.add(cert).map_err(|e| {
                    ConnectSetupError::TlsFiles(format!(
                        "{key} {}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(ConnectSetupError::TlsFiles(format!(
                    "{key}=system: no trusted root certificates found on this system{why} \
                     (install ca-certificates, or name a CA file)"
                )));
            }
        }
    }
    Ok(store)
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, ConnectSetupError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConnectSetupError::TlsFiles(format!("{key} {}: cannot read: {e}", path.display()))
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConnectSetupError::TlsFiles(format!("{key} {}: not PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(ConnectSetupError::TlsFiles(format!(
            "{key} {}: holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A client certificate chain and its key; `keys` names the URL parameters.
pub fn load_client_cert(
    cc: &ClientCert,
    keys: (&str, &str),
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConnectSetupError> {
    let certs = read_certs(&cc.cert, keys.0)?;
    let key = PrivateKeyDer::from_pem_file(&cc.key).map_err(|e| {
        ConnectSetupError::TlsFiles(format!(
            "{} {}: no usable private key: {e}",
            keys.1,
            cc.key.display()
        ))
    })?;
    Ok((certs, key))
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Nothing,
    Chain,
    ChainAndHost,
}

/// Checks what the sslmode asks for, and words a refusal for a person.
#[derive(Debug)]
struct Verifier {
    check: Check,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The CA file (or "the system's trusted roots"), for messages.
    roots: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let webpki = match (&self.check, &self.webpki) {
            (Check::Nothing, _) | (_, None) => return Ok(ServerCertVerified::assertion()),
            (_, Some(w)) => w,
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(v) => Ok(v),
            // The chain is checked before the name, so a name error means the chain
            // is good: all that verify-ca asks.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if matches!(self.check, Check::Chain) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(refusal(explain_certificate_error(
                &e,
                &server_name.to_str(),
                &self.roots,
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate refused, worded for a person (what rustls passes on unchanged).
#[derive(Debug)]
struct CertificateRefused(String);

impl std::fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertificateRefused {}

fn refusal(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        CertificateRefused(message),
    ))))
}

/// Why a server certificate was refused, naming the host, the CA it was checked
/// against and what failed (used for PostgreSQL and MySQL alike).
pub fn explain_certificate_error(e: &rustls::Error, host: &str, roots: &str) -> String {
    let cert = match e {
        rustls::Error::InvalidCertificate(c) => c,
        other => return format!("TLS handshake with {host} failed: {other}"),
    };
    let when = |t: &UnixTime| {
        chrono::DateTime::from_timestamp(t.as_secs() as i64, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| t.as_secs().to_string())
    };
    match cert {
        CertificateError::UnknownIssuer => format!(
            "the certificate of {host} is not signed by a CA in {roots} \
             (the CA file does not belong to this server, or the server presents another chain)"
        ),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the certificate of {host} expired at {} (checked at {}; CA {roots})",
            when(not_after),
            when(time)
        ),
        CertificateError::Expired => format!("the certificate of {host} has expired (CA {roots})"),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the certificate of {host} is not valid before {} (checked at {}; is the clock right?)",
            when(not_before),
            when(time)
        ),
        CertificateError::NotValidYet => {
            format!("the certificate of {host} is not valid yet (is the clock right?)")
        }
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "host name mismatch: the certificate of {host} is issued for {}, not {host} \
             (connect by a name the certificate lists, or use a mode that skips the host \
             name check: sslmode=verify-ca, ssl-mode=VERIFY_CA)",
            if presented.is_empty() {
                "no names".to_owned()
            } else {
                presented
                    .iter()
                    .map(|n| presented_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        CertificateError::NotValidForName => format!(
            "host name mismatch: the certificate of {host} does not name {host} \
             (sslmode=verify-ca, ssl-mode=VERIFY_CA skip this check)"
        ),
        CertificateError::BadSignature => format!(
            "the certificate of {host} has a signature that does not verify against {roots}"
        ),
        CertificateError::Other(other) => other.to_string(),
        other => format!("the certificate of {host} was refused ({other}; CA {roots})"),
    }
}

/// A name as rustls reports it among a certificate's names (`DnsName("db.example")`,
/// `IpAddress(10.0.0.1)`), without the wrapping.
pub fn presented_name(name: &str) -> String {
    for wrap in ["DnsName(", "IpAddress("] {
        if let Some(inner) = name.strip_prefix(wrap).and_then(|n| n.strip_suffix(')')) {
            return inner.trim_matches('"').to_owned();
        }
    }
    name.to_owned()
}

/// The cause of a failed TLS handshake when `e` (or its cause) is one, as a person
/// needs it: rustls's own text for a refusal of ours is the variant's debug form.
pub fn describe_tls(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    Some(match rustls_error_at(e)? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("certificate refused: {other}")
        }
        other => other.to_string(),
    })
}

/// Did the connection fail because TLS was refused (a certificate that does not
/// verify, a server without TLS under a mode that needs it)? Retrying cannot help.
pub fn is_tls_refusal(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if describe_tls(c).is_some() || c.to_string() == "server does not support TLS" {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The rustls error `e` is, or wraps as an I/O error (how TLS streams report one).
fn rustls_error_at<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })
}

/// The rustls error somewhere in `e`'s chain of causes, if any.
pub fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(r) = rustls_error_at(c) {
            return Some(r);
        }
        cause = c.source();
    }
    None
}

/// Reads a PEM file of certificates, refusing one that holds none; `key` names the
/// URL parameter in messages.
pub fn read_pem_certs(
    path: &Path,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, ConnectSetupError> {
    read_certs(path, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_host_ca_and_what_failed() {
        let at = |s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        let cases: Vec<(rustls::Error, &str)> = vec![
            (
                CertificateError::UnknownIssuer.into(),
                "the certificate of db.example is not signed by a CA in /ca.pem",
            ),
            (
                CertificateError::ExpiredContext {
                    time: at(1_600_000_000),
                    not_after: at(1_577_923_200),
                }
                .into(),
                "the certificate of db.example expired at 2020-01-02T00:00:00Z (checked at 2020-09-13T12:26:40Z",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("db.example").expect("name"),
                    presented: vec!["DnsName(\"other.example\")".into(), "IpAddress(10.0.0.1)".into()],
                }
                .into(),
                "host name mismatch: the certificate of db.example is issued for other.example, 10.0.0.1, not db.example",
            ),
            (
                refusal("already worded".into()),
                "already worded",
            ),
        ];
        for (err, want) in cases {
            let got = explain_certificate_error(&err, "db.example", "/ca.pem");
            assert!(got.starts_with(want), "{got}");
        }
    }
}
