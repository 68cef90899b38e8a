//! `PgError`: a tokio-postgres error whose `Display` says what happened. tokio-postgres prints
//! only "db error" for a server error and hides TLS causes; operators need the server's message,
//! detail and hint, or the underlying cause.

use std::fmt;

#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}

impl PgError {
    pub fn sqlstate(&self) -> Option<&str> {
        self.0.as_db_error().map(|d| d.code().code())
    }

    /// Whether retrying can help: a server error by its SQLSTATE class
    /// ([`transient_sqlstate`]); otherwise a connection-level error is transient, except a TLS
    /// failure (a wrong CA, a host name mismatch, a server without TLS: retrying cannot fix it).
    pub fn is_transient(&self) -> bool {
        match self.sqlstate() {
            Some(code) => transient_sqlstate(code),
            None => !is_tls_failure(&self.0),
        }
    }
}

/// A TLS handshake or certificate failure somewhere in the error's chain: a `rustls::Error`,
/// directly or inside an `io::Error`, or tokio-postgres's TLS error kind. tokio-postgres has
/// no accessor for its error kind, and "server does not support TLS" carries no typed cause,
/// so that one kind is recognised by the text tokio-postgres gives it.
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    if e.to_string().contains("TLS handshake") {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// The SQLSTATE classes retrying can help with, in one table: a lost or refused connection,
/// exhausted resources, a server shutting down or restarting, a serialization failure or
/// deadlock, a slot still held by our previous walsender, system errors. Everything else the
/// server says (data, constraint, permission, syntax) is definite.
pub fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock
        || code == "55006" // object in use: the slot is still held by our previous walsender
        || code == "58000"
        || code == "58030"
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            write!(
                f,
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            )?;
            if let Some(d) = db.detail() {
                write!(f, "; detail: {d}")?;
            }
            if let Some(h) = db.hint() {
                write!(f, "; hint: {h}")?;
            }
            if let Some(w) = db.where_() {
                write!(f, "; context: {w}")?;
            }
            return Ok(());
        }
        write!(f, "{}", self.0)?;
        let mut cur = std::error::Error::source(&self.0);
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
