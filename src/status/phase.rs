//! The migration's phase in `remodel status`: where the switch stands, the reverse stream's
//! position and lag, and the last switch's timings.

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::Config;
use crate::lsn::Lsn;
use crate::state::{Phase, StateSchema};

#[derive(Debug, Serialize)]
pub struct PhaseStatus {
    /// `forward`, `cutting_over`, `switched`, `falling_back`, `complete`.
    pub phase: String,
    /// Which database refuses the app's writes: `none`, `old`, `new`.
    pub fenced: String,
    /// What the daemon streams in this phase.
    pub streaming: String,
    pub reverse_slot: Option<String>,
    /// OLD's and NEW's positions at the last switch.
    pub forward_lsn: Option<String>,
    pub reverse_lsn: Option<String>,
    /// The reverse stream: applied on OLD, and how far behind NEW's WAL.
    pub reverse_applied_lsn: Option<String>,
    pub reverse_lag_bytes: Option<u64>,
    /// The last switch's step timings in ms (`unavailable`: fence to hook done).
    pub last_switch_ms: Option<serde_json::Value>,
}

impl PhaseStatus {
    pub fn line(&self) -> String {
        let mut s = format!(
            "phase     {} ({}) · fenced {}",
            self.phase, self.streaming, self.fenced
        );
        if let (Some(f), Some(r)) = (&self.forward_lsn, &self.reverse_lsn) {
            s.push_str(&format!(" · last switch at OLD {f}, NEW {r}"));
        }
        if let Some(a) = &self.reverse_applied_lsn {
            s.push_str(&format!(
                "\nreverse   applied on OLD {a} · lag {}",
                self.reverse_lag_bytes
                    .map(|b| format!("{b} bytes"))
                    .unwrap_or_else(|| "-".into())
            ));
        }
        if let Some(t) = &self.last_switch_ms {
            s.push_str(&format!("\nswitch    last one took (ms) {t}"));
        }
        s
    }
}

pub async fn gather(config: &Config, new: &Client) -> Result<PhaseStatus, String> {
    let state = StateSchema::new(&config.target.state_schema);
    let rec = state.phase(new).await.map_err(|e| e.to_string())?;
    let streaming = match rec.phase {
        Phase::Forward | Phase::CuttingOver => "forward streaming OLD → NEW",
        Phase::Switched | Phase::FallingBack if rec.reverse_slot.is_some() => {
            "reverse streaming NEW → OLD"
        }
        Phase::Switched | Phase::FallingBack => "switched without a fallback stream",
        Phase::Complete => "complete: nothing streams",
    };
    let mut st = PhaseStatus {
        phase: rec.phase.as_str().into(),
        fenced: rec.fenced.as_str().into(),
        streaming: streaming.into(),
        reverse_slot: rec.reverse_slot.clone(),
        forward_lsn: rec.forward_lsn.map(|l| l.to_string()),
        reverse_lsn: rec.reverse_lsn.map(|l| l.to_string()),
        reverse_applied_lsn: None,
        reverse_lag_bytes: None,
        last_switch_ms: rec.timings.clone(),
    };
    if let (true, Some(slot)) = (rec.phase.reverse(), &rec.reverse_slot) {
        let old = config
            .source_conn()
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let applied = state
            .progress(&old, slot)
            .await
            .map_err(|e| e.to_string())?
            .map(|p| p.applied_lsn);
        let end: Option<Lsn> = new
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .ok()
            .and_then(|r| r.get::<_, String>(0).parse().ok());
        st.reverse_applied_lsn = applied.map(|a| a.to_string());
        st.reverse_lag_bytes = match (applied, end) {
            (Some(a), Some(e)) => Some(e.bytes_since(a)),
            _ => None,
        };
    }
    Ok(st)
}
