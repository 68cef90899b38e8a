//! Numbers: exact decimals `m * 10^-scale` with PostgreSQL's rounding and division scale, and
//! floats for NaN, ±Infinity and values too large for 38 digits; their text in and out.
//! Nothing here panics on any input: arithmetic is checked.

use super::*;

// ---------------------------------------------------------------- numbers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::transform::expr) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A numeric value: an exact decimal `m * 10^-scale`, or a float for NaN,
/// ±Infinity and exponent-form values too large for 38 digits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::transform::expr) enum Num {
    Dec(i128, u32),
    Float(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::transform::expr) enum Fail {
    Invalid,
    OutOfRange,
    DivZero,
}

pub(super) fn pow10(n: u32) -> Option<u128> {
    10u128.checked_pow(n)
}

pub(super) fn to_i128(neg: bool, u: u128) -> Option<i128> {
    let v = i128::try_from(u).ok()?;
    Some(if neg { -v } else { v })
}

/// `n / d` rounded half away from zero (d > 0).
pub(super) fn div_round(n: u128, d: u128) -> Option<u128> {
    let (q, r) = (n / d, n % d);
    if r >= d - r {
        q.checked_add(1)
    } else {
        Some(q)
    }
}

/// Rescales an exact decimal to `to` digits, rounding half away from zero.
pub(super) fn rescale(m: i128, s: u32, to: u32) -> Option<i128> {
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
    pub(in crate::transform::expr) fn to_f64(self) -> f64 {
        match self {
            Num::Float(f) => f,
            Num::Dec(..) => self.to_string().parse().unwrap_or(f64::NAN),
        }
    }

    pub(super) fn from_f64(f: f64) -> Num {
        if f.is_finite() {
            // Rust prints floats without an exponent, shortest round-trip form.
            if let Ok(n @ Num::Dec(..)) = parse_num(&f.to_string()) {
                return n;
            }
        }
        Num::Float(f)
    }

    pub(in crate::transform::expr) fn cmp(self, other: Num) -> Ordering {
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

    pub(in crate::transform::expr) fn arith(self, op: ArithOp, other: Num) -> Result<Num, Fail> {
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

    pub(in crate::transform::expr) fn neg(self) -> Option<Num> {
        match self {
            Num::Dec(m, s) => Some(Num::Dec(m.checked_neg()?, s)),
            Num::Float(f) => Some(Num::Float(-f)),
        }
    }

    pub(in crate::transform::expr) fn abs(self) -> Option<Num> {
        match self {
            Num::Dec(m, s) => Some(Num::Dec(m.checked_abs()?, s)),
            Num::Float(f) => Some(Num::Float(f.abs())),
        }
    }

    /// Rounds to `digits` decimal places (negative: to tens, hundreds, ...).
    pub(in crate::transform::expr) fn round(self, digits: i64) -> Option<Num> {
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

    pub(super) fn to_i64(self) -> Result<i64, Fail> {
        let v = match self {
            Num::Dec(m, s) => rescale(m, s, 0).ok_or(Fail::OutOfRange)?,
            Num::Float(f) if f.is_finite() && f.abs() < 9.3e18 => f.round_ties_even() as i128,
            Num::Float(_) => return Err(Fail::OutOfRange),
        };
        i64::try_from(v).map_err(|_| Fail::OutOfRange)
    }

    /// Removes trailing fractional zeros (`56.789000` to `56.789`).
    pub(in crate::transform::expr) fn trimmed(self) -> Num {
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
pub(super) fn dec_div(a: i128, sa: u32, b: i128, sb: u32) -> Option<Num> {
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
pub(in crate::transform::expr) fn parse_num(s: &str) -> Result<Num, Fail> {
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
