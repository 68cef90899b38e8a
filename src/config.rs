//! Configuration: TOML file + `REMODEL__SECTION__KEY` environment overrides, via the `config` crate.
//!
//! Owns the settings' names, defaults and validation. Unknown keys are errors. Must never log
//! or display a connection password: URLs are shown through [`ConnInfo`]'s redacting `Display`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::source::conninfo::{ConnInfo, ConnInfoError};
use crate::transform::mapping::TableMapping;

mod switch;
pub use switch::SwitchConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `config` crate's error already names its cause in its message (and again as its
    /// `source()`), so it is shown, not chained: `{:#}` would print the cause twice.
    #[error("config {path}: {error}")]
    Load {
        path: String,
        error: config::ConfigError,
    },
    #[error("config {path}: {key}: {source}")]
    Url {
        path: String,
        key: &'static str,
        #[source]
        source: ConnInfoError,
    },
    #[error("config {path}: {key} = {value:?}: {why}")]
    Invalid {
        path: String,
        key: &'static str,
        value: String,
        why: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub target: TargetConfig,
    #[serde(default)]
    pub apply: ApplyConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub backfill: BackfillConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub switch: SwitchConfig,
    /// Table mappings. Empty: every published table maps unchanged to the same-named target table.
    #[serde(default)]
    pub tables: Vec<TableMapping>,
    /// Rust transforms a library user registered (named by `transform = ...` in `[[tables]]`).
    #[serde(skip)]
    pub transforms: crate::transform::custom::Registry,
    /// Child tables whose changes rebuild a list column (the reverse stream's inverse of a
    /// split; set by `switch::reverse`, never by a file).
    #[serde(skip)]
    pub rebuilds: Vec<std::sync::Arc<crate::transform::rebuild::RebuildPlan>>,
    /// Key-map pairs the reverse stream registers on OLD for the rows it applies (set by
    /// `switch::reverse`, never by a file).
    #[serde(skip)]
    pub registrations: Vec<crate::transform::inverse::Registration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub url: String,
    #[serde(default = "default_name")]
    pub slot: String,
    #[serde(default = "default_name")]
    pub publication: String,
    /// Tables for a newly created publication; empty means FOR ALL TABLES.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Standby status update interval (ms). Keep well under the server's wal_sender_timeout.
    #[serde(default = "default_status_interval")]
    pub status_interval_ms: u64,
    /// Events buffered between source and apply (bounds memory together with apply.batch_rows).
    #[serde(default = "default_channel")]
    pub channel_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub url: String,
    #[serde(default = "default_name")]
    pub state_schema: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// Row changes per set-based flush, and the target transaction size that triggers a commit.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Longest a committed source transaction waits before its target transaction commits.
    #[serde(default = "default_batch_delay")]
    pub max_batch_delay_ms: u64,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            batch_rows: default_batch_rows(),
            max_batch_delay_ms: default_batch_delay(),
        }
    }
}

/// How long remodel waits on a database before it treats the connection as lost (a silent
/// network cut, a black-holed route, a hung server) and reconnects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Connecting (TCP + TLS + authentication), when the URL has no `connect_timeout`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Silence on the replication connection. remodel asks the server for a keepalive after
    /// half of it, so an idle source is not silent (like PostgreSQL's wal_receiver_timeout).
    #[serde(default = "default_receive_timeout")]
    pub receive_timeout_ms: u64,
    /// One unit of SQL work: an apply step (a batch or commit), a backfill chunk, a lag
    /// probe. Also the TCP user timeout and keepalive budget of SQL connections. Must exceed
    /// the longest legitimate statement, lock waits on the target included.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            connect_timeout_ms: default_connect_timeout(),
            receive_timeout_ms: default_receive_timeout(),
            stall_timeout_ms: default_stall_timeout(),
        }
    }
}

fn default_connect_timeout() -> u64 {
    10_000
}
fn default_receive_timeout() -> u64 {
    60_000
}
fn default_stall_timeout() -> u64 {
    120_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_listen(),
            enabled: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `remodel=debug`. Reloaded on SIGHUP.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default = "default_format")]
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: default_format(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// Copy the rows that existed before the slot, inside `remodel run`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Connections importing each pass's snapshot; each copies one table at a time.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Rows per chunk (one COPY and one guarded merge, committed with the cursor).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u64,
    /// A pass ends after this long and the next continues with a new snapshot ("10m", "30s").
    #[serde(default = "default_snapshot_age")]
    pub max_snapshot_age: String,
    /// Rows per second over all workers; 0 = unlimited. Reloaded on SIGHUP.
    #[serde(default)]
    pub max_rows_per_second: u64,
    /// Back off while the stream is further behind than this ("64MB"). Reloaded on SIGHUP.
    #[serde(default = "default_max_lag")]
    pub max_lag: String,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            enabled: true,
            workers: default_workers(),
            chunk_rows: default_chunk_rows(),
            max_snapshot_age: default_snapshot_age(),
            max_rows_per_second: 0,
            max_lag: default_max_lag(),
        }
    }
}

