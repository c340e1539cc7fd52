//! Reading rows as items of the Azure Mobile Apps table protocol (see
//! [`crate::tables`]): a checked list query ([`ItemQuery`]: a typed filter over system
//! and user columns, an order, paging) and its rendering into SQL with bound parameters
//! for either backend ([`Dialect`]). Values are never spliced into the SQL text: only
//! column names, which the schema has already checked (lowercase letters, digits, `_`).

use roster_protocol::ColumnType;

/// A column a list query can filter and sort on.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemColumn {
    /// The row id (text).
    Id,
    /// The row's version (the change-log position).
    Version,
    /// When the row was first written (Unix ms).
    CreatedAt,
    /// When the row was last written (Unix ms; never goes backwards in commit order).
    UpdatedAt,
    /// Whether the row is deleted.
    Deleted,
    /// A column the schema declares, with its type.
    Field {
        /// The column name (checked by the schema).
        name: String,
        /// Its type.
        ty: ColumnType,
    },
}

/// A literal value bound as a query parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// Text.
    Text(String),
    /// A 64-bit integer (also timestamps in Unix ms and versions).
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// A boolean.
    Bool(bool),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
}

impl Comparison {
    /// The operator with its sides swapped (`5 lt x` is `x gt 5`).
    pub fn swapped(self) -> Self {
        match self {
            Comparison::Gt => Comparison::Lt,
            Comparison::Ge => Comparison::Le,
            Comparison::Lt => Comparison::Gt,
            Comparison::Le => Comparison::Ge,
            same => same,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Ne => "<>",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
        }
    }
}

/// A checked filter: every comparison is of a known column with a value of its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// Both hold.
    And(Box<Predicate>, Box<Predicate>),
    /// Either holds.
    Or(Box<Predicate>, Box<Predicate>),
    /// It does not hold.
    Not(Box<Predicate>),
    /// `column op value`; a `None` value is `null` (only `eq` and `ne`).
    Compare {
        /// The column.
        column: ItemColumn,
        /// The operator.
        op: Comparison,
        /// The value, `None` for `null`.
        value: Option<SqlValue>,
    },
}

/// Where, in `(updatedAt, id)` order, the rows a filter holds for begin: the position a
/// paged pull has reached, which an index on `(updatedAt, id)` can seek to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ItemsFrom {
    /// Rows updated at or after this time (Unix ms).
    AtOrAfter(i64),
    /// Rows updated at this time with a greater id, and rows updated later.
    After(i64, String),
    /// Rows updated after this time.
    Later(i64),
}

impl ItemsFrom {
    /// The position as `(time, rank of the id bound)`: earlier positions sort first.
    fn key(&self) -> (i64, u8, &str) {
        match self {
            ItemsFrom::AtOrAfter(at) => (*at, 0, ""),
            ItemsFrom::After(at, id) => (*at, 1, id),
            ItemsFrom::Later(at) => (*at, 2, ""),
        }
    }

    fn earlier(a: Self, b: Self) -> Self {
        if a.key() <= b.key() { a } else { b }
    }

    fn later(a: Self, b: Self) -> Self {
        if a.key() >= b.key() { a } else { b }
    }
}

impl Predicate {
    /// Whether this is comparisons joined by `and` (no `or`, no `not`).
    fn is_plain_conjunction(&self) -> bool {
        match self {
            Predicate::Compare { .. } => true,
            Predicate::And(a, b) => a.is_plain_conjunction() && b.is_plain_conjunction(),
            Predicate::Or(..) | Predicate::Not(_) => false,
        }
    }

