//! Dates and timestamps (with or without a UTC offset, ±infinity, BC dates) in PostgreSQL's
//! text forms, in and out. Nothing here panics on any input: slicing uses `get`.

use super::*;

// ---------------------------------------------------------------- dates and times

/// A timestamp: local wall-clock time plus the UTC offset it was written with
/// (None for `timestamp without time zone`). `NaiveDateTime::MAX/MIN` are ±infinity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::transform::expr) struct Ts {
    pub local: NaiveDateTime,
    pub off: Option<i32>,
}

impl Ts {
    pub(in crate::transform::expr) fn from_date(d: NaiveDate) -> Ts {
        let local = match d {
            NaiveDate::MAX => NaiveDateTime::MAX,
            NaiveDate::MIN => NaiveDateTime::MIN,
            d => d.and_time(NaiveTime::MIN),
        };
        Ts { local, off: None }
    }

    pub(in crate::transform::expr) fn date(self) -> NaiveDate {
        match self.local {
            NaiveDateTime::MAX => NaiveDate::MAX,
            NaiveDateTime::MIN => NaiveDate::MIN,
            l => l.date(),
        }
    }

    pub(in crate::transform::expr) fn infinite(self) -> Option<f64> {
        match self.local {
            NaiveDateTime::MAX => Some(f64::INFINITY),
            NaiveDateTime::MIN => Some(f64::NEG_INFINITY),
            _ => None,
        }
    }

    /// UTC instant (timestamps without time zone count as UTC).
    pub(in crate::transform::expr) fn utc(self) -> NaiveDateTime {
        match self.off {
            Some(o) if self.infinite().is_none() => self
                .local
                .checked_sub_signed(Duration::seconds(o.into()))
                .unwrap_or(self.local),
            _ => self.local,
        }
    }
}

pub(super) fn infinity(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => Some(true),
        "-infinity" => Some(false),
        _ => None,
    }
}

/// Splits a trailing ` BC` / ` AD` era marker.
pub(super) fn strip_era(t: &str) -> (&str, bool) {
    let n = t.len();
    match t.get(n.saturating_sub(3)..).map(str::to_ascii_uppercase) {
        Some(e) if e == " BC" => (t[..n - 3].trim_end(), true),
        Some(e) if e == " AD" => (t[..n - 3].trim_end(), false),
        _ => (t, false),
    }
}

pub(super) fn digits_prefix(s: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    if n < min {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

/// `YYYY-MM-DD` prefix, returns the date and the rest of the text.
pub(super) fn ymd(s: &str, bc: bool) -> Option<(NaiveDate, &str)> {
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

pub(in crate::transform::expr) fn parse_date(s: &str) -> Option<NaiveDate> {
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

pub(super) fn parse_offset(s: &str) -> Option<i32> {
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

pub(in crate::transform::expr) fn parse_ts(s: &str) -> Option<Ts> {
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

pub(super) fn push_ymd(out: &mut String, d: NaiveDate) -> bool {
    let y = d.year();
    let shown = if y <= 0 { 1 - y } else { y };
    out.push_str(&format!("{shown:04}-{:02}-{:02}", d.month(), d.day()));
    y <= 0
}

pub(super) fn fmt_date(d: NaiveDate) -> String {
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

pub(super) fn fmt_ts(t: Ts) -> String {
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
