//! List splitting for free-text multi-value columns such as `loans.guarantor`.
//!
//! This module owns turning one free-text cell, e.g.
//! `"(a) Redwood Holdings & Co. (b) NorthStar Trust (Pledge)"`, into an ordered list of
//! [`Part`]s: splitting on separators and enumerators, keeping protected phrases intact,
//! extracting annotation markers, folding whitespace, trimming stray punctuation and
//! de-duplicating. It is pure string processing: it must never touch a database or do any
//! other I/O, and it must never panic on input (arbitrary Unicode of any length).
//! Configuration problems are reported once, by [`Splitter::new`].
//!
//! Matching is case-insensitive char by char (each char compared through its Unicode
//! lowercase mapping), so byte offsets are always taken from the input itself and never
//! from a lowercased copy. A whitespace char inside a pattern matches a run of one or more
//! whitespace chars in the input. Work per value is O(n·k) for input length n and k patterns.

use std::collections::{BTreeMap, HashMap};

const DEFAULT_SEPARATORS: [&str; 4] = [",", ";", "&", " and "];
const DEFAULT_PROTECTED: [&str; 7] = ["& Co.", "& Sons", "Inc.", "LLC", "L.P.", "Ltd.", "Co."];
/// Punctuation trimmed from both ends of a name (unless it belongs to a protected phrase).
const STRAY: [char; 5] = [',', ';', '&', '.', ':'];
const ROMANS: [&str; 20] = [
    "i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv",
    "xvi", "xvii", "xviii", "xix", "xx",
];
/// Below this many kept parts, dedupe is a linear scan; from it on a hash index is used.
const LINEAR_DEDUPE_LIMIT: usize = 16;

/// How to split one free-text value into a list of names.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SplitSpec {
    /// Separators between items, matched case-insensitively. Default: [",", ";", "&", " and "].
    /// A separator whose first/last char is alphanumeric only matches at a word boundary.
    pub separators: Vec<String>,
    /// Strip/split on enumerators: "(a)", "a)", "(1)", "1)", "1.", "(i)", "i)" (roman up to xx), when they
    /// start the value or follow whitespace/separator and are followed by whitespace. Default true.
    pub enumerators: bool,
    /// Phrases that belong to a name and are never split inside / never taken as enumerators,
    /// matched case-insensitively at word boundaries. Default: ["& Co.", "& Sons", "Inc.", "LLC", "L.P.", "Ltd.", "Co."].
    pub protected: Vec<String>,
    /// Annotation name → marker text, e.g. pledge = "(Pledge)". A marker found in an item (case-insensitive)
    /// is removed from the name and sets that annotation true for the item. Default: empty.
    /// Markers are never split inside, like protected phrases.
    pub annotations: BTreeMap<String, String>,
    /// Drop later items whose normalised name equals an earlier one (default true).
    /// The dropped item's annotations are OR-ed into the earlier part.
    pub dedupe: bool,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec {
            separators: DEFAULT_SEPARATORS.iter().map(|s| s.to_string()).collect(),
            enumerators: true,
            protected: DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect(),
            annotations: BTreeMap::new(),
            dedupe: true,
        }
    }
}

/// A [`SplitSpec`] that cannot be compiled. Indices are 0-based positions in the spec lists.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitSpecError {
    #[error("separators[{index}] is empty")]
    EmptySeparator { index: usize },
    #[error("separators[{index}] ({separator:?}) is only whitespace and would split every word")]
    WhitespaceSeparator { index: usize, separator: String },
    #[error("protected[{index}] is empty or only whitespace")]
    EmptyProtected { index: usize },
    #[error("an annotation name is empty or only whitespace")]
    EmptyAnnotationName,
    #[error("annotation {name:?} has an empty marker")]
    EmptyMarker { name: String },
    #[error("annotations {first:?} and {second:?} use the same marker {marker:?}")]
    DuplicateMarker {
        first: String,
        second: String,
        marker: String,
    },
}

/// One name extracted from a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 1-based position among the parts kept.
    pub position: usize,
    /// Trimmed, whitespace-folded name without enumerator or annotation markers.
    pub name: String,
    /// Lowercased `name` (Unicode lowercase), for deterministic keys and dedupe.
    pub normalized: String,
    /// One flag per [`Splitter::annotation_names`] entry, in the same order.
    pub annotations: Vec<bool>,
}

/// A compiled pattern: whitespace runs folded to a single `' '` that matches 1+ whitespace chars.
#[derive(Debug, Clone)]
struct Pattern {
    chars: Box<[char]>,
    /// First char is alphanumeric: the char before a match must not be.
    word_start: bool,
    /// Last char is alphanumeric: the char after a match must not be.
    word_end: bool,
}

