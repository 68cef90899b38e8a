//! Evaluation of the compiled (type-checked) node tree on one row of PostgreSQL
//! text values. `Node::eval` is a thin dispatcher and every operation lives in its
//! own function, so one level of nesting costs little stack even in debug builds.

use std::borrow::Cow;
use std::cmp::Ordering;

use chrono::{Datelike, Timelike};
use regex::Regex;

use super::json::{json_get, JsonSeg};
use super::value::{cast, compare, read_col, ArithOp, CastTarget, Fail, Num, Ts, Val};
use super::{EvalError, Type};

// ---------------------------------------------------------------- the node tree

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn test(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o.is_eq(),
            CmpOp::Ne => o.is_ne(),
            CmpOp::Lt => o.is_lt(),
            CmpOp::Le => o.is_le(),
            CmpOp::Gt => o.is_gt(),
            CmpOp::Ge => o.is_ge(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trim {
    Both,
    Left,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DatePart {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Dow,
    Doy,
    Epoch,
}

/// A regex_replace replacement: pre-translated when it is a literal.
#[derive(Debug, Clone)]
pub(super) enum Repl {
    Fixed(String),
    Dynamic(Box<Node>),
}

/// Translates a PostgreSQL replacement (`\1`, `\&`, `\\`) to the regex crate's syntax.
pub(super) fn pg_replacement(r: &str) -> String {
    let mut out = String::with_capacity(r.len() + 4);
    let mut it = r.chars().peekable();
    while let Some(c) = it.next() {
        match (c, it.peek().copied()) {
            ('$', _) => out.push_str("$$"),
            ('\\', Some(d @ '0'..='9')) => {
                out.push_str(&format!("${{{d}}}"));
                it.next();
            }
            ('\\', Some('&')) => {
                out.push_str("${0}");
                it.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                it.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

type B = Box<Node>;

#[derive(Debug, Clone)]
pub(super) enum Node {
    Const(Val<'static>),
    Col {
        idx: usize,
        ty: Type,
        name: Box<str>,
    },
    Neg {
        e: B,
        at: usize,
    },
    Not(B),
    /// Three-valued AND of all items.
    All(Vec<Node>),
    /// Three-valued OR of all items.
    Any(Vec<Node>),
    Cmp {
        op: CmpOp,
        l: B,
        r: B,
    },
    Arith {
        op: ArithOp,
        l: B,
        r: B,
        at: usize,
    },
    /// `a || b || ...`: NULL if any item is NULL.
    Concat(Vec<Node>),
    IsNull {
        e: B,
        negated: bool,
    },
    In {
        e: B,
        list: Vec<Node>,
        negated: bool,
    },
    Between {
        e: B,
        lo: B,
        hi: B,
        negated: bool,
    },
    Like {
        e: B,
        re: Regex,
        negated: bool,
    },
    Case {
        operand: Option<B>,
        arms: Vec<(Node, Node)>,
        otherwise: Option<B>,
    },
    Coalesce(Vec<Node>),
    NullIf(B, B),
    ConcatAll(Vec<Node>),
    Cast {
        e: B,
        to: CastTarget,
        at: usize,
    },
    Lower(B),
    Upper(B),
    Trim {
        e: B,
        chars: Option<B>,
        side: Trim,
    },
    Length(B),
    Substr {
        e: B,
        start: B,
        len: Option<B>,
        at: usize,
    },
    Replace {
        e: B,
        from: B,
        to: B,
    },
    SplitPart {
        e: B,
        delim: B,
        n: B,
        at: usize,
    },
    Abs {
        e: B,
        at: usize,
    },
    Round {
        e: B,
        digits: Option<B>,
        at: usize,
    },
    RegexReplace {
        e: B,
        re: Regex,
        repl: Repl,
    },
    RegexCapture {
        e: B,
        re: Regex,
        group: usize,
    },
    JsonGet {
        e: B,
        path: Vec<JsonSeg>,
        at: usize,
    },
    DatePart {
        part: DatePart,
        e: B,
    },
}

type R<T> = Result<T, EvalError>;

/// Applies `f` to the text in `s`, keeping borrowed results borrowed.
fn map_cow<'a>(s: Cow<'a, str>, f: impl for<'x> FnOnce(&'x str) -> Cow<'x, str>) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => f(b),
        Cow::Owned(o) => {
            let out = match f(&o) {
                Cow::Borrowed(x) if x.len() == o.len() => None,
                r => Some(r.into_owned()),
            };
            Cow::Owned(out.unwrap_or(o))
        }
    }
}

fn shown(v: &Val) -> String {
    let s = v.clone().into_text().unwrap_or_default();
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.into_owned(),
    }
}

fn oor(at: usize, what: &'static str) -> EvalError {
    EvalError::OutOfRange { at, what }
}

fn truth(v: Val) -> R<Option<bool>> {
    match v {
        Val::Bool(b) => Ok(Some(b)),
        Val::Null => Ok(None),
        other => Err(EvalError::Internal(format!(
            "expected a boolean, got {other:?}"
        ))),
    }
}

fn tri(b: Option<bool>) -> Val<'static> {
    b.map_or(Val::Null, Val::Bool)
}

fn substr(s: &str, start: i64, len: Option<i64>) -> &str {
    let begin = start.max(1);
    let end = len.map_or(i64::MAX, |l| start.saturating_add(l));
    if end <= begin {
        return "";
    }
    let byte = |n: i64| -> usize {
        let n = usize::try_from(n - 1).unwrap_or(usize::MAX);
        if s.is_ascii() {
            n.min(s.len())
        } else {
            s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
        }
    };
    s.get(byte(begin)..byte(end)).unwrap_or("")
}

type Row<'r, 'a> = &'r [Option<&'a str>];

/// Evaluates to text, or returns NULL from the calling function.
macro_rules! text_or_null {
    ($n:expr, $row:expr) => {
        match $n.eval($row)?.into_text() {
            Some(s) => s,
            None => return Ok(Val::Null),
        }
    };
}

/// Unwraps an `R<Option<T>>`, or returns NULL from the calling function.
macro_rules! some_or_null {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(Val::Null),
        }
    };
}

