//! The answer to a sync request as a backend builds it: the wire [`SyncResponse`], with
//! each pulled row's values kept as the JSON text the database stores
//! ([`roster_protocol::PulledChange`]), so a pull page is passed through without decoding
//! and re-encoding every row.

use roster_protocol::{PulledChange, PulledResponse, RowId, SyncResponse};

use super::StoreError;

/// [`SyncResponse`] with pulled values passed through: the same type, so the same JSON
/// field for field; [`decode`] gives the typed response.
pub type Answer = PulledResponse;

/// Wraps a stored row's values (`data`, JSON text) without decoding them; fails only
/// when the text is not JSON (a damaged database).
pub(crate) fn stored(
    table: String,
    id: RowId,
    version: u64,
    deleted: bool,
    data: Option<String>,
) -> Result<PulledChange, StoreError> {
    PulledChange::from_text(table, id, version, deleted, data)
        .map_err(|e| StoreError::Corrupt(format!("stored row {id}: {e}")))
}

/// The typed wire response, every pulled row decoded.
pub fn decode(answer: Answer) -> Result<SyncResponse, StoreError> {
    answer.try_map_changes(|change| {
        let id = change.id;
        change
            .decode()
            .map_err(|e| StoreError::Corrupt(format!("stored row {id}: {e}")))
    })
}
