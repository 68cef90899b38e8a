//! A minimal PostgreSQL replication client on `postgres-protocol`.
//!
//! Owns the replication connection: TCP/TLS, startup with `replication=database`, trust /
//! cleartext / MD5 / SCRAM-SHA-256 authentication, simple queries (replication commands), and the
//! CopyBoth phase of `START_REPLICATION`, whose framing we do ourselves because
//! `postgres_protocol::message::backend::Message::parse` rejects CopyBothResponse ('W').
//!
//! ```text
//!   ReplicationConn ──start_replication()──▶ (ReplicationReader, FeedbackWriter)
//!        reader: CopyData 'w' XLogData / 'k' keepalive     writer: CopyData 'r' status update
//! ```
//!
//! It must never decide what LSN is flushed: the writer sends whatever position its caller
//! hands it (see `stream::FeedbackState`). See docs/adr/0001-own-replication-client.md.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::quote::quote_ident;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{self, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::conninfo::{ConnInfo, ConnInfoError, SslMode};
use crate::lsn::Lsn;

/// Largest backend message we accept (PostgreSQL's own limit for a message is 1 GB).
const MAX_MESSAGE: usize = 1 << 30;
/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

mod copy_both;

pub use copy_both::{
    pg_now, pg_ts_to_unix_secs, FeedbackWriter, ReplicationMessage, ReplicationReader,
};

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replication connection to {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replication connection to {target}: the server does not support TLS but sslmode={mode} requires it")]
    TlsUnsupported { target: String, mode: &'static str },
    #[error("replication connection to {target}: TLS handshake failed: {reason}")]
    Tls { target: String, reason: String },
    #[error(transparent)]
    ConnInfo(#[from] ConnInfoError),
    #[error("replication connection to {target}: the server asked for a password but the URL has none; add it as postgresql://user:PASSWORD@...")]
    NoPassword { target: String },
    #[error("replication connection to {target}: unsupported authentication method ({0})", .method)]
    UnsupportedAuth { target: String, method: String },
    #[error("replication connection: server error {code}: {message}{}", .detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server {
        code: String,
        message: String,
        detail: Option<String>,
    },
    #[error("replication protocol violation: {0}")]
    Protocol(String),
    #[error("replication connection closed by the server")]
    Closed,
    /// Nothing from the server for `network.receive_timeout_ms`, not even the keepalive asked
    /// for halfway: a silent network cut or a hung server.
    #[error("replication connection to {target}: nothing received for {} ms (network.receive_timeout_ms), not even a requested keepalive; treating the connection as lost", .after.as_millis())]
    Silent {
        target: String,
        after: std::time::Duration,
    },
}

impl ReplicationError {
    /// Whether retrying can help: a lost, closed or silent connection, or a server error of a
    /// transient SQLSTATE class. TLS, authentication and protocol errors are definite.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Io { .. }
            | ReplicationError::Closed
            | ReplicationError::Silent { .. } => true,
            ReplicationError::Server { code, .. } => crate::pgerr::transient_sqlstate(code),
            _ => false,
        }
    }
}

impl ReplicationError {
    /// The SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

fn proto(msg: impl Into<String>) -> ReplicationError {
    ReplicationError::Protocol(msg.into())
}

/// Buffered framing shared by the startup phase and the CopyBoth reader.
struct Framed<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Framed<R> {
    /// Read one backend message: (tag, body without the length word).
    async fn read(&mut self) -> Result<(u8, Bytes), std::io::Error> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if len < 4 || len as usize > MAX_MESSAGE {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("invalid message length {len}"),
                    ));
                }
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total);
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok((tag, frame.freeze()));
                }
                self.buf.reserve(total - self.buf.len());
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Parse a non-CopyBoth message with postgres-protocol.
fn parse(tag: u8, body: &Bytes) -> Result<Message, ReplicationError> {
    let mut frame = BytesMut::with_capacity(body.len() + 5);
    frame.put_u8(tag);
    frame.put_i32(body.len() as i32 + 4);
    frame.extend_from_slice(body);
    match Message::parse(&mut frame) {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(proto("incomplete message")),
        Err(e) => Err(proto(format!("unparseable message '{}': {e}", tag as char))),
    }
}

fn server_error(body: backend::ErrorResponseBody) -> ReplicationError {
    use fallible_iterator::FallibleIterator;
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => code = v,
            b'M' => message = v,
            b'D' => detail = Some(v),
            _ => {}
        }
    }
    ReplicationError::Server {
        code,
        message,
        detail,
    }
}

/// A connected, authenticated replication connection, idle and ready for commands.
pub struct ReplicationConn {
    framed: Framed<Box<dyn Stream>>,
    target: String,
}