fn default_workers() -> usize {
    2
}
fn default_chunk_rows() -> u64 {
    20_000
}
fn default_snapshot_age() -> String {
    "10m".into()
}
fn default_max_lag() -> String {
    "64MB".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Verify continuously inside `remodel run`, this often ("10m"); unset = only `remodel verify`.
    #[serde(default)]
    pub interval: Option<String>,
    /// Rows per table each continuous run samples; 0 = a full pass every time.
    #[serde(default = "default_verify_sample")]
    pub sample: u64,
    /// Source rows per compared chunk (staged and compared in one target transaction).
    #[serde(default = "default_verify_chunk")]
    pub chunk_rows: u64,
    /// Re-check rounds for rows the stream wrote after a round's snapshot.
    #[serde(default = "default_verify_rounds")]
    pub rounds: u32,
    /// Source keys kept per table for re-checks and repairs (bounds memory).
    #[serde(default = "default_verify_max_keys")]
    pub max_keys: usize,
    /// Differing rows shown per table.
    #[serde(default = "default_verify_show")]
    pub show: usize,
    /// How long to wait for the stream to apply everything before a snapshot ("2m").
    #[serde(default = "default_verify_wait")]
    pub stream_wait: String,
    /// Compare plain column mappings by per-chunk hashes computed in both databases (rows
    /// leave the servers only for chunks that differ). Off: every row is compared in SQL.
    #[serde(default = "default_true")]
    pub hash: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            interval: None,
            sample: default_verify_sample(),
            chunk_rows: default_verify_chunk(),
            rounds: default_verify_rounds(),
            max_keys: default_verify_max_keys(),
            show: default_verify_show(),
            stream_wait: default_verify_wait(),
            hash: true,
        }
    }
}

fn default_verify_sample() -> u64 {
    1000
}
fn default_verify_chunk() -> u64 {
    10_000
}
fn default_verify_rounds() -> u32 {
    5
}
fn default_verify_max_keys() -> usize {
    100_000
}
fn default_verify_show() -> usize {
    10
}
fn default_verify_wait() -> String {
    "2m".into()
}

/// "500ms", "30s", "10m", "1h", or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// "64MB", "512kB", "1GB", or plain bytes (powers of 1024, as PostgreSQL's units).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Where `run` writes its pid for `remodel pause` / `resume`.
    pub pidfile: Option<PathBuf>,
}

fn default_name() -> String {
    "remodel".into()
}
fn default_status_interval() -> u64 {
    1000
}
fn default_channel() -> usize {
    8192
}
fn default_batch_rows() -> usize {
    5000
}
fn default_batch_delay() -> u64 {
    100
}
fn default_listen() -> String {
    "127.0.0.1:9898".into()
}
fn default_true() -> bool {
    true
}
fn default_level() -> String {
    "info".into()
}
fn default_format() -> String {
    "text".into()
}

