//! Wiring only: connect, set up, compile, start the stages, supervise restarts.
//!
//! ```text
//!   ┌──────────────── stream (retry loop: Error::is_retryable) ────────────────┐
//!   │ setup::ensure_publication/slot  state::migrate  transform::live::compile │
//!   │ ReplicationConn ─▶ SourceStream ─mpsc─▶ Applier ─▶ target                │
//!   │                 └▶ feedback_loop      monitor ─▶ metrics                 │
//!   └──────────────────────────────────────────────────────────────────────────┘
//!   beside it: backfill::run (its own retry loop), verify::deferred::run (stops the daemon
//!   on a definite error), verify::continuous (never stops it)
//! ```
//!
//! Around it, the leg the recorded phase calls for (`switch::Leg`): the above is the forward
//! leg (OLD → NEW); the reverse leg (NEW → OLD, after a cutover) is the same stream with the
//! databases swapped and the inverse mapping; `switch::watch` ends a leg when the phase changes.
//!
//! No decisions about data live here; each stage owns its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, ApplyError, ApplySettings, Writer};
use crate::config::Config;
use crate::control::Control;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::source::pgoutput::Decoder;
use crate::source::replication::ReplicationError;
use crate::source::stream::{feedback_loop, FeedbackState, FlushHandle, SourceStream, StreamError};
use crate::source::{monitor, setup};
use crate::state::StateSchema;
use crate::switch::watch::{Leg, Origins};
use crate::transform::Transformer;

/// Run the daemon until `control` shuts down (Ok) or a fatal error: the leg the recorded
/// phase calls for (`switch::Leg`: forward OLD → NEW, reverse NEW → OLD, idle, or stop when
/// complete), changing legs when the phase changes.
pub async fn run(config: Config, control: Control, metrics: Arc<Metrics>) -> Result<(), Error> {
    let _ = metrics.slot.set(config.source.slot.clone());
    control.set_throttle(config.throttle());
    let shutdown = control.shutdown_token();
    let mut retry = crate::retry::Retry::new();
    loop {
        retry.attempt();
        let leg = match crate::switch::current_phase(&config).await {
            Ok(rec) => {
                metrics.set_phase(&rec);
                Leg::of(&rec)
            }
            Err(e) => {
                if let Some(end) = retry
                    .after(
                        e.into(),
                        "reading the phase",
                        "the recorded phase",
                        &metrics,
                        &shutdown,
                    )
                    .await
                {
                    return end;
                }
                continue;
            }
        };
        tracing::info!(leg = ?leg, "following the recorded phase");
        if leg == Leg::Complete {
            tracing::info!(
                "the migration is complete (remodel complete): nothing to stream; stopping"
            );
            return Ok(());
        }
        let part = control.child();
        let watcher = {
            let (config, leg, part) = (config.clone(), leg.clone(), part.clone());
            let poll = Duration::from_millis(config.switch.phase_poll_ms);
            tokio::spawn(async move {
                crate::switch::watch(config, leg, poll, part.shutdown_token()).await;
                part.shutdown();
            })
        };
        let origins = leg.origins(&config);
        let result = match &leg {
            Leg::Forward { .. } => {
                forward(config.clone(), part.clone(), metrics.clone(), origins).await
            }
            Leg::Reverse { .. } => reverse(&config, &part, &metrics, origins).await,
            Leg::Idle | Leg::Complete => {
                part.shutdown_token().cancelled().await;
                Ok(())
            }
        };
        watcher.abort();
        if shutdown.is_cancelled() {
            return result;
        }
        result?;
    }
}

