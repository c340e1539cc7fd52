//! How a conflict is resolved, in order of precedence:
//!
//! 1. **Automatic three-way merge.** When both sides updated a row but changed different
//!    fields since the client's base, the server merges them; nobody is asked (table
//!    setting `auto_merge`, on by default).
//! 2. **The server owner's [`ServerConflictHandler`]**, called once per remaining conflict with
//!    both rows and the base. It returns server-wins, client-wins, a merged row, defer to
//!    the client, or rollback of the whole round; `None` leaves the choice to the rules.
//! 3. **The table's rules** from the config: a [`ConflictPolicy`] and, for `merge`,
//!    per-field [`FieldRule`]s. With `auto_merge`, the policies decide only the fields both
//!    sides changed; the client's other changes are kept.
//!
//! Like [`crate::classify`], this is pure: backends call [`Resolver::plan`] inside their
//! write transaction and carry out the returned [`Plan`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use roster_protocol::{
    Change, ChangeOp, ConflictKind, ConflictPolicy, Fields, Resolution, Schema, ServerRow,
    TableSchema,
};
use serde_json::Value;

use crate::classify::classify;
use crate::config::{FieldRule, ServerConfig};

/// Everything a handler sees of one conflict.
#[derive(Debug)]
pub struct ConflictContext<'a> {
    /// Table of the row.
    pub table: &'a str,
    /// What collided.
    pub kind: ConflictKind,
    /// The client that pushed the change.
    pub client_id: uuid::Uuid,
    /// The client's row (`None` for a delete).
    pub client_row: Option<&'a Fields>,
    /// The server's row (`None` when it never existed or was purged).
    pub server_row: Option<&'a ServerRow>,
    /// The row as the client last saw it from the server (`None` for inserts).
    pub base_row: Option<&'a Fields>,
    /// Columns both sides changed to different values.
    pub conflicting_fields: &'a [String],
}

/// A handler's answer for one conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerDecision {
    /// The server's row stands as it is.
    ServerWins,
    /// The client's change is applied as sent.
    ClientWins,
    /// This row is written on the server and sent to the client.
    MergeRow(Fields),
    /// The server keeps its row; the client's person or handler chooses.
    Defer,
    /// The whole sync round is undone; the reason is reported to the client.
    Rollback(String),
}

/// Server-side conflict handler, supplied by whoever embeds the server
/// (see [`crate::http::ServerState::with_handler`]). Called inside the write transaction:
/// keep it fast and free of I/O.
pub trait ServerConflictHandler: Send + Sync + 'static {
    /// Decides one conflict, or returns `None` to leave it to the table's rules.
    fn resolve(&self, conflict: &ConflictContext<'_>) -> Option<HandlerDecision>;
}

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

/// A conflict as planned: its kind, resolution and the fields in dispute.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedConflict {
    /// What collided.
    pub kind: ConflictKind,
    /// How it is resolved.
    pub resolution: Resolution,
    /// Columns both sides changed to different values.
    pub conflicting_fields: Vec<String>,
}

/// The decision for one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `None` when the change applies cleanly.
    pub conflict: Option<PlannedConflict>,
    /// What to store.
    pub write: Write,
}

/// Why a change cannot be planned: the request must be undone.
#[derive(Debug, Clone, PartialEq)]
pub enum Abort {
    /// A handler asked to roll the round back.
    Rollback {
        /// The conflict's kind.
        kind: ConflictKind,
        /// The handler's reason.
        reason: String,
    },
    /// A handler's merged row does not fit the table.
    InvalidMergeRow(String),
}

/// The resolution rules of one table.
#[derive(Debug, Clone)]
pub struct TableRules {
    schema: TableSchema,
    policy: ConflictPolicy,
    auto_merge: bool,
    fields: BTreeMap<String, FieldRule>,
    /// The columns the config's subscriptions filter this table on (see
    /// [`Resolver::slice_columns`]).
    slice_columns: Vec<String>,
}

/// Which side a merged field comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// How two live rows differ relative to their common base.
#[derive(Debug, Default, PartialEq)]
struct FieldDiff {
    /// Changed only by the client.
    client_only: Vec<String>,
    /// Changed by both, to different values (or differing with no base known).
    conflicting: Vec<String>,
}

