//! A library user's escape hatch: a Rust transform registered under a name and used from config.
//!
//! ```text
//! cargo run --example custom_transform -- my.toml
//! ```
//! with, in `my.toml`:
//! ```toml
//! [[tables]]
//! source = "public.people"
//! transform = "initials"          # fills target column `initials`
//! ```

use remodel::control::Control;
use remodel::metrics::Metrics;
use remodel::transform::custom::{SourceRow, Transform};

/// Fills `initials` from `first_name` and `last_name`; leaves out rows without a first name.
struct Initials;

impl Transform for Initials {
    fn reads(&self) -> Vec<String> {
        vec!["first_name".into(), "last_name".into()]
    }
    fn columns(&self) -> Vec<String> {
        vec!["initials".into()]
    }
    fn transform(&self, row: &SourceRow<'_>, out: &mut [Option<String>]) -> Result<bool, String> {
        let Some(first) = row.get("first_name").and_then(|v| v.chars().next()) else {
            return Ok(false);
        };
        let last = row.get("last_name").and_then(|v| v.chars().next());
        out[0] = Some(last.map_or(first.to_string(), |l| format!("{first}{l}")));
        Ok(true)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: custom_transform CONFIG.toml"))?;
    let mut config = remodel::Config::load(std::path::Path::new(&path))?;
    config.transforms.register("initials", Initials);
    let control = Control::new();
    let shutdown = control.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.shutdown();
    });
    remodel::pipeline::run(config, control, Metrics::new()).await?;
    Ok(())
}
