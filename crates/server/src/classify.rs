//! Backend-independent conflict rules: given a client change and the server's current
//! row, decide whether the change applies cleanly, which conflict kind it runs into, and
//! what the table's policy writes. Every storage backend calls [`plan`] inside its write
//! transaction, so the rules cannot drift between backends.

use roster_protocol::{
    Change, ChangeOp, ConflictKind, ConflictPolicy, Fields, Resolution, ServerRow,
};

/// What the server must write for one change.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Store these values as the row's new version (insert or overwrite).
    Upsert(Fields),
    /// Turn the row into a tombstone.
    Tombstone,
    /// Leave the stored row as it is.
    Nothing,
}

/// The decision for one change: the conflict it ran into (if any), how that conflict is
/// resolved, and the resulting write.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `None` when the change applies cleanly.
    pub conflict: Option<(ConflictKind, Resolution)>,
    /// What to store.
    pub write: Write,
}

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

/// The write that applies the client's change as sent, over whatever the server holds.
fn client_write(change: &Change, current: Option<&ServerRow>) -> Write {
    match (&change.op, &change.fields) {
        (ChangeOp::Delete, _) => match current {
            Some(row) if !row.deleted => Write::Tombstone,
            _ => Write::Nothing,
        },
        (_, Some(fields)) => Write::Upsert(fields.clone()),
        // Shape is validated before planning; an insert or update without fields
        // cannot reach here, and writing nothing is the safe answer if it did.
        (_, None) => Write::Nothing,
    }
}

/// Decides what to do with `change` under the table's `policy`.
pub fn plan(change: &Change, current: Option<&ServerRow>, policy: ConflictPolicy) -> Plan {
    match classify(change, current) {
        None => Plan {
            conflict: None,
            write: client_write(change, current),
        },
        Some(kind) => {
            let resolution = Resolution::from(policy);
            let write = match resolution {
                Resolution::ServerWins => Write::Nothing,
                Resolution::ClientWins => client_write(change, current),
            };
            Plan {
                conflict: Some((kind, resolution)),
                write,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_protocol::RowId;
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

    #[test]
    fn policies_choose_the_write() {
        let update = change(ChangeOp::Update, Some(1));
        let server = plan(&update, Some(&live(2)), ConflictPolicy::ServerWins);
        assert_eq!(server.write, Write::Nothing);
        assert_eq!(
            server.conflict,
            Some((ConflictKind::BothUpdated, Resolution::ServerWins))
        );
        let client = plan(&update, Some(&live(2)), ConflictPolicy::ClientWins);
        assert_eq!(client.write, Write::Upsert(fields()));

        let delete = change(ChangeOp::Delete, Some(1));
        let gone = plan(&delete, Some(&tomb(2)), ConflictPolicy::ClientWins);
        assert_eq!(
            gone.write,
            Write::Nothing,
            "a tombstone is not deleted twice"
        );
        let clean = plan(&delete, Some(&live(1)), ConflictPolicy::ServerWins);
        assert_eq!(
            clean,
            Plan {
                conflict: None,
                write: Write::Tombstone
            }
        );
    }
}