impl Config {
    /// What compiling the plan against the live schemas needs ([`crate::transform::live`]).
    pub fn live(&self) -> crate::transform::live::Live<'_> {
        crate::transform::live::Live {
            publication: &self.source.publication,
            tables: &self.tables,
            registry: &self.transforms,
            state_schema: &self.target.state_schema,
            rebuilds: &self.rebuilds,
        }
    }

    /// Load a TOML file with environment overrides (`REMODEL__SOURCE__URL`, ...).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let load = |error| ConfigError::Load {
            path: shown.clone(),
            error,
        };
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("REMODEL")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(load)?;
        let cfg: Config = raw.try_deserialize().map_err(load)?;
        cfg.validate(&shown)?;
        Ok(cfg)
    }

    /// Parse TOML text (no environment), for tests and `demo`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|error| ConfigError::Load {
                path: "<inline>".into(),
                error,
            })?;
        let cfg: Config = raw.try_deserialize().map_err(|error| ConfigError::Load {
            path: "<inline>".into(),
            error,
        })?;
        cfg.validate("<inline>")?;
        Ok(cfg)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |key, value: &str, why: &str| ConfigError::Invalid {
            path: path.into(),
            key,
            value: value.into(),
            why: why.into(),
        };
        self.source_conn().map_err(|source| ConfigError::Url {
            path: path.into(),
            key: "source.url",
            source,
        })?;
        self.target_conn().map_err(|source| ConfigError::Url {
            path: path.into(),
            key: "target.url",
            source,
        })?;
        let ident_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ident_ok(&self.source.slot) {
            return Err(invalid(
                "source.slot",
                &self.source.slot,
                "slot names may use only a-z, 0-9 and _ (at most 63)",
            ));
        }
        if !ident_ok(&self.target.state_schema) {
            return Err(invalid(
                "target.state_schema",
                &self.target.state_schema,
                "use a-z, 0-9 and _ (at most 63)",
            ));
        }
        if self.source.publication.is_empty() {
            return Err(invalid("source.publication", "", "must not be empty"));
        }
        if self.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen",
                &self.metrics.listen,
                "expected host:port, e.g. 127.0.0.1:9898",
            ));
        }
        if self.log.format != "text" && self.log.format != "json" {
            return Err(invalid("log.format", &self.log.format, "use text or json"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "not a tracing filter (e.g. info, debug, remodel=debug)",
            ));
        }
        if self.apply.batch_rows == 0 {
            return Err(invalid("apply.batch_rows", "0", "must be at least 1"));
        }
        if self.source.channel_capacity == 0 {
            return Err(invalid(
                "source.channel_capacity",
                "0",
                "must be at least 1",
            ));
        }
        if parse_duration(&self.backfill.max_snapshot_age).is_none_or(|d| d.is_zero()) {
            return Err(invalid(
                "backfill.max_snapshot_age",
                &self.backfill.max_snapshot_age,
                "a duration such as 10m, 30s or 500ms",
            ));
        }
        if parse_bytes(&self.backfill.max_lag).is_none() {
            return Err(invalid(
                "backfill.max_lag",
                &self.backfill.max_lag,
                "a size such as 64MB, 512kB or 1GB",
            ));
        }
        if self.backfill.workers == 0 || self.backfill.chunk_rows == 0 {
            return Err(invalid(
                "backfill.workers / backfill.chunk_rows",
                "0",
                "must be at least 1",
            ));
        }
        if let Some(i) = &self.verify.interval {
            if parse_duration(i).is_none_or(|d| d.is_zero()) {
                return Err(invalid(
                    "verify.interval",
                    i,
                    "a duration such as 10m, 30s or 1h",
                ));
            }
        }
        if parse_duration(&self.verify.stream_wait).is_none_or(|d| d.is_zero()) {
            return Err(invalid(
                "verify.stream_wait",
                &self.verify.stream_wait,
                "a duration such as 2m or 30s",
            ));
        }
        if self.verify.chunk_rows == 0 || self.verify.max_keys == 0 {
            return Err(invalid(
                "verify.chunk_rows / verify.max_keys",
                "0",
                "must be at least 1",
            ));
        }
        let n = &self.network;
        if n.connect_timeout_ms == 0 || n.stall_timeout_ms == 0 {
            return Err(invalid(
                "network.connect_timeout_ms / network.stall_timeout_ms",
                "0",
                "must be at least 1",
            ));
        }
        if n.receive_timeout_ms < 4 * self.source.status_interval_ms.max(250) {
            return Err(invalid(
                "network.receive_timeout_ms",
                &n.receive_timeout_ms.to_string(),
                "must be at least four times source.status_interval_ms (and at least 1000): the keepalive asked for halfway must have time to arrive",
            ));
        }
        if self.source.status_interval_ms == 0 {
            return Err(invalid(
                "source.status_interval_ms",
                "0",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn source_conn(&self) -> Result<ConnInfo, ConnInfoError> {
        Ok(self.networked(ConnInfo::parse(&self.source.url)?))
    }

    pub fn target_conn(&self) -> Result<ConnInfo, ConnInfoError> {
        Ok(self.networked(ConnInfo::parse(&self.target.url)?))
    }

    fn networked(&self, mut info: ConnInfo) -> ConnInfo {
        info.connect_timeout
            .get_or_insert(Duration::from_millis(self.network.connect_timeout_ms));
        info.stall_timeout = Some(self.stall_timeout());
        info
    }

    /// `network.stall_timeout_ms`.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.network.stall_timeout_ms)
    }

    /// `network.receive_timeout_ms`.
    pub fn receive_timeout(&self) -> Duration {
        Duration::from_millis(self.network.receive_timeout_ms)
    }

    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.source.status_interval_ms)
    }

    pub fn max_snapshot_age(&self) -> Duration {
        parse_duration(&self.backfill.max_snapshot_age).unwrap_or(Duration::from_secs(600))
    }

    /// `verify.interval`, when continuous verification is on.
    pub fn verify_interval(&self) -> Option<Duration> {
        self.verify.interval.as_deref().and_then(parse_duration)
    }

    pub fn verify_stream_wait(&self) -> Duration {
        parse_duration(&self.verify.stream_wait).unwrap_or(Duration::from_secs(120))
    }

    /// The settings SIGHUP reloads.
    pub fn throttle(&self) -> crate::control::Throttle {
        crate::control::Throttle {
            backfill_rows_per_second: self.backfill.max_rows_per_second,
            backfill_max_lag_bytes: parse_bytes(&self.backfill.max_lag).unwrap_or(64 << 20),
        }
    }

    pub fn pidfile(&self) -> PathBuf {
        self.control.pidfile.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("remodel-{}.pid", self.source.slot))
        })
    }
}

#[cfg(test)]
mod tests;
