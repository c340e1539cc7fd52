//! The incremental pull of one AMA table, without I/O: which list query to send next
//! and what a page of items means.
//!
//! Each query is `$filter=updatedAt ge <boundary>`, `$orderby=updatedAt,id`, `$top`,
//! `__includeDeleted=true`. The boundary is the `updatedAt` of the last item seen, so its
//! rows are read again (a row written later in the same millisecond is not lost, which
//! `updatedAt gt` would do) and dropped when their id and version were already seen. A
//! page that holds nothing but the boundary's rows (a run of equal `updatedAt` longer
//! than a page, as a bulk insert makes) goes on by key inside the run:
//! `(updatedAt eq <boundary> and id gt <last id>) or updatedAt gt <boundary>`, which
//! misses nothing under writers, unlike `$skip`, whose offsets shift when a row enters
//! the filter. Between rounds only the boundary's time is kept (the store's
//! watermark, in milliseconds, rounded down), so the next round re-reads from it.

use std::collections::HashSet;

use roster_protocol::RowId;

use super::{Item, format_ms, text_literal};

/// Where the next list query of a table starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Boundary {
    /// From a time in milliseconds (the start of a round).
    Millis(u64),
    /// From an `updatedAt` a page carried, as the server wrote it.
    Seen { text: String, nanos: i128 },
}

/// The pull of one table: the query to send, and what each page answered means.
#[derive(Debug)]
pub(crate) struct PullCursor {
    top: u32,
    boundary: Boundary,
    /// Inside a run of rows at the boundary: the last id read.
    after_id: Option<RowId>,
    /// The (id, version) of every row read at the boundary.
    seen: HashSet<(RowId, String)>,
    done: bool,
    pages: u32,
}

impl PullCursor {
    /// A pull of a table from `since_ms` (its watermark; 0 from the start), with pages
    /// of `top` rows (at most what the backend serves, 1000 by default).
    pub(crate) fn new(since_ms: u64, top: u32) -> Self {
        Self {
            top: top.max(1),
            boundary: Boundary::Millis(since_ms),
            after_id: None,
            seen: HashSet::new(),
            done: false,
            pages: 0,
        }
    }

    /// Whether the last page was the table's last.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Pages answered so far.
    pub(crate) fn pages(&self) -> u32 {
        self.pages
    }

    /// The watermark to store once the rows returned so far are applied: the boundary's
    /// time in milliseconds, rounded down (the next round reads it again).
    pub(crate) fn watermark_ms(&self) -> u64 {
        match &self.boundary {
            Boundary::Millis(ms) => *ms,
            Boundary::Seen { nanos, .. } => u64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(0),
        }
    }

