//! Syncing with an Azure Mobile Apps backend (the table protocol, `ZUMO-API-VERSION`
//! 2.0.0) instead of a Roster server: the same local store, conflict tables and choices,
//! another wire.
//!
//! The decisions are written without I/O, like [`crate::round`]: `pull` is the
//! incremental pull of one table (`updatedAt ge` with the boundary re-read, deduplicated
//! by id and version, keyset paging through a run of equal `updatedAt`), `push` the
//! requests one pending change makes (POST, PATCH / DELETE with `If-Match`, undelete)
//! and how a 412 / 409 / 404 becomes a classified conflict resolved by the store's
//! policy. `engine/ama.rs` carries their steps out over `transport.rs` and applies the
//! results through the same `apply_answer` as Roster's own protocol
//! (`local/ama.rs` keeps the AMA version strings beside Roster's numeric versions).
//!
//! Versions: AMA's `version` is an opaque string (the `ETag`); Roster's store keeps a
//! number per row. A row's number here is a 63-bit hash of the string ([`version_number`]),
//! and `_roster_ama_versions` maps it back to the string sent in `If-Match`.

pub(crate) mod pull;
pub(crate) mod push;

use std::collections::BTreeMap;

use roster_protocol::{ConflictPolicy, Fields, RowId, ServerRow, TableSchema};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ClientError;

/// Which protocol a store syncs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Roster's own sync protocol (`/v1/sync`): atomic batches, server-side conflict
    /// policies and merges (the default).
    #[default]
    Roster,
    /// An Azure Mobile Apps backend's table protocol (`/tables/{table}`): one request
    /// per change, conflicts classified and resolved on this device by its
    /// [`AmaSettings::policy`].
    AzureMobileApps,
}

impl Protocol {
    /// The protocol's name, as the CLI and the app's settings write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Roster => "roster",
            Protocol::AzureMobileApps => "azure-mobile-apps",
        }
    }

    /// The protocol named `name` ([`Protocol::as_str`]).
    pub fn parse(name: &str) -> Result<Self, ClientError> {
        match name.trim() {
            "roster" => Ok(Protocol::Roster),
            "azure-mobile-apps" => Ok(Protocol::AzureMobileApps),
            other => Err(ClientError::BadInput(format!(
                "unknown protocol {other:?}: use roster or azure-mobile-apps"
            ))),
        }
    }
}

/// How a store that syncs with an Azure Mobile Apps backend resolves conflicts: the
/// backend has no conflict policy of its own (it answers 412 or 409), so the rule Roster's
/// server applies is applied here, with the same kinds, history and deferred choices.
/// Like a Roster server's `[[tables]] policy`, each table may have its own rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmaSettings {
    /// The standing rule of the tables not in `tables`: server-wins (the default),
    /// client-wins (the local change is pushed again on the server's version) or
    /// defer-to-client (kept for a choice, as with Roster's own protocol). `merge` is
    /// refused: field rules live in a Roster server's config. Both sides changing
    /// different columns is merged whatever the rule, as Roster's server does.
    pub policy: ConflictPolicy,
    /// The rule of each table named here, instead of `policy`.
    pub tables: BTreeMap<String, ConflictPolicy>,
}

impl AmaSettings {
    /// The rule conflicts of `table` are resolved by: its own, else the standing one.
    pub fn policy_for(&self, table: &str) -> ConflictPolicy {
        self.tables.get(table).copied().unwrap_or(self.policy)
    }

    /// Checks the settings can be used against an AMA backend.
    pub fn check(&self) -> Result<(), ClientError> {
        let merge = std::iter::once((None, self.policy))
            .chain(self.tables.iter().map(|(t, p)| (Some(t), *p)))
            .find(|(_, policy)| *policy == ConflictPolicy::Merge);
        if let Some((table, _)) = merge {
            let of = table.map(|t| format!(" (table {t})")).unwrap_or_default();
            return Err(ClientError::BadInput(format!(
                "the merge policy{of} needs a Roster server's field rules; against an Azure \
                 Mobile Apps backend use server-wins, client-wins or defer-to-client"
            )));
        }
        Ok(())
    }

    /// Checks every table with a rule of its own is a table of `schema`.
    pub fn check_tables(&self, schema: &roster_protocol::Schema) -> Result<(), ClientError> {
        match self
            .tables
            .keys()
            .find(|name| schema.tables.iter().all(|t| &t.name != *name))
        {
            Some(name) => Err(ClientError::BadInput(format!(
                "a conflict policy names table {name:?}, which the schema does not declare"
            ))),
            None => Ok(()),
        }
    }