/// Compares two rows column by column. Without a base every differing column counts as
/// conflicting; with one, a column only the client changed is the client's.
fn diff(
    schema: &TableSchema,
    base: Option<&Fields>,
    client: &Fields,
    server: &Fields,
) -> FieldDiff {
    let mut out = FieldDiff::default();
    for column in &schema.columns {
        let get = |row: &Fields| row.get(&column.name).cloned().unwrap_or(Value::Null);
        let (c, s) = (get(client), get(server));
        if c == s {
            continue;
        }
        match base.map(get) {
            Some(b) if s == b => out.client_only.push(column.name.clone()),
            Some(b) if c == b => {}
            _ => out.conflicting.push(column.name.clone()),
        }
    }
    out
}

/// The server row with the client's one-sided changes, and each conflicting field taken
/// from the side `pick` names.
fn merge(
    client: &Fields,
    server: &Fields,
    diff: &FieldDiff,
    pick: impl Fn(&str) -> Side,
) -> Fields {
    let mut merged = server.clone();
    let take_client = diff
        .client_only
        .iter()
        .chain(diff.conflicting.iter().filter(|f| pick(f) == Side::Client));
    for field in take_client {
        merged.insert(
            field.clone(),
            client.get(field).cloned().unwrap_or(Value::Null),
        );
    }
    merged
}

/// Orders two JSON values for max/min rules: numbers by value, text by code points,
/// false before true; `None` when they are not comparable.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Which side a field rule picks for one conflicting field.
fn pick_by_rule(
    rule: FieldRule,
    client: &Value,
    server: &Value,
    client_edited_at: Option<i64>,
    server_edited_at: Option<i64>,
) -> Side {
    let by_order = |want: Ordering| match (client, server) {
        (Value::Null, _) => Side::Server,
        (_, Value::Null) => Side::Client,
        _ if compare(client, server) == Some(want) => Side::Client,
        _ => Side::Server,
    };
    match rule {
        FieldRule::PreferServer => Side::Server,
        FieldRule::PreferClient => Side::Client,
        FieldRule::Newest => match (client_edited_at, server_edited_at) {
            (Some(c), Some(s)) if c > s => Side::Client,
            _ => Side::Server,
        },
        FieldRule::Max => by_order(Ordering::Greater),
        FieldRule::Min => by_order(Ordering::Less),
    }
}

/// Whether the server's live row already holds exactly the values `change` writes: a
/// change sent again after its answer was lost (the round that sent it failed), or two
/// devices making the same edit. Nothing differs, so there is nothing to resolve and
/// nothing to write; the change is acknowledged with the stored version.
fn holds_already(change: &Change, current: Option<&ServerRow>) -> bool {
    change.op != ChangeOp::Delete
        && change.fields.is_some()
        && current.is_some_and(|row| !row.deleted && row.fields == change.fields)
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

/// `Upsert(merged)`, or `Nothing` when it equals what the server already holds.
fn upsert_if_changed(merged: Fields, server: &Fields) -> Write {
    if &merged == server {
        Write::Nothing
    } else {
        Write::Upsert(merged)
    }
}

fn resolved(kind: ConflictKind, resolution: Resolution, fields: &[String], write: Write) -> Plan {
    Plan {
        conflict: Some(PlannedConflict {
            kind,
            resolution,
            conflicting_fields: fields.to_vec(),
        }),
        write,
    }
}

/// Resolution rules of every table plus the optional handler.
#[derive(Clone, Default)]
pub struct Resolver {
    tables: HashMap<String, TableRules>,
    handler: Option<Arc<dyn ServerConflictHandler>>,
    /// The version of the served schema these rules are for (0: not versioned).
    schema_version: u64,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("tables", &self.tables)
            .field("handler", &self.handler.is_some())
            .finish()
    }
}

impl Resolver {
    /// The rules of `config`'s tables, without a handler.
    pub fn new(config: &ServerConfig) -> Self {
        let tables = config
            .effective_tables()
            .into_iter()
            .map(|t| {
                let mut slice_columns: Vec<String> = config
                    .subscriptions
                    .iter()
                    .filter(|d| d.table == t.schema.name)
                    .flat_map(|d| d.filter.keys().cloned())
                    .collect();
                slice_columns.sort();
                slice_columns.dedup();
                let rules = TableRules {
                    schema: t.schema,
                    policy: t.policy,
                    auto_merge: t.auto_merge,
                    fields: t.fields,
                    slice_columns,
                };
                (rules.schema.name.clone(), rules)
            })
            .collect();
        Self {
            tables,
            handler: None,
            schema_version: 0,
        }
    }