    /// Where the rows this predicate holds for begin in `(updatedAt, id)` order, when it
    /// implies a start: `updatedAt gt|ge|eq T`, `updatedAt eq T and id gt I`, the later
    /// start of an `and`, the earlier start of an `or` whose sides both have one. `None`
    /// when a row could be anywhere.
    pub fn items_from(&self) -> Option<ItemsFrom> {
        let updated_at = |p: &Predicate| match p {
            Predicate::Compare {
                column: ItemColumn::UpdatedAt,
                op,
                value: Some(SqlValue::Integer(at)),
            } => Some((*op, *at)),
            _ => None,
        };
        let id_after = |p: &Predicate| match p {
            Predicate::Compare {
                column: ItemColumn::Id,
                op: Comparison::Gt,
                value: Some(SqlValue::Text(id)),
            } => Some(id.clone()),
            _ => None,
        };
        match self {
            Predicate::Compare { .. } => match updated_at(self)? {
                (Comparison::Ge | Comparison::Eq, at) => Some(ItemsFrom::AtOrAfter(at)),
                (Comparison::Gt, at) => Some(ItemsFrom::Later(at)),
                _ => None,
            },
            Predicate::And(a, b) => {
                for (time, id) in [(a, b), (b, a)] {
                    if let (Some((Comparison::Eq, at)), Some(id)) = (updated_at(time), id_after(id))
                    {
                        return Some(ItemsFrom::After(at, id));
                    }
                }
                match (a.items_from(), b.items_from()) {
                    (Some(x), Some(y)) => Some(ItemsFrom::later(x, y)),
                    (x, y) => x.or(y),
                }
            }
            Predicate::Or(a, b) => Some(ItemsFrom::earlier(a.items_from()?, b.items_from()?)),
            Predicate::Not(_) => None,
        }
    }
}

/// A checked list query on one table.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemQuery {
    /// The table.
    pub table: String,
    /// Only rows it holds for (all when `None`).
    pub filter: Option<Predicate>,
    /// Sort keys, descending when `true`; the version always breaks ties last, so paging
    /// is deterministic.
    pub order: Vec<(ItemColumn, bool)>,
    /// Rows skipped.
    pub skip: u64,
    /// Most rows returned.
    pub top: u32,
    /// Whether deleted rows (tombstones) are returned too.
    pub include_deleted: bool,
}

/// A row as the table protocol shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    /// The row id as stored.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// Its values as stored (JSON text), `None` for a tombstone.
    pub data: Option<String>,
    /// When it was first written (Unix ms).
    pub created_at_ms: i64,
    /// When it was last written (Unix ms).
    pub updated_at_ms: i64,
}

/// The SQL spelling of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: `?N` parameters, `json_extract`.
    Sqlite,
    /// PostgreSQL: `$N` parameters, `jsonb ->>` with casts.
    Postgres,
}

/// The columns every item query selects, in this order: id, version, deleted, data,
/// created at, updated at.
pub(crate) const ITEM_COLUMNS: &str =
    "id, version, deleted, data, COALESCE(created_at_ms, updated_at_ms), updated_at_ms";

/// A query rendered for one backend: the SQL text and its parameters in order. The
/// first two parameters are the data set and the table.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedQuery {
    /// The whole `SELECT`.
    pub sql: String,
    /// The values of `?1..` / `$1..`, after data set and table.
    pub params: Vec<SqlValue>,
}

impl Dialect {
    fn param(self, index: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{index}"),
            Dialect::Postgres => format!("${index}"),
        }
    }

    fn column(self, column: &ItemColumn) -> String {
        match column {
            ItemColumn::Id => "id".into(),
            ItemColumn::Version => "version".into(),
            ItemColumn::CreatedAt => "COALESCE(created_at_ms, updated_at_ms)".into(),
            ItemColumn::UpdatedAt => "updated_at_ms".into(),
            ItemColumn::Deleted => "deleted".into(),
            ItemColumn::Field { name, ty } => match self {
                Dialect::Sqlite => format!("json_extract(data, '$.{name}')"),
                Dialect::Postgres => {
                    let cast = match ty {
                        ColumnType::Text => "",
                        ColumnType::Integer => "::bigint",
                        ColumnType::Real => "::double precision",
                        ColumnType::Boolean => "::boolean",
                    };
                    format!("((data::jsonb ->> '{name}'){cast})")
                }
            },
        }
    }

    fn not_deleted(self) -> &'static str {
        match self {
            Dialect::Sqlite => "deleted = 0",
            Dialect::Postgres => "NOT deleted",
        }
    }
}

