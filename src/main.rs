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

#[derive(Parser)]
#[command(
    name = "remodel",
    version,
    about = "Live PostgreSQL data-model migrations"
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
    /// Stream every change from source to target until stopped (SIGTERM/SIGINT).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy the rows that existed before the stream's slot, to completion (needs the stream
    /// running: `remodel run`, possibly with backfill.enabled = false).
    Backfill {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show applied LSN, lag and whether the daemon runs or is paused.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Preflight: wal_level, slots, senders, replica identity, privileges, the mapping.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Rows the mapping could not transform (on_error = "dead_letter"); --retry re-runs them
    /// through the current mapping (after fixing it) and removes the ones that now apply.
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
    ///
    /// Examples:
    ///   remodel verify -c remodel.toml                  # every row (the gate before switch-over)
    ///   remodel verify -c remodel.toml --sample 1000    # 1000 random rows per table, in seconds
    ///   remodel verify -c remodel.toml --table loans --repair
    ///   remodel verify -c remodel.toml --since 0/3A000000 --json
    #[command(verbatim_doc_comment)]
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
    /// Pause the running daemon (SIGUSR1 via its pidfile).
    Pause {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Resume the running daemon (SIGUSR2 via its pidfile).
    Resume {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Throwaway clusters, a sample schema, a live writer and the daemon, then a summary.
    Demo {
        /// How long the live writer runs, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rows the writer inserts per second (roughly).
        #[arg(long, default_value_t = 500)]
        rate: u64,
    },
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
                    .with_writer(std::io::stderr),
            )
            .try_init()?;
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
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
            eprintln!("remodel: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
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
        Cmd::Check { config } => {
            let cfg = load(&config)?;
            let findings = remodel::check::run(&cfg).await;
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
        Cmd::Demo { seconds, rate } => {
            let reload = init_tracing(
                &std::env::var("REMODEL_DEMO_LOG").unwrap_or_else(|_| "remodel=info,warn".into()),
                cli.log_format.as_deref().unwrap_or("text"),
            )?;
            drop(reload);
            remodel::demo::run(remodel::demo::DemoOptions { seconds, rate }).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
