//! Which conflict a change runs into: given a client change and the server's current row,
//! decide whether it applies cleanly or which [`ConflictKind`] it is. How a conflict is
//! then resolved lives in [`crate::resolve`]; every storage backend calls both inside its
//! write transaction, so the rules cannot drift between backends.

use roster_protocol::{Change, ChangeOp, ConflictKind, ServerRow};

/// Classifies `change` against the server's `current` row (`None`: never existed or
/// purged). Returns `None` when the change applies cleanly, i.e. its base version is the
/// row's current version (or, for an insert, the id is unused).
pub fn classify(change: &Change, current: Option<&ServerRow>) -> Option<ConflictKind> {
    let live = current.filter(|row| !row.deleted);
    let tombstone = current.filter(|row| row.deleted);
    match change.op {
        ChangeOp::Insert => match (live, tombstone) {
            (Some(_), _) => Some(ConflictKind::ClientInsertedExisting),
            (_, Some(_)) => Some(ConflictKind::ClientInsertedDeleted),
            (None, None) => None,
        },
        ChangeOp::Update => match (live, tombstone) {
            (Some(row), _) if Some(row.version) == change.base_version => None,
            (Some(_), _) => Some(ConflictKind::BothUpdated),
            // A person who saw the delete chose to keep the row: it comes back cleanly.
            (_, Some(row)) if Some(row.version) == change.base_version => None,
            (_, Some(_)) => Some(ConflictKind::ClientUpdatedServerDeleted),
            // The client holds a base version, so the row existed: its tombstone is gone.
            (None, None) => Some(ConflictKind::ClientUpdatedPurged),
        },
        ChangeOp::Delete => match live {
            Some(row) if Some(row.version) == change.base_version => None,
            Some(_) => Some(ConflictKind::ClientDeletedServerUpdated),
            None => Some(ConflictKind::BothDeleted),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_protocol::{Fields, RowId};
    use serde_json::json;

    fn fields() -> Fields {
        match json!({"name": "Jane"}) {
            serde_json::Value::Object(m) => m,
            _ => Fields::new(),
        }
    }

    fn change(op: ChangeOp, base: Option<u64>) -> Change {
        Change {
            table: "person".into(),
            id: RowId::nil(),
            op,
            base_version: base,
            fields: (op != ChangeOp::Delete).then(fields),
            base_fields: None,
            edited_at_ms: None,
        }
    }

    fn live(version: u64) -> ServerRow {
        ServerRow {
            version,
            deleted: false,
            fields: Some(fields()),
        }
    }

    fn tomb(version: u64) -> ServerRow {
        ServerRow {
            version,
            deleted: true,
            fields: None,
        }
    }

    #[test]
    fn every_kind_is_classified() {
        use ChangeOp::*;
        use ConflictKind::*;
        let cases: Vec<(Change, Option<ServerRow>, Option<ConflictKind>)> = vec![
            (change(Insert, None), None, None),
            (change(Update, Some(3)), Some(live(3)), None),
            (change(Delete, Some(3)), Some(live(3)), None),
            (change(Update, Some(3)), Some(live(5)), Some(BothUpdated)),
            (
                change(Update, Some(3)),
                Some(tomb(5)),
                Some(ClientUpdatedServerDeleted),
            ),
            (
                change(Delete, Some(3)),
                Some(live(5)),
                Some(ClientDeletedServerUpdated),
            ),
            (change(Delete, Some(3)), Some(tomb(5)), Some(BothDeleted)),
            (change(Delete, Some(3)), None, Some(BothDeleted)),
            (change(Update, Some(3)), None, Some(ClientUpdatedPurged)),
            (
                change(Insert, None),
                Some(live(1)),
                Some(ClientInsertedExisting),
            ),
            (
                change(Insert, None),
                Some(tomb(2)),
                Some(ClientInsertedDeleted),
            ),
        ];
        for (change, current, expected) in cases {
            assert_eq!(
                classify(&change, current.as_ref()),
                expected,
                "{:?} against {current:?}",
                change.op
            );
        }
    }
}
