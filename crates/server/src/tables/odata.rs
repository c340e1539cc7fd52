//! The list query of the Azure Mobile Apps table protocol: `$filter` (an OData v3
//! expression), `$orderby`, `$top`, `$skip`, `$select`, `__includeDeleted` and
//! `__systemproperties`.
//!
//! `$filter` is parsed with a small grammar written with `winnow` (already in the build
//! through `toml`) into an [`Expr`], then checked against the table's schema into a typed
//! [`Predicate`] that the store renders as SQL with bound parameters
//! ([`crate::store::items`]). Supported: comparisons (`eq ne gt ge lt le`) of a column
//! with a literal (text `'...'`, numbers, `true`/`false`/`null`,
//! `datetime'...'`/`datetimeoffset'...'`, `guid'...'`), `and`, `or`, `not`, parentheses
//! and a bare boolean column. Anything else (functions, arithmetic, comparing two
//! columns) is refused with a message saying what is not supported.
//!
//! Grammar (keywords are lowercase, as OData writes them):
//!
//! ```text
//! filter     = or
//! or         = and ("or" and)*
//! and        = unary ("and" unary)*
//! unary      = "not" unary | comparison
//! comparison = operand (("eq"|"ne"|"gt"|"ge"|"lt"|"le") operand)?
//! operand    = "(" or ")" | literal | name "(" ... ")" | name
//! ```

use roster_protocol::{ColumnType, TableSchema};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use winnow::ascii::{digit1, multispace0};
use winnow::combinator::{
    alt, cut_err, delimited, not, opt, preceded, separated_foldl1, terminated,
};
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::token::{one_of, take_while};

use crate::store::items::{Comparison, ItemColumn, ItemQuery, Predicate, SqlValue};

/// Rows a list answers when the query sets no `$top`.
pub const DEFAULT_TOP: u32 = 50;

/// Most rows a list answers; a larger `$top` is lowered to it.
pub const MAX_TOP: u32 = 1000;

/// Why a list query was refused (answered 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(message.into()))
}

/// A literal as written in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'` (`''` is a quote).
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction or an exponent.
    Number(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// `datetime'...'` or `datetimeoffset'...'`: the text between the quotes.
    DateTime(String),
    /// `guid'...'`.
    Guid(String),
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A column name.
    Member(String),
    /// A literal value.
    Literal(Literal),
    /// A function call (not supported; kept to say so).
    Call(String),
    /// A parenthesised expression.
    Group(Box<Expr>),
}

/// A parsed, unchecked `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a and b`
    And(Box<Expr>, Box<Expr>),
    /// `a or b`
    Or(Box<Expr>, Box<Expr>),
    /// `not a`
    Not(Box<Expr>),
    /// `left op right`
    Compare(Operand, Comparison, Operand),
    /// An operand on its own (a boolean column, or a parenthesised expression).
    Bare(Operand),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `word` as a whole word, with the spaces around it.
fn keyword<'i>(word: &'static str) -> impl Parser<&'i str, &'i str, ErrMode<ContextError>> {
    delimited(
        multispace0,
        terminated(word, not(one_of(is_name_char))),
        multispace0,
    )
}

fn or_expr(input: &mut &str) -> ModalResult<Expr> {
    separated_foldl1(and_expr, keyword("or"), |a, _, b| {
        Expr::Or(Box::new(a), Box::new(b))
    })
    .parse_next(input)
}

fn and_expr(input: &mut &str) -> ModalResult<Expr> {
    separated_foldl1(unary, keyword("and"), |a, _, b| {
        Expr::And(Box::new(a), Box::new(b))
    })
    .parse_next(input)
}

fn unary(input: &mut &str) -> ModalResult<Expr> {
    alt((
        preceded(keyword("not"), unary).map(|e| Expr::Not(Box::new(e))),
        comparison,
    ))
    .parse_next(input)
}

fn comparison(input: &mut &str) -> ModalResult<Expr> {
    let left = operand.parse_next(input)?;
    match opt(comparison_op).parse_next(input)? {
        None => Ok(Expr::Bare(left)),
        Some(op) => {
            let right = cut_err(operand).parse_next(input)?;
            Ok(Expr::Compare(left, op, right))
        }
    }
}