impl ItemQuery {
    /// The `SELECT` of this query in `dialect`: parameters 1 and 2 are the data set and
    /// the table, the filter's values follow.
    pub fn render(&self, dialect: Dialect) -> RenderedQuery {
        let mut params = Vec::new();
        let mut sql = format!(
            "SELECT {ITEM_COLUMNS} FROM rows WHERE dataset = {} AND tbl = {}",
            dialect.param(1),
            dialect.param(2)
        );
        if !self.include_deleted {
            sql.push_str(" AND ");
            sql.push_str(dialect.not_deleted());
        }
        if let Some(filter) = &self.filter {
            sql.push_str(" AND ");
            render_predicate(filter, dialect, &mut sql, &mut params);
            // The keyset filter of a paged pull, `(updatedAt eq T and id gt I) or
            // updatedAt gt T`, is an `OR` that no planner turns into an index range, so
            // every page walked the table's index from its first row (100 pages of 1000
            // rows: 5 million entries). Where the filter's rows begin, stated once more
            // as a plain range or row-value comparison, lets the index seek to the page.
            // invariant: the added term is implied by the filter, so it never changes
            // which rows a query returns. A filter of plain comparisons joined by `and`
            // already gives the planner its ranges: only a start found through an `or`,
            // or inside a run, is added.
            let from = filter.items_from().filter(|from| {
                matches!(from, ItemsFrom::After(..)) || !filter.is_plain_conjunction()
            });
            if let Some(from) = from {
                let at = dialect.column(&ItemColumn::UpdatedAt);
                let mut param = |value: SqlValue| {
                    params.push(value);
                    dialect.param(params.len() + 2)
                };
                let term = match from {
                    ItemsFrom::AtOrAfter(t) => format!("{at} >= {}", param(SqlValue::Integer(t))),
                    ItemsFrom::Later(t) => format!("{at} > {}", param(SqlValue::Integer(t))),
                    ItemsFrom::After(t, id) => {
                        let t = param(SqlValue::Integer(t));
                        format!("({at}, id) > ({t}, {})", param(SqlValue::Text(id)))
                    }
                };
                sql.push_str(" AND ");
                sql.push_str(&term);
            }
        }
        sql.push_str(" ORDER BY ");
        for (column, descending) in &self.order {
            sql.push_str(&dialect.column(column));
            sql.push_str(if *descending { " DESC, " } else { " ASC, " });
        }
        sql.push_str("version ASC");
        sql.push_str(&format!(" LIMIT {} OFFSET {}", self.top, self.skip));
        RenderedQuery { sql, params }
    }
}

