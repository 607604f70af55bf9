//! A walsender connection: startup with `replication=database`, authentication, simple
//! queries, and the CopyBoth framing of `START_REPLICATION`.
//!
//! Built on `postgres-protocol`'s message encoders and SCRAM implementation; the byte stream
//! is ours. `postgres-protocol` does not know `CopyBothResponse` ('W') and copies every
//! CopyData body, so both are framed here by hand (see rust-stack-notes pitfall 1).
//!
//! TLS: over TCP, unless `sslmode=disable`, an SSLRequest goes first; on 'S' the socket is
//! wrapped in rustls (configured by [`crate::tls`]), on 'N' `prefer` goes on in plain text
//! and the stricter modes stop. Everything after that works on any [`Stream`] (TCP, TLS,
//! Unix socket).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::{SslMode, TlsError, TlsSettings};

/// Startup options pinned for every walsender session: value text must not depend on the
/// server's defaults (pitfall 6).
const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=1";

/// How long connecting and authenticating may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect, taken from the database URL.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: HostAddr,
    pub port: u16,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    pub application_name: String,
    /// Extra `-c name=value` settings for this session.
    pub extra_options: Vec<(String, String)>,
    /// `sslmode` and `sslrootcert` (TCP only: Unix sockets never use TLS).
    pub tls: TlsSettings,
}

#[derive(Clone, Debug)]
pub enum HostAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("sslmode", &self.tls.mode)
            .finish_non_exhaustive()
    }
}

impl ConnectParams {
    /// Reads host, port, user, password and database from a parsed database URL. The TLS
    /// mode is the one tokio-postgres knows (disable, prefer, require); [`Self::with_tls`]
    /// sets the full settings (`crate::config::Config::tls`).
    pub fn from_config(config: &tokio_postgres::Config) -> Self {
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => HostAddr::Tcp(h.clone()),
            Some(tokio_postgres::config::Host::Unix(p)) => HostAddr::Unix(p.clone()),
            None => HostAddr::Tcp("127.0.0.1".into()),
        };
        let user = config.get_user().unwrap_or("postgres").to_owned();
        ConnectParams {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            dbname: config.get_dbname().unwrap_or(&user).to_owned(),
            user,
            password: config.get_password().map(<[u8]>::to_vec),
            application_name: "walcast".into(),
            extra_options: Vec::new(),
            tls: TlsSettings {
                mode: match config.get_ssl_mode() {
                    tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                    tokio_postgres::config::SslMode::Require => SslMode::Require,
                    _ => SslMode::Prefer,
                },
                root_cert: None,
            },
        }
    }

    /// The same parameters with these TLS settings.
    pub fn with_tls(mut self, tls: TlsSettings) -> Self {
        self.tls = tls;
        self
    }

    fn describe(&self) -> String {
        match &self.host {
            HostAddr::Tcp(h) => format!("{h}:{}", self.port),
            HostAddr::Unix(p) => format!("{}/.s.PGSQL.{}", p.display(), self.port),
        }
    }
}