fn comparison_op(input: &mut &str) -> ModalResult<Comparison> {
    alt((
        keyword("eq").value(Comparison::Eq),
        keyword("ne").value(Comparison::Ne),
        keyword("gt").value(Comparison::Gt),
        keyword("ge").value(Comparison::Ge),
        keyword("lt").value(Comparison::Lt),
        keyword("le").value(Comparison::Le),
    ))
    .parse_next(input)
}

fn operand(input: &mut &str) -> ModalResult<Operand> {
    delimited(
        multispace0,
        alt((
            delimited('(', or_expr, (multispace0, ')')).map(|e| Operand::Group(Box::new(e))),
            literal.map(Operand::Literal),
            member_or_call,
        )),
        multispace0,
    )
    .parse_next(input)
}

fn literal(input: &mut &str) -> ModalResult<Literal> {
    let word = |w: &'static str| terminated(w, not(one_of(is_name_char)));
    alt((
        quoted.map(Literal::Text),
        preceded("datetimeoffset", quoted).map(Literal::DateTime),
        preceded("datetime", quoted).map(Literal::DateTime),
        preceded("guid", quoted).map(Literal::Guid),
        word("true").value(Literal::Bool(true)),
        word("false").value(Literal::Bool(false)),
        word("null").value(Literal::Null),
        number,
    ))
    .parse_next(input)
}

/// `'...'` with `''` for a quote inside.
fn quoted(input: &mut &str) -> ModalResult<String> {
    '\''.parse_next(input)?;
    let mut text = String::new();
    loop {
        let Some(end) = input.find('\'') else {
            // An unterminated string: nothing else can be read here.
            return Err(ErrMode::Cut(ContextError::new()));
        };
        text.push_str(&input[..end]);
        *input = &input[end + 1..];
        match input.strip_prefix('\'') {
            Some(rest) => {
                text.push('\'');
                *input = rest;
            }
            None => return Ok(text),
        }
    }
}

fn number(input: &mut &str) -> ModalResult<Literal> {
    let text = (
        opt('-'),
        digit1,
        opt(('.', digit1)),
        opt((one_of(['e', 'E']), opt(one_of(['+', '-'])), digit1)),
    )
        .take()
        .parse_next(input)?;
    // OData's type suffixes (decimal, double, single, long) change nothing here.
    opt(one_of(['m', 'M', 'd', 'D', 'f', 'F', 'l', 'L'])).parse_next(input)?;
    not(one_of(is_name_char)).parse_next(input)?;
    if !text.contains(['.', 'e', 'E'])
        && let Ok(n) = text.parse::<i64>()
    {
        return Ok(Literal::Integer(n));
    }
    text.parse::<f64>()
        .map(Literal::Number)
        .map_err(|_| ErrMode::Cut(ContextError::new()))
}

fn member_or_call(input: &mut &str) -> ModalResult<Operand> {
    let name = (
        one_of(|c: char| c.is_ascii_alphabetic() || c == '_'),
        take_while(0.., is_name_char),
    )
        .take()
        .parse_next(input)?;
    if opt((multispace0, '(')).parse_next(input)?.is_none() {
        return Ok(Operand::Member(name.to_owned()));
    }
    // A function call: its arguments are skipped (to the matching parenthesis) so the
    // checker can name the function it does not support.
    let mut depth = 1usize;
    let mut in_text = false;
    for (at, c) in input.char_indices() {
        match c {
            '\'' => in_text = !in_text,
            '(' if !in_text => depth += 1,
            ')' if !in_text => {
                depth -= 1;
                if depth == 0 {
                    *input = &input[at + 1..];
                    return Ok(Operand::Call(name.to_owned()));
                }
            }
            _ => {}
        }
    }
    Err(ErrMode::Cut(ContextError::new()))
}

/// Parses a `$filter` expression (not yet checked against a table).
pub fn parse_filter(text: &str) -> Result<Expr, QueryError> {
    delimited(multispace0, or_expr, multispace0)
        .parse(text)
        .map_err(|error| {
            let at = error.offset();
            let near: String = text[at..].chars().take(30).collect();
            let near = if near.is_empty() {
                "the end".to_owned()
            } else {
                format!("`{near}`")
            };
            QueryError(format!(
                "$filter cannot be read at character {} (near {near}); supported: comparisons \
                 (eq, ne, gt, ge, lt, le) of a column with a literal, and, or, not, parentheses",
                at + 1
            ))
        })
}

