//! What a store that syncs with an Azure Mobile Apps backend keeps besides Roster's own
//! sync state: its protocol and conflict policies (`_roster_meta`: `ama_policy`, and
//! `ama_table_policies` those of single tables), each table's pull
//! watermark (`ama_since:<table>`, Unix ms of `updatedAt`), and the AMA version string
//! behind each numeric version it holds (`_roster_ama_versions`, see [`crate::ama`]).
//! An answer of the AMA driver is applied by the same `apply_answer_in` as Roster's,
//! with its version strings in the same transaction.

use std::collections::BTreeMap;

use roster_protocol::{PulledResponse, RowId};
use rusqlite::{OptionalExtension, Transaction, params};

use super::conflicts::DeviceConflictHandler;
use super::rows::row_meta;
use super::{LocalStore, get_meta, set_meta};
use crate::ClientError;
use crate::ama::{AmaSettings, Protocol, parse_policy, policy_name, version_number};
use crate::round::{ApplyCounts, SentChange};

/// The meta key of a table's pull watermark.
fn since_key(table: &str) -> String {
    format!("ama_since:{table}")
}

/// Remembers the AMA version string behind the number `version_number(version)` of row
/// `id`.
fn remember_version(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    version: &str,
) -> Result<(), ClientError> {
    let number = i64::try_from(version_number(version)).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT OR IGNORE INTO _roster_ama_versions (tbl, id, version, etag)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![table, id.to_string(), number, version])?;
    Ok(())
}

/// One answer of the AMA driver, as Roster's store applies it.
pub(crate) struct AmaAnswer<'a> {
    /// The changes the answer settles (their acks and conflicts are in `response`).
    pub(crate) sent: &'a [SentChange],
    /// Acks, conflicts and pulled rows in Roster's form.
    pub(crate) response: PulledResponse,
    /// The AMA version strings of the rows in `response`: (table, id, version).
    pub(crate) versions: Vec<(String, RowId, String)>,
    /// The pulled table and its new watermark (Unix ms), for a page of a pull.
    pub(crate) since: Option<(&'a str, u64)>,
}

/// Writes `protocol` (and its AMA settings) into the meta table of `conn`, after checking
/// the settings.
pub(crate) fn store_protocol(
    conn: &rusqlite::Connection,
    protocol: &(Protocol, AmaSettings),
) -> Result<(), ClientError> {
    protocol.1.check()?;
    set_meta(conn, "protocol", protocol.0.as_str())?;
    set_meta(conn, "ama_policy", policy_name(protocol.1.policy))?;
    let tables: BTreeMap<&str, &str> = protocol
        .1
        .tables
        .iter()
        .map(|(table, policy)| (table.as_str(), policy_name(*policy)))
        .collect();
    let tables = serde_json::to_string(&tables).map_err(|e| ClientError::Corrupt(e.to_string()))?;
    set_meta(conn, "ama_table_policies", &tables)?;
    Ok(())
}

impl LocalStore {
    /// The protocol this store syncs with.
    pub fn protocol(&self) -> Result<Protocol, ClientError> {
        let conn = self.lock();
        get_meta(&conn, "protocol")?.map_or(Ok(Protocol::Roster), |name| Protocol::parse(&name))
    }

    /// The conflict settings of a store that syncs with an AMA backend.
    pub fn ama_settings(&self) -> Result<AmaSettings, ClientError> {
        let conn = self.lock();
        let policy = get_meta(&conn, "ama_policy")?
            .map(|name| parse_policy(&name))
            .transpose()?
            .unwrap_or_default();
        let tables = match get_meta(&conn, "ama_table_policies")? {
            Some(text) => serde_json::from_str::<BTreeMap<String, String>>(&text)
                .map_err(|e| ClientError::Corrupt(format!("stored table policies: {e}")))?
                .into_iter()
                .map(|(table, name)| Ok((table, parse_policy(&name)?)))
                .collect::<Result<_, ClientError>>()?,
            None => BTreeMap::new(),
        };
        Ok(AmaSettings { policy, tables })
    }