/// Why a connection or a command on it failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach postgres at {addr}")]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connection to postgres lost")]
    Lost(#[source] io::Error),
    #[error("postgres closed the connection")]
    Closed,
    #[error("timed out connecting to postgres at {0}")]
    Timeout(String),
    #[error("postgres error {code}: {message}{}", advice_suffix(.advice))]
    Server {
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
        /// What to do about it, when walcast knows (see [`server_advice`]).
        advice: Option<String>,
    },
    #[error("postgres asked for a password but none is configured (add it to database.url)")]
    PasswordRequired,
    #[error("unsupported authentication method requested by postgres: {0}")]
    UnsupportedAuth(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

fn advice_suffix(advice: &Option<String>) -> String {
    advice
        .as_deref()
        .map(|a| format!("; {a}"))
        .unwrap_or_default()
}

/// What an operator should do about a server error met while connecting as `user`, for
/// the errors walcast can explain. Shared by the walsender and the SQL connection.
pub fn server_advice(code: &str, message: &str, user: &str) -> Option<String> {
    let role = if crate::config::is_identifier(user) {
        user.to_owned()
    } else {
        format!("\"{}\"", user.replace('"', "\"\""))
    };
    match code {
        "28P01" => Some(format!(
            "the password for user {user:?} is wrong: fix it in database.url (or DATABASE_PASSWORD)"
        )),
        "42501" if message.contains("replication") || message.contains("WAL sender") => {
            Some(format!(
                "the role needs the REPLICATION attribute: run `ALTER ROLE {role} WITH REPLICATION;` as a superuser"
            ))
        }
        "28000" if message.contains("no encryption") => Some(format!(
            "the connection was not encrypted: if pg_hba.conf admits user {user:?} only on hostssl lines, connect with sslmode=require (or verify-full); otherwise add a host line for it to pg_hba.conf"
        )),
        "28000" if message.contains("no pg_hba.conf entry") => Some(format!(
            "add a line for user {user:?} to the server's pg_hba.conf (walcast's replication connections match its database lines) and reload postgres"
        )),
        _ => None,
    }
}

impl ConnectError {
    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ConnectError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether retrying later may succeed (network trouble, server restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Io { .. }
            | ConnectError::Lost(_)
            | ConnectError::Closed
            | ConnectError::Timeout(_) => true,
            // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now,
            // 55006 slot active for another PID (a previous walsender not yet gone),
            // 53300 too many connections.
            ConnectError::Server { code, .. } => {
                matches!(
                    code.as_str(),
                    "57P01" | "57P02" | "57P03" | "55006" | "53300"
                )
            }
            _ => false,
        }
    }

    /// Adds [`server_advice`] to a server error.
    fn with_advice(mut self, user: &str) -> Self {
        if let ConnectError::Server {
            code,
            message,
            advice: advice @ None,
            ..
        } = &mut self
        {
            *advice = server_advice(code, message, user);
        }
        self
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One frame from the server while streaming.
#[derive(Debug)]
pub enum CopyFrame {
    /// A CopyData body: XLogData ('w') or primary keepalive ('k').
    Data(Bytes),
    /// The server ended the copy.
    Done,
}

/// Rows of a simple query, as text.
pub type TextRows = Vec<Vec<Option<String>>>;

/// An authenticated walsender connection.
pub struct WalSenderConnection {
    stream: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    tls: bool,
}

impl WalSenderConnection {
    /// Connects, sends the startup message with `replication=database` and authenticates.
    pub async fn connect(params: &ConnectParams) -> Result<Self, ConnectError> {
        let addr = params.describe();
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(params, &addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr.clone()))?
            .map_err(|e| e.with_advice(&params.user))
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    async fn connect_inner(params: &ConnectParams, addr: &str) -> Result<Self, ConnectError> {
        let io_err = |source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        };
        let (stream, tls): (Box<dyn Stream>, bool) = match &params.host {
            HostAddr::Tcp(host) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), params.port))
                    .await
                    .map_err(io_err)?;
                tcp.set_nodelay(true).map_err(io_err)?;
                if params.tls.mode == SslMode::Disable {
                    (Box::new(tcp), false)
                } else {
                    start_tls(tcp, host, &params.tls, addr).await?
                }
            }
            // Postgres offers no TLS on Unix sockets (and libpq does not ask there).
            HostAddr::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", params.port));
                let unix = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(io_err)?;
                (Box::new(unix), false)
            }
        };
        let mut conn = WalSenderConnection {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::with_capacity(1024),
            tls,
        };
        let mut options = SESSION_OPTIONS.to_owned();
        for (name, value) in &params.extra_options {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("replication", "database"),
            ("application_name", params.application_name.as_str()),
            ("options", options.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(startup.iter().copied(), &mut conn.write)
            .map_err(ConnectError::Lost)?;
        conn.flush().await?;
        conn.authenticate(params).await?;
        // Drain ParameterStatus / BackendKeyData until ReadyForQuery.
        loop {
            match conn.next_message().await? {
                backend::Message::ReadyForQuery(_) => break,
                backend::Message::ErrorResponse(body) => return Err(server_error(body)),
                _ => {}
            }
        }
        Ok(conn)
    }

    async fn authenticate(&mut self, params: &ConnectParams) -> Result<(), ConnectError> {
        loop {
            match self.next_message().await? {
                backend::Message::AuthenticationOk => return Ok(()),
                backend::Message::AuthenticationCleartextPassword => {
                    let password = params
                        .password
                        .as_deref()
                        .ok_or(ConnectError::PasswordRequired)?;
                    frontend::password_message(password, &mut self.write)
                        .map_err(ConnectError::Lost)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let password = params
                        .password
                        .as_deref()
                        .ok_or(ConnectError::PasswordRequired)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        params.user.as_bytes(),
                        password,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)
                        .map_err(ConnectError::Lost)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let password = params
                        .password
                        .as_deref()
                        .ok_or(ConnectError::PasswordRequired)?;
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| ConnectError::Protocol(e.to_string()))?
                    {
                        scram_offered |= m == SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(ConnectError::UnsupportedAuth(
                            "SASL without SCRAM-SHA-256".into(),
                        ));
                    }
                    self.scram(password).await?;
                }
                backend::Message::ErrorResponse(body) => return Err(server_error(body)),
                backend::Message::AuthenticationKerberosV5 => {
                    return Err(ConnectError::UnsupportedAuth("Kerberos V5".into()));
                }
                backend::Message::AuthenticationScmCredential => {
                    return Err(ConnectError::UnsupportedAuth("SCM credential".into()));
                }
                backend::Message::AuthenticationGss | backend::Message::AuthenticationSspi => {
                    return Err(ConnectError::UnsupportedAuth("GSSAPI/SSPI".into()));
                }
                _ => {
                    return Err(ConnectError::Protocol(
                        "unexpected message during authentication".into(),
                    ));
                }
            }
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<(), ConnectError> {
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.write)
            .map_err(ConnectError::Lost)?;
        self.flush().await?;
        match self.next_message().await? {
            backend::Message::AuthenticationSaslContinue(body) => {
                scram.update(body.data()).map_err(|e| {
                    ConnectError::Protocol(format!("SCRAM server-first message: {e}"))
                })?;
            }
            backend::Message::ErrorResponse(body) => return Err(server_error(body)),
            _ => return Err(ConnectError::Protocol("expected SASL continue".into())),
        }
        frontend::sasl_response(scram.message(), &mut self.write).map_err(ConnectError::Lost)?;
        self.flush().await?;
        match self.next_message().await? {
            backend::Message::AuthenticationSaslFinal(body) => scram
                .finish(body.data())
                .map_err(|e| ConnectError::Protocol(format!("SCRAM server signature: {e}"))),
            backend::Message::ErrorResponse(body) => Err(server_error(body)),
            _ => Err(ConnectError::Protocol("expected SASL final".into())),
        }
    }

    /// Runs a simple query and returns its rows as text. Walsender commands
    /// (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`…) and plain SQL both work here.
    pub async fn simple_query(&mut self, sql: &str) -> Result<TextRows, ConnectError> {
        frontend::query(sql, &mut self.write).map_err(ConnectError::Lost)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next_message().await? {
                backend::Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(range) = ranges
                        .next()
                        .map_err(|e| ConnectError::Protocol(e.to_string()))?
                    {
                        row.push(range.and_then(|r| {
                            buffer
                                .get(r)
                                .map(|b| String::from_utf8_lossy(b).into_owned())
                        }));
                    }
                    rows.push(row);
                }
                backend::Message::ErrorResponse(body) => error = Some(server_error(body)),
                backend::Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Sends `START_REPLICATION …` and waits for the server to enter CopyBoth mode.
    pub async fn start_copy_both(&mut self, command: &str) -> Result<(), ConnectError> {
        frontend::query(command, &mut self.write).map_err(ConnectError::Lost)?;
        self.flush().await?;
        loop {
            self.fill_frame().await?;
            let tag = self.read[0];
            let len = frame_len(&self.read)?;
            if tag == b'W' {
                self.read.advance(len);
                return Ok(());
            }
            match self.parse_message()? {
                Some(backend::Message::ErrorResponse(body)) => return Err(server_error(body)),
                Some(_) => {}
                None => {}
            }
        }
    }

    /// The next CopyData body while streaming; notices and status messages are skipped.
    pub async fn next_copy_frame(&mut self) -> Result<CopyFrame, ConnectError> {
        loop {
            self.fill_frame().await?;
            let tag = self.read[0];
            let len = frame_len(&self.read)?;
            match tag {
                b'd' => {
                    let mut frame = self.read.split_to(len);
                    frame.advance(5);
                    return Ok(CopyFrame::Data(frame.freeze()));
                }
                b'c' => {
                    self.read.advance(len);
                    return Ok(CopyFrame::Done);
                }
                _ => match self.parse_message()? {
                    Some(backend::Message::ErrorResponse(body)) => return Err(server_error(body)),
                    _ => continue,
                },
            }
        }
    }

    /// Sends a Standby Status Update with the given write/flush/apply positions.
    pub async fn send_status_update(
        &mut self,
        write: u64,
        flush: u64,
        apply: u64,
        reply_requested: bool,
    ) -> Result<(), ConnectError> {
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
            - super::PG_EPOCH_OFFSET_MICROS;
        let mut body = [0u8; 34];
        body[0] = b'r';
        body[1..9].copy_from_slice(&write.to_be_bytes());
        body[9..17].copy_from_slice(&flush.to_be_bytes());
        body[17..25].copy_from_slice(&apply.to_be_bytes());
        body[25..33].copy_from_slice(&now_micros.to_be_bytes());
        body[33] = reply_requested as u8;
        self.write.put_u8(b'd');
        self.write.put_i32(4 + body.len() as i32);
        self.write.put_slice(&body);
        self.flush().await
    }

    /// Ends CopyBoth mode from our side.
    pub async fn send_copy_done(&mut self) -> Result<(), ConnectError> {
        frontend::copy_done(&mut self.write);
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), ConnectError> {
        self.stream
            .write_all(&self.write)
            .await
            .map_err(ConnectError::Lost)?;
        self.write.clear();
        self.stream.flush().await.map_err(ConnectError::Lost)
    }

    /// Reads until one whole frame is buffered.
    async fn fill_frame(&mut self) -> Result<(), ConnectError> {
        loop {
            if self.read.len() >= 5 {
                let len = frame_len(&self.read)?;
                if self.read.len() >= len {
                    return Ok(());
                }
                self.read.reserve(len - self.read.len());
            } else {
                self.read.reserve(4096);
            }
            let n = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(ConnectError::Lost)?;
            if n == 0 {
                return Err(ConnectError::Closed);
            }
        }
    }

    fn parse_message(&mut self) -> Result<Option<backend::Message>, ConnectError> {
        backend::Message::parse(&mut self.read).map_err(|e| ConnectError::Protocol(e.to_string()))
    }

    async fn next_message(&mut self) -> Result<backend::Message, ConnectError> {
        loop {
            self.fill_frame().await?;
            if let Some(message) = self.parse_message()? {
                return Ok(message);
            }
        }
    }
}

