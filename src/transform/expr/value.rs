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

/// Largest decimal scale accepted (PostgreSQL's display limit).
const MAX_SCALE: u32 = 1000;

// ---------------------------------------------------------------- numbers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A numeric value: an exact decimal `m * 10^-scale`, or a float for NaN,
/// ±Infinity and exponent-form values too large for 38 digits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    Dec(i128, u32),
    Float(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    Invalid,
    OutOfRange,
    DivZero,
}

fn pow10(n: u32) -> Option<u128> {
    10u128.checked_pow(n)
}

fn to_i128(neg: bool, u: u128) -> Option<i128> {
    let v = i128::try_from(u).ok()?;
    Some(if neg { -v } else { v })
}

/// `n / d` rounded half away from zero (d > 0).
fn div_round(n: u128, d: u128) -> Option<u128> {
    let (q, r) = (n / d, n % d);
    if r >= d - r {
        q.checked_add(1)
    } else {
        Some(q)
    }
}

/// Rescales an exact decimal to `to` digits, rounding half away from zero.
fn rescale(m: i128, s: u32, to: u32) -> Option<i128> {
    let u = m.unsigned_abs();
    let r = if to >= s {
        u.checked_mul(pow10(to - s)?)?
    } else {
        match pow10(s - to) {
            Some(p) => div_round(u, p)?,
            None => 0,
        }
    };
    to_i128(m < 0, r)
}

impl Num {
    pub(super) fn to_f64(self) -> f64 {
        match self {
            Num::Float(f) => f,
            Num::Dec(..) => self.to_string().parse().unwrap_or(f64::NAN),
        }
    }

    fn from_f64(f: f64) -> Num {
        if f.is_finite() {
            // Rust prints floats without an exponent, shortest round-trip form.
            if let Ok(n @ Num::Dec(..)) = parse_num(&f.to_string()) {
                return n;
            }
        }
        Num::Float(f)
    }

    pub(super) fn cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Dec(a, sa), Num::Dec(b, sb)) => {
                let s = sa.max(sb);
                match (rescale(a, sa, s), rescale(b, sb, s)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    // Only the side with the larger magnitude can overflow.
                    (None, _) => 0.cmp(&a).reverse(),
                    (_, None) => 0.cmp(&b),
                }
            }
            (a, b) => {
                let (x, y) = (a.to_f64(), b.to_f64());
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                }
            }
        }
    }

    pub(super) fn arith(self, op: ArithOp, other: Num) -> Result<Num, Fail> {
        let (Num::Dec(a, sa), Num::Dec(b, sb)) = (self, other) else {
            let (x, y) = (self.to_f64(), other.to_f64());
            if matches!(op, ArithOp::Div | ArithOp::Mod) && y == 0.0 {
                return Err(Fail::DivZero);
            }
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                ArithOp::Mod => x % y,
            };
            if r.is_infinite() && x.is_finite() && y.is_finite() {
                return Err(Fail::OutOfRange);
            }
            return Ok(Num::Float(r));
        };
        if matches!(op, ArithOp::Div | ArithOp::Mod) && b == 0 {
            return Err(Fail::DivZero);
        }
        let s = sa.max(sb);
        let r = match op {
            ArithOp::Mul => a.checked_mul(b).and_then(|m| {
                // Keep the scale invariant (<= MAX_SCALE) by rounding extreme products.
                let sc = sa.saturating_add(sb);
                let to = sc.min(MAX_SCALE);
                Some(Num::Dec(rescale(m, sc, to)?, to))
            }),
            ArithOp::Div => dec_div(a, sa, b, sb),
            _ => {
                let (x, y) = (
                    rescale(a, sa, s).ok_or(Fail::OutOfRange)?,
                    rescale(b, sb, s).ok_or(Fail::OutOfRange)?,
                );
                let m = match op {
                    ArithOp::Add => x.checked_add(y),
                    ArithOp::Sub => x.checked_sub(y),
                    _ => x.checked_rem(y),
                };
                m.map(|m| Num::Dec(m, s))
            }
        };
        r.ok_or(Fail::OutOfRange)
    }

    pub(super) fn neg(self) -> Option<Num> {
        match self {
            Num::Dec(m, s) => Some(Num::Dec(m.checked_neg()?, s)),
            Num::Float(f) => Some(Num::Float(-f)),
        }
    }

    pub(super) fn abs(self) -> Option<Num> {
        match self {
            Num::Dec(m, s) => Some(Num::Dec(m.checked_abs()?, s)),
            Num::Float(f) => Some(Num::Float(f.abs())),
        }
    }

    /// Rounds to `digits` decimal places (negative: to tens, hundreds, ...).
    pub(super) fn round(self, digits: i64) -> Option<Num> {
        let (m, s) = match self {
            Num::Dec(m, s) => (m, s),
            Num::Float(f) => match Num::from_f64(f) {
                Num::Dec(m, s) => (m, s),
                float => return Some(float),
            },
        };
        let d = digits.clamp(-(MAX_SCALE as i64), MAX_SCALE as i64);
        if d >= 0 {
            return Some(Num::Dec(rescale(m, s, d as u32)?, d as u32));
        }
        // Round to a multiple of 10^up: q = round(m / 10^(s + up)), result q * 10^up.
        let up = d.unsigned_abs() as u32;
        let q = match pow10(s + up) {
            Some(p) => div_round(m.unsigned_abs(), p)?,
            None => 0,
        };
        let q = q.checked_mul(pow10(up)?)?;
        Some(Num::Dec(to_i128(m < 0, q)?, 0))
    }

    fn to_i64(self) -> Result<i64, Fail> {
        let v = match self {
            Num::Dec(m, s) => rescale(m, s, 0).ok_or(Fail::OutOfRange)?,
            Num::Float(f) if f.is_finite() && f.abs() < 9.3e18 => f.round_ties_even() as i128,
            Num::Float(_) => return Err(Fail::OutOfRange),
        };
        i64::try_from(v).map_err(|_| Fail::OutOfRange)
    }

    /// Removes trailing fractional zeros (`56.789000` to `56.789`).
    pub(super) fn trimmed(self) -> Num {
        match self {
            Num::Dec(mut m, mut s) => {
                while s > 0 && m % 10 == 0 {
                    m /= 10;
                    s -= 1;
                }
                Num::Dec(m, s)
            }
            f => f,
        }
    }
}

