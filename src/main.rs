//! The `remodel` binary: parse arguments, load config, set up tracing and metrics, call the
//! library. No logic of its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

use remodel::config::Config;
use remodel::control::{self, Control, PidFile};
use remodel::metrics::{self, Metrics};

const EXIT_CODES: &str = "Exit codes:
  0  success (verify: target = transform(source); check: ready; status: no errors)
  1  the command ran and found a problem (run/backfill: a fatal error; verify: rows differ;
     check: problems found; status: errors reading state; dead-letters --retry: rows still fail;
     demo: verification found differences)
  2  could not do the work (bad config or arguments; verify: could not verify, says why)
  130 demo stopped by Ctrl-C

Every command takes --config FILE (TOML; each key also settable as REMODEL__SECTION__KEY).
Docs: docs/runbook.md (the migration step by step), docs/configuration.md, docs/troubleshooting.md";

#[derive(Parser)]
#[command(
    name = "remodel",
    version,
    about = "Live PostgreSQL data-model migrations",
    long_about = "Live PostgreSQL data-model migrations: stream the source's changes through a \
                  mapping into the target, backfill the rows that existed before, verify, and \
                  keep going while the app writes.",
    after_help = "Examples:
  remodel demo                                  # the whole thing on throwaway clusters
  remodel check  -c remodel.toml                # preflight both databases and the mapping
  remodel run    -c remodel.toml                # stream + backfill until SIGTERM
  remodel status -c remodel.toml                # where it is
  remodel verify -c remodel.toml                # target = transform(source)?",
    after_long_help = EXIT_CODES
)]
struct Cli {
    /// Log format: text (default) or json. Overrides log.format.
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stream every change from source to target, and backfill, until stopped (SIGTERM/SIGINT).
    ///
    /// Creates the publication and slot on first start and reuses them after. Signals: USR1
    /// pause, USR2 resume, HUP reload log.level and throttle, TERM/INT stop gracefully.
    /// Exit 0 on a graceful stop, 1 on a fatal error (named, with the fix), 2 on a bad config.
    #[command(after_help = "Examples:
  remodel run -c remodel.toml
  REMODEL__SOURCE__URL=postgresql://remodel@db1/app remodel run -c remodel.toml
  remodel run -c remodel.toml --log-format json 2> remodel.log")]
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy the rows that existed before the stream's slot, to completion (needs the stream
    /// running: `remodel run`, possibly with backfill.enabled = false).
    ///
    /// Resumes from its cursors after a stop. Exit 0 when every table is done (or stopped
    /// by a signal), 1 on a fatal error.
    #[command(after_help = "Examples:
  remodel backfill -c remodel.toml
  REMODEL__BACKFILL__WORKERS=4 remodel backfill -c remodel.toml")]
    Backfill {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the daemon's state, applied LSN, lag, slot and backfill per table.
    ///
    /// Read-only; works whether or not the daemon runs. Exit 0, or 1 when something could not
    /// be read (listed as errors).
    #[command(after_help = "Examples:
  remodel status -c remodel.toml
  remodel status -c remodel.toml --json | jq .lag_bytes
  watch -n 5 remodel status -c remodel.toml")]
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Preflight: wal_level, slots, senders, replica identity, privileges, the mapping.
    ///
    /// Exit 0 when source, target and mapping are ready, 1 with a list of problems (each with
    /// its fix).
    #[command(after_help = "Examples:
  remodel check -c remodel.toml
  remodel check -c remodel.toml --fallback   # also: can the mapping run backwards?
  REMODEL__TARGET__URL=postgresql://remodel@staging/app_v2 remodel check -c remodel.toml")]
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Also check that the mapping can run backwards (NEW → OLD), as a fallback after a
        /// switch needs: every table and column it cannot invert, with the fix.
        #[arg(long)]
        fallback: bool,
    },
    /// Rows the mapping could not transform (on_error = "dead_letter"); --retry re-runs them
    /// through the current mapping (after fixing it) and removes the ones that now apply.
    ///
    /// Exit 0; with --retry, 1 when some still fail.
    #[command(after_help = "Examples:
  remodel dead-letters -c remodel.toml
  remodel dead-letters -c remodel.toml --limit 100 --json
  remodel dead-letters -c remodel.toml --retry      # after fixing the mapping")]
    DeadLetters {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        retry: bool,
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Compare transform(source) with the target while writes go on; exit 0 clean, 1 rows
    /// differ, 2 could not verify. Needs `remodel run` streaming.
    #[command(after_help = "Examples:
  remodel verify -c remodel.toml                  # every row (the gate before switch-over)
  remodel verify -c remodel.toml --sample 1000    # 1000 random rows per table, in seconds
  remodel verify -c remodel.toml --table loans --repair
  remodel verify -c remodel.toml --since 0/3A000000 --json")]
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        /// Rows per table, from random start keys, instead of every row.
        #[arg(long, value_name = "N")]
        sample: Option<u64>,
        /// Only this source or target table (repeatable).
        #[arg(long = "table", value_name = "T")]
        tables: Vec<String>,
        /// Only rows the stream wrote at or after this LSN.
        #[arg(long, value_name = "LSN")]
        since: Option<String>,
        /// Rewrite differing target rows from the source (through the versioned path), then
        /// check them again.
        #[arg(long)]
        repair: bool,
        /// Differing rows shown per table (default verify.show).
        #[arg(long, value_name = "K")]
        show: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Switch the app from OLD (the source) to NEW (the target): check the gates, fence OLD,
    /// drain to the fence's marker, move NEW's sequences past OLD's, record the switch, start
    /// the reverse stream (NEW → OLD, for a fallback), run the hook.
    ///
    /// Exit 0 switched; 1 aborted (OLD writable again, forward streaming as before); 2 could
    /// not start (each failed gate named, with its fix); 3 switched but the hook failed.
    #[command(after_help = "Examples:
  remodel cutover -c remodel.toml --dry-run
  remodel cutover -c remodel.toml --timeout 10 --switch-hook './point-app-at-new.sh'
  remodel cutover -c remodel.toml --postpone-file /tmp/remodel.postpone")]
    Cutover {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        opts: SwitchArgs,
    },
    /// Switch the app back from NEW to OLD after a cutover: fence NEW, drain the reverse
    /// stream, move OLD's sequences past NEW's, record, stream OLD → NEW again, run the hook.
    ///
    /// Exit codes as for cutover.
    #[command(after_help = "Examples:
  remodel fallback -c remodel.toml --dry-run
  remodel fallback -c remodel.toml --switch-hook './point-app-at-old.sh'")]
    Fallback {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        opts: SwitchArgs,
    },
    /// End a switched migration: the daemon stops; the slots, publications and replication
    /// origins remodel created are removed (data, state schemas and OLD's fence stay).
    ///
    /// Exit 0 done, 1 refused or failed (says why).
    #[command(after_help = "Examples:
  remodel complete -c remodel.toml")]
    Complete {
        #[arg(long, short)]
        config: PathBuf,
        /// Seconds to wait for the daemon to let go of the slots.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Pause the running daemon (SIGUSR1 via its pidfile): nothing is written until resume.
    ///
    /// The slot keeps the source's WAL meanwhile: watch remodel_slot_retained_wal_bytes.
    #[command(after_help = "Examples:
  remodel pause -c remodel.toml                   # at peak traffic
  kill -USR1 \"$(cat /run/remodel/remodel.pid)\"   # the same, by hand")]
    Pause {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Resume the running daemon (SIGUSR2 via its pidfile).
    #[command(after_help = "Examples:
  remodel resume -c remodel.toml
  kill -USR2 \"$(cat /run/remodel/remodel.pid)\"")]
    Resume {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The guarantor migration on two throwaway clusters: messy data, a live writer, stream,
    /// backfill, pause/resume, verification, rows before and after.
    ///
    /// Needs PostgreSQL's server binaries (apt-get install postgresql). Ctrl-C stops it and
    /// removes the clusters. Exit 0 when verification is clean, 1 if rows differ, 2 if it could
    /// not settle (or the demo could not run), 130 on Ctrl-C (0 when --keep ends by Ctrl-C).
    #[command(after_help = "Examples:
  remodel demo
  remodel demo --loans 1000000 --seconds 60 --rate 1000
  remodel demo --keep            # leave it running to poke at the clusters and /metrics")]
    Demo {
        /// Loans loaded before the daemon starts (backfill copies them).
        #[arg(long, default_value_t = 100_000, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..))]
        loans: u64,
        /// How long the live writer runs, in seconds.
        #[arg(long, default_value_t = 20, value_name = "S")]
        seconds: u64,
        /// Row changes per second the writer makes (roughly).
        #[arg(long, default_value_t = 200, value_name = "R",
              value_parser = clap::value_parser!(u64).range(10..))]
        rate: u64,
        /// Keep the daemon and clusters running after the summary, until Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Seed of the live writer (printed when random).
        #[arg(long)]
        seed: Option<u64>,
    },
}

