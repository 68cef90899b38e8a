//! JSON support for `json_get`: a path syntax parsed once at compile time, and a
//! validating scanner that walks the document text without building a tree, so
//! numbers come back exactly as written and only the part needed is read.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JsonSeg {
    Key(String),
    Index(usize),
}

/// A validating scanner over JSON text that never builds a tree and keeps
/// numbers exactly as written.
struct Scan<'s> {
    b: &'s [u8],
    i: usize,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn eat(&mut self, c: u8, what: &str) -> Result<(), String> {
        self.ws();
        if self.peek() != Some(c) {
            return self.err(what);
        }
        self.i += 1;
        Ok(())
    }

    /// At an opening quote: skips the string, returns whether it had escapes.
    fn string(&mut self) -> Result<bool, String> {
        self.i += 1;
        let mut esc = false;
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(esc);
                }
                Some(b'\\') => {
                    esc = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u')
                            if self
                                .b
                                .get(self.i + 1..self.i + 5)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            self.i += 5
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(c) if c < 0x20 => return self.err("control character in string"),
                Some(_) => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn scalar(&mut self) -> Result<(), String> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => {
                self.i += usize::from(self.peek() == Some(b'-'));
                let lead_zero = self.peek() == Some(b'0');
                let n = self.digits();
                if n == 0 || (lead_zero && n > 1) {
                    return self.err("invalid number");
                }
                if self.peek() == Some(b'.') {
                    self.i += 1;
                    if self.digits() == 0 {
                        return self.err("invalid number");
                    }
                }
                if matches!(self.peek(), Some(b'e' | b'E')) {
                    self.i += 1;
                    self.i += usize::from(matches!(self.peek(), Some(b'+' | b'-')));
                    if self.digits() == 0 {
                        return self.err("invalid number");
                    }
                }
                Ok(())
            }
            _ => {
                for w in [&b"true"[..], b"false", b"null"] {
                    if self.b.get(self.i..).is_some_and(|r| r.starts_with(w)) {
                        self.i += w.len();
                        return Ok(());
                    }
                }
                self.err("expected a JSON value")
            }
        }
    }

    /// Skips one value (iteratively, so any nesting depth is fine).
    fn value(&mut self) -> Result<(), String> {
        let mut stack: Vec<u8> = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        stack.push(open);
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            loop {
                let Some(&top) = stack.last() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if top == b'{' {
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if top == b'{' => self.i += 1,
                    Some(b']') if top == b'[' => self.i += 1,
                    _ => return self.err("expected ',' or a closing bracket"),
                }
                stack.pop();
            }
        }
    }

    /// Object key and colon; returns the key's raw text (with quotes) and whether it has escapes.
    fn key(&mut self) -> Result<(usize, usize, bool), String> {
        self.ws();
        if self.peek() != Some(b'"') {
            return self.err("expected an object key");
        }
        let start = self.i;
        let esc = self.string()?;
        let end = self.i;
        self.eat(b':', "expected ':'")?;
        Ok((start, end, esc))
    }
}

fn unescape(raw: &str) -> Result<String, String> {
    serde_json::from_str::<String>(raw).map_err(|e| e.to_string())
}

/// Validates that `s` is one JSON document.
pub(super) fn json_valid(s: &str) -> bool {
    let mut sc = Scan {
        b: s.as_bytes(),
        i: 0,
    };
    let ok = sc.value().is_ok();
    sc.ws();
    ok && sc.i == s.len()
}