/// PostgreSQL's division: result scale from `select_div_scale` (at least 16
/// significant digits), rounded half away from zero.
fn dec_div(a: i128, sa: u32, b: i128, sb: u32) -> Option<Num> {
    // Weight and first digit of each operand in PostgreSQL's base-10000 representation.
    let info = |m: i128, s: u32| -> (i64, u128) {
        let u = m.unsigned_abs();
        if u == 0 {
            return (0, 0);
        }
        let lead = u.ilog10() as i64 - s as i64;
        let w = lead.div_euclid(4);
        let shift = s as i64 + 4 * w;
        let first = if shift >= 0 {
            pow10(shift as u32).map_or(0, |p| u / p)
        } else {
            u.checked_mul(10u128.pow((-shift).min(3) as u32))
                .unwrap_or(0)
        };
        (w, first)
    };
    let ((w1, f1), (w2, f2)) = (info(a, sa), info(b, sb));
    let qweight = w1 - w2 - i64::from(f1 <= f2);
    let rscale = (16 - qweight * 4)
        .max(sa as i64)
        .max(sb as i64)
        .clamp(0, MAX_SCALE as i64) as u32;
    let k = rscale.checked_add(sb)?.checked_sub(sa)?;
    let (n, d) = (a.unsigned_abs(), b.unsigned_abs());
    let q = match pow10(k).and_then(|p| n.checked_mul(p)) {
        Some(nn) => div_round(nn, d)?,
        None => {
            let (mut q, mut r) = (n / d, n % d);
            for _ in 0..k {
                let r10 = r.checked_mul(10)?;
                q = q.checked_mul(10)?.checked_add(r10 / d)?;
                r = r10 % d;
            }
            if r >= d - r {
                q.checked_add(1)?
            } else {
                q
            }
        }
    };
    Some(Num::Dec(to_i128((a < 0) != (b < 0), q)?, rscale))
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Num::Float(x) if x.is_nan() => f.write_str("NaN"),
            Num::Float(x) if x.is_infinite() => {
                f.write_str(if x > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Num::Float(x) => write!(f, "{x}"),
            Num::Dec(m, s) => {
                let digits = m.unsigned_abs().to_string();
                let s = s as usize;
                if m < 0 {
                    f.write_str("-")?;
                }
                if s == 0 {
                    f.write_str(&digits)
                } else if digits.len() > s {
                    let (i, frac) = digits.split_at(digits.len() - s);
                    write!(f, "{i}.{frac}")
                } else {
                    write!(f, "0.{}{digits}", "0".repeat(s - digits.len()))
                }
            }
        }
    }
}