/// The system columns of an item, as the protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemColumn {
    /// `version`
    Version,
    /// `createdAt`
    CreatedAt,
    /// `updatedAt`
    UpdatedAt,
    /// `deleted`
    Deleted,
}

impl SystemColumn {
    /// Every system column but `id`, in the order items list them.
    pub const ALL: [SystemColumn; 4] = [
        SystemColumn::Version,
        SystemColumn::CreatedAt,
        SystemColumn::UpdatedAt,
        SystemColumn::Deleted,
    ];

    /// Its name in items (ZUMO-API-VERSION 2.0.0).
    pub fn name(self) -> &'static str {
        match self {
            SystemColumn::Version => "version",
            SystemColumn::CreatedAt => "createdAt",
            SystemColumn::UpdatedAt => "updatedAt",
            SystemColumn::Deleted => "deleted",
        }
    }

    /// The column named `name`: its 2.0.0 name or the older `__`-prefixed one, any case.
    pub fn named(name: &str) -> Option<Self> {
        let bare = name.strip_prefix("__").unwrap_or(name);
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(bare))
    }

    fn item_column(self) -> ItemColumn {
        match self {
            SystemColumn::Version => ItemColumn::Version,
            SystemColumn::CreatedAt => ItemColumn::CreatedAt,
            SystemColumn::UpdatedAt => ItemColumn::UpdatedAt,
            SystemColumn::Deleted => ItemColumn::Deleted,
        }
    }
}

/// The column `name` names in `table`: `id`, a system column or a declared one.
fn column(name: &str, table: &TableSchema) -> Result<ItemColumn, QueryError> {
    if name == "id" {
        return Ok(ItemColumn::Id);
    }
    if let Some(system) = SystemColumn::named(name) {
        return Ok(system.item_column());
    }
    match table.column(name) {
        Some(def) => Ok(ItemColumn::Field {
            name: def.name.clone(),
            ty: def.ty,
        }),
        None => refuse(format!(
            "unknown column {name:?} in table {:?}; its columns are id, version, createdAt, \
             updatedAt, deleted{}",
            table.name,
            table
                .columns
                .iter()
                .map(|c| format!(", {}", c.name))
                .collect::<String>()
        )),
    }
}

fn column_name(column: &ItemColumn) -> &str {
    match column {
        ItemColumn::Id => "id",
        ItemColumn::Version => "version",
        ItemColumn::CreatedAt => "createdAt",
        ItemColumn::UpdatedAt => "updatedAt",
        ItemColumn::Deleted => "deleted",
        ItemColumn::Field { name, .. } => name,
    }
}

fn describe(literal: &Literal) -> &'static str {
    match literal {
        Literal::Text(_) => "text",
        Literal::Integer(_) | Literal::Number(_) => "a number",
        Literal::Bool(_) => "true or false",
        Literal::Null => "null",
        Literal::DateTime(_) => "a date",
        Literal::Guid(_) => "a guid",
    }
}