/// The reverse leg: NEW → OLD through the inverse mapping, with the forward leg's stream code.
async fn reverse(
    config: &Config,
    control: &Control,
    metrics: &Arc<Metrics>,
    origins: Origins,
) -> Result<(), Error> {
    let shutdown = control.shutdown_token();
    let mut retry = crate::retry::Retry::new();
    let reversed = loop {
        retry.attempt();
        match crate::switch::reverse::live_config(config).await {
            Ok(c) => break c,
            Err(e) => {
                if let Some(end) = retry
                    .after(
                        e.into(),
                        "reverse stream",
                        "the recorded phase",
                        metrics,
                        &shutdown,
                    )
                    .await
                {
                    return end;
                }
            }
        }
    };
    stream(&reversed, control, metrics, &origins).await
}

/// The forward leg: the stream (and, with `backfill.enabled`, the backfill beside it), the
/// resolution of deferred partial updates and continuous verification, until `control` shuts
/// down (Ok) or a fatal error stops the stream, the backfill or the resolution.
async fn forward(
    config: Config,
    control: Control,
    metrics: Arc<Metrics>,
    origins: Origins,
) -> Result<(), Error> {
    let verifying = tokio::spawn(crate::verify::continuous(
        config.clone(),
        control.clone(),
        metrics.clone(),
    ));
    let resolving = crate::verify::deferred::run(config.clone(), control.clone(), metrics.clone());
    let stages = run_stages(config, &control, metrics, origins);
    tokio::pin!(resolving, stages);
    // The resolution of deferred rows ends on shutdown (Ok) or on a definite error, which stops
    // the daemon as a stream error would.
    let result = tokio::select! {
        r = &mut stages => r,
        r = &mut resolving => match r {
            Ok(()) => (&mut stages).await,
            Err(e) => {
                control.shutdown();
                if let Err(other) = (&mut stages).await {
                    tracing::warn!(error = %other, "the stream stopped with an error too");
                }
                Err(Error::Deferred(Box::new(e)))
            }
        },
    };
    verifying.abort();
    result
}

async fn run_stages(
    config: Config,
    control: &Control,
    metrics: Arc<Metrics>,
    origins: Origins,
) -> Result<(), Error> {
    let control = control.clone();
    if !config.backfill.enabled {
        return stream(&config, &control, &metrics, &origins).await;
    }
    let streaming = stream(&config, &control, &metrics, &origins);
    // Backfill starts once the stream streams: its publication and slot exist, and a pass can
    // count on the stream to apply everything before its snapshot.
    let backfilling = async {
        if !metrics.until_ready(&control.shutdown_token()).await {
            return Ok(());
        }
        backfill(&config, &control, &metrics).await
    };
    tokio::pin!(streaming, backfilling);
    let mut backfill_finished = false;
    loop {
        tokio::select! {
            r = &mut streaming => {
                if !backfill_finished {
                    control.shutdown();
                    if let Err(e) = (&mut backfilling).await {
                        tracing::warn!(error = %e, "backfill stopped with an error while the stream stopped");
                    }
                }
                return r;
            }
            r = &mut backfilling, if !backfill_finished => {
                backfill_finished = true;
                if let Err(e) = r {
                    control.shutdown();
                    let _ = (&mut streaming).await;
                    return Err(e);
                }
            }
        }
    }
}

/// `remodel backfill`: copy until every table is done (needs a stream running elsewhere).
pub async fn backfill_only(
    config: Config,
    control: Control,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    control.set_throttle(config.throttle());
    backfill(&config, &control, &metrics).await
}

/// Backfill with the same retry rule as the stream.
async fn backfill(config: &Config, control: &Control, metrics: &Arc<Metrics>) -> Result<(), Error> {
    let shutdown = control.shutdown_token();
    let mut retry = crate::retry::Retry::new();
    loop {
        let attempt = async {
            let src = config
                .source_conn()
                .map_err(crate::source::conninfo::ConnectError::from)?
                .connect()
                .await?;
            let tgt = config
                .target_conn()
                .map_err(crate::source::conninfo::ConnectError::from)?
                .connect()
                .await?;
            let plan = crate::transform::live::compile_live(&config.live(), &src, &tgt).await?;
            drop((src, tgt));
            crate::backfill::run(config, control, metrics, &Arc::new(plan)).await?;
            Ok::<(), Error>(())
        };
        retry.attempt();
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if let Some(end) = retry
                    .after(
                        e,
                        "backfill",
                        "the last committed chunk",
                        metrics,
                        &shutdown,
                    )
                    .await
                {
                    return end;
                }
            }
        }
    }
}