/// Sends an SSLRequest on `tcp` and, when the server agrees, does the TLS handshake. Returns
/// the stream to speak the protocol on and whether it is encrypted.
async fn start_tls(
    mut tcp: tokio::net::TcpStream,
    host: &str,
    settings: &TlsSettings,
    addr: &str,
) -> Result<(Box<dyn Stream>, bool), ConnectError> {
    let config = settings.client_config()?;
    let server_name = crate::tls::server_name(host)?;
    let io_err = |source| ConnectError::Io {
        addr: addr.to_owned(),
        source,
    };
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io_err)?;
    // Exactly one byte: anything the server sent after it must go through TLS, never be
    // taken as plain protocol (CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io_err)?;
    match answer[0] {
        b'S' => {}
        b'N' if settings.mode.requires_tls() => {
            return Err(TlsError::NotSupported {
                addr: addr.to_owned(),
                mode: settings.mode,
            }
            .into());
        }
        b'N' => return Ok((Box::new(tcp), false)),
        other => {
            return Err(ConnectError::Protocol(format!(
                "unexpected answer {other:#04x} to the SSLRequest"
            )));
        }
    }
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                TlsError::from_handshake(&e, addr, host, settings).into()
            } else {
                // The connection broke mid-handshake: retried like any lost connection.
                ConnectError::Io {
                    addr: addr.to_owned(),
                    source: e,
                }
            }
        })?;
    Ok((Box::new(stream), true))
}

