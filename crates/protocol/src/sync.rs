//! One sync round trip: the client's pending changes and watermark go up; acks,
//! conflicts and the server's newer changes come down.

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::schema::Fields;
use crate::{MAX_PULL_LIMIT, RowId};

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// A row created on the client (no base version).
    Insert,
    /// A row edited on the client (carries the complete new row and its base version).
    Update,
    /// A row deleted on the client (carries its base version, no fields).
    Delete,
}

impl ChangeOp {
    /// The op's snake_case name, as on the wire and in the client's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Insert => "insert",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

/// One pending client change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// What the change does.
    pub op: ChangeOp,
    /// Server version the client's edit started from; `None` exactly for inserts.
    #[serde(default)]
    pub base_version: Option<u64>,
    /// The complete new row for inserts and updates; `None` for deletes.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// The row as the client last saw it from the server (for three-way merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_fields: Option<Fields>,
    /// When the edit was made on the client (Unix ms), for "newest wins" field rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at_ms: Option<i64>,
}

/// Why a [`Change`] is inconsistent in itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeShapeError {
    /// Inserts must not carry a base version; updates and deletes must.
    #[error("{op} of {id} {what} a base_version")]
    BaseVersion {
        /// The op.
        op: &'static str,
        /// The row.
        id: RowId,
        /// "must carry" or "must not carry".
        what: &'static str,
    },
    /// Inserts and updates must carry fields; deletes must not.
    #[error("{op} of {id} {what} fields")]
    Fields {
        /// The op.
        op: &'static str,
        /// The row.
        id: RowId,
        /// "must carry" or "must not carry".
        what: &'static str,
    },
}

impl Change {
    /// Checks that base version and fields are present exactly when the op needs them.
    pub fn check_shape(&self) -> Result<(), ChangeShapeError> {
        let op = self.op.as_str();
        let needs_base = !matches!(self.op, ChangeOp::Insert);
        if needs_base != self.base_version.is_some() {
            return Err(ChangeShapeError::BaseVersion {
                op,
                id: self.id,
                what: if needs_base {
                    "must carry"
                } else {
                    "must not carry"
                },
            });
        }
        let needs_fields = !matches!(self.op, ChangeOp::Delete);
        if needs_fields != self.fields.is_some() {
            return Err(ChangeShapeError::Fields {
                op,
                id: self.id,
                what: if needs_fields {
                    "must carry"
                } else {
                    "must not carry"
                },
            });
        }
        Ok(())
    }
}

/// A row as stored on the server: its version, whether it is a tombstone, and its values
/// (`None` for tombstones). Versions are change-log positions: globally unique and
/// strictly increasing with every accepted write, so a row's version only ever grows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRow {
    /// Server-assigned version, increasing with every accepted write to the row.
    pub version: u64,
    /// Whether the row is deleted (a tombstone).
    pub deleted: bool,
    /// The row's values; `None` for tombstones.
    pub fields: Option<Fields>,
}

/// A request for one sync batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Stable id of the client installation (recorded in the change and conflict logs).
    pub client_id: uuid::Uuid,
    /// The client's watermark: the change-log sequence number up to which it has pulled.
    pub since: u64,
    /// Pending changes to apply, each row at most once.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Most server changes to return (capped at [`MAX_PULL_LIMIT`]).
    #[serde(default = "default_pull_limit")]
    pub pull_limit: u32,
    /// The round this batch belongs to. Without it the batch is applied on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<RoundInfo>,
    /// Idempotency key: a batch carrying changes that is sent again with the same id (a
    /// retry after a lost answer) is not applied again; the server repeats its first
    /// answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<uuid::Uuid>,
    /// The server epoch the client's watermark and base versions come from (the
    /// `epoch` of the last answer it applied); `None` before its first answer. A server
    /// restored from a backup since then answers with [`SyncResponse::rebase`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The slice of the data set this device holds (partial sync); `None`: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<crate::slice::SliceRequest>,
}

