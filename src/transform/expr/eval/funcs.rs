//! The built-in functions of the expression language, evaluated on one row: text
//! (case, trim, substrings, replace, split_part, regular expressions), numbers (abs,
//! round), JSON paths and date parts.

use super::*;

pub(super) fn case_map<'a>(e: &'a Node, upper: bool, row: Row<'_, 'a>) -> R<Val<'a>> {
    let s = text_or_null!(e, row);
    Ok(Val::Text(map_cow(s, |s| {
        let unchanged = s.is_ascii()
            && !s.bytes().any(|b| {
                if upper {
                    b.is_ascii_lowercase()
                } else {
                    b.is_ascii_uppercase()
                }
            });
        match (unchanged, upper) {
            (true, _) => Cow::Borrowed(s),
            (false, true) => Cow::Owned(s.to_uppercase()),
            (false, false) => Cow::Owned(s.to_lowercase()),
        }
    })))
}

pub(super) fn trim<'a>(
    e: &'a Node,
    chars: Option<&'a Node>,
    side: Trim,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let s = text_or_null!(e, row);
    let set = match chars {
        Some(c) => text_or_null!(c, row),
        None => Cow::Borrowed(" "),
    };
    let hit = |c: char| set.contains(c);
    Ok(Val::Text(map_cow(s, |s| {
        Cow::Borrowed(match side {
            Trim::Both => s.trim_matches(hit),
            Trim::Left => s.trim_start_matches(hit),
            Trim::Right => s.trim_end_matches(hit),
        })
    })))
}

pub(super) fn length<'a>(e: &'a Node, row: Row<'_, 'a>) -> R<Val<'a>> {
    let n = text_or_null!(e, row).chars().count();
    Ok(Val::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

pub(super) fn substr_node<'a>(
    e: &'a Node,
    start: &'a Node,
    len: Option<&'a Node>,
    at: usize,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let s = text_or_null!(e, row);
    let start = some_or_null!(start.int(row));
    let len = match len {
        Some(l) => Some(some_or_null!(l.int(row))),
        None => None,
    };
    if len.is_some_and(|l| l < 0) {
        let message = "negative substring length not allowed".into();
        return Err(EvalError::InvalidArgument { at, message });
    }
    Ok(Val::Text(map_cow(s, |s| {
        Cow::Borrowed(substr(s, start, len))
    })))
}

pub(super) fn replace<'a>(
    e: &'a Node,
    from: &'a Node,
    to: &'a Node,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let s = text_or_null!(e, row);
    let from = text_or_null!(from, row);
    let to = text_or_null!(to, row);
    if from.is_empty() || !s.contains(from.as_ref()) {
        return Ok(Val::Text(s));
    }
    Ok(Val::Text(Cow::Owned(s.replace(from.as_ref(), &to))))
}

pub(super) fn split_part<'a>(
    e: &'a Node,
    delim: &'a Node,
    n: &'a Node,
    at: usize,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let s = text_or_null!(e, row);
    let d = text_or_null!(delim, row);
    let n = some_or_null!(n.int(row));
    if n == 0 {
        let message = "field position must not be zero".into();
        return Err(EvalError::InvalidArgument { at, message });
    }
    let k = usize::try_from(n.unsigned_abs() - 1).unwrap_or(usize::MAX);
    Ok(Val::Text(map_cow(s, |s| {
        Cow::Borrowed(match (d.is_empty(), n > 0) {
            (true, _) if k == 0 => s,
            (true, _) => "",
            (false, true) => s.split(d.as_ref()).nth(k).unwrap_or(""),
            (false, false) => s.rsplit(d.as_ref()).nth(k).unwrap_or(""),
        })
    })))
}

pub(super) fn abs<'a>(e: &'a Node, at: usize, row: Row<'_, 'a>) -> R<Val<'a>> {
    Ok(match e.eval(row)? {
        Val::Null => Val::Null,
        Val::Int(i) => Val::Int(i.checked_abs().ok_or(oor(at, "integer"))?),
        v => Val::Num(v.as_num().and_then(Num::abs).ok_or(oor(at, "numeric"))?),
    })
}