/// Options of `cutover` and `fallback`.
#[derive(clap::Args)]
struct SwitchArgs {
    /// Check every gate and report them all; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds the app's writes may be held (fence to recorded switch) before giving up.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
    /// Start only when the stream is at most this far behind (e.g. 16MB, 512kB).
    #[arg(long, default_value = "16MB", value_name = "BYTES")]
    max_lag: String,
    /// Run with sh -c once the other database takes the app's writes (your deploy, flag or
    /// proxy switch); REMODEL_SWITCH, REMODEL_PHASE, REMODEL_*_LSN are set.
    #[arg(long, value_name = "CMD")]
    switch_hook: Option<String>,
    /// Wait while this file exists before fencing (delete it to go on).
    #[arg(long, value_name = "PATH")]
    postpone_file: Option<PathBuf>,
    /// Cutover without a reverse stream: no fallback afterwards.
    #[arg(long)]
    no_fallback: bool,
    /// Rows per table the verify gate samples (0 skips it).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    verify_sample: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

impl SwitchArgs {
    fn options(&self) -> anyhow::Result<remodel::switch::Options> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            anyhow::bail!(
                "--timeout {}: must be a positive number of seconds",
                self.timeout
            );
        }
        Ok(remodel::switch::Options {
            dry_run: self.dry_run,
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            max_lag_bytes: remodel::config::parse_bytes(&self.max_lag).with_context(|| {
                format!(
                    "--max-lag {:?}: use bytes, e.g. 16MB or 512kB",
                    self.max_lag
                )
            })?,
            switch_hook: self.switch_hook.clone(),
            postpone_file: self.postpone_file.clone(),
            no_fallback: self.no_fallback,
            verify_sample: self.verify_sample,
        })
    }
}