    /// Reads a `--conflict-policy` value into these settings: `POLICY` sets the standing
    /// rule, `TABLE=POLICY` the rule of one table.
    pub fn set_from_arg(&mut self, arg: &str) -> Result<(), ClientError> {
        match arg.split_once('=') {
            Some((table, policy)) => {
                let table = table.trim();
                if table.is_empty() {
                    return Err(ClientError::BadInput(format!(
                        "{arg:?}: name the table before `=` (TABLE=POLICY)"
                    )));
                }
                self.tables.insert(table.to_owned(), parse_policy(policy)?);
            }
            None => self.policy = parse_policy(arg)?,
        }
        Ok(())
    }
}

/// The number Roster's store keeps for the AMA version string `version`: FNV-1a, 63 bits
/// (the store keeps it as a signed 64-bit integer), never 0.
pub(crate) fn version_number(version: &str) -> u64 {
    let hash = version.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash >> 1).max(1)
}

/// One item as an AMA backend sends it: the system columns and the table's values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    /// The row id.
    pub(crate) id: RowId,
    /// The opaque version (the `ETag` without quotes).
    pub(crate) version: String,
    /// `updatedAt` as sent.
    pub(crate) updated_at: String,
    /// `updatedAt` in nanoseconds since the Unix epoch.
    pub(crate) updated_at_nanos: i128,
    /// Whether the row is soft-deleted.
    pub(crate) deleted: bool,
    /// The declared columns' values (`None` when deleted).
    pub(crate) fields: Option<Fields>,
}

impl Item {
    /// Reads an item of `table` from its JSON: the declared columns are kept, other
    /// properties (system columns, columns this store does not declare) are dropped.
    pub(crate) fn from_json(table: &TableSchema, value: Value) -> Result<Self, ClientError> {
        let bad = |what: &str| {
            ClientError::Protocol(format!(
                "the Azure Mobile Apps backend sent a {} item {what}",
                table.name
            ))
        };
        let Value::Object(mut object) = value else {
            return Err(bad("that is not a JSON object"));
        };
        let text = |object: &serde_json::Map<String, Value>, name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    bad(&format!(
                        "without a text `{name}` (is the table's {name} system column on?)"
                    ))
                })
        };
        let id_text = text(&object, "id")?;
        let id = RowId::parse_str(&id_text).map_err(|_| {
            bad(&format!(
                "whose id {id_text:?} is not a UUID (Roster syncs only tables with UUID ids)"
            ))
        })?;
        let version = text(&object, "version")?;
        let updated_at = text(&object, "updatedAt")?;
        let updated_at_nanos = parse_time(&updated_at)
            .ok_or_else(|| bad(&format!("whose updatedAt {updated_at:?} is not a date")))?;
        let deleted = object
            .get("deleted")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("without `deleted` (soft delete must be on for the table)"))?;
        let fields = (!deleted).then(|| {
            table
                .columns
                .iter()
                .map(|column| {
                    let value = object.remove(&column.name).unwrap_or(Value::Null);
                    (column.name.clone(), value)
                })
                .collect::<Fields>()
        });
        Ok(Self {
            id,
            version,
            updated_at,
            updated_at_nanos,
            deleted,
            fields,
        })
    }

    /// The item as Roster's store holds a server row.
    pub(crate) fn server_row(&self) -> ServerRow {
        ServerRow {
            version: version_number(&self.version),
            deleted: self.deleted,
            fields: self.fields.clone(),
        }
    }
}

/// An RFC 3339 time (what AMA backends send as `updatedAt`) in nanoseconds.
pub(crate) fn parse_time(text: &str) -> Option<i128> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp_nanos)
}