impl Node {
    fn int<'a>(&'a self, row: Row<'_, 'a>) -> R<Option<i64>> {
        match self.eval(row)? {
            Val::Int(i) => Ok(Some(i)),
            Val::Null => Ok(None),
            other => Err(EvalError::Internal(format!(
                "expected an integer, got {other:?}"
            ))),
        }
    }

    fn num<'a>(&'a self, row: Row<'_, 'a>) -> R<Option<Num>> {
        match self.eval(row)? {
            Val::Null => Ok(None),
            v => v
                .as_num()
                .map(Some)
                .ok_or_else(|| EvalError::Internal(format!("expected a number, got {v:?}"))),
        }
    }

    /// Evaluates the node on one row of PostgreSQL text values.
    ///
    /// A thin dispatcher: every arm's work lives in its own function so that one
    /// level of recursion costs little stack, even in debug builds.
    pub(super) fn eval<'a>(&'a self, row: Row<'_, 'a>) -> R<Val<'a>> {
        match self {
            Node::Const(v) => Ok(v.borrowed()),
            Node::Col { idx, ty, name } => column(row, *idx, *ty, name),
            Node::Neg { e, at } => neg(e, *at, row),
            Node::Not(e) => not(e, row),
            Node::All(items) => all_any(items, false, row),
            Node::Any(items) => all_any(items, true, row),
            Node::Cmp { op, l, r } => comparison(*op, l, r, row),
            Node::Arith { op, l, r, at } => arith(*op, l, r, *at, row),
            Node::Concat(items) => concat(items, row),
            Node::IsNull { e, negated } => Ok(Val::Bool((e.eval(row)? == Val::Null) != *negated)),
            Node::In { e, list, negated } => in_list(e, list, *negated, row),
            Node::Between { e, lo, hi, negated } => between(e, lo, hi, *negated, row),
            Node::Like { e, re, negated } => like(e, re, *negated, row),
            Node::Case {
                operand,
                arms,
                otherwise,
            } => case(operand.as_deref(), arms, otherwise.as_deref(), row),
            Node::Coalesce(list) => coalesce(list, row),
            Node::NullIf(l, r) => nullif(l, r, row),
            Node::ConcatAll(list) => concat_all(list, row),
            Node::Cast { e, to, at } => cast_node(e, *to, *at, row),
            Node::Lower(e) => case_map(e, false, row),
            Node::Upper(e) => case_map(e, true, row),
            Node::Trim { e, chars, side } => trim(e, chars.as_deref(), *side, row),
            Node::Length(e) => length(e, row),
            Node::Substr { e, start, len, at } => substr_node(e, start, len.as_deref(), *at, row),
            Node::Replace { e, from, to } => replace(e, from, to, row),
            Node::SplitPart { e, delim, n, at } => split_part(e, delim, n, *at, row),
            Node::Abs { e, at } => abs(e, *at, row),
            Node::Round { e, digits, at } => round(e, digits.as_deref(), *at, row),
            Node::RegexReplace { e, re, repl } => regex_replace(e, re, repl, row),
            Node::RegexCapture { e, re, group } => regex_capture(e, re, *group, row),
            Node::JsonGet { e, path, at } => json_get_node(e, path, *at, row),
            Node::DatePart { part, e } => date_part(*part, e, row),
        }
    }
}