async fn switch_cmd(
    config: &Path,
    args: SwitchArgs,
    cutover: bool,
    log_format: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    let format = log_format.unwrap_or_else(|| cfg.log.format.clone());
    let _reload = init_tracing(&cfg.log.level, &format)?;
    let opts = args.options()?;
    let outcome = if cutover {
        remodel::switch::cutover(&cfg, &opts).await
    } else {
        remodel::switch::fallback(&cfg, &opts).await
    };
    match outcome {
        Ok(o) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&o)?);
            } else {
                print!("{}", o.text());
            }
            Ok(ExitCode::from(o.exit_code()))
        }
        Err(e) => {
            eprintln!("remodel: could not start: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

fn init_tracing(level: &str, format: &str) -> anyhow::Result<Reload> {
    let filter = EnvFilter::try_new(level).context("log.level")?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()?;
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    // Colour only on a terminal: escape codes make log files unsearchable.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init()?;
    }
    Ok(Box::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("remodel: error: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each cause once: most of our messages already include their
/// cause's text, which `{:#}` would print again.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    remodel::failpoint::init()?;
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = load(&config)?;
            let format = cli.log_format.unwrap_or_else(|| cfg.log.format.clone());
            let reload = init_tracing(&cfg.log.level, &format)?;
            let control = Control::new();
            let path = config.clone();
            let reloaded = control.clone();
            control::install_signals(control.clone(), move || match Config::load(&path) {
                Ok(c) => {
                    // Said before switching: at the new level this line may be filtered out.
                    tracing::info!(level = %c.log.level, throttle = ?c.throttle(), "log level and throttle reloaded");
                    reloaded.set_throttle(c.throttle());
                    if let Err(e) = reload(&c.log.level) {
                        tracing::error!(error = %e, "log level not reloaded");
                    }
                }
                Err(e) => tracing::error!(error = %e, "config not reloaded"),
            })?;
            let _pid = PidFile::create(&cfg.pidfile())?;
            let metrics = Metrics::new();
            if cfg.metrics.enabled {
                metrics::serve(
                    metrics.clone(),
                    &cfg.metrics.listen,
                    control.shutdown_token(),
                )
                .await?;
                tracing::info!(listen = %cfg.metrics.listen, "metrics at http://{}/metrics", cfg.metrics.listen);
            }
            match remodel::pipeline::run(cfg, control, metrics).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    tracing::error!(kind = e.kind(), "{e}");
                    eprintln!("remodel: fatal: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Backfill { config } => {
            let cfg = load(&config)?;
            let format = cli.log_format.unwrap_or_else(|| cfg.log.format.clone());
            let _reload = init_tracing(&cfg.log.level, &format)?;
            let control = Control::new();
            let reloaded = control.clone();
            let path = config.clone();
            control::install_signals(control.clone(), move || {
                if let Ok(c) = Config::load(&path) {
                    tracing::info!(throttle = ?c.throttle(), "throttle reloaded");
                    reloaded.set_throttle(c.throttle());
                }
            })?;
            match remodel::pipeline::backfill_only(cfg, control.clone(), Metrics::new()).await {
                Ok(()) if control.shutdown_token().is_cancelled() => {
                    eprintln!("remodel: backfill stopped; it resumes from its cursors");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(()) => {
                    eprintln!("remodel: backfill complete");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    tracing::error!(kind = e.kind(), "{e}");
                    eprintln!("remodel: fatal: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Status { config, json } => {
            let cfg = load(&config)?;
            let st = remodel::status::gather(&cfg).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{st}");
            }
            Ok(if st.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Check { config, fallback } => {
            let cfg = load(&config)?;
            let findings = remodel::check::run(&cfg, fallback).await;
            if findings.is_empty() {
                println!("ok: source, target and mapping are ready");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{} problem(s):", findings.len());
                for f in &findings {
                    println!("- {f}");
                }
                Ok(ExitCode::from(1))
            }
        }
        Cmd::DeadLetters {
            config,
            retry,
            limit,
            json,
        } => {
            let cfg = load(&config)?;
            if retry {
                let report = remodel::deadletter::retry(&cfg).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "retried {}: {} applied (or superseded by newer writes), {} still failing",
                        report.resolved + report.failing,
                        report.resolved,
                        report.failing
                    );
                }
                return Ok(if report.failing == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            let (rows, counts) = remodel::deadletter::list(&cfg, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            if counts.is_empty() {
                println!("no dead letters");
            }
            for (table, n) in &counts {
                println!("{table}: {n} dead letter(s)");
            }
            for d in &rows {
                println!(
                    "- {} key {} at {} ({}, {} retries): {}",
                    d.table, d.key, d.lsn, d.op, d.attempts, d.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify {
            config,
            sample,
            tables,
            since,
            repair,
            show,
            json,
        } => {
            let cfg = load(&config)?;
            let format = cli.log_format.unwrap_or_else(|| cfg.log.format.clone());
            let _reload = init_tracing(&cfg.log.level, &format)?;
            let since = match since {
                Some(s) => Some(s.parse::<remodel::Lsn>().map_err(|e| {
                    anyhow::anyhow!("--since {s:?}: {e} (an LSN such as 0/16B3748)")
                })?),
                None => None,
            };
            let control = Control::new();
            control::install_signals(control.clone(), || {})?;
            let opts = remodel::verify::Options {
                sample,
                tables,
                since,
                repair,
                show,
            };
            match remodel::verify::verify(&cfg, &opts, control.shutdown_token()).await {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", report.render());
                    }
                    Ok(ExitCode::from(report.exit_code()))
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"outcome": "incomplete", "error": e.to_string()})
                        );
                    }
                    eprintln!("remodel: could not verify: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Cmd::Cutover { config, opts } => switch_cmd(&config, opts, true, cli.log_format).await,
        Cmd::Fallback { config, opts } => switch_cmd(&config, opts, false, cli.log_format).await,
        Cmd::Complete { config, wait } => {
            let cfg = load(&config)?;
            match remodel::switch::complete(&cfg, std::time::Duration::from_secs(wait)).await {
                Ok(done) => {
                    println!("the migration is complete");
                    for r in &done.removed {
                        println!("  removed {r}");
                    }
                    for l in &done.left {
                        println!("  left    {l}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("remodel: complete: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Pause { config } => {
            let cfg = load(&config)?;
            let pid = control::signal_daemon(&cfg.pidfile(), nix::sys::signal::Signal::SIGUSR1)?;
            println!("paused remodel (pid {pid})");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Resume { config } => {
            let cfg = load(&config)?;
            let pid = control::signal_daemon(&cfg.pidfile(), nix::sys::signal::Signal::SIGUSR2)?;
            println!("resumed remodel (pid {pid})");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo {
            loans,
            seconds,
            rate,
            keep,
            seed,
        } => {
            let reload = init_tracing(
                &std::env::var("REMODEL_DEMO_LOG").unwrap_or_else(|_| "remodel=info,warn".into()),
                cli.log_format.as_deref().unwrap_or("text"),
            )?;
            drop(reload);
            let opts = remodel::demo::DemoOptions {
                loans,
                seconds,
                rate,
                keep,
                seed,
            };
            Ok(match remodel::demo::run(opts).await? {
                remodel::demo::Ending::Clean => ExitCode::SUCCESS,
                remodel::demo::Ending::Mismatch => ExitCode::from(1),
                remodel::demo::Ending::Incomplete => ExitCode::from(2),
                remodel::demo::Ending::Interrupted => ExitCode::from(130),
            })
        }
    }
}