impl ReplicationConn {
    /// Connect, negotiate TLS and authenticate, all within the URL's `connect_timeout` (or
    /// `network.connect_timeout_ms`).
    pub async fn connect(info: &ConnInfo) -> Result<ReplicationConn, ReplicationError> {
        let timeout = info.connect_timeout.unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(timeout, Self::connect_inner(info)).await {
            Ok(r) => r,
            Err(_) => Err(ReplicationError::Io {
                target: info.redacted(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connecting, TLS and authentication took over {} ms",
                        timeout.as_millis()
                    ),
                ),
            }),
        }
    }

    async fn connect_inner(info: &ConnInfo) -> Result<ReplicationConn, ReplicationError> {
        let target = info.redacted();
        let io_err = |source| ReplicationError::Io {
            target: target.clone(),
            source,
        };
        let timeout = info.connect_timeout.unwrap_or(Duration::from_secs(30));
        let tcp =
            tokio::time::timeout(timeout, TcpStream::connect((info.host.as_str(), info.port)))
                .await
                .map_err(|_| io_err(std::io::ErrorKind::TimedOut.into()))?
                .map_err(io_err)?;
        tcp.set_nodelay(true).map_err(io_err)?;
        if let Some(t) = info.stall_timeout {
            // A peer gone without FIN/RST: the kernel gives up within the stall budget (the
            // server's kernel keeps ACKing while the walsender decodes, so no false alarm).
            let sock = socket2::SockRef::from(&tcp);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time((t / 3).max(Duration::from_secs(1)))
                .with_interval((t / 10).max(Duration::from_secs(1)))
                .with_retries(3);
            sock.set_tcp_keepalive(&keepalive).map_err(io_err)?;
            sock.set_tcp_user_timeout(Some(t)).map_err(io_err)?;
        }
        let stream = Self::negotiate_tls(tcp, info, &target).await?;
        let mut conn = ReplicationConn {
            framed: Framed {
                io: stream,
                buf: BytesMut::with_capacity(64 * 1024),
            },
            target,
        };
        conn.startup(info).await?;
        Ok(conn)
    }

    async fn negotiate_tls(
        mut tcp: TcpStream,
        info: &ConnInfo,
        target: &str,
    ) -> Result<Box<dyn Stream>, ReplicationError> {
        let Some(config) = info.tls_config()? else {
            return Ok(Box::new(tcp));
        };
        let io_err = |source| ReplicationError::Io {
            target: target.to_string(),
            source,
        };
        let mut req = BytesMut::new();
        frontend::ssl_request(&mut req);
        tcp.write_all(&req).await.map_err(io_err)?;
        let answer = tcp.read_u8().await.map_err(io_err)?;
        if answer != b'S' {
            if info.sslmode == SslMode::Prefer {
                return Ok(Box::new(tcp));
            }
            return Err(ReplicationError::TlsUnsupported {
                target: target.to_string(),
                mode: info.sslmode.as_str(),
            });
        }
        let name = rustls::pki_types::ServerName::try_from(info.host.clone()).map_err(|e| {
            ReplicationError::Tls {
                target: target.to_string(),
                reason: e.to_string(),
            }
        })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ReplicationError::Tls {
                target: target.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Box::new(tls))
    }

    async fn send(&mut self, buf: &[u8]) -> Result<(), ReplicationError> {
        self.framed
            .io
            .write_all(buf)
            .await
            .map_err(|source| ReplicationError::Io {
                target: self.target.clone(),
                source,
            })?;
        self.framed
            .io
            .flush()
            .await
            .map_err(|source| ReplicationError::Io {
                target: self.target.clone(),
                source,
            })
    }

    async fn recv(&mut self) -> Result<(u8, Bytes), ReplicationError> {
        match self.framed.read().await {
            Ok(m) => Ok(m),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(ReplicationError::Closed)
            }
            Err(source) => Err(ReplicationError::Io {
                target: self.target.clone(),
                source,
            }),
        }
    }

    async fn startup(&mut self, info: &ConnInfo) -> Result<(), ReplicationError> {
        let params = [
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("replication", "database"),
            ("application_name", info.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            // Keys are compared as text (the ledger's source keys): a bytea key must be spelled
            // as every other session of ours spells it, whatever the database's default.
            ("bytea_output", "hex"),
        ];
        let mut buf = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut buf)
            .map_err(|e| proto(e.to_string()))?;
        self.send(&buf).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = self.recv().await?;
            match parse(tag, &body)? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let pw = self.password(info)?;
                    let mut buf = BytesMut::new();
                    frontend::password_message(pw.as_bytes(), &mut buf)
                        .map_err(|e| proto(e.to_string()))?;
                    self.send(&buf).await?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let pw = self.password(info)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        info.user.as_bytes(),
                        pw.as_bytes(),
                        b.salt(),
                    );
                    let mut buf = BytesMut::new();
                    frontend::password_message(hash.as_bytes(), &mut buf)
                        .map_err(|e| proto(e.to_string()))?;
                    self.send(&buf).await?;
                }
                Message::AuthenticationSasl(b) => {
                    use fallible_iterator::FallibleIterator;
                    let mut mechs = b.mechanisms();
                    let mut has_scram = false;
                    while let Ok(Some(m)) = mechs.next() {
                        has_scram |= m == "SCRAM-SHA-256";
                    }
                    if !has_scram {
                        return Err(ReplicationError::UnsupportedAuth {
                            target: self.target.clone(),
                            method: "SASL without SCRAM-SHA-256".into(),
                        });
                    }
                    let pw = self.password(info)?;
                    let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    let mut buf = BytesMut::new();
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut buf)
                        .map_err(|e| proto(e.to_string()))?;
                    self.send(&buf).await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| proto("SASL continue without SASL start"))?;
                    s.update(b.data())
                        .map_err(|e| proto(format!("SCRAM: {e}")))?;
                    let mut buf = BytesMut::new();
                    frontend::sasl_response(s.message(), &mut buf)
                        .map_err(|e| proto(e.to_string()))?;
                    self.send(&buf).await?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    let mut s = scram
                        .take()
                        .ok_or_else(|| proto("SASL final without SASL start"))?;
                    s.finish(b.data())
                        .map_err(|e| proto(format!("SCRAM server signature: {e}")))?;
                }
                Message::ErrorResponse(b) => return Err(server_error(b)),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(ReplicationError::UnsupportedAuth {
                        target: self.target.clone(),
                        method: "Kerberos/GSS/SSPI".into(),
                    })
                }
                _ => {
                    return Err(proto(format!(
                        "unexpected message '{}' during startup",
                        tag as char
                    )))
                }
            }
        }
    }

    fn password(&self, info: &ConnInfo) -> Result<String, ReplicationError> {
        info.password
            .clone()
            .ok_or_else(|| ReplicationError::NoPassword {
                target: self.target.clone(),
            })
    }

    /// Run one simple query (a replication command or SQL); returns its rows as text.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| proto(e.to_string()))?;
        self.send(&buf).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.recv().await?;
            if tag == b'W' || tag == b'H' || tag == b'G' {
                return Err(proto(format!("unexpected COPY start in reply to {sql:?}")));
            }
            match parse(tag, &body)? {
                Message::DataRow(row) => {
                    use fallible_iterator::FallibleIterator;
                    let buf = row.buffer();
                    let mut out = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(r) = ranges.next().map_err(|e| proto(e.to_string()))? {
                        out.push(match r {
                            Some(r) => Some(
                                std::str::from_utf8(buf.get(r).ok_or_else(|| proto("bad range"))?)
                                    .map_err(|e| proto(e.to_string()))?
                                    .to_string(),
                            ),
                            None => None,
                        });
                    }
                    rows.push(out);
                }
                Message::ErrorResponse(b) => error = Some(server_error(b)),
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// `START_REPLICATION SLOT .. LOGICAL ..`: enter CopyBoth and split into reader and writer.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<(ReplicationReader, FeedbackWriter), ReplicationError> {
        let opts = options
            .iter()
            .map(|(k, v)| format!("{} {}", quote_ident(k), crate::quote::quote_literal(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({})",
            quote_ident(slot),
            start,
            opts
        );
        let mut buf = BytesMut::new();
        frontend::query(&sql, &mut buf).map_err(|e| proto(e.to_string()))?;
        self.send(&buf).await?;
        loop {
            let (tag, body) = self.recv().await?;
            match tag {
                b'W' => break,
                b'E' => {
                    if let Message::ErrorResponse(b) = parse(tag, &body)? {
                        return Err(server_error(b));
                    }
                }
                b'N' | b'S' => {}
                _ => {
                    return Err(proto(format!(
                        "expected CopyBothResponse after START_REPLICATION, got '{}'",
                        tag as char
                    )))
                }
            }
        }
        let ReplicationConn { framed, target } = self;
        let (r, w) = tokio::io::split(framed.io);
        Ok((
            ReplicationReader {
                framed: Framed {
                    io: r,
                    buf: framed.buf,
                },
                target: target.clone(),
            },
            FeedbackWriter { io: w, target },
        ))
    }
}

#[cfg(test)]
mod tests;