impl Pattern {
    /// `None` when nothing is left after folding (and trimming, if asked).
    fn compile(text: &str, trim: bool) -> Option<Pattern> {
        let text = if trim { text.trim() } else { text };
        let mut chars: Vec<char> = Vec::with_capacity(text.len());
        for c in text.chars() {
            if !c.is_whitespace() {
                chars.push(c);
            } else if chars.last() != Some(&' ') {
                chars.push(' ');
            }
        }
        let (first, last) = (*chars.first()?, *chars.last()?);
        Some(Pattern {
            chars: chars.into_boxed_slice(),
            word_start: first.is_alphanumeric(),
            word_end: last.is_alphanumeric(),
        })
    }

    fn is_blank(&self) -> bool {
        self.chars.iter().all(|&c| c == ' ')
    }

    fn same_as(&self, other: &Pattern) -> bool {
        let mut pairs = self.chars.iter().zip(other.chars.iter());
        self.chars.len() == other.chars.len() && pairs.all(|(&a, &b)| ci_eq(a, b))
    }

    /// Byte offset just past a match starting at byte offset `at` of `hay`, if any.
    fn matches_at(&self, hay: &str, at: usize) -> Option<usize> {
        let rest = hay.get(at..)?;
        if self.word_start && is_word(hay[..at].chars().next_back()) {
            return None;
        }
        let mut it = rest.char_indices().peekable();
        for &pc in self.chars.iter() {
            let (_, c) = it.next()?;
            if pc == ' ' {
                if !c.is_whitespace() {
                    return None;
                }
                while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
            } else if !ci_eq(c, pc) {
                return None;
            }
        }
        let end = it.peek().map_or(hay.len(), |&(o, _)| at + o);
        if self.word_end && is_word(hay[end..].chars().next()) {
            return None;
        }
        Some(end)
    }

    /// Whether `t` (whitespace already folded to single spaces) ends with this pattern.
    fn is_suffix_of(&self, t: &str) -> bool {
        let back = self.chars.len().saturating_sub(1);
        match t.char_indices().rev().nth(back) {
            Some((start, _)) => self.matches_at(t, start) == Some(t.len()),
            None => false,
        }
    }
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// Case-insensitive char equality through the Unicode lowercase mapping (ASCII fast path).
fn ci_eq(a: char, b: char) -> bool {
    a == b
        || if a.is_ascii() && b.is_ascii() {
            a.eq_ignore_ascii_case(&b)
        } else {
            a.to_lowercase().eq(b.to_lowercase())
        }
}

/// First (i.e. longest, as lists are sorted) pattern matching at `at`.
fn first_match(pats: &[Pattern], s: &str, at: usize) -> Option<usize> {
    pats.iter().find_map(|p| p.matches_at(s, at))
}

/// An enumerator token at `at` ("(a)", "a)", "(1)", "1)", "1.", "(iv)", "iv)") followed by
/// whitespace; returns the byte offset just past the closing ")" / ".".
fn enumerator_at(s: &str, at: usize) -> Option<usize> {
    let b = s.as_bytes();
    let paren = b.get(at) == Some(&b'(');
    let start = if paren { at + 1 } else { at };
    let mut j = start;
    // Only ASCII bytes are consumed, so every offset stays on a char boundary.
    while j - start < 6 && b.get(j).is_some_and(u8::is_ascii_alphanumeric) {
        j += 1;
    }
    let tok = b.get(start..j)?;
    let digits = !tok.is_empty() && tok.iter().all(u8::is_ascii_digit);
    let token_ok = if digits {
        tok.len() <= 3
    } else {
        let roman = |r: &&str| r.as_bytes().eq_ignore_ascii_case(tok);
        (tok.len() == 1 && tok[0].is_ascii_alphabetic()) || ROMANS.iter().any(roman)
    };
    let close = *b.get(j)?;
    if !token_ok || !(close == b')' || (close == b'.' && digits && !paren)) {
        return None;
    }
    let next = s.get(j + 1..)?.chars().next();
    next.is_some_and(char::is_whitespace).then_some(j + 1)
}

/// Compile, de-duplicate and sort (longest first, so the first match at a position is the
/// longest) one pattern list; `bad(index, text)` reports an entry that is empty or blank.
fn compile_list(
    texts: &[String],
    trim: bool,
    bad: fn(usize, &str) -> SplitSpecError,
) -> Result<Vec<Pattern>, SplitSpecError> {
    let mut out: Vec<Pattern> = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        let pat = Pattern::compile(text, trim).filter(|p| !p.is_blank());
        let pat = pat.ok_or_else(|| bad(index, text))?;
        if !out.iter().any(|p| p.same_as(&pat)) {
            out.push(pat);
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.chars.len()));
    Ok(out)
}