/// A date literal's text as Unix ms.
pub fn parse_date_ms(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// The value `literal` binds when compared with `column`, or why it cannot be.
fn value_for(column: &ItemColumn, literal: &Literal) -> Result<SqlValue, QueryError> {
    let wrong = || {
        refuse(format!(
            "{} cannot be compared with {}: {}",
            column_name(column),
            describe(literal),
            match column {
                ItemColumn::Id => "ids are text, like 'c0a8...'".to_owned(),
                ItemColumn::Version => "versions are text, like '42'".to_owned(),
                ItemColumn::CreatedAt | ItemColumn::UpdatedAt =>
                    "dates are written datetimeoffset'2026-01-31T12:00:00.000Z'".to_owned(),
                ItemColumn::Deleted => "it is true or false".to_owned(),
                ItemColumn::Field { ty, .. } => format!("it holds {}", ty.describe()),
            }
        ))
    };
    match (column, literal) {
        (ItemColumn::Id, Literal::Text(text) | Literal::Guid(text)) => {
            // Ids are stored as lowercase hyphenated UUIDs; any spelling of one matches.
            let id = uuid::Uuid::parse_str(text).map_or_else(|_| text.clone(), |u| u.to_string());
            Ok(SqlValue::Text(id))
        }
        (ItemColumn::Version, Literal::Text(text)) => match text.parse::<i64>() {
            Ok(version) => Ok(SqlValue::Integer(version)),
            Err(_) => refuse(format!("{text:?} is not a version of this server")),
        },
        (
            ItemColumn::CreatedAt | ItemColumn::UpdatedAt,
            Literal::DateTime(text) | Literal::Text(text),
        ) => match parse_date_ms(text) {
            Some(ms) => Ok(SqlValue::Integer(ms)),
            None => refuse(format!(
                "{text:?} is not a date like 2026-01-31T12:00:00.000Z"
            )),
        },
        (ItemColumn::Deleted, Literal::Bool(b)) => Ok(SqlValue::Bool(*b)),
        (ItemColumn::Field { ty, .. }, literal) => match (ty, literal) {
            (ColumnType::Text, Literal::Text(text)) => Ok(SqlValue::Text(text.clone())),
            (ColumnType::Integer, Literal::Integer(n)) => Ok(SqlValue::Integer(*n)),
            (ColumnType::Real, Literal::Integer(n)) => Ok(SqlValue::Real(*n as f64)),
            (ColumnType::Real, Literal::Number(x)) => Ok(SqlValue::Real(*x)),
            (ColumnType::Boolean, Literal::Bool(b)) => Ok(SqlValue::Bool(*b)),
            _ => wrong(),
        },
        _ => wrong(),
    }
}

fn unsupported_operand(operand: &Operand) -> QueryError {
    match operand {
        Operand::Call(name) => QueryError(format!(
            "the function {name}() is not supported in $filter; compare columns with literals"
        )),
        Operand::Group(_) => QueryError(
            "a parenthesised expression cannot be compared with a value in $filter".into(),
        ),
        Operand::Literal(_) | Operand::Member(_) => QueryError(
            "$filter compares a column with a literal; two literals or two columns are not supported"
                .into(),
        ),
    }
}

/// Checks a parsed filter against `table`: every column known, every literal of its
/// column's type.
pub fn check_filter(expr: &Expr, table: &TableSchema) -> Result<Predicate, QueryError> {
    match expr {
        Expr::And(a, b) => Ok(Predicate::And(
            Box::new(check_filter(a, table)?),
            Box::new(check_filter(b, table)?),
        )),
        Expr::Or(a, b) => Ok(Predicate::Or(
            Box::new(check_filter(a, table)?),
            Box::new(check_filter(b, table)?),
        )),
        Expr::Not(inner) => Ok(Predicate::Not(Box::new(check_filter(inner, table)?))),
        Expr::Bare(Operand::Group(inner)) => check_filter(inner, table),
        Expr::Bare(Operand::Member(name)) => {
            let column = column(name, table)?;
            let boolean = matches!(
                column,
                ItemColumn::Deleted
                    | ItemColumn::Field {
                        ty: ColumnType::Boolean,
                        ..
                    }
            );
            if !boolean {
                return refuse(format!(
                    "{name} is not true or false: compare it with a value, like {name} eq ..."
                ));
            }
            Ok(Predicate::Compare {
                column,
                op: Comparison::Eq,
                value: Some(SqlValue::Bool(true)),
            })
        }
        Expr::Bare(other) => Err(match other {
            Operand::Literal(_) => QueryError("$filter is a literal, not a condition".into()),
            other => unsupported_operand(other),
        }),
        Expr::Compare(left, op, right) => {
            let (name, op, literal) = match (left, right) {
                (Operand::Member(name), Operand::Literal(literal)) => (name, *op, literal),
                (Operand::Literal(literal), Operand::Member(name)) => (name, op.swapped(), literal),
                (Operand::Call(_) | Operand::Group(_), _) => {
                    return Err(unsupported_operand(left));
                }
                (_, other) => return Err(unsupported_operand(other)),
            };
            let column = column(name, table)?;
            if *literal == Literal::Null {
                if !matches!(op, Comparison::Eq | Comparison::Ne) {
                    return refuse(format!("{name} can only be compared with null by eq or ne"));
                }
                return Ok(Predicate::Compare {
                    column,
                    op,
                    value: None,
                });
            }
            let value = value_for(&column, literal)?;
            Ok(Predicate::Compare {
                column,
                op,
                value: Some(value),
            })
        }
    }
}

/// Which columns a list answer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// The declared columns shown (all when `None`).
    pub fields: Option<Vec<String>>,
    /// The system columns shown besides `id`.
    pub system: Vec<SystemColumn>,
}