    /// These rules (and handler) over the served schema `schema` of `version`, which
    /// another instance or an administrator's `migrate` may have stored after this
    /// server started: each table keeps its policy and field rules (those of columns it
    /// still has), a table the config lacks gets the defaults (server-wins, auto-merge).
    pub fn for_served(&self, schema: &Schema, version: u64) -> Self {
        let tables = schema
            .tables
            .iter()
            .map(|table| {
                let rules = match self.tables.get(&table.name) {
                    Some(rules) => TableRules {
                        schema: table.clone(),
                        policy: rules.policy,
                        auto_merge: rules.auto_merge,
                        fields: rules
                            .fields
                            .iter()
                            .filter(|(name, _)| table.column(name).is_some())
                            .map(|(name, rule)| (name.clone(), *rule))
                            .collect(),
                        slice_columns: rules
                            .slice_columns
                            .iter()
                            .filter(|name| table.column(name).is_some())
                            .cloned()
                            .collect(),
                    },
                    None => TableRules {
                        schema: table.clone(),
                        policy: ConflictPolicy::default(),
                        auto_merge: true,
                        fields: BTreeMap::new(),
                        slice_columns: Vec::new(),
                    },
                };
                (table.name.clone(), rules)
            })
            .collect();
        Self {
            tables,
            handler: self.handler.clone(),
            schema_version: version,
        }
    }

    /// The version of the served schema these rules are for (0: not versioned).
    pub fn schema_version(&self) -> u64 {
        self.schema_version
    }

    /// The declared columns of `table`, if it is declared.
    pub fn table_schema(&self, table: &str) -> Option<&TableSchema> {
        self.tables.get(table).map(|rules| &rules.schema)
    }

    /// The columns the config's subscriptions filter `table` on (empty when none does):
    /// a write that changes one of them, or deletes a live row, records the row's old
    /// values of these columns in the moves log (see [`crate::store::round`]).
    pub fn slice_columns(&self, table: &str) -> &[String] {
        self.tables
            .get(table)
            .map_or(&[], |rules| rules.slice_columns.as_slice())
    }

    /// The same rules with `handler` consulted first.
    pub fn with_handler(mut self, handler: Arc<dyn ServerConflictHandler>) -> Self {
        self.handler = Some(handler);
        self
    }

    /// Whether a round must be applied atomically: only a handler can roll one back.
    pub fn atomic_rounds(&self) -> bool {
        self.handler.is_some()
    }

