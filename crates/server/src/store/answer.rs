//! The answer to a sync request as a backend builds it: the wire [`SyncResponse`], with
//! each pulled row's values kept as the JSON text the database stores, so a pull page is
//! passed through without decoding and re-encoding every row.

use roster_protocol::{Fields, RowId, ServerChange, ServerRow, SyncResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StoreError;

/// A pulled row with its values as stored. Serialises exactly as [`ServerChange`]
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

impl PulledChange {
    /// Wraps stored values (`data`, JSON text) without decoding them; fails only when
    /// the text is not JSON (a damaged database).
    pub(crate) fn stored(
        table: String,
        id: RowId,
        version: u64,
        deleted: bool,
        data: Option<String>,
    ) -> Result<Self, StoreError> {
        let fields = data
            .map(RawValue::from_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("stored row {table}/{id}: {e}")))?;
        Ok(Self {
            table,
            id,
            version,
            deleted,
            fields,
        })
    }

    /// The change with its values decoded.
    pub fn decode(self) -> Result<ServerChange, StoreError> {
        let fields: Option<Fields> = self
            .fields
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("stored row {}: {e}", self.id)))?;
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

/// [`SyncResponse`] with pulled values passed through ([`PulledChange`]): the same
/// type, so the same JSON field for field; [`decode`] gives the typed response.
pub type Answer = SyncResponse<PulledChange>;

/// The typed wire response, every pulled row decoded.
pub fn decode(answer: Answer) -> Result<SyncResponse, StoreError> {
    answer.try_map_changes(PulledChange::decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_protocol::{Ack, ConflictKind, RollbackReport};
    use serde_json::json;

    /// The pass-through answer and the typed response are the same JSON both ways.
    #[test]
    fn an_answer_is_the_wire_response_byte_for_byte() {
        let id = RowId::now_v7();
        let answer = Answer {
            evicted: Vec::new(),
            acks: vec![Ack {
                table: "person".into(),
                id,
                version: 3,
                kept: None,
            }],
            conflicts: Vec::new(),
            changes: vec![
                PulledChange::stored(
                    "person".into(),
                    RowId::now_v7(),
                    4,
                    false,
                    Some(r#"{"age":25,"name":"Jane \"J\" Doe"}"#.into()),
                )
                .unwrap(),
                PulledChange::stored("person".into(), RowId::now_v7(), 5, true, None).unwrap(),
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
        let typed = decode(answer.clone()).unwrap();
        assert_eq!(raw, serde_json::to_string(&typed).unwrap());
        assert_eq!(
            typed.changes[0].row.fields.as_ref().unwrap()["name"],
            json!("Jane \"J\" Doe")
        );
        assert_eq!(typed.changes[1].row.fields, None);
        let again: Answer = serde_json::from_str(&raw).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), raw);
        assert!(PulledChange::stored("person".into(), id, 1, false, Some("{oops".into())).is_err());
    }
}
