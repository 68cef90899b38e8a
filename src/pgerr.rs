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
