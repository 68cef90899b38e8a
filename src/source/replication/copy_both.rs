//! The replication stream once started (CopyBoth): reading XLogData and keepalives
//! ([`ReplicationReader`]), sending standby status updates ([`FeedbackWriter`]), and the
//! PostgreSQL epoch timestamps they carry.

use super::*;

/// What the server sends inside CopyBoth.
#[derive(Debug)]
pub enum ReplicationMessage {
    XLogData {
        start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    Keepalive {
        wal_end: Lsn,
        reply_requested: bool,
    },
}

pub struct ReplicationReader {
    pub(super) framed: Framed<ReadHalf<Box<dyn Stream>>>,
    pub(super) target: String,
}

impl ReplicationReader {
    /// [`ReplicationReader::next`], or [`ReplicationError::Silent`] after `timeout` without a
    /// message. Dropping a half-read frame is fine: the connection is abandoned after it.
    pub async fn next_within(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<ReplicationMessage, ReplicationError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(m) => m,
            Err(_) => Err(ReplicationError::Silent {
                target: self.target.clone(),
                after: timeout,
            }),
        }
    }

    pub async fn next(&mut self) -> Result<ReplicationMessage, ReplicationError> {
        loop {
            let (tag, mut body) = match self.framed.read().await {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ReplicationError::Closed)
                }
                Err(source) => {
                    return Err(ReplicationError::Io {
                        target: self.target.clone(),
                        source,
                    })
                }
            };
            match tag {
                b'd' => return decode_copy_data(&mut body),
                b'E' => {
                    if let Message::ErrorResponse(b) = parse(tag, &body)? {
                        return Err(server_error(b));
                    }
                }
                // CopyDone, or the COPY's CommandComplete / ReadyForQuery: the server ended the
                // stream (a clean shutdown, a restart, a failover). Reconnect, as for a drop.
                b'c' | b'C' | b'Z' => return Err(ReplicationError::Closed),
                b'N' | b'S' => {}
                _ => {
                    return Err(proto(format!(
                        "unexpected message '{}' during replication",
                        tag as char
                    )))
                }
            }
        }
    }
}

pub(super) fn decode_copy_data(body: &mut Bytes) -> Result<ReplicationMessage, ReplicationError> {
    if body.is_empty() {
        return Err(proto("empty CopyData"));
    }
    match body.get_u8() {
        b'w' => {
            if body.len() < 24 {
                return Err(proto("short XLogData header"));
            }
            let start = Lsn(body.get_u64());
            let wal_end = Lsn(body.get_u64());
            let _send_time = body.get_i64();
            Ok(ReplicationMessage::XLogData {
                start,
                wal_end,
                data: body.clone(),
            })
        }
        b'k' => {
            if body.len() < 17 {
                return Err(proto("short keepalive"));
            }
            let wal_end = Lsn(body.get_u64());
            let _send_time = body.get_i64();
            let reply_requested = body.get_u8() == 1;
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
            })
        }
        t => Err(proto(format!("unknown CopyData kind '{}'", t as char))),
    }
}

/// Now as microseconds since PostgreSQL's epoch.
pub fn pg_now() -> i64 {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    us - PG_EPOCH_OFFSET_US
}

/// Convert a PostgreSQL timestamp (µs since 2000-01-01) to Unix seconds.
pub fn pg_ts_to_unix_secs(ts: i64) -> f64 {
    (ts + PG_EPOCH_OFFSET_US) as f64 / 1e6
}

/// The write side of CopyBoth: standby status updates only.
pub struct FeedbackWriter {
    pub(super) io: WriteHalf<Box<dyn Stream>>,
    pub(super) target: String,
}

impl FeedbackWriter {
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        reply: bool,
    ) -> Result<(), ReplicationError> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(written.0);
        payload.put_u64(flushed.0);
        payload.put_u64(flushed.0);
        payload.put_i64(pg_now());
        payload.put_u8(u8::from(reply));
        let mut buf = BytesMut::new();
        frontend::CopyData::new(&payload[..])
            .map_err(|e| proto(e.to_string()))?
            .write(&mut buf);
        let io_err = |source| ReplicationError::Io {
            target: self.target.clone(),
            source,
        };
        self.io.write_all(&buf).await.map_err(io_err)?;
        self.io
            .flush()
            .await
            .map_err(|source| ReplicationError::Io {
                target: self.target.clone(),
                source,
            })
    }

    /// Leave CopyBoth politely and close.
    pub async fn close(mut self) {
        let mut buf = BytesMut::new();
        frontend::copy_done(&mut buf);
        frontend::terminate(&mut buf);
        let _ = self.io.write_all(&buf).await;
        let _ = self.io.shutdown().await;
    }
}
