//! The lexer of the expression language: tokens with their character offsets.

use super::*;

/// Words that cannot be used as bare column names (quote them: `"end"`).
pub(super) const RESERVED: &[&str] = &[
    "and", "or", "not", "is", "null", "true", "false", "in", "case", "when", "then", "else", "end",
    "cast", "as", "between", "like", "ilike",
];

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    QIdent(String),
    Str(String),
    Num(String),
    Sym(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

pub(super) fn lex(src: &str) -> PResult<Vec<Token>> {
    let chars: Vec<char> = src.chars().collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '-' && at(i + 1) == '-' {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let tok = if c.is_alphabetic() || c == '_' {
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() || (c == '.' && at(i + 1).is_ascii_digit()) {
            while at(i).is_ascii_digit() {
                i += 1;
            }
            if at(i) == '.' {
                i += 1;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
            }
            let sign = usize::from(matches!(at(i + 1), '+' | '-'));
            if matches!(at(i), 'e' | 'E') && at(i + 1 + sign).is_ascii_digit() {
                i += 1 + sign;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
            }
            if at(i).is_alphanumeric() || at(i) == '_' || at(i) == '.' {
                return Err((
                    start,
                    "invalid number: unexpected characters after the digits".into(),
                ));
            }
            Tok::Num(chars[start..i].iter().collect())
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                if i >= n {
                    let what = if c == '\'' {
                        "string literal"
                    } else {
                        "quoted identifier"
                    };
                    return Err((start, format!("unterminated {what}: missing closing {c}")));
                }
                if chars[i] == c {
                    if at(i + 1) == c {
                        s.push(c);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(chars[i]);
                i += 1;
            }
            if c == '\'' {
                Tok::Str(s)
            } else if s.is_empty() {
                return Err((start, "empty quoted identifier".into()));
            } else {
                Tok::QIdent(s)
            }
        } else {
            let sym = match (c, at(i + 1)) {
                ('|', '|') => "||",
                (':', ':') => "::",
                ('<', '>') | ('!', '=') => "<>",
                ('<', '=') => "<=",
                ('>', '=') => ">=",
                ('(', _) => "(",
                (')', _) => ")",
                (',', _) => ",",
                ('+', _) => "+",
                ('-', _) => "-",
                ('*', _) => "*",
                ('/', _) => "/",
                ('%', _) => "%",
                ('=', _) => "=",
                ('<', _) => "<",
                ('>', _) => ">",
                _ => {
                    let hint = match c {
                        '|' => " (did you mean '||'?)",
                        ':' => " (did you mean '::'?)",
                        '!' => " (did you mean '<>' or NOT?)",
                        _ => "",
                    };
                    return Err((start, format!("unexpected character '{c}'{hint}")));
                }
            };
            i += sym.len();
            Tok::Sym(sym)
        };
        out.push(Token { tok, pos: start });
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: n,
    });
    Ok(out)
}

pub(super) fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) if RESERVED.contains(&s.to_ascii_lowercase().as_str()) => {
            format!("keyword '{s}'")
        }
        Tok::Ident(s) => format!("'{s}'"),
        Tok::QIdent(s) => format!("\"{s}\""),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Num(s) => format!("number {s}"),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::Eof => "the end of the expression".into(),
    }
}
