//! TLS for both Postgres connections: the walsender (`replication::connection`) and the
//! ordinary tokio-postgres one (`service::connect_sql`), with one rustls configuration.
//!
//! `sslmode` follows libpq:
//!
//! | sslmode       | TLS                                  | certificate                            |
//! |---------------|--------------------------------------|----------------------------------------|
//! | `disable`     | never                                | –                                      |
//! | `prefer`      | if the server accepts it, else plain | not verified                           |
//! | `require`     | always                               | not verified (chain verified when `sslrootcert` is given, as libpq does) |
//! | `verify-ca`   | always                               | chain verified against the roots       |
//! | `verify-full` | always                               | chain and host name verified           |
//!
//! The roots are `sslrootcert=/path/to/ca.pem` (PEM, one or more certificates) or, without it
//! or with `sslrootcert=system`, the system's certificate store. Unix-socket connections never
//! use TLS (Postgres does not offer it there; libpq skips it too).
//!
//! tokio-postgres knows neither `verify-ca`/`verify-full` nor `sslrootcert`, so
//! [`split_url`] takes both out of the database URL before tokio-postgres parses it.
//! The crypto provider is rustls' `ring`, passed explicitly: nothing depends on a
//! process-wide default provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The values `sslmode` accepts, for error messages.
    pub const ALLOWED: &'static str = "disable, prefer, require, verify-ca or verify-full";

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a server without TLS must be refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// The nearest mode tokio-postgres knows; verification is our connector's job.
    pub fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file (`sslrootcert=/path/to/ca.pem`).
    File(PathBuf),
    /// The system's certificate store (`sslrootcert=system`, or no `sslrootcert`).
    System,
}

/// The TLS part of the database URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`, when given.
    pub root_cert: Option<RootCerts>,
}

impl TlsSettings {
    /// Whether the server's certificate chain is verified: `verify-ca`, `verify-full`, and
    /// `require` with an explicit `sslrootcert` (libpq's rule).
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// Whether the certificate must also name the host connected to.
    pub fn verifies_host(&self) -> bool {
        self.mode == SslMode::VerifyFull
    }

    /// The rustls client configuration for this mode. Reads `sslrootcert` (or the system
    /// store) when the chain is verified.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let chain = if self.verifies_chain() {
            let roots = Arc::new(self.load_roots()?);
            Some(
                WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::Setup(e.to_string()))?,
            )
        } else {
            None
        };
        let verifier = Arc::new(ServerVerifier {
            provider,
            chain,
            check_name: self.verifies_host(),
        });
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // The ALPN name Postgres 17+ registers; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(config)
    }

    fn load_roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(RootCerts::File(path)) => {
                let certs = read_pem_certificates(path)?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::RootCert {
                        path: path.clone(),
                        reason: "holds no usable CA certificate".into(),
                    });
                }
            }
            Some(RootCerts::System) | None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsError::NoRoots { mode: self.mode });
                }
            }
        }
        Ok(roots)
    }
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::RootCert {
        path: path.to_owned(),
        reason,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| error(e.to_string()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Why a TLS connection could not be made. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "postgres at {addr} does not accept TLS connections, and sslmode={mode} requires TLS: turn TLS on in the server (ssl = on, with ssl_cert_file and ssl_key_file), or connect with sslmode=prefer or sslmode=disable"
    )]
    NotSupported { addr: String, mode: SslMode },
    #[error(
        "TLS certificate verification of postgres at {addr} failed (sslmode={mode}): {reason}; {fix}"
    )]
    Certificate {
        addr: String,
        mode: SslMode,
        reason: String,
        fix: String,
    },
    #[error("TLS handshake with postgres at {addr} failed (sslmode={mode}): {reason}")]
    Handshake {
        addr: String,
        mode: SslMode,
        reason: String,
    },
    #[error("sslrootcert {}: {reason}", path.display())]
    RootCert { path: PathBuf, reason: String },
    #[error(
        "sslmode={mode} verifies the server certificate, but the system certificate store has no usable certificate: give the server's CA with sslrootcert=/path/to/ca.pem in the database URL"
    )]
    NoRoots { mode: SslMode },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS configuration: {0}")]
    Setup(String),
}

