//! Schema evolution: what changed between two schemas, and which changes stored rows and
//! installed devices can follow by themselves.
//!
//! [`diff`] is a pure function of two [`Schema`]s. A *compatible* change (a new table, a
//! new optional column or a required one with a default, a wider limit, columns shown in
//! another order) leaves every stored row valid and every device able to follow by adding
//! tables and columns: the server applies it at start. An *incompatible* one (a dropped or
//! renamed column or table, a changed type, a narrower limit, a changed default) would
//! break stored rows or devices: the server refuses to start on it until an administrator
//! runs the explicit migration.

use std::collections::BTreeMap;

use crate::schema::{
    ColumnDef, ColumnRename, ColumnType, DEFAULT_TEXT_MAX_LEN, Schema, TableSchema,
};

/// Per table, old column names mapped to their names now (see [`renamed_after`]).
pub type RenamedColumns = BTreeMap<String, BTreeMap<String, String>>;

/// The old names of the columns renamed after version `after` (`renames` oldest first),
/// by table, each mapped to its name in `current`: a column renamed twice maps from both
/// older names to the newest. An old name `current` declares again, or a column that is
/// gone from `current` since, is left out (a value sent under it cannot be placed).
pub fn renamed_after(renames: &[ColumnRename], after: u64, current: &Schema) -> RenamedColumns {
    let mut map = RenamedColumns::new();
    for rename in renames.iter().filter(|r| r.version > after) {
        let table = map.entry(rename.table.clone()).or_default();
        for to in table.values_mut() {
            if *to == rename.from {
                to.clone_from(&rename.to);
            }
        }
        table.insert(rename.from.clone(), rename.to.clone());
    }
    for (name, table) in &mut map {
        let declared = current.table(name).ok();
        table.retain(|from, to| {
            declared.is_some_and(|t| t.column(to).is_some() && t.column(from).is_none())
        });
    }
    map.retain(|_, table| !table.is_empty());
    map
}

/// What happened to one table or column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A table was declared.
    TableAdded,
    /// A table is no longer declared.
    TableDropped,
    /// An optional column, or a required one with a default, was declared.
    ColumnAdded,
    /// A required column without a default was declared: stored rows lack it.
    RequiredColumnWithoutDefault,
    /// A column is no longer declared (dropped, or renamed: a rename is a drop plus an add).
    ColumnDropped,
    /// A column's type changed.
    TypeChanged {
        /// The old type.
        from: ColumnType,
        /// The new type.
        to: ColumnType,
    },
    /// A text column accepts longer values.
    MaxLenWidened {
        /// The old limit (characters).
        from: usize,
        /// The new limit.
        to: usize,
    },
    /// A text column accepts only shorter values.
    MaxLenNarrowed {
        /// The old limit (characters).
        from: usize,
        /// The new limit.
        to: usize,
    },
    /// A required column became optional.
    BecameOptional,
    /// An optional column became required.
    BecameRequired,
    /// A column lost its format check.
    FormatRemoved,
    /// A column gained a format check, or its format changed.
    FormatAdded,
    /// A column's default changed: rows stored without it would change value.
    DefaultChanged,
    /// The table's columns are listed in another order (display order only).
    Reordered,
}

impl ChangeKind {
    /// Whether stored rows stay valid and devices can follow without an administrator.
    pub fn is_compatible(&self) -> bool {
        matches!(
            self,
            ChangeKind::TableAdded
                | ChangeKind::ColumnAdded
                | ChangeKind::MaxLenWidened { .. }
                | ChangeKind::BecameOptional
                | ChangeKind::FormatRemoved
                | ChangeKind::Reordered
        )
    }

    /// The change in words, for logs and the start refusal.
    pub fn describe(&self) -> String {
        match self {
            ChangeKind::TableAdded => "new table".into(),
            ChangeKind::TableDropped => {
                "table dropped or renamed: its stored rows would be orphaned".into()
            }
            ChangeKind::ColumnAdded => "new column".into(),
            ChangeKind::RequiredColumnWithoutDefault => {
                "new required column without a default: stored rows lack it (give it a default, or make it optional)".into()
            }
            ChangeKind::ColumnDropped => {
                "column dropped or renamed: its stored values would be lost".into()
            }
            ChangeKind::TypeChanged { from, to } => format!(
                "type changed from {} to {}: stored values may not fit",
                from.describe(),
                to.describe()
            ),
            ChangeKind::MaxLenWidened { from, to } => {
                format!("max_len widened from {from} to {to}")
            }
            ChangeKind::MaxLenNarrowed { from, to } => format!(
                "max_len narrowed from {from} to {to}: stored values may be too long"
            ),
            ChangeKind::BecameOptional => "now optional".into(),
            ChangeKind::BecameRequired => {
                "now required: stored rows may lack a value".into()
            }
            ChangeKind::FormatRemoved => "format check removed".into(),
            ChangeKind::FormatAdded => {
                "format check added or changed: stored values may not pass it".into()
            }
            ChangeKind::DefaultChanged => {
                "default changed: rows stored without the column would change value".into()
            }
            ChangeKind::Reordered => "columns reordered".into(),
        }
    }
}