    /// The query parameters of the next list request (`GET /tables/{table}`).
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let at = match &self.boundary {
            Boundary::Millis(ms) => format_ms(*ms),
            Boundary::Seen { text, .. } => text.clone(),
        };
        let at = format!("datetimeoffset{}", text_literal(&at));
        let filter = match self.after_id {
            None => format!("updatedAt ge {at}"),
            Some(id) => format!(
                "(updatedAt eq {at} and id gt {}) or updatedAt gt {at}",
                text_literal(&id.to_string())
            ),
        };
        vec![
            ("$filter", filter),
            ("$orderby", "updatedAt,id".to_owned()),
            ("$top", self.top.to_string()),
            ("__includeDeleted", "true".to_owned()),
        ]
    }

    /// Takes one page (the items of the last query, in the order sent) and returns the
    /// ones not seen before in this pull. A page shorter than `top` ends the pull.
    pub(crate) fn on_page(&mut self, items: Vec<Item>) -> Vec<Item> {
        self.pages += 1;
        let full = items.len() >= self.top as usize;
        let boundary_nanos = match &self.boundary {
            Boundary::Millis(ms) => i128::from(*ms) * 1_000_000,
            Boundary::Seen { nanos, .. } => *nanos,
        };
        let last = items
            .last()
            .map(|item| (item.updated_at.clone(), item.updated_at_nanos, item.id));
        let mut fresh = Vec::with_capacity(items.len());
        for item in items {
            let key = (item.id, item.version.clone());
            if item.updated_at_nanos == boundary_nanos && self.seen.contains(&key) {
                continue;
            }
            fresh.push(item);
        }
        match last {
            Some((text, nanos, id)) if nanos == boundary_nanos => {
                // Only the boundary's run: go on inside it by id.
                if let Boundary::Millis(_) = self.boundary {
                    self.boundary = Boundary::Seen { text, nanos };
                }
                self.after_id = Some(id);
            }
            Some((text, nanos, _)) => {
                self.boundary = Boundary::Seen { text, nanos };
                self.after_id = None;
                self.seen.clear();
            }
            None => {}
        }
        let at = match &self.boundary {
            Boundary::Seen { nanos, .. } => *nanos,
            Boundary::Millis(ms) => i128::from(*ms) * 1_000_000,
        };
        for item in fresh.iter().filter(|item| item.updated_at_nanos == at) {
            self.seen.insert((item.id, item.version.clone()));
        }
        self.done = !full;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ama::parse_time;

    fn item(n: u128, at: &str, version: &str) -> Item {
        Item {
            id: RowId::from_u128(n),
            version: version.to_owned(),
            updated_at: at.to_owned(),
            updated_at_nanos: parse_time(at).unwrap(),
            deleted: false,
            fields: None,
        }
    }

    fn ids(items: &[Item]) -> Vec<u128> {
        items.iter().map(|i| i.id.as_u128()).collect()
    }

    const T1: &str = "2026-11-28T01:00:00.001Z";
    const T2: &str = "2026-11-28T01:00:00.002Z";
    const T3: &str = "2026-11-28T01:00:00.003Z";

    #[test]
    fn the_first_query_asks_from_the_watermark_with_deleted_rows_in_order() {
        let cursor = PullCursor::new(0, 1000);
        assert_eq!(
            cursor.query(),
            vec![
                (
                    "$filter",
                    "updatedAt ge datetimeoffset'1970-01-01T00:00:00.000Z'".to_owned()
                ),
                ("$orderby", "updatedAt,id".to_owned()),
                ("$top", "1000".to_owned()),
                ("__includeDeleted", "true".to_owned()),
            ]
        );
    }

    #[test]
    fn the_boundary_is_read_again_and_rows_already_seen_are_dropped() {
        let mut cursor = PullCursor::new(0, 3);
        let fresh = cursor.on_page(vec![item(1, T1, "a"), item(2, T2, "a"), item(3, T2, "a")]);
        assert_eq!(ids(&fresh), [1, 2, 3]);
        assert!(!cursor.is_done());
        // ge, never gt: the rows at T2 come again, with a row written at T2 since.
        assert_eq!(
            cursor.query()[0].1,
            format!("updatedAt ge datetimeoffset'{T2}'")
        );
        let fresh = cursor.on_page(vec![item(2, T2, "a"), item(3, T2, "a"), item(4, T2, "a")]);
        assert_eq!(ids(&fresh), [4], "only the row not seen");
        // A page of only the boundary's run goes on by id inside it.
        assert_eq!(
            cursor.query()[0].1,
            format!(
                "(updatedAt eq datetimeoffset'{T2}' and id gt '{}') or updatedAt gt \
                 datetimeoffset'{T2}'",
                RowId::from_u128(4)
            )
        );
        let fresh = cursor.on_page(vec![item(5, T3, "a")]);
        assert_eq!(ids(&fresh), [5]);
        assert!(cursor.is_done());
        assert_eq!(cursor.watermark_ms(), 1_795_827_600_003);
        assert_eq!(cursor.pages(), 3);
    }

    #[test]
    fn a_row_updated_again_at_the_boundary_is_not_dropped() {
        let mut cursor = PullCursor::new(0, 2);
        cursor.on_page(vec![item(1, T1, "a"), item(2, T2, "a")]);
        let fresh = cursor.on_page(vec![item(2, T2, "b")]);
        assert_eq!(
            fresh.len(),
            1,
            "a new version of a row seen at the boundary"
        );
        assert!(cursor.is_done());
    }

    #[test]
    fn a_run_of_equal_times_longer_than_a_page_ends() {
        // 5 rows at T1, pages of 2: ge would return the same 2 rows forever.
        let run: Vec<Item> = (1..=5).map(|n| item(n, T1, "a")).collect();
        let mut cursor = PullCursor::new(1_795_827_600_001, 2);
        let mut got = Vec::new();
        let mut next = 0;
        while !cursor.is_done() {
            let page: Vec<Item> = run[next..].iter().take(2).cloned().collect();
            next += page.len();
            got.extend(ids(&cursor.on_page(page)));
            assert!(cursor.pages() < 10);
        }
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn an_empty_table_is_one_page() {
        let mut cursor = PullCursor::new(7, 1000);
        assert!(cursor.on_page(Vec::new()).is_empty());
        assert!(cursor.is_done());
        assert_eq!(cursor.watermark_ms(), 7);
    }
}
