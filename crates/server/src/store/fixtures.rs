//! Test fixtures shared by the store's unit tests: a data set name, and changes and
//! requests as a client sends them.

use roster_protocol::{Change, ChangeOp, PROTOCOL_VERSION, RowId, SyncRequest};
use serde_json::json;
use uuid::Uuid;

/// The data set the store tests write to.
pub(crate) const DS: &str = "alice";

/// An insert of a new person named `name`.
pub(crate) fn insert(name: &str) -> Change {
    Change {
        table: "person".into(),
        id: RowId::now_v7(),
        op: ChangeOp::Insert,
        base_version: None,
        fields: json!({"name": name}).as_object().cloned(),
        base_fields: None,
        edited_at_ms: None,
    }
}

/// An update of row `id`, read at `base_version` with the name "base", to `name`.
pub(crate) fn update(id: RowId, base_version: u64, name: &str) -> Change {
    Change {
        id,
        op: ChangeOp::Update,
        base_version: Some(base_version),
        base_fields: json!({"name": "base"}).as_object().cloned(),
        ..insert(name)
    }
}

/// A one-batch request from a new client, with its own batch id.
pub(crate) fn request(since: u64, changes: Vec<Change>, pull_limit: u32) -> SyncRequest {
    SyncRequest {
        slice: None,
        protocol: PROTOCOL_VERSION,
        client_id: Uuid::now_v7(),
        since,
        changes,
        pull_limit,
        round: None,
        batch_id: Some(Uuid::now_v7()),
        epoch: None,
    }
}
