//! Conflict kinds, the policies that resolve them, and the record of one resolved
//! conflict as the server reports it.

use serde::{Deserialize, Serialize};

use crate::RowId;
use crate::sync::ServerRow;

/// What kind of conflict a change ran into, named from the client's point of view.
/// Each maps to one `ConflictType` of the Dotmim.Sync documentation (the second source
/// document), given in brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Both sides updated the row since the client's base version
    /// (`RemoteExistsLocalExists`).
    BothUpdated,
    /// The client updated a row the server has deleted (`RemoteIsDeletedLocalExists`).
    ClientUpdatedServerDeleted,
    /// The client deleted a row the server has updated (`RemoteExistsLocalIsDeleted`).
    ClientDeletedServerUpdated,
    /// Both sides deleted the row (`RemoteIsDeletedLocalIsDeleted`).
    BothDeleted,
    /// The client updated a row whose server tombstone was already purged
    /// (`RemoteCleanedupDeleteLocalUpdate`).
    ClientUpdatedPurged,
    /// The client inserted an id the server already has (`RemoteExistsLocalNotExists`).
    ClientInsertedExisting,
    /// The client inserted an id the server has deleted (`RemoteIsDeletedLocalNotExists`).
    ClientInsertedDeleted,
}

impl ConflictKind {
    /// Every kind, in declaration order.
    pub const ALL: [ConflictKind; 7] = [
        ConflictKind::BothUpdated,
        ConflictKind::ClientUpdatedServerDeleted,
        ConflictKind::ClientDeletedServerUpdated,
        ConflictKind::BothDeleted,
        ConflictKind::ClientUpdatedPurged,
        ConflictKind::ClientInsertedExisting,
        ConflictKind::ClientInsertedDeleted,
    ];

    /// The kind's snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::BothUpdated => "both_updated",
            ConflictKind::ClientUpdatedServerDeleted => "client_updated_server_deleted",
            ConflictKind::ClientDeletedServerUpdated => "client_deleted_server_updated",
            ConflictKind::BothDeleted => "both_deleted",
            ConflictKind::ClientUpdatedPurged => "client_updated_purged",
            ConflictKind::ClientInsertedExisting => "client_inserted_existing",
            ConflictKind::ClientInsertedDeleted => "client_inserted_deleted",
        }
    }

    /// The matching Dotmim.Sync `ConflictType` name.
    pub fn dotmim_name(self) -> &'static str {
        match self {
            ConflictKind::BothUpdated => "RemoteExistsLocalExists",
            ConflictKind::ClientUpdatedServerDeleted => "RemoteIsDeletedLocalExists",
            ConflictKind::ClientDeletedServerUpdated => "RemoteExistsLocalIsDeleted",
            ConflictKind::BothDeleted => "RemoteIsDeletedLocalIsDeleted",
            ConflictKind::ClientUpdatedPurged => "RemoteCleanedupDeleteLocalUpdate",
            ConflictKind::ClientInsertedExisting => "RemoteExistsLocalNotExists",
            ConflictKind::ClientInsertedDeleted => "RemoteIsDeletedLocalNotExists",
        }
    }
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table's standing rule for conflicts no handler decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The server's row stands; the client is sent it (the default).
    #[default]
    ServerWins,
    /// The client's change is applied over the server's row.
    ClientWins,
    /// Both rows are merged field by field by the table's field rules (prefer-server
    /// for fields without a rule); kinds with a deleted side fall back to server-wins.
    Merge,
    /// The server keeps its row and hands the conflict to the client, where a person
    /// (or the client's handler) chooses; the next sync pushes the choice.
    DeferToClient,
}

/// How one conflict was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The server's row stands (on the conflicting fields) and the client takes it.
    ServerWins,
    /// The client's change was applied on the server (on the conflicting fields).
    ClientWins,
    /// A merged row, chosen by a handler or built by field rules, was written on the
    /// server and is sent to the client: both sides end identical.
    MergeRow,
    /// The two sides changed different fields; the server merged them on its own.
    AutoMerged,
    /// The server kept its row and left the choice to the client.
    Deferred,
    /// The whole sync round was undone because of this conflict.
    Rollback,
}

impl Resolution {
    /// The resolution's snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::ServerWins => "server_wins",
            Resolution::ClientWins => "client_wins",
            Resolution::MergeRow => "merge_row",
            Resolution::AutoMerged => "auto_merged",
            Resolution::Deferred => "deferred",
            Resolution::Rollback => "rollback",
        }
    }
}

/// One conflict the server detected while applying a client's change. `outcome` is the
/// row that now stands on the server; unless the resolution is
/// [`Resolution::Deferred`], the client makes its copy equal to it (and drops its copy
/// when `outcome` is `None` or a tombstone). A deferred conflict keeps the client's edit
/// and waits for a choice that the next sync pushes against `outcome`'s version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// What collided.
    pub kind: ConflictKind,
    /// The change the client sent (`None` for a delete).
    pub client_row: Option<crate::Fields>,
    /// The server's row before resolution (`None` when it never existed or was purged).
    pub server_row: Option<ServerRow>,
    /// How it was resolved.
    pub resolution: Resolution,
    /// The row standing on the server after resolution (`None` when absent).
    pub outcome: Option<ServerRow>,
    /// The columns both sides changed to different values (empty when the kind involves
    /// a delete or when no base was known).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicting_fields: Vec<String>,
}

/// Why a sync round was rolled back: the conflict whose handler asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackReport {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// Kind of the conflict.
    pub kind: ConflictKind,
    /// The handler's reason, for people.
    pub reason: String,
}

/// One entry of the server's conflict log, as served by the conflict history endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictLogEntry {
    /// Position in the log (increasing).
    pub seq: u64,
    /// When it was resolved (Unix ms).
    pub at_ms: i64,
    /// The client whose change ran into the conflict.
    pub client_id: uuid::Uuid,
    /// The client that last wrote the server's row, if known.
    pub server_client_id: Option<String>,
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// What collided.
    pub kind: ConflictKind,
    /// How it was resolved.
    pub resolution: Resolution,
    /// The client's row (`None` for a delete).
    pub client_row: Option<crate::Fields>,
    /// The server's row before resolution.
    pub server_row: Option<ServerRow>,
    /// The client's base row.
    pub base_row: Option<crate::Fields>,
    /// The row that stood afterwards (`None` when absent or rolled back).
    pub outcome: Option<ServerRow>,
    /// Columns both sides changed to different values.
    pub conflicting_fields: Vec<String>,
}