/// The server was restored from a backup since the client's last answer: versions after
/// `restored_at` that the client holds were handed out by the lost history and may mean
/// other rows now. The client re-bases (see the client's `rebase_after_restore`) and
/// starts its round again from watermark 0 in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebase {
    /// The server's epoch now.
    pub epoch: u64,
    /// The newest version the restored database held for the data set: versions up to
    /// it mean the same rows as before; later ones do not.
    pub restored_at: u64,
}

/// Places a batch in a sync round. A server that can roll rounds back (one with a
/// conflict handler) stages the changes of non-final batches and applies the whole round
/// in one transaction when the final batch arrives; other servers apply every batch at
/// once and ignore this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundInfo {
    /// Id of the round, the same for each of its batches.
    pub id: uuid::Uuid,
    /// Whether this is the round's last batch of changes.
    pub final_batch: bool,
}

fn default_pull_limit() -> u32 {
    MAX_PULL_LIMIT
}

/// Acknowledgement of a change applied as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// Version the server assigned to the write (the row's new base version).
    pub version: u64,
    /// The values the server kept for declared columns the change did not carry (a
    /// device that did not know them yet): the device takes them into its row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<Fields>,
}

/// A row that changed on the server after the client's watermark. On the wire the row's
/// fields sit next to `table` and `id` (`{"table", "id", "version", "deleted", "fields"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FlatServerChange")]
pub struct ServerChange {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// The row as it now stands. Its `version` is also its change-log position.
    #[serde(flatten)]
    pub row: ServerRow,
}

/// [`ServerChange`] as it is decoded: the same JSON, read without `serde(flatten)`, which
/// buffers every entry before decoding it (pulls decode nearly twice as fast).
#[derive(Deserialize)]
struct FlatServerChange {
    table: String,
    id: RowId,
    version: u64,
    deleted: bool,
    #[serde(default)]
    fields: Option<Fields>,
}

impl From<FlatServerChange> for ServerChange {
    fn from(flat: FlatServerChange) -> Self {
        Self {
            table: flat.table,
            id: flat.id,
            row: ServerRow {
                version: flat.version,
                deleted: flat.deleted,
                fields: flat.fields,
            },
        }
    }
}

