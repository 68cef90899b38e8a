//! Piping one chunk from the source's `COPY ... TO STDOUT` into the target's `COPY ... FROM
//! STDIN`, without parsing rows: bytes flow through as they come (bounded by the driver's
//! buffers), and only the last row is kept to learn the chunk's last key (the next cursor).
//!
//! Owns COPY text-format line handling. Must never hold a whole chunk in memory.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading the source chunk: {0}")]
    Source(#[source] crate::pgerr::PgError),
    #[error("writing the chunk to the target: {0}")]
    Target(#[source] crate::pgerr::PgError),
    #[error("the source sent a COPY row that is not valid text format: {0}")]
    Format(String),
}

impl CopyError {
    /// Either side's connection trouble is transient; a row remodel cannot parse is definite.
    pub fn is_transient(&self) -> bool {
        match self {
            CopyError::Source(e) | CopyError::Target(e) => e.is_transient(),
            CopyError::Format(_) => false,
        }
    }
}

/// What a piped chunk was.
#[derive(Debug)]
pub struct Piped {
    pub rows: u64,
    pub bytes: u64,
    /// Key values (text form, `None` for NULL) of the chunk's last row.
    pub last_key: Option<Vec<Option<String>>>,
    /// Rows set aside as dead letters (`on_error = "dead_letter"`).
    pub dead: u64,
}

/// Tracks the last complete line across arbitrary byte chunks, copying only per chunk.
#[derive(Default)]
struct LastLine {
    pending: BytesMut,
    last: Vec<u8>,
    /// Rows read: COPY text escapes newlines inside values, so every raw `\n` ends a row.
    rows: u64,
}

impl LastLine {
    fn feed(&mut self, b: &[u8]) {
        self.rows += b.iter().filter(|&&c| c == b'\n').count() as u64;
        let Some(j) = b.iter().rposition(|&c| c == b'\n') else {
            self.pending.extend_from_slice(b);
            return;
        };
        match b[..j].iter().rposition(|&c| c == b'\n') {
            Some(i) => self.last = b[i + 1..j].to_vec(),
            None => {
                let mut l = std::mem::take(&mut self.pending).to_vec();
                l.extend_from_slice(&b[..j]);
                self.last = l;
            }
        }
        self.pending.clear();
        self.pending.extend_from_slice(&b[j + 1..]);
    }
}

/// Undo COPY text-format escaping of one field; `\N` is NULL.
pub fn unescape(field: &[u8]) -> Result<Option<String>, CopyError> {
    if field == b"\\N" {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let c = field[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&n) = field.get(i + 1) else {
            return Err(CopyError::Format("trailing backslash".into()));
        };
        i += 2;
        match n {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(n - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(v as u8);
                }
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out)
        .map(Some)
        .map_err(|e| CopyError::Format(e.to_string()))
}

/// The first `n` fields of a COPY text line.
pub fn key_fields(line: &[u8], n: usize) -> Result<Vec<Option<String>>, CopyError> {
    let mut out = Vec::with_capacity(n);
    for f in line.split(|&c| c == b'\t').take(n) {
        out.push(unescape(f)?);
    }
    if out.len() < n {
        return Err(CopyError::Format(format!(
            "row has {} fields, the key needs {n}",
            out.len()
        )));
    }
    Ok(out)
}

/// Run `copy_out_sql` on `source` (inside its snapshot transaction) and stream it into
/// `copy_in_sql` on `target`.
pub async fn pipe(
    source: &Client,
    copy_out_sql: &str,
    target: &Client,
    copy_in_sql: &str,
    key_len: usize,
) -> Result<Piped, CopyError> {
    let src = |e: tokio_postgres::Error| CopyError::Source(e.into());
    let tgt = |e: tokio_postgres::Error| CopyError::Target(e.into());
    let out = source.copy_out(copy_out_sql).await.map_err(src)?;
    let sink = target.copy_in::<_, Bytes>(copy_in_sql).await.map_err(tgt)?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    let mut last = LastLine::default();
    let mut bytes = 0u64;
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(src)?;
        bytes += chunk.len() as u64;
        last.feed(&chunk);
        // `feed`, not `send`: the source yields one message per row, and `send` would flush
        // (a write syscall) for each; the sink buffers and flushes as its buffer fills.
        sink.as_mut().feed(chunk).await.map_err(tgt)?;
    }
    // Rows as read from the source: the target's count leaves out rows a trigger suppressed.
    sink.as_mut().finish().await.map_err(tgt)?;
    let rows = last.rows;
    let last_key = if rows == 0 {
        None
    } else {
        Some(key_fields(&last.last, key_len)?)
    };
    Ok(Piped {
        rows,
        bytes,
        last_key,
        dead: 0,
    })
}

/// COPY `data` (COPY text, built by the caller) into the target with `sql` (`COPY ... FROM
/// STDIN`).
pub async fn copy_in(
    target: &Client,
    sql: &str,
    data: Vec<u8>,
) -> Result<(), tokio_postgres::Error> {
    let sink = target.copy_in::<_, bytes::Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    sink.as_mut().send(bytes::Bytes::from(data)).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_copy_text() {
        assert_eq!(unescape(b"\\N").unwrap(), None);
        assert_eq!(unescape(b"a\\tb\\nc\\\\d").unwrap().unwrap(), "a\tb\nc\\d");
        assert_eq!(unescape(b"\\101\\x42\\7").unwrap().unwrap(), "AB\u{7}");
        assert_eq!(unescape("é✓".as_bytes()).unwrap().unwrap(), "é✓");
        assert!(unescape(b"bad\\").is_err());
    }

    #[test]
    fn finds_the_last_line_across_split_chunks() {
        let data = b"1\ta\n22\tbb\n333\tccc\n";
        for cut1 in 0..data.len() {
            for cut2 in cut1..data.len() {
                let mut l = LastLine::default();
                l.feed(&data[..cut1]);
                l.feed(&data[cut1..cut2]);
                l.feed(&data[cut2..]);
                assert_eq!(l.last, b"333\tccc", "cuts {cut1} {cut2}");
                assert_eq!(l.rows, 3);
            }
        }
        assert_eq!(
            key_fields(b"333\tccc", 1).unwrap(),
            vec![Some("333".into())]
        );
        assert_eq!(
            key_fields(b"1\t\\N\tx", 2).unwrap(),
            vec![Some("1".into()), None]
        );
        assert!(key_fields(b"1", 2).is_err());
    }
}