    /// Decides what to do with `change` given the server's `current` row and the time
    /// that row was last edited.
    pub fn plan(
        &self,
        change: &Change,
        current: Option<&ServerRow>,
        server_edited_at: Option<i64>,
        client_id: uuid::Uuid,
    ) -> Result<Plan, Abort> {
        if holds_already(change, current) {
            return Ok(Plan {
                conflict: None,
                write: Write::Nothing,
            });
        }
        let Some(kind) = classify(change, current) else {
            return Ok(Plan {
                conflict: None,
                write: client_write(change, current),
            });
        };
        let Some(rules) = self.tables.get(&change.table) else {
            // Requests are validated against the same tables; keep the server's row.
            return Ok(resolved(kind, Resolution::ServerWins, &[], Write::Nothing));
        };
        let server_live = current
            .filter(|r| !r.deleted)
            .and_then(|r| r.fields.as_ref());
        let base = change
            .base_fields
            .as_ref()
            .filter(|_| kind == ConflictKind::BothUpdated);
        let both = change.fields.as_ref().zip(server_live);
        let diff = both.map(|(client, server)| diff(&rules.schema, base, client, server));
        let conflicting = diff
            .as_ref()
            .map(|d| d.conflicting.clone())
            .unwrap_or_default();
        let field_level = rules.auto_merge && base.is_some();

        if let (true, Some((client, server)), Some(d)) = (field_level, both, &diff) {
            if d.conflicting.is_empty() {
                let merged = merge(client, server, d, |_| Side::Server);
                return Ok(resolved(
                    kind,
                    Resolution::AutoMerged,
                    &[],
                    upsert_if_changed(merged, server),
                ));
            }
        }

        if let Some(handler) = &self.handler {
            let context = ConflictContext {
                table: &change.table,
                kind,
                client_id,
                client_row: change.fields.as_ref(),
                server_row: current,
                base_row: change.base_fields.as_ref(),
                conflicting_fields: &conflicting,
            };
            if let Some(decision) = handler.resolve(&context) {
                return match decision {
                    HandlerDecision::ServerWins => Ok(resolved(
                        kind,
                        Resolution::ServerWins,
                        &conflicting,
                        Write::Nothing,
                    )),
                    HandlerDecision::ClientWins => Ok(resolved(
                        kind,
                        Resolution::ClientWins,
                        &conflicting,
                        client_write(change, current),
                    )),
                    HandlerDecision::MergeRow(row) => {
                        rules
                            .schema
                            .validate_fields(&row)
                            .map_err(|e| Abort::InvalidMergeRow(e.to_string()))?;
                        let write = match server_live {
                            Some(server) => upsert_if_changed(row, server),
                            None => Write::Upsert(row),
                        };
                        Ok(resolved(kind, Resolution::MergeRow, &conflicting, write))
                    }
                    HandlerDecision::Defer => Ok(resolved(
                        kind,
                        Resolution::Deferred,
                        &conflicting,
                        Write::Nothing,
                    )),
                    HandlerDecision::Rollback(reason) => Err(Abort::Rollback { kind, reason }),
                };
            }
        }

        let merged_by = |pick: &dyn Fn(&str) -> Side| -> Option<Write> {
            let (client, server) = both?;
            Some(upsert_if_changed(
                merge(client, server, diff.as_ref()?, pick),
                server,
            ))
        };
        let plan = match rules.policy {
            ConflictPolicy::ServerWins => {
                let write = if field_level {
                    merged_by(&|_| Side::Server)
                } else {
                    None
                };
                resolved(
                    kind,
                    Resolution::ServerWins,
                    &conflicting,
                    write.unwrap_or(Write::Nothing),
                )
            }
            ConflictPolicy::ClientWins => {
                let write = if field_level {
                    merged_by(&|_| Side::Client)
                } else {
                    None
                };
                resolved(
                    kind,
                    Resolution::ClientWins,
                    &conflicting,
                    write.unwrap_or_else(|| client_write(change, current)),
                )
            }
            ConflictPolicy::Merge => {
                let pick = |field: &str| {
                    let value = |row: Option<&Fields>| {
                        row.and_then(|r| r.get(field))
                            .cloned()
                            .unwrap_or(Value::Null)
                    };
                    pick_by_rule(
                        rules.fields.get(field).copied().unwrap_or_default(),
                        &value(change.fields.as_ref()),
                        &value(server_live),
                        change.edited_at_ms,
                        server_edited_at,
                    )
                };
                match merged_by(&pick) {
                    Some(write) => resolved(kind, Resolution::MergeRow, &conflicting, write),
                    // A side is deleted: there is nothing to merge; the server's row stands.
                    None => resolved(kind, Resolution::ServerWins, &[], Write::Nothing),
                }
            }
            ConflictPolicy::DeferToClient if kind == ConflictKind::BothDeleted => {
                // Both sides agree the row is gone: there is nothing to ask anyone.
                resolved(kind, Resolution::ServerWins, &[], Write::Nothing)
            }
            ConflictPolicy::DeferToClient => {
                resolved(kind, Resolution::Deferred, &conflicting, Write::Nothing)
            }
        };
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableConfig;
    use roster_protocol::{ColumnDef, ColumnType, RowId};
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        v.as_object().cloned().unwrap()
    }

    fn resolver(policy: ConflictPolicy, auto_merge: bool, rules: &[(&str, FieldRule)]) -> Resolver {
        let column = |name: &str, ty| ColumnDef {
            name: name.into(),
            ty,
            required: false,
            max_len: None,
            format: None,
            default: None,
        };
        let config = ServerConfig {
            tables: vec![TableConfig {
                schema: TableSchema {
                    name: "person".into(),
                    columns: vec![
                        column("name", ColumnType::Text),
                        column("age", ColumnType::Integer),
                        column("city", ColumnType::Text),
                    ],
                },
                policy,
                auto_merge,
                fields: rules.iter().map(|(f, r)| ((*f).to_owned(), *r)).collect(),
            }],
            ..ServerConfig::default()
        };
        Resolver::new(&config)
    }