pub(super) fn round<'a>(
    e: &'a Node,
    digits: Option<&'a Node>,
    at: usize,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let x = some_or_null!(e.num(row));
    let d = match digits {
        Some(d) => some_or_null!(d.int(row)),
        None => 0,
    };
    Ok(Val::Num(x.round(d).ok_or(oor(at, "numeric"))?))
}

pub(super) fn regex_replace<'a>(
    e: &'a Node,
    re: &Regex,
    repl: &'a Repl,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let s = text_or_null!(e, row);
    let dynamic;
    let r = match repl {
        Repl::Fixed(r) => r.as_str(),
        Repl::Dynamic(n) => {
            dynamic = pg_replacement(&text_or_null!(n, row));
            dynamic.as_str()
        }
    };
    Ok(Val::Text(map_cow(s, |s| re.replace_all(s, r))))
}

pub(super) fn regex_capture<'a>(
    e: &'a Node,
    re: &Regex,
    group: usize,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let s = text_or_null!(e, row);
    let range = if group == 0 {
        re.find(&s).map(|m| m.range())
    } else {
        re.captures(&s)
            .and_then(|c| c.get(group))
            .map(|m| m.range())
    };
    let Some(range) = range else {
        return Ok(Val::Null);
    };
    Ok(Val::Text(map_cow(s, |s| {
        Cow::Borrowed(s.get(range).unwrap_or(""))
    })))
}

pub(super) fn json_get_node<'a>(
    e: &'a Node,
    path: &[JsonSeg],
    at: usize,
    row: Row<'_, 'a>,
) -> R<Val<'a>> {
    let doc = text_or_null!(e, row);
    let bad = |detail: String| {
        let detail = match e {
            Node::Col { name, .. } => format!("{detail} in column {name:?}"),
            _ => detail,
        };
        EvalError::InvalidJson { at, detail }
    };
    let v = match doc {
        Cow::Borrowed(d) => json_get(d, path).map_err(bad)?,
        Cow::Owned(d) => json_get(&d, path)
            .map_err(bad)?
            .map(|v| Cow::Owned(v.into_owned())),
    };
    Ok(v.map_or(Val::Null, Val::Text))
}

pub(super) fn date_part<'a>(part: DatePart, e: &'a Node, row: Row<'_, 'a>) -> R<Val<'a>> {
    let t = match e.eval(row)? {
        Val::Null => return Ok(Val::Null),
        Val::Date(d) => Ts::from_date(d),
        Val::Ts(t) => t,
        v => return Err(EvalError::Internal(format!("date_part of {v:?}"))),
    };
    if let Some(inf) = t.infinite() {
        return Ok(match part {
            DatePart::Year | DatePart::Epoch => Val::Num(Num::Float(inf)),
            _ => Val::Null,
        });
    }
    let l = t.local;
    let int = |v: i64| Val::Num(Num::Dec(i128::from(v), 0));
    Ok(match part {
        DatePart::Year => int(i64::from(if l.year() <= 0 {
            l.year() - 1
        } else {
            l.year()
        })),
        DatePart::Month => int(l.month().into()),
        DatePart::Day => int(l.day().into()),
        DatePart::Hour => int(l.hour().into()),
        DatePart::Minute => int(l.minute().into()),
        DatePart::Second => {
            let us = i128::from(l.second()) * 1_000_000 + i128::from(l.nanosecond() / 1000);
            Val::Num(Num::Dec(us, 6).trimmed())
        }
        DatePart::Dow => int(l.weekday().num_days_from_sunday().into()),
        DatePart::Doy => int(l.ordinal().into()),
        DatePart::Epoch => {
            Val::Num(Num::Dec(i128::from(t.utc().and_utc().timestamp_micros()), 6).trimmed())
        }
    })
}