impl TlsError {
    /// Explains a failed handshake (`error` as tokio-rustls reports it) for `host`.
    pub fn from_handshake(
        error: &std::io::Error,
        addr: &str,
        host: &str,
        settings: &TlsSettings,
    ) -> TlsError {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(e) => Self::from_rustls(e, addr, host, settings),
            None => TlsError::Handshake {
                addr: addr.to_owned(),
                mode: settings.mode,
                reason: error.to_string(),
            },
        }
    }

    fn from_rustls(error: &rustls::Error, addr: &str, host: &str, settings: &TlsSettings) -> Self {
        let rustls::Error::InvalidCertificate(cert) = error else {
            return TlsError::Handshake {
                addr: addr.to_owned(),
                mode: settings.mode,
                reason: error.to_string(),
            };
        };
        let roots = match &settings.root_cert {
            Some(RootCerts::File(path)) => format!("the CA in {}", path.display()),
            _ => "the system's certificate store".into(),
        };
        let (reason, fix) = match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                format!("the certificate is not issued for host {host:?}"),
                "connect with a host name the certificate names, or use sslmode=verify-ca to verify the chain but not the name".to_owned(),
            ),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => (
                format!("the server certificate is not valid now ({error})"),
                "renew the server's certificate (or check this machine's clock)".to_owned(),
            ),
            _ => (
                format!("the server certificate is not signed by {roots} ({error})"),
                "give the CA that signed the server's certificate with sslrootcert=/path/to/ca.pem in the database URL, or use sslmode=require to encrypt without verifying the certificate".to_owned(),
            ),
        };
        TlsError::Certificate {
            addr: addr.to_owned(),
            mode: settings.mode,
            reason,
            fix,
        }
    }

    /// Recognises a TLS failure inside a tokio-postgres connection error.
    pub fn from_tokio_postgres(
        error: &tokio_postgres::Error,
        addr: &str,
        host: &str,
        settings: &TlsSettings,
    ) -> Option<TlsError> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = next {
            // tokio-postgres' own words when the server answers 'N' to an SSLRequest.
            if settings.mode.requires_tls() && e.to_string() == "server does not support TLS" {
                return Some(TlsError::NotSupported {
                    addr: addr.to_owned(),
                    mode: settings.mode,
                });
            }
            if let Some(rustls) = e.downcast_ref::<rustls::Error>() {
                return Some(Self::from_rustls(rustls, addr, host, settings));
            }
            // io::Error::source() skips the error it wraps: look inside explicitly.
            if let Some(rustls) = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(Self::from_rustls(rustls, addr, host, settings));
            }
            next = e.source();
        }
        None
    }
}

/// The server name for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// The certificate check of every mode. Without `chain` (`prefer`, `require`) any
/// certificate is accepted, as libpq does; the handshake signatures are still checked, so the
/// peer holds the certificate's key. With `chain` the certificate must lead to a trusted
/// root, and with `check_name` (`verify-full`) also name the host. webpki checks the chain
/// before the name, so for `verify-ca` a name mismatch means the chain was good.
#[derive(Debug)]
struct ServerVerifier {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A problem with the TLS parameters of a database URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlTlsError {
    #[error("sslmode={0:?} is not one of {allowed}", allowed = SslMode::ALLOWED)]
    BadMode(String),
    #[error("sslrootcert is empty")]
    EmptyRootCert,
}

/// A database URL split into what tokio-postgres parses and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitUrl {
    /// The URL without `sslmode` and `sslrootcert`.
    pub rest: String,
    pub tls: TlsSettings,
    /// Whether the URL named an `sslmode` (else it is `prefer`, libpq's default).
    pub names_sslmode: bool,
}