/// Parses PostgreSQL numeric / float text: `12.50`, `-1.5e-07`, `NaN`, `Infinity`.
pub(super) fn parse_num(s: &str) -> Result<Num, Fail> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    match lower.trim_start_matches('+') {
        "nan" => return Ok(Num::Float(f64::NAN)),
        "infinity" | "inf" => return Ok(Num::Float(f64::INFINITY)),
        "-infinity" | "-inf" => return Ok(Num::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    let b = t.as_bytes();
    let mut i = 0;
    let neg = b.first() == Some(&b'-');
    if matches!(b.first(), Some(b'-' | b'+')) {
        i = 1;
    }
    let (mut m, mut scale, mut digits, mut dot, mut overflow) = (0u128, 0i64, 0, false, false);
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                match m
                    .checked_mul(10)
                    .and_then(|x| x.checked_add(u128::from(c - b'0')))
                {
                    Some(x) => m = x,
                    None => overflow = true,
                }
                if dot {
                    scale += 1;
                }
            }
            b'.' if !dot => dot = true,
            _ => break,
        }
        i += 1;
    }
    if digits == 0 {
        return Err(Fail::Invalid);
    }
    let has_exp = matches!(b.get(i), Some(b'e' | b'E'));
    if has_exp {
        i += 1;
        let eneg = b.get(i) == Some(&b'-');
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let (mut e, mut edigits) = (0i64, 0);
        while let Some(c @ b'0'..=b'9') = b.get(i) {
            e = (e * 10 + i64::from(c - b'0')).min(1_000_000);
            edigits += 1;
            i += 1;
        }
        if edigits == 0 {
            return Err(Fail::Invalid);
        }
        scale -= if eneg { -e } else { e };
    }
    if i != b.len() {
        return Err(Fail::Invalid);
    }
    if scale < 0 && !overflow {
        match u32::try_from(-scale)
            .ok()
            .and_then(pow10)
            .and_then(|p| m.checked_mul(p))
        {
            Some(x) => (m, scale) = (x, 0),
            None => overflow = true,
        }
    }
    match (overflow || scale > MAX_SCALE as i64, to_i128(neg, m)) {
        (false, Some(v)) => Ok(Num::Dec(v, scale as u32)),
        _ if has_exp => t.parse::<f64>().map(Num::Float).map_err(|_| Fail::Invalid),
        _ => Err(Fail::OutOfRange),
    }
}

// ---------------------------------------------------------------- dates and times

/// A timestamp: local wall-clock time plus the UTC offset it was written with
/// (None for `timestamp without time zone`). `NaiveDateTime::MAX/MIN` are ±infinity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ts {
    pub local: NaiveDateTime,
    pub off: Option<i32>,
}

impl Ts {
    pub(super) fn from_date(d: NaiveDate) -> Ts {
        let local = match d {
            NaiveDate::MAX => NaiveDateTime::MAX,
            NaiveDate::MIN => NaiveDateTime::MIN,
            d => d.and_time(NaiveTime::MIN),
        };
        Ts { local, off: None }
    }

    pub(super) fn date(self) -> NaiveDate {
        match self.local {
            NaiveDateTime::MAX => NaiveDate::MAX,
            NaiveDateTime::MIN => NaiveDate::MIN,
            l => l.date(),
        }
    }

    pub(super) fn infinite(self) -> Option<f64> {
        match self.local {
            NaiveDateTime::MAX => Some(f64::INFINITY),
            NaiveDateTime::MIN => Some(f64::NEG_INFINITY),
            _ => None,
        }
    }

    /// UTC instant (timestamps without time zone count as UTC).
    pub(super) fn utc(self) -> NaiveDateTime {
        match self.off {
            Some(o) if self.infinite().is_none() => self
                .local
                .checked_sub_signed(Duration::seconds(o.into()))
                .unwrap_or(self.local),
            _ => self.local,
        }
    }
}

fn infinity(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => Some(true),
        "-infinity" => Some(false),
        _ => None,
    }
}

/// Splits a trailing ` BC` / ` AD` era marker.
fn strip_era(t: &str) -> (&str, bool) {
    let n = t.len();
    match t.get(n.saturating_sub(3)..).map(str::to_ascii_uppercase) {
        Some(e) if e == " BC" => (t[..n - 3].trim_end(), true),
        Some(e) if e == " AD" => (t[..n - 3].trim_end(), false),
        _ => (t, false),
    }
}

