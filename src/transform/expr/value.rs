//! Runtime values and their conversions: PostgreSQL text in and out for numbers
//! (exact decimals with PostgreSQL's rounding and division scale), dates and
//! timestamps, booleans, uuids and JSON (a validating scanner that never builds a
//! tree and keeps numbers as written), plus casts. Nothing here panics on any input:
//! parsing and arithmetic are checked and slicing uses `get`.

use std::borrow::Cow;
use std::cmp::Ordering;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::json::json_valid;
use super::{EvalError, Type};

mod num;
mod time;

pub(super) use num::*;
pub(super) use time::*;

/// Largest decimal scale accepted (PostgreSQL's display limit).
const MAX_SCALE: u32 = 1000;

// ---------------------------------------------------------------- other scalar parsing

fn parse_bool(s: &str) -> Option<bool> {
    let t = s.trim().to_ascii_lowercase();
    match t.as_str() {
        "1" | "on" => Some(true),
        "0" | "of" | "off" => Some(false),
        _ if t.is_empty() => None,
        _ if "true".starts_with(&t) || "yes".starts_with(&t) => Some(true),
        _ if "false".starts_with(&t) || "no".starts_with(&t) => Some(false),
        _ => None,
    }
}

fn parse_uuid(s: &str) -> Option<String> {
    let t = s.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(t);
    let mut hex = String::with_capacity(36);
    let mut prev_dash = true;
    for c in t.chars() {
        if c == '-' && !prev_dash && hex.len().is_multiple_of(4) {
            prev_dash = true;
        } else if c.is_ascii_hexdigit() {
            hex.push(c.to_ascii_lowercase());
            prev_dash = false;
        } else {
            return None;
        }
    }
    if hex.len() != 32 || prev_dash {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

// ---------------------------------------------------------------- values

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val<'a> {
    Null,
    Text(Cow<'a, str>),
    Int(i64),
    Num(Num),
    Bool(bool),
    Date(NaiveDate),
    Ts(Ts),
    Json(Cow<'a, str>),
}

impl<'a> Val<'a> {
    pub(super) fn borrowed(&self) -> Val<'_> {
        match self {
            Val::Text(c) => Val::Text(Cow::Borrowed(c)),
            Val::Json(c) => Val::Json(Cow::Borrowed(c)),
            Val::Null => Val::Null,
            Val::Int(i) => Val::Int(*i),
            Val::Num(n) => Val::Num(*n),
            Val::Bool(b) => Val::Bool(*b),
            Val::Date(d) => Val::Date(*d),
            Val::Ts(t) => Val::Ts(*t),
        }
    }

    pub(super) fn into_static(self) -> Val<'static> {
        match self {
            Val::Text(c) => Val::Text(Cow::Owned(c.into_owned())),
            Val::Json(c) => Val::Json(Cow::Owned(c.into_owned())),
            Val::Null => Val::Null,
            Val::Int(i) => Val::Int(i),
            Val::Num(n) => Val::Num(n),
            Val::Bool(b) => Val::Bool(b),
            Val::Date(d) => Val::Date(d),
            Val::Ts(t) => Val::Ts(t),
        }
    }

    /// The PostgreSQL input-compatible text of a value; None for NULL.
    pub(super) fn into_text(self) -> Option<Cow<'a, str>> {
        Some(match self {
            Val::Null => return None,
            Val::Text(s) | Val::Json(s) => s,
            Val::Int(i) => Cow::Owned(i.to_string()),
            Val::Num(n) => Cow::Owned(n.to_string()),
            Val::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Val::Date(d) => Cow::Owned(fmt_date(d)),
            Val::Ts(t) => Cow::Owned(fmt_ts(t)),
        })
    }

    pub(super) fn as_num(&self) -> Option<Num> {
        match self {
            Val::Int(i) => Some(Num::Dec(i128::from(*i), 0)),
            Val::Num(n) => Some(*n),
            _ => None,
        }
    }
}