fn column<'a>(row: Row<'_, 'a>, idx: usize, ty: Type, name: &str) -> R<Val<'a>> {
    match row.get(idx) {
        None => Err(EvalError::MissingColumn {
            index: idx,
            column: name.to_owned(),
            len: row.len(),
        }),
        Some(None) => Ok(Val::Null),
        Some(Some(raw)) => read_col(raw, ty).map_err(|_| EvalError::InvalidColumnValue {
            column: name.to_owned(),
            ty: ty.sql_name(),
            value: shown(&Val::Text(Cow::Borrowed(raw))),
        }),
    }
}

fn neg<'a>(e: &'a Node, at: usize, row: Row<'_, 'a>) -> R<Val<'a>> {
    Ok(match e.eval(row)? {
        Val::Null => Val::Null,
        Val::Int(i) => Val::Int(i.checked_neg().ok_or(oor(at, "integer"))?),
        v => Val::Num(v.as_num().and_then(Num::neg).ok_or(oor(at, "numeric"))?),
    })
}

fn not<'a>(e: &'a Node, row: Row<'_, 'a>) -> R<Val<'a>> {
    Ok(tri(truth(e.eval(row)?)?.map(|b| !b)))
}

/// Three-valued AND (`any == false`) / OR (`any == true`), short-circuiting.
fn all_any<'a>(items: &'a [Node], any: bool, row: Row<'_, 'a>) -> R<Val<'a>> {
    let mut saw_null = false;
    for n in items {
        match truth(n.eval(row)?)? {
            Some(b) if b == any => return Ok(Val::Bool(any)),
            Some(_) => {}
            None => saw_null = true,
        }
    }
    Ok(if saw_null { Val::Null } else { Val::Bool(!any) })
}

fn comparison<'a>(op: CmpOp, l: &'a Node, r: &'a Node, row: Row<'_, 'a>) -> R<Val<'a>> {
    let a = l.eval(row)?;
    if a == Val::Null {
        return Ok(Val::Null);
    }
    let b = r.eval(row)?;
    if b == Val::Null {
        return Ok(Val::Null);
    }
    Ok(Val::Bool(op.test(compare(&a, &b)?)))
}

fn arith<'a>(op: ArithOp, l: &'a Node, r: &'a Node, at: usize, row: Row<'_, 'a>) -> R<Val<'a>> {
    Ok(match (l.eval(row)?, r.eval(row)?) {
        (Val::Null, _) | (_, Val::Null) => Val::Null,
        (Val::Int(x), Val::Int(y)) => {
            if matches!(op, ArithOp::Div | ArithOp::Mod) && y == 0 {
                return Err(EvalError::DivisionByZero { at });
            }
            let v = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div => x.checked_div(y),
                ArithOp::Mod => x.checked_rem(y),
            };
            Val::Int(v.ok_or(oor(at, "integer"))?)
        }
        (a, b) => match (a.as_num(), b.as_num()) {
            (Some(x), Some(y)) => Val::Num(x.arith(op, y).map_err(|f| match f {
                Fail::DivZero => EvalError::DivisionByZero { at },
                _ => oor(at, "numeric"),
            })?),
            _ => {
                return Err(EvalError::Internal(format!(
                    "arithmetic on {a:?} and {b:?}"
                )))
            }
        },
    })
}