fn render_predicate(
    predicate: &Predicate,
    dialect: Dialect,
    sql: &mut String,
    params: &mut Vec<SqlValue>,
) {
    match predicate {
        Predicate::And(a, b) | Predicate::Or(a, b) => {
            let joiner = if matches!(predicate, Predicate::And(..)) {
                " AND "
            } else {
                " OR "
            };
            sql.push('(');
            render_predicate(a, dialect, sql, params);
            sql.push_str(joiner);
            render_predicate(b, dialect, sql, params);
            sql.push(')');
        }
        Predicate::Not(inner) => {
            sql.push_str("(NOT ");
            render_predicate(inner, dialect, sql, params);
            sql.push(')');
        }
        Predicate::Compare { column, op, value } => {
            let column_sql = dialect.column(column);
            match value {
                None => {
                    let test = if *op == Comparison::Ne {
                        "IS NOT NULL"
                    } else {
                        "IS NULL"
                    };
                    sql.push_str(&format!("({column_sql} {test})"));
                }
                Some(value) => {
                    params.push(value.clone());
                    // Parameters 1 and 2 are the data set and the table.
                    let param = dialect.param(params.len() + 2);
                    sql.push_str(&format!("({column_sql} {} {param})", op.sql()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(filter: Option<Predicate>) -> ItemQuery {
        ItemQuery {
            table: "person".into(),
            filter,
            order: vec![(ItemColumn::UpdatedAt, false)],
            skip: 10,
            top: 50,
            include_deleted: false,
        }
    }

    #[test]
    fn a_filter_becomes_bound_parameters_in_both_dialects() {
        let age = ItemColumn::Field {
            name: "age".into(),
            ty: ColumnType::Integer,
        };
        let filter = Predicate::Or(
            Box::new(Predicate::Compare {
                column: age,
                op: Comparison::Ge,
                value: Some(SqlValue::Integer(30)),
            }),
            Box::new(Predicate::Not(Box::new(Predicate::Compare {
                column: ItemColumn::Id,
                op: Comparison::Eq,
                value: None,
            }))),
        );
        let sqlite = query(Some(filter.clone())).render(Dialect::Sqlite);
        assert!(
            sqlite.sql.contains(
                "AND deleted = 0 AND ((json_extract(data, '$.age') >= ?3) OR (NOT (id IS NULL)))"
            ),
            "{}",
            sqlite.sql
        );
        assert!(
            sqlite
                .sql
                .ends_with("ORDER BY updated_at_ms ASC, version ASC LIMIT 50 OFFSET 10")
        );
        assert_eq!(sqlite.params, vec![SqlValue::Integer(30)]);
        let pg = query(Some(filter)).render(Dialect::Postgres);
        assert!(
            pg.sql.contains("(((data::jsonb ->> 'age')::bigint) >= $3)"),
            "{}",
            pg.sql
        );
    }

    fn at(op: Comparison, ms: i64) -> Predicate {
        Predicate::Compare {
            column: ItemColumn::UpdatedAt,
            op,
            value: Some(SqlValue::Integer(ms)),
        }
    }

    fn id_after(id: &str) -> Predicate {
        Predicate::Compare {
            column: ItemColumn::Id,
            op: Comparison::Gt,
            value: Some(SqlValue::Text(id.into())),
        }
    }

    fn and(a: Predicate, b: Predicate) -> Predicate {
        Predicate::And(Box::new(a), Box::new(b))
    }

    fn or(a: Predicate, b: Predicate) -> Predicate {
        Predicate::Or(Box::new(a), Box::new(b))
    }

    #[test]
    fn a_filter_tells_where_its_rows_begin_only_when_every_row_is_past_it() {
        use Comparison::{Eq, Ge, Gt, Le, Lt};
        use ItemsFrom::{After, AtOrAfter, Later};
        let cases: [(Predicate, Option<ItemsFrom>); 11] = [
            (at(Ge, 5), Some(AtOrAfter(5))),
            (at(Eq, 5), Some(AtOrAfter(5))),
            (at(Gt, 5), Some(Later(5))),
            (at(Lt, 5), None),
            (id_after("a"), None),
            (and(id_after("a"), at(Ge, 7)), Some(AtOrAfter(7))),
            (and(at(Ge, 3), at(Gt, 7)), Some(Later(7))),
            (and(id_after("a"), at(Eq, 9)), Some(After(9, "a".into()))),
            // The keyset filter of a paged pull.
            (
                or(and(at(Eq, 9), id_after("a")), at(Gt, 9)),
                Some(After(9, "a".into())),
            ),
            (or(at(Gt, 9), at(Ge, 12)), Some(Later(9))),
            (or(at(Ge, 9), at(Le, 20)), None),
        ];
        for (filter, from) in cases {
            assert_eq!(filter.items_from(), from, "{filter:?}");
        }
        assert_eq!(Predicate::Not(Box::new(at(Lt, 5))).items_from(), None);
    }

    #[test]
    fn the_keyset_filter_of_a_page_also_renders_where_it_begins() {
        let keyset = or(
            and(at(Comparison::Eq, 9), id_after("a")),
            at(Comparison::Gt, 9),
        );
        let sqlite = query(Some(keyset.clone())).render(Dialect::Sqlite);
        assert!(
            sqlite.sql.contains(
                "(((updated_at_ms = ?3) AND (id > ?4)) OR (updated_at_ms > ?5)) \
                 AND (updated_at_ms, id) > (?6, ?7) ORDER BY"
            ),
            "{}",
            sqlite.sql
        );
        assert_eq!(
            sqlite.params[3..],
            [SqlValue::Integer(9), SqlValue::Text("a".into())]
        );
        let pg = query(Some(keyset)).render(Dialect::Postgres);
        assert!(
            pg.sql
                .contains("AND (updated_at_ms, id) > ($6, $7) ORDER BY"),
            "{}",
            pg.sql
        );
        let either_time = or(at(Comparison::Ge, 9), at(Comparison::Ge, 12));
        let from_a_time = query(Some(either_time)).render(Dialect::Sqlite);
        assert!(
            from_a_time.sql.contains("AND updated_at_ms >= ?5 ORDER BY"),
            "{}",
            from_a_time.sql
        );
        let plain = query(Some(at(Comparison::Ge, 9))).render(Dialect::Sqlite);
        assert!(
            plain.sql.contains("AND (updated_at_ms >= ?3) ORDER BY") && plain.params.len() == 1,
            "{}",
            plain.sql
        );
        let unbounded = query(Some(id_after("a"))).render(Dialect::Sqlite);
        assert!(
            unbounded.sql.contains("AND (id > ?3) ORDER BY") && unbounded.params.len() == 1,
            "{}",
            unbounded.sql
        );
    }
}