/// One difference between two schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// The table.
    pub table: String,
    /// The column, when the change is to one column.
    pub column: Option<String>,
    /// What happened.
    pub kind: ChangeKind,
}

impl std::fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{}.{}: {}", self.table, column, self.kind.describe()),
            None => write!(f, "table {}: {}", self.table, self.kind.describe()),
        }
    }
}

/// Every difference from `old` to `new`, tables in `new`'s order then dropped ones;
/// empty when they are equal.
pub fn diff(old: &Schema, new: &Schema) -> Vec<SchemaChange> {
    let mut changes = Vec::new();
    for table in &new.tables {
        match old.tables.iter().find(|t| t.name == table.name) {
            None => changes.push(SchemaChange {
                table: table.name.clone(),
                column: None,
                kind: ChangeKind::TableAdded,
            }),
            Some(before) => diff_table(before, table, &mut changes),
        }
    }
    for table in &old.tables {
        if !new.tables.iter().any(|t| t.name == table.name) {
            changes.push(SchemaChange {
                table: table.name.clone(),
                column: None,
                kind: ChangeKind::TableDropped,
            });
        }
    }
    changes
}

/// The changes of `diff` that need the administrator's migration.
pub fn incompatible(changes: &[SchemaChange]) -> Vec<&SchemaChange> {
    changes.iter().filter(|c| !c.kind.is_compatible()).collect()
}

fn diff_table(old: &TableSchema, new: &TableSchema, changes: &mut Vec<SchemaChange>) {
    let mut push = |column: &str, kind| {
        changes.push(SchemaChange {
            table: new.name.clone(),
            column: Some(column.to_owned()),
            kind,
        })
    };
    for column in &new.columns {
        match old.column(&column.name) {
            None if column.required && column.default.is_none() => {
                push(&column.name, ChangeKind::RequiredColumnWithoutDefault)
            }
            None => push(&column.name, ChangeKind::ColumnAdded),
            Some(before) => {
                for kind in diff_column(before, column) {
                    push(&column.name, kind);
                }
            }
        }
    }
    for column in &old.columns {
        if new.column(&column.name).is_none() {
            push(&column.name, ChangeKind::ColumnDropped);
        }
    }
    let order = |t: &TableSchema, other: &TableSchema| -> Vec<String> {
        t.columns
            .iter()
            .filter(|c| other.column(&c.name).is_some())
            .map(|c| c.name.clone())
            .collect()
    };
    if order(old, new) != order(new, old) {
        changes.push(SchemaChange {
            table: new.name.clone(),
            column: None,
            kind: ChangeKind::Reordered,
        });
    }
}

