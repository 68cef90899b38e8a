//! The inverse of a split (1→N): a change to one child row on NEW (a guarantor added, renamed,
//! re-flagged, moved or removed) becomes the parent's list text on OLD, rebuilt.
//!
//! ```text
//!  OLD text ─split─▶ items (positions 1..n) ─remove old child, add new child─▶ items'
//!     items' == items ─▶ nothing to write (OLD keeps its text exactly, formatting and all)
//!     else ─render (a separator no name contains, the annotation markers)─▶ text'
//!          └─ split(text') must give items' back, or the change is refused, naming the row
//! ```
//!
//! The text on OLD is the list's state as of the last change the reverse stream applied, so
//! splitting it is exact and needs no copy of the child rows. Items are matched by their
//! normalised name (what the split's child ids derive from); a change needs the child's old
//! row whole (REPLICA IDENTITY FULL on NEW's child table). Order: by the children's position
//! column, an incoming item before an existing one at the same position.
//!
//! Pure: it must never touch a database (`apply::rebuild` reads and writes OLD's row).

use std::sync::Arc;

use super::split::{Part, Splitter};
use crate::change::{Datum, Relation, Tuple};

/// How one split output is written back: NEW's child table → OLD's list column.
#[derive(Debug, Clone)]
pub struct RebuildPlan {
    /// NEW's child table, qualified.
    pub child_table: String,
    /// OLD's table and its list column.
    pub parent_table: String,
    pub text_column: String,
    /// (child column holding a parent key value, OLD key column, its SQL type).
    pub parent_key: Vec<(String, String, String)>,
    /// Child columns: the name, the position (if mapped), and each annotation (column, index).
    pub name: String,
    pub position: Option<String>,
    pub annotations: Vec<(String, usize)>,
    pub splitter: Arc<Splitter>,
}

/// One item of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub annotations: Vec<bool>,
    pub position: i64,
}