/// Takes `sslmode` and `sslrootcert` out of a database URL (`postgres://…?sslmode=…` or the
/// `key=value` form).
pub fn split_url(url: &str) -> Result<SplitUrl, UrlTlsError> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, UrlTlsError> {
        match key {
            "sslmode" => {
                mode = Some(
                    SslMode::parse(value).ok_or_else(|| UrlTlsError::BadMode(value.to_owned()))?,
                );
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(match value {
                    "" => return Err(UrlTlsError::EmptyRootCert),
                    "system" => RootCerts::System,
                    path => RootCerts::File(PathBuf::from(path)),
                });
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(&percent_decode(key), &percent_decode(value))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            if !take(key.trim(), value.trim_matches('\''))? {
                kept.push(token);
            }
        }
        kept.join(" ")
    };
    Ok(SplitUrl {
        rest,
        names_sslmode: mode.is_some(),
        tls: TlsSettings {
            mode: mode.unwrap_or_default(),
            root_cert,
        },
    })
}

/// `%XX` decoding of a URL query component (libpq does not treat `+` as a space).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_url_takes_out_the_tls_parameters_and_keeps_the_rest() {
        let SplitUrl {
            rest,
            tls,
            names_sslmode,
        } = split_url(
            "postgres://u:p@db:5432/strapi?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/strapi?application_name=x");
        assert!(names_sslmode);
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCerts::File(PathBuf::from("/etc/ca.pem")))
        );

        let plain = split_url("postgres://u@db/strapi").unwrap();
        assert_eq!(plain.rest, "postgres://u@db/strapi");
        assert!(!plain.names_sslmode);
        assert_eq!(plain.tls, TlsSettings::default());
        assert_eq!(plain.tls.mode, SslMode::Prefer);

        let kv = split_url("host=db user=u sslmode=verify-ca sslrootcert=system dbname=s").unwrap();
        assert_eq!(kv.rest, "host=db user=u dbname=s");
        assert_eq!(kv.tls.mode, SslMode::VerifyCa);
        assert_eq!(kv.tls.root_cert, Some(RootCerts::System));

        assert_eq!(
            split_url("postgres://u@db/s?sslmode=sometimes"),
            Err(UrlTlsError::BadMode("sometimes".into()))
        );
        let message = split_url("postgres://u@db/s?sslmode=verify_full")
            .unwrap_err()
            .to_string();
        assert!(message.contains("verify-full"), "{message}");
    }

    #[test]
    fn which_modes_verify_what() {
        let settings = |mode, root_cert| TlsSettings { mode, root_cert };
        assert!(!settings(SslMode::Prefer, None).verifies_chain());
        assert!(!settings(SslMode::Require, None).verifies_chain());
        // libpq: require with a root certificate behaves like verify-ca.
        let with_ca = Some(RootCerts::File("ca.pem".into()));
        assert!(settings(SslMode::Require, with_ca.clone()).verifies_chain());
        assert!(!settings(SslMode::Require, with_ca).verifies_host());
        assert!(settings(SslMode::VerifyCa, None).verifies_chain());
        assert!(!settings(SslMode::VerifyCa, None).verifies_host());
        assert!(settings(SslMode::VerifyFull, None).verifies_host());
        assert!(!SslMode::Prefer.requires_tls());
        assert!(SslMode::Require.requires_tls());
    }

    #[test]
    fn client_configs_build_for_every_mode() {
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
            TlsSettings {
                mode,
                root_cert: None,
            }
            .client_config()
            .unwrap();
        }
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCerts::File("/nonexistent/ca.pem".into())),
        }
        .client_config()
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("sslrootcert /nonexistent/ca.pem"),
            "{missing}"
        );
    }

    #[test]
    fn certificate_errors_say_how_to_fix_them() {
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCerts::File("/etc/ca.pem".into())),
        };
        let unknown = TlsError::from_rustls(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "db:5432",
            "db",
            &settings,
        )
        .to_string();
        assert!(unknown.contains("sslmode=verify-full"), "{unknown}");
        assert!(unknown.contains("/etc/ca.pem"), "{unknown}");
        assert!(unknown.contains("sslrootcert="), "{unknown}");
        assert!(unknown.contains("sslmode=require"), "{unknown}");
        let name = TlsError::from_rustls(
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            "db:5432",
            "db",
            &settings,
        )
        .to_string();
        assert!(name.contains("not issued for host \"db\""), "{name}");
        assert!(name.contains("sslmode=verify-ca"), "{name}");
    }
}