    fn update(base: Value, mine: Value) -> Change {
        Change {
            table: "person".into(),
            id: RowId::now_v7(),
            op: ChangeOp::Update,
            base_version: Some(1),
            fields: Some(fields(mine)),
            base_fields: Some(fields(base)),
            edited_at_ms: Some(2_000),
        }
    }

    fn server(row: Value) -> ServerRow {
        ServerRow {
            version: 2,
            deleted: false,
            fields: Some(fields(row)),
        }
    }

    fn plan(r: &Resolver, change: &Change, current: &ServerRow) -> Plan {
        r.plan(change, Some(current), Some(1_000), uuid::Uuid::nil())
            .unwrap()
    }

    const BASE: &str = r#"{"name": "Jane", "age": 25, "city": "Lyon"}"#;

    fn base() -> Value {
        serde_json::from_str(BASE).unwrap()
    }

    #[test]
    fn different_fields_merge_without_a_conflict() {
        let r = resolver(ConflictPolicy::ServerWins, true, &[]);
        let change = update(base(), json!({"name": "Jane", "age": 26, "city": "Lyon"}));
        let current = server(json!({"name": "Jane", "age": 25, "city": "Oslo"}));
        let plan = plan(&r, &change, &current);
        let conflict = plan.conflict.unwrap();
        assert_eq!(conflict.resolution, Resolution::AutoMerged);
        assert!(conflict.conflicting_fields.is_empty());
        assert_eq!(
            plan.write,
            Write::Upsert(fields(json!({"name": "Jane", "age": 26, "city": "Oslo"})))
        );
    }

    #[test]
    fn policies_decide_only_the_overlapping_fields() {
        let change = update(base(), json!({"name": "Janet", "age": 30, "city": "Lyon"}));
        let current = server(json!({"name": "Jane", "age": 32, "city": "Lyon"}));
        let sw = plan(
            &resolver(ConflictPolicy::ServerWins, true, &[]),
            &change,
            &current,
        );
        assert_eq!(
            sw.conflict.as_ref().unwrap().conflicting_fields,
            vec!["age"]
        );
        assert_eq!(
            sw.write,
            Write::Upsert(fields(json!({"name": "Janet", "age": 32, "city": "Lyon"}))),
            "the client's name change survives; the server's age wins"
        );
        let cw = plan(
            &resolver(ConflictPolicy::ClientWins, true, &[]),
            &change,
            &current,
        );
        assert_eq!(
            cw.write,
            Write::Upsert(fields(json!({"name": "Janet", "age": 30, "city": "Lyon"})))
        );
        let whole = plan(
            &resolver(ConflictPolicy::ServerWins, false, &[]),
            &change,
            &current,
        );
        assert_eq!(
            whole.write,
            Write::Nothing,
            "without auto_merge the whole row stands"
        );
    }

    #[test]
    fn merge_policy_applies_field_rules() {
        let change = update(base(), json!({"name": "Ann", "age": 30, "city": "Rome"}));
        let current = server(json!({"name": "Bea", "age": 32, "city": "Oslo"}));
        let r = resolver(
            ConflictPolicy::Merge,
            true,
            &[
                ("name", FieldRule::Newest),
                ("age", FieldRule::Min),
                ("city", FieldRule::PreferClient),
            ],
        );
        let by_rules = plan(&r, &change, &current);
        assert_eq!(
            by_rules.conflict.as_ref().unwrap().resolution,
            Resolution::MergeRow
        );
        assert_eq!(
            by_rules.write,
            Write::Upsert(fields(json!({"name": "Ann", "age": 30, "city": "Rome"}))),
            "client edited later (2000 > 1000), min age 30, city prefers the client"
        );
        let max = resolver(ConflictPolicy::Merge, true, &[("age", FieldRule::Max)]);
        assert_eq!(
            plan(&max, &change, &current).write,
            Write::Nothing,
            "max age is the server's 32 and the rest prefers the server: nothing to write"
        );
    }

    #[test]
    fn defer_keeps_the_server_row() {
        let change = update(base(), json!({"name": "Jane", "age": 30, "city": "Lyon"}));
        let current = server(json!({"name": "Jane", "age": 32, "city": "Lyon"}));
        let plan = plan(
            &resolver(ConflictPolicy::DeferToClient, true, &[]),
            &change,
            &current,
        );
        assert_eq!(plan.conflict.unwrap().resolution, Resolution::Deferred);
        assert_eq!(plan.write, Write::Nothing);
    }