/// `ms` (Unix milliseconds) in the form of an OData `datetimeoffset` literal.
pub(crate) fn format_ms(ms: u64) -> String {
    roster_protocol::timestamp::format_ms(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// An OData text literal: `'...'` with quotes doubled.
pub(crate) fn text_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The name of a conflict policy as the CLI writes it.
pub(crate) fn policy_name(policy: ConflictPolicy) -> &'static str {
    match policy {
        ConflictPolicy::ServerWins => "server-wins",
        ConflictPolicy::ClientWins => "client-wins",
        ConflictPolicy::Merge => "merge",
        ConflictPolicy::DeferToClient => "defer-to-client",
    }
}

/// The conflict policy named `name` ([`policy_name`]).
pub(crate) fn parse_policy(name: &str) -> Result<ConflictPolicy, ClientError> {
    match name.trim() {
        "server-wins" => Ok(ConflictPolicy::ServerWins),
        "client-wins" => Ok(ConflictPolicy::ClientWins),
        "merge" => Ok(ConflictPolicy::Merge),
        "defer-to-client" => Ok(ConflictPolicy::DeferToClient),
        other => Err(ClientError::BadInput(format!(
            "unknown conflict policy {other:?}: use server-wins, client-wins or defer-to-client"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use roster_protocol::Schema;
    use serde_json::json;

    use super::*;

    #[test]
    fn times_format_as_odata_literals_and_parse_back() {
        let ms = 1_795_827_777_270;
        let text = format_ms(ms);
        assert_eq!(text, "2026-11-28T01:02:57.270Z");
        assert_eq!(parse_time(&text), Some(i128::from(ms) * 1_000_000));
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn conflict_policy_arguments_set_the_standing_rule_and_single_tables() {
        let mut settings = AmaSettings::default();
        settings.set_from_arg("defer-to-client").unwrap();
        settings.set_from_arg("audit=client-wins").unwrap();
        assert_eq!(settings.policy_for("person"), ConflictPolicy::DeferToClient);
        assert_eq!(settings.policy_for("audit"), ConflictPolicy::ClientWins);
        let schema = Schema::default_person();
        let unknown = settings.check_tables(&schema).unwrap_err();
        assert!(unknown.to_string().contains("\"audit\""), "{unknown}");
        settings.tables.clear();
        settings.set_from_arg("person=merge").unwrap();
        let merge = settings.check().unwrap_err();
        assert!(merge.to_string().contains("table person"), "{merge}");
        for bad in ["=server-wins", "person=sideways", "sideways"] {
            assert!(AmaSettings::default().set_from_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_numbers_are_positive_and_tell_versions_apart() {
        let a = version_number("MQ==");
        let b = version_number("Mg==");
        assert_ne!(a, b);
        assert!(a > 0 && i64::try_from(a).is_ok());
        assert_eq!(a, version_number("MQ=="));
    }

    #[test]
    fn an_item_keeps_the_declared_columns_and_reads_the_system_ones() {
        let schema = Schema::default_person();
        let table = &schema.tables[0];
        let item = Item::from_json(
            table,
            json!({"id": "0191e5a0-0000-7000-8000-000000000001", "name": "Jane", "age": 25,
                   "version": "MQ==", "updatedAt": "2026-11-28T01:42:57.278Z",
                   "createdAt": "2026-11-28T01:42:57.278Z", "deleted": false, "extra": 1}),
        )
        .unwrap();
        let fields = item.fields.unwrap();
        assert_eq!(
            (fields["name"].clone(), fields["age"].clone()),
            (json!("Jane"), json!(25))
        );
        assert_eq!(fields["email"], Value::Null);
        assert!(!fields.contains_key("extra") && !fields.contains_key("version"));
        assert_eq!(item.version, "MQ==");
        let deleted = Item::from_json(
            table,
            json!({"id": "0191e5a0-0000-7000-8000-000000000001", "version": "Mw==",
                   "updatedAt": "2026-11-28T01:42:58Z", "deleted": true}),
        )
        .unwrap();
        assert_eq!((deleted.deleted, deleted.fields), (true, None));
    }

    #[test]
    fn an_item_without_a_uuid_or_soft_delete_is_refused_with_the_reason() {
        let schema = Schema::default_person();
        let table = &schema.tables[0];
        let not_uuid = Item::from_json(
            table,
            json!({"id": "42", "version": "MQ==", "updatedAt": "2026-11-28T01:42:57Z",
                   "deleted": false}),
        )
        .unwrap_err();
        assert!(not_uuid.to_string().contains("not a UUID"), "{not_uuid}");
        let no_deleted = Item::from_json(
            table,
            json!({"id": "0191e5a0-0000-7000-8000-000000000001", "version": "MQ==",
                   "updatedAt": "2026-11-28T01:42:57Z"}),
        )
        .unwrap_err();
        assert!(
            no_deleted.to_string().contains("soft delete"),
            "{no_deleted}"
        );
    }
}