/// The stream: restart on retryable errors, resuming from the committed progress.
async fn stream(
    config: &Config,
    control: &Control,
    metrics: &Arc<Metrics>,
    origins: &Origins,
) -> Result<(), Error> {
    let shutdown = control.shutdown_token();
    let mut retry = crate::retry::Retry::new();
    let mut isolate_until = None;
    // Consecutive silences: each doubles the next attempt's receive timeout (up to 32×), so
    // a server that is merely slow to send (PostgreSQL 15 decoding a huge table rewrite emits
    // nothing) is waited out instead of restarted from the same transaction forever.
    let mut silences = 0u32;
    loop {
        retry.attempt();
        let receive_timeout = config.receive_timeout() * 2u32.pow(silences.min(5));
        let result = run_once(
            config,
            control,
            metrics,
            isolate_until.take(),
            receive_timeout,
            origins,
        )
        .await;
        metrics.set_ready(false);
        silences = match &result {
            Err(Error::Replication(ReplicationError::Silent { .. }))
            | Err(Error::Stream(StreamError::Replication(ReplicationError::Silent { .. }))) => {
                silences + 1
            }
            _ => 0,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(Error::Apply(ApplyError::Isolate { until, inner })) => {
                tracing::warn!(error = %inner, %until, "isolating source transactions to commit everything before the failing one");
                isolate_until = Some(until);
            }
            Err(e) => {
                if let Some(end) = retry
                    .after(
                        e,
                        "stream",
                        "the last committed progress",
                        metrics,
                        &shutdown,
                    )
                    .await
                {
                    return end;
                }
                metrics.restarts.inc();
            }
        }
    }
}

