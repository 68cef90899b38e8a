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

/// One child row's change: its item before (removed) and after (added).
pub type Edit = (Option<Item>, Option<Item>);

/// A child row, as the rebuild sees it: its parent's key values (text; None when a parent key
/// column is NULL: the row belongs to no list) and its item.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub parent: Option<Vec<String>>,
    pub item: Item,
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `norm` without the punctuation the split trims from a name's ends.
fn trimmed(s: &str) -> String {
    norm(s)
        .trim_matches(|c: char| matches!(c, ',' | ';' | '&' | '.' | ':'))
        .trim()
        .to_string()
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
        let mut parent = Some(Vec::new());
        for (col, _, _) in &self.parent_key {
            match (text(col)?, parent.as_mut()) {
                (Some(v), Some(p)) => p.push(v),
                _ => parent = None,
            }
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

    /// The list text after `edits` (in order; each removes its first item and adds its
    /// second, either may be None) to the list `text` holds. `Ok(None)`: the list is unchanged,
    /// write nothing. `Ok(Some(None))`: the list is empty (NULL). Err: the new list cannot be
    /// written as text that splits back to it.
    ///
    /// Positions are read as 1-based places in the list (what the forward split writes): an
    /// item added at position p goes to place p (the end, if the list is shorter or NEW has no
    /// position column); an update that keeps its position stays where it is.
    pub fn edit(
        &self,
        text: Option<&str>,
        edits: &[Edit],
    ) -> Result<Option<Option<String>>, String> {
        let before = self.items(text);
        // Each item with whether it came from the text (a removal prefers those: an app that
        // inserts a list's new rows before deleting its old ones has both for a while).
        let mut items: Vec<(Item, bool)> = before.iter().map(|i| (i.clone(), true)).collect();
        for (remove, add) in edits {
            let found = remove.as_ref().and_then(|r| {
                let key = norm(&r.name);
                let rank = |(it, from_text): &(Item, bool)| (it.position != r.position, !from_text);
                items
                    .iter()
                    .enumerate()
                    .filter(|(_, (it, _))| norm(&it.name) == key)
                    .min_by_key(|(_, e)| rank(e))
                    .map(|(i, _)| i)
            });
            match (remove, add, found) {
                (Some(r), Some(a), Some(i)) if r.position == a.position => {
                    items[i] = (a.clone(), false)
                }
                _ => {
                    if let Some(i) = found {
                        items.remove(i);
                    }
                    if let Some(a) = add {
                        let at = usize::try_from(a.position.saturating_sub(1))
                            .unwrap_or(0)
                            .min(items.len());
                        items.insert(at, (a.clone(), false));
                    }
                }
            }
        }
        let items: Vec<Item> = items.into_iter().map(|(i, _)| i).collect();
        // Case counts (a rename from "acme inc." to "Acme Inc." is a change); whitespace runs
        // do not.
        let folded = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let same = items.len() == before.len()
            && items
                .iter()
                .zip(&before)
                .all(|(a, b)| folded(&a.name) == folded(&b.name) && a.annotations == b.annotations);
        if same {
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
            // The split trims stray punctuation from a name's ends ("Acme Corp." comes back
            // "Acme Corp"): that is the forward mapping's own reading, not a loss here.
            if back.len() == items.len()
                && back.iter().zip(items).all(|(b, it)| {
                    trimmed(&b.name) == trimmed(&it.name) && b.annotations == it.annotations
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

    fn text(p: &RebuildPlan, from: Option<&str>, edits: &[Edit]) -> Option<String> {
        p.edit(from, edits).unwrap().unwrap()
    }

    #[test]
    fn an_unchanged_list_keeps_the_original_text() {
        let p = plan();
        let t = "(a) Fortress Capital Advisors (b) John Doe";
        // An update of the child's id only changes nothing.
        let same = item("John Doe", false, 2);
        assert_eq!(
            p.edit(Some(t), &[(Some(same.clone()), Some(same))]),
            Ok(None)
        );
        // Nor does an ORM's replace: insert the new rows, then delete the old ones.
        let replace = [
            (None, Some(item("Fortress Capital Advisors", false, 1))),
            (None, Some(item("John Doe", false, 2))),
            (Some(item("Fortress Capital Advisors", false, 1)), None),
            (Some(item("John Doe", false, 2)), None),
        ];
        assert_eq!(p.edit(Some(t), &replace), Ok(None));
        // The same with one name changed: the removals take the text's items, not the new ones.
        let replace = [
            (None, Some(item("Fortress Capital Advisors", false, 1))),
            (None, Some(item("Jane Roe", false, 2))),
            (Some(item("Fortress Capital Advisors", false, 1)), None),
            (Some(item("John Doe", false, 2)), None),
        ];
        assert_eq!(
            text(&p, Some(t), &replace),
            Some("Fortress Capital Advisors; Jane Roe".into())
        );
    }

    #[test]
    fn added_removed_flagged_and_moved_items_are_rendered_in_place() {
        let p = plan();
        let t = "Redwood Holdings & Co. & NorthStar Trust";
        let added = text(
            &p,
            Some(t),
            &[(None, Some(item("Atlas Property", true, 3)))],
        )
        .unwrap();
        assert_eq!(
            added,
            "Redwood Holdings & Co.; NorthStar Trust; Atlas Property (Pledge)"
        );
        // Inserted at place 1.
        assert_eq!(
            text(&p, Some(t), &[(None, Some(item("First Bank", false, 1)))]).unwrap(),
            "First Bank; Redwood Holdings & Co.; NorthStar Trust"
        );
        // Flagged where it stands.
        assert_eq!(
            text(
                &p,
                Some(t),
                &[(
                    Some(item("Redwood Holdings & Co.", false, 1)),
                    Some(item("Redwood Holdings & Co.", true, 1))
                )]
            )
            .unwrap(),
            "Redwood Holdings & Co. (Pledge); NorthStar Trust"
        );
        let removed = text(
            &p,
            Some(&added),
            &[(Some(item("northstar  trust", false, 2)), None)],
        )
        .unwrap();
        assert_eq!(removed, "Redwood Holdings & Co.; Atlas Property (Pledge)");
        // Moved to the front.
        let moved = text(
            &p,
            Some(&removed),
            &[(
                Some(item("Atlas Property", true, 2)),
                Some(item("Atlas Property", false, 1)),
            )],
        )
        .unwrap();
        assert_eq!(moved, "Atlas Property; Redwood Holdings & Co.");
        // A rename that changes only case is a change.
        assert_eq!(
            text(
                &p,
                Some("acme inc"),
                &[(
                    Some(item("acme inc", false, 1)),
                    Some(item("Acme Inc", false, 1))
                )]
            ),
            Some("Acme Inc".into())
        );
        assert_eq!(
            p.edit(
                Some("Solo Corp"),
                &[(Some(item("Solo Corp", false, 1)), None)]
            ),
            Ok(Some(None))
        );
        assert_eq!(
            text(&p, None, &[(None, Some(item("First Bank", false, 1)))]),
            Some("First Bank".into())
        );
    }

    #[test]
    fn a_name_holding_a_separator_is_refused_not_split() {
        let p = plan();
        let refused = p.edit(
            Some("Alpha Corp"),
            &[(None, Some(item("Doe, John", false, 2)))],
        );
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("Doe, John")),
            "{refused:?}"
        );
        // A protected phrase is no separator; a trailing period is the split's own reading.
        assert_eq!(
            text(
                &p,
                Some("Alpha Corp"),
                &[(None, Some(item("Smith & Sons", false, 2)))]
            ),
            Some("Alpha Corp; Smith & Sons".into())
        );
        assert_eq!(
            text(
                &p,
                Some("Alpha Corp"),
                &[(None, Some(item("Beta Holdings.", false, 2)))]
            ),
            Some("Alpha Corp; Beta Holdings.".into())
        );
    }
}