/// Index of an earlier kept part with this normalized name. Linear for short lists; beyond
/// that `index` (allocated only then) is caught up with `parts`, which only ever grows.
fn find_earlier(parts: &[Part], index: &mut HashMap<String, usize>, norm: &str) -> Option<usize> {
    if parts.len() < LINEAR_DEDUPE_LIMIT {
        return parts.iter().position(|p| p.normalized == norm);
    }
    let new = parts.iter().enumerate().skip(index.len());
    index.extend(new.map(|(i, p)| (p.normalized.clone(), i)));
    index.get(norm).copied()
}

/// A compiled [`SplitSpec`]; cheap to share across threads and rows.
#[derive(Debug, Clone)]
pub struct Splitter {
    separators: Vec<Pattern>,
    protected: Vec<Pattern>,
    /// Markers with their annotation index.
    markers: Vec<(Pattern, usize)>,
    /// Protected phrases and markers: spans that are skipped whole while scanning for cuts.
    keep: Vec<Pattern>,
    annotation_names: Vec<String>,
    /// The separators and the markers (by annotation index) as configured: what writing a
    /// list back as text uses (`transform::rebuild`).
    separator_texts: Vec<String>,
    marker_texts: Vec<String>,
    enumerators: bool,
    dedupe: bool,
    /// ASCII chars that can start a separator, protected phrase or marker; at any other ASCII
    /// char pattern matching is skipped (non-ASCII chars are always tried).
    starts: [bool; 128],
}

impl Splitter {
    pub fn new(spec: &SplitSpec) -> Result<Splitter, SplitSpecError> {
        let separators = compile_list(&spec.separators, false, |index, text| match text {
            "" => SplitSpecError::EmptySeparator { index },
            _ => SplitSpecError::WhitespaceSeparator {
                index,
                separator: text.into(),
            },
        })?;
        let protected = compile_list(&spec.protected, true, |index, _| {
            SplitSpecError::EmptyProtected { index }
        })?;
        let mut markers: Vec<(Pattern, usize)> = Vec::new();
        let mut annotation_names: Vec<String> = Vec::new();
        for (name, marker) in &spec.annotations {
            if name.trim().is_empty() {
                return Err(SplitSpecError::EmptyAnnotationName);
            }
            let pat = Pattern::compile(marker, true)
                .ok_or_else(|| SplitSpecError::EmptyMarker { name: name.clone() })?;
            if let Some((_, other)) = markers.iter().find(|(p, _)| p.same_as(&pat)) {
                return Err(SplitSpecError::DuplicateMarker {
                    first: annotation_names.get(*other).cloned().unwrap_or_default(),
                    second: name.clone(),
                    marker: marker.clone(),
                });
            }
            markers.push((pat, annotation_names.len()));
            annotation_names.push(name.clone());
        }
        markers.sort_by_key(|(p, _)| std::cmp::Reverse(p.chars.len()));
        let mut keep: Vec<Pattern> = protected.clone();
        keep.extend(markers.iter().map(|(p, _)| p.clone()));
        keep.sort_by_key(|p| std::cmp::Reverse(p.chars.len()));
        let starts = std::array::from_fn(|b| {
            let c = char::from(b as u8);
            let starts_with_c = |p: &Pattern| match p.chars.first() {
                Some(' ') => c.is_whitespace(),
                Some(&pc) => ci_eq(c, pc),
                None => false,
            };
            separators.iter().chain(&keep).any(starts_with_c)
        });
        let marker_texts = annotation_names
            .iter()
            .map(|n| spec.annotations.get(n).cloned().unwrap_or_default())
            .collect();
        Ok(Splitter {
            separators,
            protected,
            markers,
            keep,
            annotation_names,
            separator_texts: spec.separators.clone(),
            marker_texts,
            enumerators: spec.enumerators,
            dedupe: spec.dedupe,
            starts,
        })
    }

    /// Annotation names in a fixed order (BTreeMap order); Part::annotations aligns with it.
    pub fn annotation_names(&self) -> &[String] {
        &self.annotation_names
    }

    /// The configured separators, in order.
    pub fn separator_texts(&self) -> &[String] {
        &self.separator_texts
    }

    /// The marker of annotation `i` (aligned with [`Splitter::annotation_names`]).
    pub fn marker_text(&self, i: usize) -> &str {
        self.marker_texts.get(i).map(String::as_str).unwrap_or("")
    }