async fn run_once(
    config: &Config,
    control: &Control,
    metrics: &Arc<Metrics>,
    isolate_until: Option<crate::Lsn>,
    receive_timeout: Duration,
    origins: &Origins,
) -> Result<(), Error> {
    let src_info = config
        .source_conn()
        .map_err(crate::source::conninfo::ConnectError::from)?;
    let tgt_info = config
        .target_conn()
        .map_err(crate::source::conninfo::ConnectError::from)?;
    // Setting up talks to both databases before any stream timeout runs: bounded as a whole,
    // so a database that stopped answering mid-setup is a retry, not a hang.
    let limit =
        config.stall_timeout() + Duration::from_millis(config.network.connect_timeout_ms) * 3;
    let setup = async {
        let source = src_info.connect().await?;
        setup::ensure_publication(&source, &config.source.publication, &config.source.tables)
            .await?;
        let mut target = tgt_info.connect().await?;
        let state = StateSchema::new(&config.target.state_schema);
        state.migrate(&mut target).await?;
        let streamed = state
            .progress(&target, &config.source.slot)
            .await?
            .map(|p| p.applied_lsn);
        let slot_lsn =
            setup::ensure_slot(&source, &config.source.slot, streamed, &state.schema).await?;
        state
            .claim_slot(&target, &config.source.slot, slot_lsn)
            .await?;
        let plan = crate::transform::live::compile_live(&config.live(), &source, &target).await?;
        // Every mapped table's dead-letter series exists from the start at 0, so an alert on its
        // increase sees the first one.
        for table in plan.tables.keys() {
            metrics.dead_letters.with_label_values(&[table]).inc_by(0);
        }
        let progress = state
            .progress(&target, &config.source.slot)
            .await?
            .map(|p| p.applied_lsn)
            .unwrap_or_default();
        let start = crate::source::start::start_position(progress, slot_lsn);
        // Read with the progress it belongs to: marks before it are stored, after it re-sent.
        let recording = state.load_recording(&target, &config.source.slot).await?;
        tracing::info!(source = %src_info, target = %tgt_info, slot = %config.source.slot, %progress, %slot_lsn, tables = plan.tables.len(), "starting replication");

        let (reader, writer) = crate::source::start::open_stream(
            &src_info,
            &config.source.slot,
            &config.source.publication,
            start,
        )
        .await?;
        Ok::<_, Error>((
            (source, start, plan, state, target, progress),
            (reader, writer, recording),
        ))
    };
    let ((source, start, plan, state, target, progress), (reader, writer, recording)) =
        tokio::time::timeout(limit, setup)
            .await
            .map_err(|_| Error::Stalled {
                what: "setting up the stream (connect, publication, slot, state schema, mapping)",
                after: limit,
            })??;
    let fb = FeedbackState::new(start);
    let (tx, rx) = mpsc::channel(config.source.channel_capacity);
    let stream_stop = CancellationToken::new();
    let feedback_stop = CancellationToken::new();
    let monitor_stop = CancellationToken::new();

    let stream = tokio::spawn(
        SourceStream::new(reader, Decoder::new(1), fb.clone(), tx)
            .receive_timeout(receive_timeout)
            .skip_origin(origins.skip.clone())
            .run(stream_stop.clone()),
    );
    let feedback = {
        let (fb, stop, stream_stop) = (fb.clone(), feedback_stop.clone(), stream_stop.clone());
        let interval = config.status_interval();
        let ask_after = receive_timeout / 2;
        tokio::spawn(async move {
            let r = feedback_loop(writer, fb, interval, ask_after, stop).await;
            if r.is_err() {
                stream_stop.cancel();
            }
            r
        })
    };
    let monitor = tokio::spawn(monitor::run(
        fb.clone(),
        metrics.clone(),
        source,
        config.source.slot.clone(),
        monitor_stop.clone(),
    ));
    metrics.applied_lsn.set(progress.0 as i64);
    metrics.set_ready(true);

    let mut writer = Writer::new(target, state, config.stall_timeout());
    writer.record_for_passes(recording, plan.tables.keys().cloned().collect());
    if let Some(name) = &origins.tag {
        writer.tag_origin(name).await?;
    }
    let applier = Applier::new(
        writer,
        ApplySettings {
            slot: config.source.slot.clone(),
            batch_rows: config.apply.batch_rows,
            max_delay: Duration::from_millis(config.apply.max_batch_delay_ms),
            isolate_until,
            stall_timeout: config.stall_timeout(),
            rebuilds: config
                .rebuilds
                .iter()
                .map(|r| (r.child_table.clone(), r.clone()))
                .collect(),
            registrations: config.registrations.iter().fold(
                std::collections::HashMap::new(),
                |mut m: std::collections::HashMap<String, Vec<_>>, r| {
                    m.entry(r.table.clone()).or_default().push(r.clone());
                    m
                },
            ),
        },
        Transformer::new(Arc::new(plan)),
        FlushHandle::new(fb.clone()),
        metrics.clone(),
        control.clone(),
        progress,
    );
    let applied = applier.run(rx).await;

    // Apply has committed what it will commit: now the last feedback may confirm it.
    stream_stop.cancel();
    feedback_stop.cancel();
    monitor_stop.cancel();
    let streamed = stream.await.map_err(|e| Error::Task(e.to_string()))?;
    let fed = feedback.await.map_err(|e| Error::Task(e.to_string()))?;
    // Aborted, not awaited: its probe may be waiting on a source that stopped answering.
    monitor.abort();
    let _ = monitor.await;
    applied?;
    streamed?;
    fed?;
    if control.shutdown_token().is_cancelled() {
        tracing::info!(applied = %fb.applied(), confirmed = %fb.confirmed(), "stopped");
        Ok(())
    } else {
        Err(crate::source::replication::ReplicationError::Closed.into())
    }
}