impl Projection {
    /// Every column.
    pub fn all() -> Self {
        Self {
            fields: None,
            system: SystemColumn::ALL.to_vec(),
        }
    }
}

/// A checked list query and what its answer shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// The rows.
    pub query: ItemQuery,
    /// The columns.
    pub projection: Projection,
}

fn flag(name: &str, value: &str) -> Result<bool, QueryError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => refuse(format!("{name} must be true or false, not {value:?}")),
    }
}

fn count(name: &str, value: &str) -> Result<u64, QueryError> {
    value.trim().parse::<u64>().or_else(|_| {
        refuse(format!(
            "{name} must be a whole number of 0 or more, not {value:?}"
        ))
    })
}

/// The list query of a `GET /tables/{table}`, from its query parameters in order.
/// Parameters not starting with `$` or `__` are the app's own and are ignored (as AMA
/// does); unknown `$` options are refused.
pub fn list_query(
    params: &[(String, String)],
    table: &TableSchema,
) -> Result<ListQuery, QueryError> {
    let mut query = ItemQuery {
        table: table.name.clone(),
        filter: None,
        order: Vec::new(),
        skip: 0,
        top: DEFAULT_TOP,
        include_deleted: false,
    };
    let mut selected: Option<Vec<String>> = None;
    let mut system: Option<Vec<SystemColumn>> = None;
    for (name, value) in params {
        match name.as_str() {
            "$filter" => {
                let parsed = parse_filter(value)?;
                query.filter = Some(check_filter(&parsed, table)?);
            }
            "$orderby" => {
                for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                    let mut words = key.split_whitespace();
                    let name = words.next().unwrap_or_default();
                    let descending = match words.next() {
                        None | Some("asc") => false,
                        Some("desc") => true,
                        Some(other) => {
                            return refuse(format!(
                                "$orderby: {other:?} after {name} is neither asc nor desc"
                            ));
                        }
                    };
                    if words.next().is_some() {
                        return refuse(format!("$orderby: cannot read {key:?}"));
                    }
                    query.order.push((column(name, table)?, descending));
                }
            }
            "$top" => {
                query.top = u32::try_from(count("$top", value)?)
                    .unwrap_or(MAX_TOP)
                    .min(MAX_TOP)
            }
            "$skip" => query.skip = count("$skip", value)?,
            "$select" => {
                let mut names = Vec::new();
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    column(name, table)?;
                    names.push(name.to_owned());
                }
                selected = Some(names);
            }
            "__includeDeleted" => query.include_deleted = flag(name, value)?,
            "__systemproperties" | "__systemProperties" => {
                let mut columns = Vec::new();
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if name == "*" {
                        columns = SystemColumn::ALL.to_vec();
                        break;
                    }
                    match SystemColumn::named(name) {
                        Some(c) => columns.push(c),
                        None => {
                            return refuse(format!(
                                "__systemproperties: unknown system property {name:?}"
                            ));
                        }
                    }
                }
                system = Some(columns);
            }
            "$format" if value == "json" => {}
            other if other.starts_with('$') => {
                return refuse(format!(
                    "the query option {other} is not supported (supported: $filter, $orderby, \
                     $top, $skip, $select, __includeDeleted, __systemproperties)"
                ));
            }
            _ => {}
        }
    }
    let projection = match selected {
        None => Projection {
            fields: None,
            system: system.unwrap_or_else(|| SystemColumn::ALL.to_vec()),
        },
        Some(names) => {
            let mut shown: Vec<SystemColumn> = system.unwrap_or_default();
            for c in names.iter().filter_map(|n| SystemColumn::named(n)) {
                if !shown.contains(&c) {
                    shown.push(c);
                }
            }
            Projection {
                fields: Some(
                    names
                        .into_iter()
                        .filter(|n| n != "id" && SystemColumn::named(n).is_none())
                        .collect(),
                ),
                system: shown,
            }
        }
    };
    Ok(ListQuery { query, projection })
}

