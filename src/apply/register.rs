//! Key-map pairs of rows born on NEW (the reverse stream): a row of NEW that carries its
//! original key next to the map's integer registers the pair on OLD before anything after it
//! resolves that integer, so references to the row come back as its own original key.
//!
//! Must never change a pair that exists (`keymap_register` only adds).

use crate::change::{Change, Datum, Op};
use crate::transform::inverse::Registration;

use super::{db, ApplyError, Writer};

pub async fn keys(writer: &Writer, regs: &[Registration], c: &Change) -> Result<(), ApplyError> {
    if c.op == Op::Delete || c.op == Op::Truncate {
        return Ok(());
    }
    let Some(t) = c.new.as_ref() else {
        return Ok(());
    };
    let text = |col: &str| match c.rel.column_position(col).and_then(|i| t.get(i)) {
        Some(Datum::Text(s)) => Some(s.clone()),
        _ => None,
    };
    let sql = writer.state.register_key();
    for r in regs {
        if let (Some(old), Some(new)) = (text(&r.old_col), text(&r.new_col)) {
            writer
                .client()
                .execute(&sql, &[&r.map, &old, &new])
                .await
                .map_err(db("registering a key-map pair of a row born on NEW"))?;
        }
    }
    Ok(())
}