fn digits_prefix(s: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    if n < min {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

/// `YYYY-MM-DD` prefix, returns the date and the rest of the text.
fn ymd(s: &str, bc: bool) -> Option<(NaiveDate, &str)> {
    let (y, r) = digits_prefix(s, 1, 7)?;
    let (m, r) = digits_prefix(r.strip_prefix('-')?, 1, 2)?;
    let (d, r) = digits_prefix(r.strip_prefix('-')?, 1, 2)?;
    if y == 0 {
        return None;
    }
    let y = if bc { 1 - y } else { y };
    Some((
        NaiveDate::from_ymd_opt(y.try_into().ok()?, m.try_into().ok()?, d.try_into().ok()?)?,
        r,
    ))
}

pub(super) fn parse_date(s: &str) -> Option<NaiveDate> {
    let t = s.trim();
    if let Some(pos) = infinity(t) {
        return Some(if pos { NaiveDate::MAX } else { NaiveDate::MIN });
    }
    let (body, bc) = strip_era(t);
    let (d, rest) = ymd(body, bc)?;
    if rest.trim().is_empty() {
        Some(d)
    } else {
        parse_ts(s).map(Ts::date)
    }
}

fn parse_offset(s: &str) -> Option<i32> {
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let neg = s.starts_with('-');
    let r = s.strip_prefix(['+', '-'])?;
    let (h, mut r) = digits_prefix(r, 1, 2)?;
    let (mut m, mut sec) = (0, 0);
    if let Some((v, rest)) = digits_prefix(r.strip_prefix(':').unwrap_or(r), 2, 2) {
        (m, r) = (v, rest);
        if let Some((v, rest)) = digits_prefix(r.strip_prefix(':').unwrap_or(r), 2, 2) {
            (sec, r) = (v, rest);
        }
    }
    if !r.is_empty() || h > 15 || m > 59 || sec > 59 {
        return None;
    }
    let total = (h * 3600 + m * 60 + sec) as i32;
    Some(if neg { -total } else { total })
}

pub(super) fn parse_ts(s: &str) -> Option<Ts> {
    let t = s.trim();
    if let Some(pos) = infinity(t) {
        let local = if pos {
            NaiveDateTime::MAX
        } else {
            NaiveDateTime::MIN
        };
        return Some(Ts { local, off: None });
    }
    let (body, bc) = strip_era(t);
    let (date, rest) = ymd(body, bc)?;
    let midnight = date.and_time(NaiveTime::MIN);
    if rest.trim().is_empty() {
        return Some(Ts {
            local: midnight,
            off: None,
        });
    }
    let rest = rest.strip_prefix([' ', 'T', 't'])?.trim_start();
    let (h, r) = digits_prefix(rest, 1, 2)?;
    let (m, mut r) = digits_prefix(r.strip_prefix(':')?, 2, 2)?;
    let (mut sec, mut micros) = (0, 0);
    if let Some(after) = r.strip_prefix(':') {
        (sec, r) = digits_prefix(after, 2, 2)?;
        if let Some(frac) = r.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            let digits = &frac[..n];
            for i in 0..6 {
                micros = micros * 10 + digits.as_bytes().get(i).map_or(0, |d| i64::from(d - b'0'));
            }
            if digits.as_bytes().get(6).is_some_and(|d| *d >= b'5') {
                micros += 1;
            }
            r = &frac[n..];
        }
    }
    if h > 24 || m > 59 || sec > 60 || (h == 24 && (m, sec, micros) != (0, 0, 0)) {
        return None;
    }
    let r = r.trim();
    let off = if r.is_empty() {
        None
    } else {
        Some(parse_offset(r)?)
    };
    let total = ((h * 60 + m) * 60 + sec) * 1_000_000 + micros;
    let local = midnight.checked_add_signed(Duration::microseconds(total))?;
    Some(Ts { local, off })
}

fn push_ymd(out: &mut String, d: NaiveDate) -> bool {
    let y = d.year();
    let shown = if y <= 0 { 1 - y } else { y };
    out.push_str(&format!("{shown:04}-{:02}-{:02}", d.month(), d.day()));
    y <= 0
}

fn fmt_date(d: NaiveDate) -> String {
    match d {
        NaiveDate::MAX => "infinity".into(),
        NaiveDate::MIN => "-infinity".into(),
        d => {
            let mut out = String::with_capacity(10);
            if push_ymd(&mut out, d) {
                out.push_str(" BC");
            }
            out
        }
    }
}

fn fmt_ts(t: Ts) -> String {
    match t.infinite() {
        Some(x) if x > 0.0 => return "infinity".into(),
        Some(_) => return "-infinity".into(),
        None => {}
    }
    let mut out = String::with_capacity(32);
    let bc = push_ymd(&mut out, t.local.date());
    let l = t.local;
    out.push_str(&format!(
        " {:02}:{:02}:{:02}",
        l.hour(),
        l.minute(),
        l.second()
    ));
    let micros = l.nanosecond() / 1000;
    if micros != 0 {
        out.push_str(format!(".{micros:06}").trim_end_matches('0'));
    }
    if let Some(o) = t.off {
        let a = o.unsigned_abs();
        out.push_str(&format!("{}{:02}", if o < 0 { '-' } else { '+' }, a / 3600));
        if a % 3600 != 0 {
            out.push_str(&format!(":{:02}", a / 60 % 60));
            if a % 60 != 0 {
                out.push_str(&format!(":{:02}", a % 60));
            }
        }
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

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