/// Data-driven: one case per line, the filter in, the SQLite `WHERE` part and its
/// parameters (or the error's words) out.
#[cfg(test)]
mod tests {
    use roster_protocol::Schema;

    use super::*;
    use crate::store::items::Dialect;

    fn table() -> TableSchema {
        let mut table = Schema::default_person().tables.remove(0);
        table.columns.push(roster_protocol::ColumnDef {
            name: "vip".into(),
            ty: ColumnType::Boolean,
            required: false,
            max_len: None,
            format: None,
            default: None,
        });
        table.columns.push(roster_protocol::ColumnDef {
            name: "score".into(),
            ty: ColumnType::Real,
            required: false,
            max_len: None,
            format: None,
            default: None,
        });
        table
    }

    /// The filter's SQL and parameters, or the error message.
    fn sql_of(filter: &str) -> Result<String, String> {
        let table = table();
        let params = vec![("$filter".to_owned(), filter.to_owned())];
        let list = list_query(&params, &table).map_err(|e| e.0)?;
        let rendered = ItemQuery {
            include_deleted: true,
            ..list.query
        }
        .render(Dialect::Sqlite);
        let start = rendered
            .sql
            .find("tbl = ?2 AND ")
            .map(|at| at + 13)
            .unwrap_or(0);
        let end = rendered.sql.find(" ORDER BY").unwrap_or(rendered.sql.len());
        Ok(format!(
            "{} {:?}",
            &rendered.sql[start..end],
            rendered.params
        ))
    }

