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

/// A table's standing rule for conflicts the server resolves on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The server's row stands; the client is sent it (the default).
    #[default]
    ServerWins,
    /// The client's change is applied over the server's row.
    ClientWins,
}

/// How one conflict was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The server's row stands and the client must take it.
    ServerWins,
    /// The client's change was applied on the server.
    ClientWins,
}

impl Resolution {
    /// The resolution's snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::ServerWins => "server_wins",
            Resolution::ClientWins => "client_wins",
        }
    }
}

impl From<ConflictPolicy> for Resolution {
    fn from(policy: ConflictPolicy) -> Self {
        match policy {
            ConflictPolicy::ServerWins => Resolution::ServerWins,
            ConflictPolicy::ClientWins => Resolution::ClientWins,
        }
    }
}

/// One conflict the server detected and resolved while applying a client's change.
/// `outcome` is the row that now stands on the server; the client makes its copy equal
/// to it (and drops its copy when `outcome` is `None` or a tombstone).
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
}
