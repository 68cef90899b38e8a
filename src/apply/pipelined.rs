//! Row groups of one flush sent back to back: every request (each table's shared lock, each
//! group's statement) goes out before the first answer is read, so a flush of many tables costs
//! one round trip instead of one per statement.
//!
//! ```text
//!  prepare (cached) ─▶ [lock a][stmt a][stmt b][lock c][stmt c] ─▶ answers, in the same order
//! ```
//!
//! Each request is still its own statement (its own snapshot under READ COMMITTED), executed in
//! the order sent; a failing one aborts the transaction, so every later one fails too and the
//! first error in order is the real one. Must never reorder requests: each is sent on its
//! future's first poll, and the futures are first polled in order, in one pass. That rests on
//! tokio-postgres 0.7 sending a request with a prepared `Statement` without waiting (its
//! request channel is unbounded; the first await is for the answer): a client wrapper or pool
//! that could wait before sending would break it.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::types::ToSql;

use super::batch::Group;
use super::statements::{data_parts, deferred_keys, stmt_text, RowParams};
use super::writer::Writer;

type Request<'a> = Pin<
    Box<dyn Future<Output = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>> + Send + 'a>,
>;

/// Groups [`Writer::exec_pipelined`] takes (the others run one by one).
pub(super) fn pipelinable(g: &Group) -> bool {
    matches!(
        g,
        Group::Upsert { .. } | Group::Update { .. } | Group::Delete { .. }
    )
}

impl Writer {
    /// Run `groups` (all [`pipelinable`]) in order, pipelined. On failure: the index of the
    /// group whose request failed first, and its error.
    pub(super) async fn exec_pipelined(
        &mut self,
        groups: &[Group],
    ) -> Result<(), (usize, tokio_postgres::Error)> {
        // Statements and locks first (prepared once per connection; a round trip only then).
        let mut preps = Vec::with_capacity(groups.len());
        for (i, g) in groups.iter().enumerate() {
            let Some((output, key, cols, from, rows)) = data_parts(g, |o| self.plain(o)) else {
                continue;
            };
            let lock = match self
                .locks_needed(std::slice::from_ref(&output.source))
                .pop()
            {
                Some(rel) => Some((self.lock_stmt().await.map_err(|e| (i, e))?, rel)),
                None => None,
            };
            let state = self.state.clone();
            let n = 3 + cols.len() + from.first().map_or(0, Vec::len);
            let plain = key.is_plain();
            if plain {
                self.note_plain(&output.source, rows);
            }
            let stmt = self
                .stmt(key, |k| stmt_text(&state, output, k), n)
                .await
                .map_err(|e| (i, e))?;
            preps.push((
                i,
                output,
                rows,
                lock,
                stmt,
                RowParams::new(rows, &cols, from, plain),
            ));
        }
        let client = &self.client;
        let mut requests: Vec<(usize, Request<'_>)> = Vec::new();
        for (i, output, _, lock, stmt, params) in &preps {
            if let Some((lock, rel)) = lock {
                requests.push((
                    *i,
                    Box::pin(async move {
                        let p: [&(dyn ToSql + Sync); 1] = [rel];
                        client.execute(lock, &p).await.map(|_| Vec::new())
                    }),
                ));
            }
            let rel: &str = &output.source;
            requests.push((
                *i,
                Box::pin(async move {
                    let rel = rel;
                    client.query(stmt, &params.refs(&rel)).await
                }),
            ));
        }
        // One pass polls every request once, in order: each is sent on that first poll.
        let mut answers: Vec<Option<Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>>> =
            requests.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            for (k, (_, f)) in requests.iter_mut().enumerate() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    answers[k] = Some(r);
                }
            }
            Poll::Ready(())
        })
        .await;
        for (k, (_, f)) in requests.iter_mut().enumerate() {
            if answers[k].is_none() {
                answers[k] = Some(f.as_mut().await);
            }
        }
        drop(requests);
        let mut deferred = Vec::new();
        let mut first_error = None;
        let mut k = 0;
        for (i, output, rows, lock, _, _) in &preps {
            let mut take = || {
                k += 1;
                answers.get_mut(k - 1).and_then(Option::take)
            };
            if lock.is_some() {
                if let Some(Err(e)) = take() {
                    first_error.get_or_insert((*i, e));
                }
            }
            match take() {
                Some(Ok(out)) => deferred.push((*output, *rows, deferred_keys(&out))),
                Some(Err(e)) => {
                    first_error.get_or_insert((*i, e));
                }
                None => {}
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for (output, rows, keys) in deferred {
            self.note_deferred(output, rows, &keys);
        }
        Ok(())
    }
}