pub(super) fn compare(a: &Val, b: &Val) -> Result<Ordering, EvalError> {
    Ok(match (a, b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::Text(x), Val::Text(y)) | (Val::Json(x), Val::Json(y)) => x.as_ref().cmp(y.as_ref()),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        (Val::Date(x), Val::Date(y)) => x.cmp(y),
        (Val::Ts(x), Val::Ts(y)) => x.utc().cmp(&y.utc()),
        (Val::Date(x), Val::Ts(y)) => Ts::from_date(*x).utc().cmp(&y.utc()),
        (Val::Ts(x), Val::Date(y)) => x.utc().cmp(&Ts::from_date(*y).utc()),
        _ => match (a.as_num(), b.as_num()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => {
                return Err(EvalError::Internal(format!(
                    "cannot compare {a:?} with {b:?}"
                )))
            }
        },
    })
}

// ---------------------------------------------------------------- casts

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CastTarget {
    Text { max_len: Option<u32> },
    Int { bits: u8 },
    Numeric { typmod: Option<(u32, u32)> },
    Float,
    Bool,
    Date,
    Timestamp { tz: bool },
    Json,
    Uuid,
}

impl CastTarget {
    pub(super) fn name(self) -> &'static str {
        match self {
            CastTarget::Text { .. } => "text",
            CastTarget::Int { bits: 16 } => "smallint",
            CastTarget::Int { bits: 32 } => "integer",
            CastTarget::Int { .. } => "bigint",
            CastTarget::Numeric { .. } => "numeric",
            CastTarget::Float => "double precision",
            CastTarget::Bool => "boolean",
            CastTarget::Date => "date",
            CastTarget::Timestamp { tz: false } => "timestamp",
            CastTarget::Timestamp { tz: true } => "timestamp with time zone",
            CastTarget::Json => "json",
            CastTarget::Uuid => "uuid",
        }
    }

    pub(super) fn result_type(self) -> Type {
        match self {
            CastTarget::Text { .. } | CastTarget::Uuid => Type::Text,
            CastTarget::Int { .. } => Type::Int,
            CastTarget::Numeric { .. } | CastTarget::Float => Type::Numeric,
            CastTarget::Bool => Type::Bool,
            CastTarget::Date => Type::Date,
            CastTarget::Timestamp { .. } => Type::Timestamp,
            CastTarget::Json => Type::Json,
        }
    }

    /// The implicit conversion target for a type (literal coercion, unification).
    pub(super) fn of(t: Type) -> CastTarget {
        match t {
            Type::Int => CastTarget::Int { bits: 64 },
            Type::Numeric => CastTarget::Numeric { typmod: None },
            Type::Bool => CastTarget::Bool,
            Type::Date => CastTarget::Date,
            Type::Timestamp => CastTarget::Timestamp { tz: true },
            Type::Json => CastTarget::Json,
            Type::Text | Type::Null => CastTarget::Text { max_len: None },
        }
    }
}

fn apply_typmod(n: Num, (p, s): (u32, u32)) -> Result<Num, Fail> {
    let (m, sc) = match n {
        Num::Float(f) if f.is_nan() => return Ok(n),
        Num::Float(f) => match Num::from_f64(f) {
            Num::Dec(m, sc) => (m, sc),
            Num::Float(_) => return Err(Fail::OutOfRange),
        },
        Num::Dec(m, sc) => (m, sc),
    };
    let m = rescale(m, sc, s).ok_or(Fail::OutOfRange)?;
    let int_digits = pow10(s).map_or(0, |q| m.unsigned_abs() / q);
    if int_digits != 0 && int_digits.ilog10() + 1 > p.saturating_sub(s) {
        return Err(Fail::OutOfRange);
    }
    Ok(Num::Dec(m, s))
}