fn diff_column(old: &ColumnDef, new: &ColumnDef) -> Vec<ChangeKind> {
    let mut kinds = Vec::new();
    if old.ty != new.ty {
        kinds.push(ChangeKind::TypeChanged {
            from: old.ty,
            to: new.ty,
        });
        return kinds;
    }
    if new.ty == ColumnType::Text {
        let limit = |c: &ColumnDef| c.max_len.unwrap_or(DEFAULT_TEXT_MAX_LEN);
        let (from, to) = (limit(old), limit(new));
        if to > from {
            kinds.push(ChangeKind::MaxLenWidened { from, to });
        } else if to < from {
            kinds.push(ChangeKind::MaxLenNarrowed { from, to });
        }
    }
    match (old.required, new.required) {
        (true, false) => kinds.push(ChangeKind::BecameOptional),
        (false, true) => kinds.push(ChangeKind::BecameRequired),
        _ => {}
    }
    match (old.format, new.format) {
        (Some(_), None) => kinds.push(ChangeKind::FormatRemoved),
        (before, after) if before != after => kinds.push(ChangeKind::FormatAdded),
        _ => {}
    }
    if old.default != new.default {
        kinds.push(ChangeKind::DefaultChanged);
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema from a compact text: `table: col:type[!][<max][@format][=default], ...; ...`
    /// (`!` required).
    fn schema(text: &str) -> Schema {
        let tables = text
            .split(';')
            .map(|table| {
                let (name, columns) = table.split_once(':').unwrap();
                TableSchema {
                    name: name.trim().to_owned(),
                    columns: columns.split(',').map(column).collect(),
                }
            })
            .collect();
        Schema { tables }
    }

    fn column(text: &str) -> ColumnDef {
        let text = text.trim();
        let (name, rest) = text.split_once(':').unwrap();
        let (rest, default) = match rest.split_once('=') {
            Some((rest, default)) => (rest, Some(serde_json::from_str(default).unwrap())),
            None => (rest, None),
        };
        let (rest, format) = match rest.split_once('@') {
            Some((rest, format)) => (
                rest,
                Some(serde_json::from_value(serde_json::Value::String(format.into())).unwrap()),
            ),
            None => (rest, None),
        };
        let (rest, max_len) = match rest.split_once('<') {
            Some((rest, max)) => (rest, Some(max.parse().unwrap())),
            None => (rest, None),
        };
        let required = rest.ends_with('!');
        let ty =
            serde_json::from_value(serde_json::Value::String(rest.trim_end_matches('!').into()))
                .unwrap();
        ColumnDef {
            name: name.to_owned(),
            ty,
            required,
            max_len,
            format,
            default,
        }
    }

    /// One case per line: old schema | new schema | the changes, as displayed, joined
    /// by " / " (empty: none) | whether all of them are compatible.
    const CASES: &str = "
        p: name:text!                 | p: name:text!                               |  | yes
        p: name:text!                 | p: name:text!; task: title:text             | table task: new table | yes
        p: name:text!                 | p: name:text!, nick:text                    | p.nick: new column | yes
        p: name:text!                 | p: name:text!, n:integer!=0                 | p.n: new column | yes
        p: name:text!                 | p: name:text!, n:integer!                   | p.n: new required column without a default: stored rows lack it (give it a default, or make it optional) | no
        p: name:text!<10              | p: name:text!<20                            | p.name: max_len widened from 10 to 20 | yes
        p: name:text!                 | p: name:text!<200                           | p.name: max_len narrowed from 10000 to 200: stored values may be too long | no
        p: name:text!                 | p: name:text                                | p.name: now optional | yes
        p: name:text                  | p: name:text!                               | p.name: now required: stored rows may lack a value | no
        p: name:text!, age:integer    | p: name:text!                               | p.age: column dropped or renamed: its stored values would be lost | no
        p: name:text!, nick:text      | p: name:text!, nickname:text                | p.nickname: new column / p.nick: column dropped or renamed: its stored values would be lost | no
        p: name:text!, age:integer    | p: name:text!, age:text                     | p.age: type changed from an integer to text: stored values may not fit | no
        p: name:text!; task: t:text   | p: name:text!                               | table task: table dropped or renamed: its stored rows would be orphaned | no
        p: name:text!, e:text@email   | p: name:text!, e:text                       | p.e: format check removed | yes
        p: name:text!, e:text         | p: name:text!, e:text@email                 | p.e: format check added or changed: stored values may not pass it | no
        p: name:text!, n:integer=1    | p: name:text!, n:integer=2                  | p.n: default changed: rows stored without the column would change value | no
        p: name:text!, a:text         | p: a:text, name:text!                       | table p: columns reordered | yes
    ";

    #[test]
    fn every_change_is_named_and_classified() {
        for line in CASES.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = line.split('|').map(str::trim).collect();
            let [old, new, expected, compatible] = parts[..] else {
                panic!("bad case {line}");
            };
            let changes = diff(&schema(old), &schema(new));
            let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
            assert_eq!(shown.join(" / "), expected, "{line}");
            assert_eq!(
                incompatible(&changes).is_empty(),
                compatible == "yes",
                "{line}"
            );
        }
    }

    fn rename(version: u64, from: &str, to: &str) -> ColumnRename {
        ColumnRename {
            version,
            table: "person".into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn renames_compose_and_leave_out_names_declared_again() {
        let now = schema("person: name:text, c:text, a:text");
        let renames = [
            rename(2, "a", "b"),
            rename(3, "b", "c"),
            rename(4, "x", "a"),
        ];
        // From version 1: `a` became `c` (through `b`), then `x` became `a`, a name the
        // schema declares again: only the older names that cannot mean a column now.
        let map = renamed_after(&renames, 1, &now);
        let person = &map["person"];
        assert_eq!(person.get("b"), Some(&"c".to_owned()));
        assert_eq!(person.get("x"), Some(&"a".to_owned()));
        assert!(!person.contains_key("a"), "{person:?}");
        // From version 2: only the later renames.
        let map = renamed_after(&renames, 2, &now);
        assert_eq!(map["person"].get("b"), Some(&"c".to_owned()));
        assert!(renamed_after(&renames, 4, &now).is_empty());
        // A column renamed and dropped since: nowhere to put its values.
        let dropped = schema("person: name:text");
        assert!(renamed_after(&renames[..1], 0, &dropped).is_empty());
    }
}