/// `payload->>path`: string values unquoted, JSON null / missing as None,
/// other values as their JSON text. The document is read only as far as needed.
pub(super) fn json_get<'x>(doc: &'x str, path: &[JsonSeg]) -> Result<Option<Cow<'x, str>>, String> {
    let mut sc = Scan {
        b: doc.as_bytes(),
        i: 0,
    };
    for seg in path {
        sc.ws();
        let open = if matches!(seg, JsonSeg::Key(_)) {
            b'{'
        } else {
            b'['
        };
        if sc.peek() != Some(open) {
            sc.value()?;
            return Ok(None);
        }
        sc.i += 1;
        sc.ws();
        if sc.peek() == Some(if open == b'{' { b'}' } else { b']' }) {
            return Ok(None);
        }
        let mut n = 0usize;
        loop {
            let hit = match seg {
                JsonSeg::Key(k) => {
                    let (s, e, esc) = sc.key()?;
                    let raw = doc.get(s..e).unwrap_or("\"\"");
                    if esc {
                        unescape(raw)? == *k
                    } else {
                        raw.get(1..raw.len() - 1) == Some(k.as_str())
                    }
                }
                JsonSeg::Index(i) => *i == n,
            };
            if hit {
                break;
            }
            sc.value()?;
            n += 1;
            sc.ws();
            match sc.peek() {
                Some(b',') => sc.i += 1,
                Some(b'}') if open == b'{' => return Ok(None),
                Some(b']') if open == b'[' => return Ok(None),
                _ => return sc.err("expected ',' or a closing bracket"),
            }
        }
    }
    sc.ws();
    let start = sc.i;
    sc.value()?;
    let v = doc.get(start..sc.i).unwrap_or("null");
    Ok(match v.as_bytes().first() {
        Some(b'"') if v.contains('\\') => Some(Cow::Owned(unescape(v)?)),
        Some(b'"') => Some(Cow::Borrowed(v.get(1..v.len() - 1).unwrap_or(""))),
        _ if v == "null" => None,
        _ => Some(Cow::Borrowed(v)),
    })
}

/// Parses a JSON path literal (`$.a.b[0]`, `$["key"]`); errors carry the char
/// offset inside the path.
pub(super) fn parse_path(p: &str) -> Result<Vec<JsonSeg>, (usize, String)> {
    let c: Vec<char> = p.chars().collect();
    let skip_ws = |i: &mut usize| {
        while c.get(*i).is_some_and(|x| x.is_whitespace()) {
            *i += 1;
        }
    };
    let quoted = |i: usize| -> Result<(String, usize), (usize, String)> {
        let (q, mut j, mut s) = (c[i], i + 1, String::new());
        loop {
            match c.get(j) {
                None => return Err((i, "unterminated quoted key in JSON path".into())),
                Some('\\') if j + 1 < c.len() => {
                    s.push(c[j + 1]);
                    j += 2;
                }
                Some(x) if *x == q => return Ok((s, j + 1)),
                Some(x) => {
                    s.push(*x);
                    j += 1;
                }
            }
        }
    };
    let mut i = 0;
    skip_ws(&mut i);
    if c.get(i) != Some(&'$') {
        return Err((
            i,
            "a JSON path must start with '$', e.g. '$.address.city'".into(),
        ));
    }
    i += 1;
    let mut segs = Vec::new();
    loop {
        skip_ws(&mut i);
        match c.get(i) {
            None => return Ok(segs),
            Some('.') if c.get(i + 1) == Some(&'"') => {
                let (k, next) = quoted(i + 1)?;
                segs.push(JsonSeg::Key(k));
                i = next;
            }
            Some('.') => {
                i += 1;
                let start = i;
                while c
                    .get(i)
                    .is_some_and(|x| x.is_alphanumeric() || *x == '_' || *x == '$')
                {
                    i += 1;
                }
                if i == start {
                    return Err((i, "expected a key name after '.' in JSON path".into()));
                }
                segs.push(JsonSeg::Key(c[start..i].iter().collect()));
            }
            Some('[') => {
                i += 1;
                skip_ws(&mut i);
                match c.get(i) {
                    Some('"' | '\'') => {
                        let (k, next) = quoted(i)?;
                        segs.push(JsonSeg::Key(k));
                        i = next;
                    }
                    Some(d) if d.is_ascii_digit() => {
                        let start = i;
                        while c.get(i).is_some_and(char::is_ascii_digit) {
                            i += 1;
                        }
                        let n: String = c[start..i].iter().collect();
                        let n = n
                            .parse()
                            .map_err(|_| (start, "array index is too large".to_string()))?;
                        segs.push(JsonSeg::Index(n));
                    }
                    _ => {
                        return Err((
                            i,
                            "expected an array index or a quoted key after '[' in JSON path".into(),
                        ))
                    }
                }
                skip_ws(&mut i);
                if c.get(i) != Some(&']') {
                    return Err((i, "expected ']' in JSON path".into()));
                }
                i += 1;
            }
            Some(x) => {
                return Err((
                    i,
                    format!("unexpected '{x}' in JSON path; expected '.key' or '[index]'"),
                ))
            }
        }
    }
}