    struct Fixed(HandlerDecision);

    impl ServerConflictHandler for Fixed {
        fn resolve(&self, _: &ConflictContext<'_>) -> Option<HandlerDecision> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn handler_decides_before_the_policy() {
        let change = update(base(), json!({"name": "Jane", "age": 30, "city": "Lyon"}));
        let current = server(json!({"name": "Jane", "age": 32, "city": "Lyon"}));
        let with = |d: HandlerDecision| {
            resolver(ConflictPolicy::ServerWins, true, &[]).with_handler(Arc::new(Fixed(d)))
        };
        let row = fields(json!({"name": "Jane", "age": 31, "city": "Lyon"}));
        let merged = with(HandlerDecision::MergeRow(row.clone()))
            .plan(&change, Some(&current), None, uuid::Uuid::nil())
            .unwrap();
        assert_eq!(merged.write, Write::Upsert(row));
        let bad = with(HandlerDecision::MergeRow(fields(json!({"age": "x"})))).plan(
            &change,
            Some(&current),
            None,
            uuid::Uuid::nil(),
        );
        assert!(matches!(bad, Err(Abort::InvalidMergeRow(_))));
        let rollback = with(HandlerDecision::Rollback("no".into())).plan(
            &change,
            Some(&current),
            None,
            uuid::Uuid::nil(),
        );
        assert_eq!(
            rollback,
            Err(Abort::Rollback {
                kind: ConflictKind::BothUpdated,
                reason: "no".into()
            })
        );
        let client = with(HandlerDecision::ClientWins)
            .plan(&change, Some(&current), None, uuid::Uuid::nil())
            .unwrap();
        assert_eq!(client.write, Write::Upsert(change.fields.clone().unwrap()));
    }

    #[test]
    fn a_change_the_server_already_holds_is_acknowledged_without_a_write() {
        let held = json!({"name": "Jane", "age": 30, "city": "Lyon"});
        let current = server(held.clone());
        let stale_update = update(base(), held.clone());
        let resent_insert = Change {
            op: ChangeOp::Insert,
            base_version: None,
            base_fields: None,
            ..stale_update.clone()
        };
        let rollback =
            resolver(ConflictPolicy::ServerWins, true, &[]).with_handler(Arc::new(Fixed(
                HandlerDecision::Rollback("every conflict rolls back".into()),
            )));
        let resolvers = [
            resolver(ConflictPolicy::ServerWins, false, &[]),
            resolver(ConflictPolicy::ClientWins, false, &[]),
            resolver(ConflictPolicy::DeferToClient, true, &[]),
            rollback,
        ];
        for r in &resolvers {
            for change in [&stale_update, &resent_insert] {
                let plan = plan(r, change, &current);
                assert_eq!(plan.conflict, None, "{:?}", change.op);
                assert_eq!(plan.write, Write::Nothing, "{:?}", change.op);
            }
        }
        // One differing value, or a deleted server row, is still a conflict.
        let differs = update(base(), json!({"name": "Jane", "age": 31, "city": "Lyon"}));
        let r = &resolvers[0];
        assert!(plan(r, &differs, &current).conflict.is_some());
        let tombstone = ServerRow {
            version: 2,
            deleted: true,
            fields: None,
        };
        assert_eq!(
            plan(r, &resent_insert, &tombstone).conflict.map(|c| c.kind),
            Some(ConflictKind::ClientInsertedDeleted)
        );
    }

    #[test]
    fn non_overlapping_edits_never_reach_the_handler() {
        let change = update(base(), json!({"name": "Jane", "age": 26, "city": "Lyon"}));
        let current = server(json!({"name": "Jane", "age": 25, "city": "Oslo"}));
        let r = resolver(ConflictPolicy::ServerWins, true, &[])
            .with_handler(Arc::new(Fixed(HandlerDecision::Rollback("asked".into()))));
        let plan = r
            .plan(&change, Some(&current), None, uuid::Uuid::nil())
            .unwrap();
        assert_eq!(plan.conflict.unwrap().resolution, Resolution::AutoMerged);
    }
}