/// The answer to a [`SyncRequest`]. Everything in it was committed in one server
/// transaction. `C` is how a pulled change is held: [`ServerChange`] on the wire and in
/// clients; a server may hold the same JSON differently (for example the stored text of
/// each row, passed through) as long as it serialises to the same object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse<C = ServerChange> {
    /// Changes applied as sent.
    pub acks: Vec<Ack>,
    /// Changes that collided, with their resolution.
    pub conflicts: Vec<Conflict>,
    /// Server changes after the request's watermark, in sequence order, excluding the
    /// rows this request itself wrote (those are in `acks` and `conflicts`).
    pub changes: Vec<C>,
    /// The client's new watermark once it has applied this response.
    pub watermark: u64,
    /// Whether more server changes wait after `watermark`.
    pub has_more: bool,
    /// The newest change-log position on the server (for progress estimates).
    #[serde(default)]
    pub newest: u64,
    /// The batch's changes were staged for an atomic round: they are acknowledged (or
    /// rolled back) with the round's final batch, and this answer pulls nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
    /// The round was rolled back: nothing of it was applied, and the client applies
    /// nothing of this answer and keeps its pending changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::conflict::RollbackReport>,
    /// The server's epoch (a new random number each time its database is restored
    /// from a backup); 0 from a server that has none.
    #[serde(default)]
    pub epoch: u64,
    /// The request's `epoch` is not the server's: nothing was applied or pulled, and the
    /// client must re-base before it syncs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebase: Option<Rebase>,
    /// The version of the schema the server answered with ([`crate::VersionedSchema`]);
    /// a device holding an older one migrates its store before applying the answer.
    /// 0 from a server that does not version its schema.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u64,
    /// Rows of this answer's range, or written by this request, that do not match the
    /// request's subscriptions (partial sync): the device drops its clean copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evicted: Vec<crate::slice::Eviction>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<C> SyncResponse<C> {
    /// The watermark after which more server changes wait, when this answer is a plain
    /// page: not staged, not rolled back, no re-base. The next request of a round that
    /// has no changes left to push is then a pull from there, whatever else the answer
    /// holds ([`crate::MORE_AFTER_HEADER`] carries it ahead of the body).
    pub fn more_after(&self) -> Option<u64> {
        let plain = !self.staged && self.rollback.is_none() && self.rebase.is_none();
        (plain && self.has_more).then_some(self.watermark)
    }

    /// The same response with every pulled change converted by `convert`, in order;
    /// the first error stops it.
    pub fn try_map_changes<D, E>(
        self,
        convert: impl FnMut(C) -> Result<D, E>,
    ) -> Result<SyncResponse<D>, E> {
        Ok(SyncResponse {
            acks: self.acks,
            conflicts: self.conflicts,
            changes: self
                .changes
                .into_iter()
                .map(convert)
                .collect::<Result<_, _>>()?,
            watermark: self.watermark,
            has_more: self.has_more,
            newest: self.newest,
            staged: self.staged,
            rollback: self.rollback,
            epoch: self.epoch,
            rebase: self.rebase,
            schema_version: self.schema_version,
            evicted: self.evicted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: ChangeOp, base: Option<u64>, with_fields: bool) -> Change {
        Change {
            table: "person".into(),
            id: RowId::nil(),
            op,
            base_version: base,
            fields: with_fields.then(Fields::new),
            base_fields: None,
            edited_at_ms: None,
        }
    }

    #[test]
    fn change_shapes() {
        assert!(change(ChangeOp::Insert, None, true).check_shape().is_ok());
        assert!(
            change(ChangeOp::Update, Some(1), true)
                .check_shape()
                .is_ok()
        );
        assert!(
            change(ChangeOp::Delete, Some(1), false)
                .check_shape()
                .is_ok()
        );
        assert!(
            change(ChangeOp::Insert, Some(1), true)
                .check_shape()
                .is_err()
        );
        assert!(change(ChangeOp::Update, None, true).check_shape().is_err());
        assert!(
            change(ChangeOp::Update, Some(1), false)
                .check_shape()
                .is_err()
        );
        assert!(change(ChangeOp::Delete, None, false).check_shape().is_err());
        assert!(
            change(ChangeOp::Delete, Some(1), true)
                .check_shape()
                .is_err()
        );
    }

    #[test]
    fn server_changes_read_back_what_they_write() {
        let live = ServerChange {
            table: "person".into(),
            id: RowId::nil(),
            row: ServerRow {
                version: 7,
                deleted: false,
                fields: Some(serde_json::from_str(r#"{"name":"Jane","age":5}"#).unwrap()),
            },
        };
        let tombstone = ServerChange {
            table: "person".into(),
            id: RowId::nil(),
            row: ServerRow {
                version: 8,
                deleted: true,
                fields: None,
            },
        };
        for change in [live, tombstone] {
            let text = serde_json::to_string(&change).unwrap();
            assert!(text.contains(r#""version":"#) && !text.contains(r#""row""#));
            assert_eq!(serde_json::from_str::<ServerChange>(&text).unwrap(), change);
        }
        let without_fields: ServerChange = serde_json::from_str(
            r#"{"table":"person","id":"00000000-0000-0000-0000-000000000000","version":3,"deleted":true}"#,
        )
        .unwrap();
        assert_eq!(without_fields.row.fields, None);
    }

    #[test]
    fn request_defaults_pull_limit() {
        let req: SyncRequest = serde_json::from_str(
            r#"{"protocol":1,"client_id":"00000000-0000-0000-0000-000000000000","since":0}"#,
        )
        .unwrap();
        assert_eq!(req.pull_limit, MAX_PULL_LIMIT);
        assert!(req.changes.is_empty());
    }
}
