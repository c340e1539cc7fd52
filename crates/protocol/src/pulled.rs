//! A pulled change with its values kept as JSON text: how both ends hold a pull page.
//!
//! The server passes each stored row's text through without decoding it; the client
//! decodes a page's rows as text on the network path and turns each into the values of
//! its table's columns only when it applies the page
//! ([`crate::TableSchema::decode_row`]), so no map per row is built or dropped. On the
//! wire a [`PulledChange`] is exactly a [`ServerChange`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Fields, RowId, ServerChange, ServerRow, SyncResponse};

/// A pulled row with its values as JSON text. Serialises exactly as [`ServerChange`]
/// (`{"table", "id", "version", "deleted", "fields"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PulledChange {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// The row's version (its change-log position).
    pub version: u64,
    /// Whether the row is a tombstone.
    pub deleted: bool,
    /// The row's values as a JSON object; `None` for tombstones.
    #[serde(default)]
    pub fields: Option<Box<RawValue>>,
}

/// [`SyncResponse`] with pulled rows held as text: the same JSON field for field.
pub type PulledResponse = SyncResponse<PulledChange>;

impl PulledChange {
    /// Wraps values given as JSON text (a stored row) without decoding them; fails only
    /// when the text is not JSON.
    pub fn from_text(
        table: String,
        id: RowId,
        version: u64,
        deleted: bool,
        fields: Option<String>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            table,
            id,
            version,
            deleted,
            fields: fields.map(RawValue::from_string).transpose()?,
        })
    }

    /// The change with its values decoded into a map.
    pub fn decode(self) -> Result<ServerChange, serde_json::Error> {
        let fields: Option<Fields> = self
            .fields
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()?;
        Ok(ServerChange {
            table: self.table,
            id: self.id,
            row: ServerRow {
                version: self.version,
                deleted: self.deleted,
                fields,
            },
        })
    }
}

/// The change with its values encoded as text. Fallible in type only (a map of JSON
/// values always encodes), so that a failure could never pass as a row without values,
/// which an apply takes for a tombstone.
impl TryFrom<ServerChange> for PulledChange {
    type Error = serde_json::Error;

    fn try_from(change: ServerChange) -> Result<Self, serde_json::Error> {
        Ok(Self {
            table: change.table,
            id: change.id,
            version: change.row.version,
            deleted: change.row.deleted,
            fields: change
                .row
                .fields
                .map(|fields| serde_json::value::to_raw_value(&fields))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ack, ConflictKind, RollbackReport};
    use serde_json::json;

    /// The text-held answer and the typed response are the same JSON both ways.
    #[test]
    fn a_pulled_response_is_the_wire_response_byte_for_byte() {
        let id = RowId::now_v7();
        let answer = PulledResponse {
            evicted: Vec::new(),
            acks: vec![Ack {
                table: "person".into(),
                id,
                version: 3,
                kept: None,
            }],
            conflicts: Vec::new(),
            changes: vec![
                PulledChange::from_text(
                    "person".into(),
                    RowId::now_v7(),
                    4,
                    false,
                    Some(r#"{"age":25,"name":"Jane \"J\" Doe"}"#.into()),
                )
                .unwrap(),
                PulledChange::from_text("person".into(), RowId::now_v7(), 5, true, None).unwrap(),
            ],
            watermark: 5,
            has_more: false,
            newest: 5,
            staged: false,
            schema_version: 0,
            rollback: Some(RollbackReport {
                table: "person".into(),
                id,
                kind: ConflictKind::BothUpdated,
                reason: "test".into(),
            }),
            epoch: 0,
            rebase: None,
        };
        let raw = serde_json::to_string(&answer).unwrap();
        let typed = answer
            .clone()
            .try_map_changes(PulledChange::decode)
            .unwrap();
        assert_eq!(raw, serde_json::to_string(&typed).unwrap());
        assert_eq!(
            typed.changes[0].row.fields.as_ref().unwrap()["name"],
            json!("Jane \"J\" Doe")
        );
        assert_eq!(typed.changes[1].row.fields, None);
        let again: PulledResponse = serde_json::from_str(&raw).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), raw);
        let back: Vec<PulledChange> = typed
            .changes
            .into_iter()
            .map(PulledChange::try_from)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&again.changes).unwrap()
        );
        assert!(
            PulledChange::from_text("person".into(), id, 1, false, Some("{oops".into())).is_err()
        );
    }
}