    #[test]
    fn filters_become_sql_with_bound_parameters() {
        let cases: &[(&str, &str)] = &[
            (
                "age gt 30",
                "(json_extract(data, '$.age') > ?3) [Integer(30)]",
            ),
            (
                "30 lt age",
                "(json_extract(data, '$.age') > ?3) [Integer(30)]",
            ),
            (
                "name eq 'O''Brien'",
                "(json_extract(data, '$.name') = ?3) [Text(\"O'Brien\")]",
            ),
            (
                "name ne null",
                "(json_extract(data, '$.name') IS NOT NULL) []",
            ),
            (
                "(updatedAt ge datetimeoffset'2026-01-31T12:00:00.000Z')",
                "(updated_at_ms >= ?3) [Integer(1769860800000)]",
            ),
            (
                "__updatedAt ge datetime'2026-01-31T12:00:00Z'",
                "(updated_at_ms >= ?3) [Integer(1769860800000)]",
            ),
            (
                "id eq 'C0A80101-0000-0000-0000-000000000001'",
                "(id = ?3) [Text(\"c0a80101-0000-0000-0000-000000000001\")]",
            ),
            (
                "id eq guid'c0a80101-0000-0000-0000-000000000001'",
                "(id = ?3) [Text(\"c0a80101-0000-0000-0000-000000000001\")]",
            ),
            ("version eq '42'", "(version = ?3) [Integer(42)]"),
            ("deleted eq false", "(deleted = ?3) [Bool(false)]"),
            ("vip", "(json_extract(data, '$.vip') = ?3) [Bool(true)]"),
            (
                "not vip",
                "(NOT (json_extract(data, '$.vip') = ?3)) [Bool(true)]",
            ),
            (
                "score le 2.5",
                "(json_extract(data, '$.score') <= ?3) [Real(2.5)]",
            ),
            (
                "score ge 2",
                "(json_extract(data, '$.score') >= ?3) [Real(2.0)]",
            ),
            (
                "age ge -3L",
                "(json_extract(data, '$.age') >= ?3) [Integer(-3)]",
            ),
            (
                "age gt 1 and age lt 9 or city eq 'Oslo'",
                "(((json_extract(data, '$.age') > ?3) AND (json_extract(data, '$.age') < ?4)) OR (json_extract(data, '$.city') = ?5)) [Integer(1), Integer(9), Text(\"Oslo\")]",
            ),
            (
                "age gt 1 and (age lt 9 or city eq 'Oslo')",
                "((json_extract(data, '$.age') > ?3) AND ((json_extract(data, '$.age') < ?4) OR (json_extract(data, '$.city') = ?5))) [Integer(1), Integer(9), Text(\"Oslo\")]",
            ),
            (
                "not(notes eq 'x')",
                "(NOT (json_extract(data, '$.notes') = ?3)) [Text(\"x\")]",
            ),
            (
                "  name   eq   'a'  ",
                "(json_extract(data, '$.name') = ?3) [Text(\"a\")]",
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(
                sql_of(filter).as_deref(),
                Ok(*expected),
                "filter {filter:?}"
            );
        }
    }

    #[test]
    fn unsupported_or_wrong_filters_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("age gt", "cannot be read at character 7 (near the end)"),
            ("name eq 'open", "cannot be read"),
            ("age gt 1 and", "cannot be read"),
            (
                "name eq 'a' xor age eq 1",
                "cannot be read at character 13 (near `xor age eq 1`)",
            ),
            ("", "cannot be read"),
            ("shoe eq 1", "unknown column \"shoe\" in table \"person\""),
            (
                "age eq 'ten'",
                "age cannot be compared with text: it holds an integer",
            ),
            (
                "age eq 1.5",
                "age cannot be compared with a number: it holds an integer",
            ),
            (
                "name eq 3",
                "name cannot be compared with a number: it holds text",
            ),
            ("vip eq 'yes'", "vip cannot be compared with text"),
            (
                "updatedAt ge 5",
                "updatedAt cannot be compared with a number",
            ),
            (
                "updatedAt ge datetimeoffset'yesterday'",
                "\"yesterday\" is not a date",
            ),
            ("version eq 'abc'", "\"abc\" is not a version"),
            ("age gt null", "only be compared with null by eq or ne"),
            (
                "substringof('a', name)",
                "the function substringof() is not supported",
            ),
            (
                "tolower(name) eq 'a'",
                "the function tolower() is not supported",
            ),
            ("age eq city", "two literals or two columns"),
            ("age", "age is not true or false"),
            ("1 eq 1", "two literals or two columns"),
        ];
        for (filter, words) in cases {
            match sql_of(filter) {
                Ok(sql) => panic!("filter {filter:?} was accepted as {sql}"),
                Err(message) => assert!(message.contains(words), "filter {filter:?}: {message}"),
            }
        }
    }

    #[test]
    fn the_other_options_shape_the_query_and_the_projection() {
        let table = table();
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let list = list_query(
            &params(&[
                ("$orderby", "updatedAt, name desc"),
                ("$top", "5000"),
                ("$skip", "20"),
                ("$select", "name,updatedAt"),
                ("__includeDeleted", "true"),
                ("custom", "ignored"),
            ]),
            &table,
        )
        .unwrap();
        assert_eq!(list.query.top, MAX_TOP);
        assert_eq!(list.query.skip, 20);
        assert!(list.query.include_deleted);
        assert_eq!(list.query.order.len(), 2);
        assert!(list.query.order[1].1, "name desc");
        assert_eq!(list.projection.fields, Some(vec!["name".to_owned()]));
        assert_eq!(list.projection.system, vec![SystemColumn::UpdatedAt]);

        let defaults = list_query(&[], &table).unwrap();
        assert_eq!(
            (defaults.query.top, defaults.query.include_deleted),
            (DEFAULT_TOP, false)
        );
        assert_eq!(defaults.projection, Projection::all());

        let refused: &[(&[(&str, &str)], &str)] = &[
            (&[("$top", "-1")], "$top must be a whole number"),
            (&[("$orderby", "name sideways")], "neither asc nor desc"),
            (&[("$orderby", "shoe")], "unknown column \"shoe\""),
            (&[("$select", "name,shoe")], "unknown column \"shoe\""),
            (&[("__includeDeleted", "maybe")], "must be true or false"),
            (&[("$expand", "x")], "$expand is not supported"),
            (
                &[("__systemproperties", "rowversion")],
                "unknown system property",
            ),
        ];
        for (pairs, words) in refused {
            let error = list_query(&params(pairs), &table).unwrap_err();
            assert!(error.0.contains(words), "{pairs:?}: {error}");
        }
    }
}