/// Total length of the frame at the start of `buf` (tag byte included).
fn frame_len(buf: &[u8]) -> Result<usize, ConnectError> {
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ConnectError::Protocol(format!(
            "invalid frame length {len}"
        )));
    }
    Ok(len as usize + 1)
}

fn server_error(body: backend::ErrorResponseBody) -> ConnectError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut hint = None;
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    ConnectError::Server {
        code,
        message,
        detail,
        hint,
        advice: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_met_while_connecting_say_what_to_do() {
        let advice = |code, message| server_advice(code, message, "walcast").unwrap_or_default();
        assert!(
            advice(
                "28P01",
                "password authentication failed for user \"walcast\""
            )
            .contains("password")
        );
        assert!(
            advice(
                "42501",
                "must be superuser or replication role to start walsender"
            )
            .contains("ALTER ROLE walcast WITH REPLICATION;")
        );
        assert!(
            advice("42501", "permission denied to start WAL sender")
                .contains("ALTER ROLE walcast WITH REPLICATION;")
        );
        assert!(
            server_advice(
                "42501",
                "must be superuser or replication role",
                "Mixed Case"
            )
            .unwrap()
            .contains("ALTER ROLE \"Mixed Case\" WITH REPLICATION;")
        );
        assert!(
            advice(
                "28000",
                "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"walcast\", database \"s\", no encryption"
            )
            .contains("sslmode=require")
        );
        assert_eq!(
            server_advice("42P01", "relation does not exist", "walcast"),
            None
        );
        let error = ConnectError::Server {
            code: "28P01".into(),
            message: "password authentication failed".into(),
            detail: None,
            hint: None,
            advice: None,
        }
        .with_advice("walcast");
        let text = error.to_string();
        assert!(
            text.starts_with("postgres error 28P01: password authentication failed; "),
            "{text}"
        );
        assert_eq!(error.sqlstate(), Some("28P01"));
    }
}