fn concat<'a>(items: &'a [Node], row: Row<'_, 'a>) -> R<Val<'a>> {
    let mut out = String::new();
    for n in items {
        out.push_str(&text_or_null!(n, row));
    }
    Ok(Val::Text(Cow::Owned(out)))
}

fn in_list<'a>(e: &'a Node, list: &'a [Node], negated: bool, row: Row<'_, 'a>) -> R<Val<'a>> {
    let x = e.eval(row)?;
    if x == Val::Null {
        return Ok(Val::Null);
    }
    let mut saw_null = false;
    for item in list {
        let v = item.eval(row)?;
        if v == Val::Null {
            saw_null = true;
        } else if compare(&x, &v)?.is_eq() {
            return Ok(Val::Bool(!negated));
        }
    }
    Ok(if saw_null {
        Val::Null
    } else {
        Val::Bool(negated)
    })
}

fn between<'a>(
    e: &'a Node,
    lo: &'a Node,
    hi: &'a Node,
    negated: bool,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let x = e.eval(row)?;
    if x == Val::Null {
        return Ok(Val::Null);
    }
    let side = |n: &'a Node, want: fn(Ordering) -> bool| -> R<Option<bool>> {
        match n.eval(row)? {
            Val::Null => Ok(None),
            v => Ok(Some(want(compare(&x, &v)?))),
        }
    };
    let r = match (side(lo, Ordering::is_ge)?, side(hi, Ordering::is_le)?) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    Ok(tri(r.map(|b| b != negated)))
}

fn like<'a>(e: &'a Node, re: &Regex, negated: bool, row: Row<'_, 'a>) -> R<Val<'a>> {
    Ok(Val::Bool(re.is_match(&text_or_null!(e, row)) != negated))
}

fn case<'a>(
    operand: Option<&'a Node>,
    arms: &'a [(Node, Node)],
    otherwise: Option<&'a Node>,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let subject = match operand {
        Some(o) => Some(o.eval(row)?),
        None => None,
    };
    for (when, then) in arms {
        let hit = match &subject {
            None => truth(when.eval(row)?)? == Some(true),
            Some(Val::Null) => false,
            Some(x) => match when.eval(row)? {
                Val::Null => false,
                w => compare(x, &w)?.is_eq(),
            },
        };
        if hit {
            return then.eval(row);
        }
    }
    otherwise.map_or(Ok(Val::Null), |o| o.eval(row))
}

fn coalesce<'a>(list: &'a [Node], row: Row<'_, 'a>) -> R<Val<'a>> {
    for n in list {
        let v = n.eval(row)?;
        if v != Val::Null {
            return Ok(v);
        }
    }
    Ok(Val::Null)
}

fn nullif<'a>(l: &'a Node, r: &'a Node, row: Row<'_, 'a>) -> R<Val<'a>> {
    let a = l.eval(row)?;
    if a == Val::Null {
        return Ok(a);
    }
    Ok(match r.eval(row)? {
        Val::Null => a,
        b if compare(&a, &b)?.is_eq() => Val::Null,
        _ => a,
    })
}

fn concat_all<'a>(list: &'a [Node], row: Row<'_, 'a>) -> R<Val<'a>> {
    let mut out = String::new();
    for n in list {
        if let Some(s) = n.eval(row)?.into_text() {
            out.push_str(&s);
        }
    }
    Ok(Val::Text(Cow::Owned(out)))
}

fn cast_node<'a>(e: &'a Node, to: CastTarget, at: usize, row: Row<'_, 'a>) -> R<Val<'a>> {
    let v = e.eval(row)?;
    if matches!((&v, to), (Val::Text(_), CastTarget::Text { max_len: None })) {
        return Ok(v);
    }
    cast(&v, to).map_err(|f| match f {
        Fail::OutOfRange => oor(at, to.name()),
        _ => EvalError::InvalidCast {
            at,
            ty: to.name(),
            value: shown(&v),
        },
    })
}

// After the macros above: they are in scope in `funcs` only when defined before it.
mod funcs;

use funcs::*;