    /// Makes the store sync with `protocol` (set at init, before any sync), with
    /// `settings` against an AMA backend.
    pub(crate) fn set_protocol(
        &self,
        protocol: Protocol,
        settings: AmaSettings,
    ) -> Result<(), ClientError> {
        let conn = self.lock();
        store_protocol(&conn, &(protocol, settings))
    }

    /// A table's pull watermark (Unix ms of `updatedAt`; 0 before its first pull).
    pub(crate) fn ama_since(&self, table: &str) -> Result<u64, ClientError> {
        let conn = self.lock();
        Ok(get_meta(&conn, &since_key(table))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The AMA version string behind version `number` of row `id` (`None` when unknown).
    pub(crate) fn ama_version(
        &self,
        table: &str,
        id: RowId,
        number: u64,
    ) -> Result<Option<String>, ClientError> {
        let conn = self.lock();
        let number = i64::try_from(number).unwrap_or(i64::MAX);
        Ok(conn
            .prepare_cached(
                "SELECT etag FROM _roster_ama_versions WHERE tbl = ?1 AND id = ?2 AND version = ?3",
            )?
            .query_row(params![table, id.to_string(), number], |r| r.get(0))
            .optional()?)
    }

    /// Applies one answer of the AMA driver in one transaction: pulled rows this store
    /// already holds at the same version (the boundary read again) are skipped, the rest
    /// goes through `apply_answer_in`, and the version strings and the table's watermark
    /// are stored with it.
    pub(crate) fn apply_ama_answer(
        &self,
        mut answer: AmaAnswer<'_>,
        handler: Option<&dyn DeviceConflictHandler>,
    ) -> Result<ApplyCounts, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            // A live row is known at its version and clean; a deleted one is known when
            // this store does not hold the row at all.
            let mut kept = Vec::with_capacity(answer.response.changes.len());
            for change in answer.response.changes {
                let same = row_meta(&tx, &change.table, change.id)?
                    .map(|(op, base)| op.is_none() && base == Some(change.version));
                let known = match same {
                    None => change.deleted,
                    Some(same) => same && !change.deleted,
                };
                if !known {
                    kept.push(change);
                }
            }
            answer.response.changes = kept;
        }
        let counts = self.apply_answer_in(&tx, answer.sent, &answer.response, handler, false)?;
        for (table, id, version) in &answer.versions {
            remember_version(&tx, table, *id, version)?;
        }
        if let Some((table, since)) = answer.since {
            set_meta(&tx, &since_key(table), &since.to_string())?;
        }
        tx.commit()?;
        Ok(counts)
    }

    /// Ends an AMA round: forgets the version strings no row or open conflict refers to
    /// any more, and records that a round completed now.
    pub(crate) fn finish_ama_round(&self) -> Result<(), ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for table in &self.schema().tables {
            tx.execute(
                &format!(
                    "DELETE FROM _roster_ama_versions AS v
                     WHERE v.tbl = ?1
                       AND NOT EXISTS (SELECT 1 FROM _roster_rows r
                               WHERE r.tbl = v.tbl AND r.id = v.id AND r.base_version = v.version)
                       AND NOT EXISTS (SELECT 1 FROM {} u
                               WHERE u.id = v.id AND u.{} = v.version)
                       AND NOT EXISTS (SELECT 1 FROM _roster_open_conflicts o
                               WHERE o.tbl = v.tbl AND o.id = v.id
                                 AND json_extract(o.remote, '$.version') = v.version)",
                    super::sql::quote(&table.name),
                    super::sql::VERSION_COLUMN
                ),
                [&table.name],
            )?;
        }
        set_meta(&tx, "last_sync_ms", &super::now_ms().to_string())?;
        tx.commit()?;
        Ok(())
    }
}