    /// Split one value. `None` and blank values give no parts. Never panics.
    pub fn split(&self, input: Option<&str>) -> Vec<Part> {
        let mut out = Vec::new();
        let Some(s) = input else { return out };
        let mut seen = HashMap::new();
        let mut item_start = 0;
        let mut at = 0;
        // At the start of the value or right after a cut (separator / enumerator).
        let mut after_cut = true;
        while let Some(c) = s.get(at..).and_then(|r| r.chars().next()) {
            if let Some(end) = self.keep_at(s, at) {
                at = end;
                after_cut = false;
                continue;
            }
            let sep = (self.may_start(c))
                .then(|| first_match(&self.separators, s, at))
                .flatten();
            let enum_ok = self.enumerators
                && (c == '(' || c.is_ascii_alphanumeric())
                && (after_cut || s[..at].chars().next_back().is_none_or(char::is_whitespace));
            let cut = sep.filter(|&end| self.cut_allowed(s, at, end)).or_else(|| {
                let enumerator = enum_ok.then(|| enumerator_at(s, at)).flatten();
                enumerator.filter(|&end| self.cut_allowed(s, at, end))
            });
            match cut {
                Some(end) => {
                    self.emit(&s[..at], item_start, &mut out, &mut seen);
                    item_start = end;
                    at = end;
                    after_cut = true;
                }
                None => {
                    at += c.len_utf8();
                    after_cut = false;
                }
            }
        }
        self.emit(s, item_start, &mut out, &mut seen);
        out
    }

    /// A cut over `s[at..end]` is refused when a protected phrase or marker starts inside it.
    fn cut_allowed(&self, s: &str, at: usize, end: usize) -> bool {
        s.get(at..end).is_some_and(|seg| {
            seg.char_indices()
                .skip(1)
                .all(|(o, _)| self.keep_at(s, at + o).is_none())
        })
    }

    fn may_start(&self, c: char) -> bool {
        self.starts.get(c as usize).copied().unwrap_or(true)
    }

    /// End of a protected phrase or marker starting at `at`.
    fn keep_at(&self, s: &str, at: usize) -> Option<usize> {
        let c = s.get(at..)?.chars().next()?;
        let may_start = self.may_start(c);
        may_start.then(|| first_match(&self.keep, s, at)).flatten()
    }

    fn marker_at(&self, hay: &str, at: usize, c: char) -> Option<(usize, usize)> {
        if !self.may_start(c) {
            return None;
        }
        self.markers
            .iter()
            .find_map(|(p, idx)| p.matches_at(hay, at).map(|end| (end, *idx)))
    }

    /// Build the part for the item `hay[start..]` and append it unless empty or a duplicate.
    fn emit(
        &self,
        hay: &str,
        start: usize,
        out: &mut Vec<Part>,
        seen: &mut HashMap<String, usize>,
    ) {
        let mut annotations = vec![false; self.annotation_names.len()];
        let mut name = String::new();
        let mut gap = false;
        let mut at = start;
        while let Some(c) = hay.get(at..).and_then(|r| r.chars().next()) {
            if let Some((end, idx)) = self.marker_at(hay, at, c) {
                if let Some(f) = annotations.get_mut(idx) {
                    *f = true;
                }
                gap = true;
                at = end;
                continue;
            }
            if c.is_whitespace() {
                gap = true;
            } else {
                if gap && !name.is_empty() {
                    name.push(' ');
                }
                gap = false;
                name.push(c);
            }
            at += c.len_utf8();
        }
        self.trim_stray(&mut name);
        if name.is_empty() {
            return;
        }
        let normalized = name.to_lowercase();
        // A duplicate keeps the earlier position; its annotations are OR-ed into that part.
        let earlier = (self.dedupe)
            .then(|| find_earlier(out, seen, &normalized))
            .flatten();
        if let Some(earlier) = earlier.and_then(|i| out.get_mut(i)) {
            let pairs = earlier.annotations.iter_mut().zip(&annotations);
            pairs.for_each(|(a, f)| *a |= *f);
            return;
        }
        let position = out.len() + 1;
        out.push(Part {
            position,
            name,
            normalized,
            annotations,
        });
    }

    /// Trim stray punctuation (and the whitespace it exposes) from both ends of a folded name,
    /// keeping punctuation that ends/starts a protected phrase ("Inc.", "L.P.", "& Co.").
    fn trim_stray(&self, name: &mut String) {
        let (mut lo, mut hi) = (0, name.len());
        loop {
            let t = &name[lo..hi];
            let last = t
                .chars()
                .next_back()
                .filter(|c| STRAY.contains(c) && !self.protected.iter().any(|p| p.is_suffix_of(t)));
            let first = t.chars().next().filter(|c| {
                STRAY.contains(c) && !self.protected.iter().any(|p| p.matches_at(t, 0).is_some())
            });
            if let Some(c) = last {
                hi = lo + t[..t.len() - c.len_utf8()].trim_end().len();
            } else if let Some(c) = first {
                lo = hi - t[c.len_utf8()..].trim_start().len();
            } else {
                break;
            }
        }
        name.truncate(hi);
        name.drain(..lo);
    }
}

#[cfg(test)]
mod tests;