/// A child row, as the rebuild sees it: its parent's key values (text) and its item.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub parent: Vec<String>,
    pub item: Item,
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl RebuildPlan {
    /// The child row in tuple `t` of relation `rel`; Err names what is missing.
    pub fn child(&self, rel: &Relation, t: &Tuple) -> Result<Child, String> {
        let text = |col: &str| -> Result<Option<String>, String> {
            let i = rel.column_position(col).ok_or_else(|| {
                format!(
                    "column {col} is not in the stream's row of {}",
                    self.child_table
                )
            })?;
            match t.get(i) {
                Some(Datum::Text(s)) => Ok(Some(s.clone())),
                Some(Datum::Null) => Ok(None),
                _ => Err(format!(
                    "column {col} of {} is missing from the row (the old row of an update or delete needs REPLICA IDENTITY FULL on it)",
                    self.child_table
                )),
            }
        };
        let mut parent = Vec::new();
        for (col, _, _) in &self.parent_key {
            parent.push(text(col)?.ok_or_else(|| format!("{col} is NULL"))?);
        }
        let name = text(&self.name)?.unwrap_or_default();
        let position = match &self.position {
            Some(p) => text(p)?
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(i64::MAX),
            None => i64::MAX,
        };
        let n = self.splitter.annotation_names().len();
        let mut annotations = vec![false; n];
        for (col, i) in &self.annotations {
            if let Some(slot) = annotations.get_mut(*i) {
                *slot = matches!(text(col)?.as_deref(), Some("t") | Some("true"));
            }
        }
        Ok(Child {
            parent,
            item: Item {
                name,
                annotations,
                position,
            },
        })
    }

    fn items(&self, text: Option<&str>) -> Vec<Item> {
        self.splitter
            .split(text)
            .into_iter()
            .map(|p: Part| Item {
                name: p.name,
                annotations: p.annotations,
                position: p.position as i64,
            })
            .collect()
    }

    /// The list text after removing `remove` and adding `add` (either may be None) to the list
    /// `text` holds. `Ok(None)`: the list is unchanged, write nothing. `Ok(Some(None))`: the
    /// list is empty (NULL). Err: the new list cannot be written as text that splits back to it.
    pub fn edit(
        &self,
        text: Option<&str>,
        remove: Option<&Item>,
        add: Option<&Item>,
    ) -> Result<Option<Option<String>>, String> {
        let before = self.items(text);
        let mut items = before.clone();
        if let Some(r) = remove {
            if let Some(i) = items.iter().position(|it| norm(&it.name) == norm(&r.name)) {
                items.remove(i);
            }
        }
        if let Some(a) = add {
            // Before the first existing item at or after its position.
            let at = items
                .iter()
                .position(|it| it.position >= a.position)
                .unwrap_or(items.len());
            items.insert(at, a.clone());
        }
        let same = |x: &[Item], y: &[Item]| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(a, b)| norm(&a.name) == norm(&b.name) && a.annotations == b.annotations)
        };
        if same(&items, &before) {
            return Ok(None);
        }
        if items.is_empty() {
            return Ok(Some(None));
        }
        self.render(&items).map(|t| Some(Some(t)))
    }

    /// Items as text: names with their markers, joined by the first configured separator
    /// under which the text splits back to exactly these items.
    pub fn render(&self, items: &[Item]) -> Result<String, String> {
        let words: Vec<String> = items
            .iter()
            .map(|it| {
                let mut w = it.name.clone();
                for (i, on) in it.annotations.iter().enumerate() {
                    if *on {
                        w.push(' ');
                        w.push_str(self.splitter.marker_text(i));
                    }
                }
                w
            })
            .collect();
        let mut seps: Vec<&String> = self.splitter.separator_texts().iter().collect();
        // Semicolons first: names carry commas ("Doe, John") more often than semicolons.
        seps.sort_by_key(|s| if s.trim() == ";" { 0 } else { 1 });
        for sep in seps {
            let t = sep.trim();
            let joiner = if t.chars().all(|c| !c.is_alphanumeric()) {
                if t == "&" {
                    " & ".to_string()
                } else {
                    format!("{t} ")
                }
            } else {
                format!(" {t} ")
            };
            let text = words.join(&joiner);
            let back = self.items(Some(&text));
            if back.len() == items.len()
                && back.iter().zip(items).all(|(b, it)| {
                    norm(&b.name) == norm(&it.name) && b.annotations == it.annotations
                })
            {
                return Ok(text);
            }
        }
        Err(format!(
            "the list [{}] cannot be written as text that splits back to the same items (a name holds every separator, a marker, or an enumerator)",
            items
                .iter()
                .map(|i| format!("{:?}", i.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::split::SplitSpec;

    fn plan() -> RebuildPlan {
        let mut spec = SplitSpec::default();
        spec.annotations.insert("pledge".into(), "(Pledge)".into());
        RebuildPlan {
            child_table: "public.guarantors".into(),
            parent_table: "public.loans".into(),
            text_column: "guarantor".into(),
            parent_key: vec![("loan_id".into(), "id".into(), "uuid".into())],
            name: "name".into(),
            position: Some("position".into()),
            annotations: vec![("pledge".into(), 0)],
            splitter: Arc::new(Splitter::new(&spec).unwrap()),
        }
    }

    fn item(name: &str, pledge: bool, position: i64) -> Item {
        Item {
            name: name.into(),
            annotations: vec![pledge],
            position,
        }
    }

    #[test]
    fn an_unchanged_list_keeps_the_original_text() {
        let p = plan();
        let text = "(a) Fortress Capital Advisors (b) John Doe";
        // Removing and re-adding the same item (an update of its id only) changes nothing.
        let same = item("John Doe", false, 2);
        assert_eq!(p.edit(Some(text), Some(&same), Some(&same)), Ok(None));
    }

    #[test]
    fn added_removed_and_flagged_items_are_rendered_with_markers() {
        let p = plan();
        let text = "Redwood Holdings & Co. & NorthStar Trust";
        let added = p
            .edit(Some(text), None, Some(&item("Atlas Property", true, 3)))
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            added,
            "Redwood Holdings & Co.; NorthStar Trust; Atlas Property (Pledge)"
        );
        let removed = p
            .edit(
                Some(&added),
                Some(&item("northstar  trust", false, 2)),
                None,
            )
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(removed, "Redwood Holdings & Co.; Atlas Property (Pledge)");
        // Moved to the front.
        let moved = p
            .edit(
                Some(&removed),
                Some(&item("Atlas Property", true, 2)),
                Some(&item("Atlas Property", false, 1)),
            )
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(moved, "Atlas Property; Redwood Holdings & Co.");
        assert_eq!(
            p.edit(Some("Solo Corp"), Some(&item("Solo Corp", false, 1)), None),
            Ok(Some(None))
        );
        assert_eq!(
            p.edit(None, None, Some(&item("First Bank", false, 1))),
            Ok(Some(Some("First Bank".into())))
        );
    }

    #[test]
    fn a_name_holding_a_separator_is_refused_not_split() {
        let p = plan();
        let refused = p.edit(Some("Alpha Corp"), None, Some(&item("Doe, John", false, 2)));
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("Doe, John")),
            "{refused:?}"
        );
        // A protected phrase is no separator.
        let ok = p.edit(
            Some("Alpha Corp"),
            None,
            Some(&item("Smith & Sons", false, 2)),
        );
        assert_eq!(ok, Ok(Some(Some("Alpha Corp; Smith & Sons".into()))));
    }
}