/// Converts a value to a cast target, PostgreSQL style.
pub(super) fn cast<'a>(v: &Val<'a>, to: CastTarget) -> Result<Val<'a>, Fail> {
    use Fail::{Invalid, OutOfRange};
    let text = |v: &Val<'a>| match v {
        Val::Text(s) => Some(s.clone()),
        _ => None,
    };
    Ok(match (to, v) {
        (_, Val::Null) => Val::Null,
        (CastTarget::Text { max_len }, v) => {
            let s = v.clone().into_text().unwrap_or_default();
            match max_len.and_then(|n| s.char_indices().nth(n as usize)) {
                Some((cut, _)) => Val::Text(Cow::Owned(s[..cut].to_owned())),
                None => Val::Text(s),
            }
        }
        (CastTarget::Int { bits }, v) => {
            let i = match v {
                Val::Int(i) => *i,
                Val::Num(n) => n.to_i64()?,
                Val::Bool(b) => i64::from(*b),
                Val::Text(s) => s.trim().parse().map_err(|_| Invalid)?,
                _ => return Err(Invalid),
            };
            let lim = (1i64 << (bits.clamp(2, 64) - 1)).wrapping_sub(1);
            if bits < 64 && (i > lim || i < -lim - 1) {
                return Err(OutOfRange);
            }
            Val::Int(i)
        }
        (CastTarget::Numeric { typmod }, v) => {
            let n = match v {
                Val::Text(s) => parse_num(s)?,
                Val::Num(Num::Float(f)) => Num::from_f64(*f),
                v => v.as_num().ok_or(Invalid)?,
            };
            Val::Num(match typmod {
                Some(pm) => apply_typmod(n, pm)?,
                None => n,
            })
        }
        (CastTarget::Float, v) => {
            let n = match v {
                Val::Text(s) => parse_num(s)?,
                v => v.as_num().ok_or(Invalid)?,
            };
            Val::Num(Num::Float(n.to_f64()))
        }
        (CastTarget::Bool, Val::Bool(b)) => Val::Bool(*b),
        (CastTarget::Bool, Val::Int(i)) => Val::Bool(*i != 0),
        (CastTarget::Bool, Val::Text(s)) => Val::Bool(parse_bool(s).ok_or(Invalid)?),
        (CastTarget::Date, Val::Date(d)) => Val::Date(*d),
        (CastTarget::Date, Val::Ts(t)) => Val::Date(t.date()),
        (CastTarget::Date, Val::Text(s)) => Val::Date(parse_date(s).ok_or(Invalid)?),
        (CastTarget::Timestamp { tz }, v) => {
            let t = match v {
                Val::Ts(t) => *t,
                Val::Date(d) => Ts::from_date(*d),
                Val::Text(s) => parse_ts(s).ok_or(Invalid)?,
                _ => return Err(Invalid),
            };
            Val::Ts(Ts {
                off: t.off.filter(|_| tz),
                ..t
            })
        }
        (CastTarget::Json, Val::Json(j)) => Val::Json(j.clone()),
        (CastTarget::Json, Val::Text(s)) if json_valid(s) => Val::Json(s.clone()),
        (CastTarget::Uuid, v) => Val::Text(Cow::Owned(
            text(v).and_then(|s| parse_uuid(&s)).ok_or(Invalid)?,
        )),
        _ => return Err(Invalid),
    })
}

/// Parses a column's PostgreSQL text output as its static type.
pub(super) fn read_col<'a>(raw: &'a str, ty: Type) -> Result<Val<'a>, Fail> {
    Ok(match ty {
        Type::Text | Type::Null => Val::Text(Cow::Borrowed(raw)),
        Type::Json => Val::Json(Cow::Borrowed(raw)),
        Type::Int => Val::Int(raw.trim().parse().map_err(|_| Fail::Invalid)?),
        Type::Numeric => Val::Num(parse_num(raw)?),
        Type::Bool => Val::Bool(parse_bool(raw).ok_or(Fail::Invalid)?),
        Type::Date => Val::Date(parse_date(raw).ok_or(Fail::Invalid)?),
        Type::Timestamp => Val::Ts(parse_ts(raw).ok_or(Fail::Invalid)?),
    })
}
