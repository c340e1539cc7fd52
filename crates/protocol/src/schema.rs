//! Table declarations shared by client and server, and validation of rows against them.
//!
//! A [`Schema`] is data, not code: the server loads it from its config file and serves it
//! at [`crate::SCHEMA_PATH`]; clients store a copy. The engine never hard-codes a table.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The user-visible values of one row, by column name. The row id is not part of it.
pub type Fields = serde_json::Map<String, Value>;

/// Longest text value accepted when a column sets no `max_len` of its own (characters).
pub const DEFAULT_TEXT_MAX_LEN: usize = 10_000;

/// Type of a column's values. `null` is allowed for every type unless the column is
/// required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Real,
    /// true / false.
    Boolean,
}

/// A format a column's non-null values must have, beyond their type (checked by
/// [`TableSchema::validate_fields`] on both sides, so the server enforces what the app
/// shows). Absent in schemas from before it existed: no check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// Text like `name@example.org`: one `@`, something before it, a dot in the domain,
    /// no spaces.
    Email,
    /// Text of digits, spaces and `+ - ( ) .`, with at least 3 digits.
    Phone,
    /// A number of 0 or more.
    NonNegative,
}

impl ValueFormat {
    /// Why `value` breaks the format, if it does.
    fn problem(self, value: &Value) -> Option<&'static str> {
        let ok = match (self, value) {
            (ValueFormat::Email, Value::String(text)) => {
                let (user, domain) = text.split_once('@').unwrap_or(("", ""));
                !user.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !text.contains(char::is_whitespace)
            }
            (ValueFormat::Phone, Value::String(text)) => {
                text.chars()
                    .all(|c| c.is_ascii_digit() || " +-().".contains(c))
                    && text.chars().filter(char::is_ascii_digit).count() >= 3
            }
            (ValueFormat::NonNegative, Value::Number(n)) => n.as_f64().is_some_and(|n| n >= 0.0),
            _ => true,
        };
        (!ok).then_some(match self {
            ValueFormat::Email => "must look like name@example.org",
            ValueFormat::Phone => "may hold only digits, spaces and + - ( ), at least 3 digits",
            ValueFormat::NonNegative => "must be 0 or more",
        })
    }
}

/// One typed column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name: lowercase ASCII letters, digits and `_`, starting with a letter.
    pub name: String,
    /// Type every non-null value must have.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the value must be present and non-null (and, for text, non-blank).
    #[serde(default)]
    pub required: bool,
    /// Longest accepted text, in characters (text columns only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// A format its non-null values must have (email, phone, non-negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ValueFormat>,
    /// The value a row that does not carry this column has (a row stored before the
    /// column existed, or sent by a device that does not know it yet). Lets a column be
    /// added as required (see [`crate::evolve`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// A synced table: a name and its typed columns. Every table also has an implicit `id`
/// (a UUID) that is not listed in `columns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Table name, same rules as column names.
    pub name: String,
    /// Declared columns, in display order.
    pub columns: Vec<ColumnDef>,
}

/// All synced tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Declared tables; names are unique.
    pub tables: Vec<TableSchema>,
}

/// The schema a server serves and its version: the number goes up by one each time the
/// server's config changes the schema (see [`crate::evolve`]). On the wire the schema's
/// fields sit next to `version`, so a client that reads only a [`Schema`] still can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedSchema {
    /// The version, from 1; 0 from a server that does not version its schema.
    #[serde(default)]
    pub version: u64,
    /// The tables.
    #[serde(flatten)]
    pub schema: Schema,
    /// Every column an administrator renamed, oldest first: a device that held an
    /// older version renames those made after it (in its rows, pending edits and
    /// conflicts) instead of taking them for a drop and an add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renames: Vec<ColumnRename>,
}

impl VersionedSchema {
    /// `schema` as `version`, with no rename.
    pub fn new(version: u64, schema: Schema) -> Self {
        Self {
            version,
            schema,
            renames: Vec::new(),
        }
    }
}

/// A column renamed by an administrator (`roster-server migrate --rename`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRename {
    /// The schema version the rename made.
    pub version: u64,
    /// The table.
    pub table: String,
    /// The column's name before.
    pub from: String,
    /// Its name from `version` on.
    pub to: String,
}

/// Why a schema or a row was rejected. Messages name the table, column and value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A table or column name breaks the naming rules.
    #[error(
        "invalid name {0:?}: use lowercase letters, digits and '_', starting with a letter, at most 63 characters, and not 'id'"
    )]
    InvalidName(String),
    /// Two tables, or two columns of one table, share a name.
    #[error("duplicate name {0:?} in schema")]
    DuplicateName(String),
    /// The schema declares no table, or a table declares no column.
    #[error("{0}")]
    Empty(String),
    /// A row or request names a table the schema does not declare.
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    /// A row names a column its table does not declare.
    #[error("unknown column {column:?} in table {table:?}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The undeclared column.
        column: String,
    },
    /// A row's values are not a JSON object.
    #[error("the values of a {table} row are not a JSON object: {reason}")]
    NotAnObject {
        /// The table.
        table: String,
        /// What the JSON decoder said.
        reason: String,
    },
    /// A value is missing, of the wrong type or too long.
    #[error("invalid value for {table}.{column}: {reason}")]
    InvalidValue {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong, in words.
        reason: String,
    },
}

/// Whether `name` is acceptable as a table or column name. The rules keep names safe to
/// quote into SQL and free of the reserved `id` and `_`-prefixed metadata names.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 63
        && first.is_ascii_lowercase()
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name != "id"
}

impl Schema {
    /// The schema the app ships: one `person` table.
    pub fn default_person() -> Self {
        let text = |name: &str, required: bool, max_len: usize, format| ColumnDef {
            name: name.to_owned(),
            ty: ColumnType::Text,
            required,
            max_len: Some(max_len),
            format,
            default: None,
        };
        Self {
            tables: vec![TableSchema {
                name: "person".to_owned(),
                columns: vec![
                    text("name", true, 200, None),
                    text("email", false, 320, None),
                    text("phone", false, 50, None),
                    ColumnDef {
                        name: "age".to_owned(),
                        ty: ColumnType::Integer,
                        required: false,
                        max_len: None,
                        format: None,
                        default: None,
                    },
                    text("city", false, 200, None),
                    text("notes", false, DEFAULT_TEXT_MAX_LEN, None),
                ],
            }],
        }
    }

    /// Checks names, uniqueness and non-emptiness. A schema that passes is safe to turn
    /// into SQL tables on either side.
    pub fn validate(&self) -> Result<(), SchemaError> {
        if self.tables.is_empty() {
            return Err(SchemaError::Empty("the schema declares no table".into()));
        }
        let mut tables = std::collections::HashSet::new();
        for table in &self.tables {
            if !is_valid_name(&table.name) {
                return Err(SchemaError::InvalidName(table.name.clone()));
            }
            if !tables.insert(table.name.as_str()) {
                return Err(SchemaError::DuplicateName(table.name.clone()));
            }
            if table.columns.is_empty() {
                return Err(SchemaError::Empty(format!(
                    "table {:?} declares no column",
                    table.name
                )));
            }
            let mut columns = std::collections::HashSet::new();
            for column in &table.columns {
                if !is_valid_name(&column.name) {
                    return Err(SchemaError::InvalidName(column.name.clone()));
                }
                if !columns.insert(column.name.as_str()) {
                    return Err(SchemaError::DuplicateName(format!(
                        "{}.{}",
                        table.name, column.name
                    )));
                }
                if let Some(default) = &column.default {
                    table.check_value(column, default).map_err(|e| match e {
                        SchemaError::InvalidValue {
                            table,
                            column,
                            reason,
                        } => SchemaError::InvalidValue {
                            table,
                            column,
                            reason: format!("its default is invalid: {reason}"),
                        },
                        other => other,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Result<&TableSchema, SchemaError> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| SchemaError::UnknownTable(name.to_owned()))
    }
}

impl TableSchema {
    /// The column called `name`, if declared.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Checks a complete row: no unknown column, every value of its column's type, every
    /// required column present and non-null, texts within their length limit. A column
    /// the row does not carry counts as its default (null without one).
    pub fn validate_fields(&self, fields: &Fields) -> Result<(), SchemaError> {
        if let Some(key) = fields.keys().find(|key| self.column(key).is_none()) {
            return Err(self.unknown_column(key));
        }
        for column in &self.columns {
            let value = fields
                .get(&column.name)
                .or(column.default.as_ref())
                .unwrap_or(&Value::Null);
            self.check_value(column, value)?;
        }
        Ok(())
    }

    /// A complete row's values, given as the JSON text of an object, in the order of
    /// the table's columns (a column the row does not carry takes its default, else
    /// null), checked as [`TableSchema::validate_fields`] checks the same object. No map
    /// is built: this is how a client applies a pulled row.
    pub fn decode_row(&self, json: &str) -> Result<Vec<Value>, SchemaError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let (slots, unknown) = serde::de::DeserializeSeed::deserialize(RowSeed(self), &mut de)
            .and_then(|decoded| de.end().map(|()| decoded))
            .map_err(|e| SchemaError::NotAnObject {
                table: self.name.clone(),
                reason: e.to_string(),
            })?;
        if let Some(key) = unknown {
            return Err(self.unknown_column(&key));
        }
        let mut values = Vec::with_capacity(self.columns.len());
        for (column, slot) in self.columns.iter().zip(slots) {
            let value = slot
                .or_else(|| column.default.clone())
                .unwrap_or(Value::Null);
            self.check_value(column, &value)?;
            values.push(value);
        }
        Ok(values)
    }

    fn unknown_column(&self, key: &str) -> SchemaError {
        SchemaError::UnknownColumn {
            table: self.name.clone(),
            column: key.to_owned(),
        }
    }

    /// Checks one value of `column` (type, presence, length, format).
    fn check_value(&self, column: &ColumnDef, value: &Value) -> Result<(), SchemaError> {
        let invalid = |reason: String| SchemaError::InvalidValue {
            table: self.name.clone(),
            column: column.name.clone(),
            reason,
        };
        match (column.ty, value) {
            (_, Value::Null) if column.required => {
                return Err(invalid("a value is required".into()));
            }
            (_, Value::Null) => {}
            (ColumnType::Text, Value::String(s)) => {
                let max = column.max_len.unwrap_or(DEFAULT_TEXT_MAX_LEN);
                // A text has at most as many characters as bytes: only a longer one
                // needs counting.
                if s.len() > max {
                    let len = s.chars().count();
                    if len > max {
                        return Err(invalid(format!(
                            "text is {len} characters long, at most {max} allowed"
                        )));
                    }
                }
                if column.required && s.trim().is_empty() {
                    return Err(invalid("a value is required".into()));
                }
            }
            (ColumnType::Integer, Value::Number(n)) if n.is_i64() => {}
            (ColumnType::Real, Value::Number(_)) => {}
            (ColumnType::Boolean, Value::Bool(_)) => {}
            (ty, other) => {
                return Err(invalid(format!(
                    "expected {}, got {}",
                    ty.describe(),
                    describe_json(other)
                )));
            }
        }
        if let Some(problem) = column.format.and_then(|format| format.problem(value)) {
            return Err(invalid(problem.to_owned()));
        }
        Ok(())
    }

    /// Whether `fields` lacks a declared column (a row from before the column existed,
    /// or from a device that does not know it).
    pub fn lacks_a_column(&self, fields: &Fields) -> bool {
        self.columns.iter().any(|c| !fields.contains_key(&c.name))
    }

    /// Gives every declared column `fields` lacks the value `known` holds for it (the
    /// stored row, so a device never told about a column cannot null it), else the
    /// column's default; a column with neither stays absent (null).
    pub fn fill_missing(&self, fields: &mut Fields, known: Option<&Fields>) {
        for column in &self.columns {
            if fields.contains_key(&column.name) {
                continue;
            }
            if let Some(value) = known
                .and_then(|known| known.get(&column.name))
                .or(column.default.as_ref())
            {
                fields.insert(column.name.clone(), value.clone());
            }
        }
    }
}

impl ColumnType {
    /// A word for the type, as used in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "an integer",
            ColumnType::Real => "a number",
            ColumnType::Boolean => "true or false",
        }
    }
}

fn describe_json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "text".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Decodes a row object into one slot per column of the table, by position; the first
/// key the table does not declare is returned beside them (its value skipped). A key
/// given twice keeps its last value, as a [`Fields`] map would.
struct RowSeed<'a>(&'a TableSchema);

/// The slots of a row's columns, and the first undeclared key.
type DecodedRow = (Vec<Option<Value>>, Option<String>);

impl<'de> serde::de::DeserializeSeed<'de> for RowSeed<'_> {
    type Value = DecodedRow;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<DecodedRow, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowSeed<'_> {
    type Value = DecodedRow;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of column values")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<DecodedRow, A::Error> {
        let columns = &self.0.columns;
        let mut slots: Vec<Option<Value>> = vec![None; columns.len()];
        let mut unknown = None;
        while let Some(Key(key)) = map.next_key()? {
            match columns.iter().position(|c| c.name == key) {
                Some(index) => slots[index] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    unknown.get_or_insert_with(|| key.into_owned());
                }
            }
        }
        Ok((slots, unknown))
    }
}

/// A key of a row object, borrowed from the JSON text unless it holds an escape.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a column name")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        match v {
            Value::Object(m) => m,
            _ => Fields::new(),
        }
    }

    #[test]
    fn default_schema_is_valid() {
        assert_eq!(Schema::default_person().validate(), Ok(()));
    }

    #[test]
    fn names_are_restricted() {
        for bad in [
            "",
            "Person",
            "1abc",
            "a-b",
            "id",
            "_meta",
            "a b",
            "x\"; drop",
        ] {
            assert!(!is_valid_name(bad), "{bad:?} should be rejected");
        }
        for good in ["person", "a", "first_name", "x9"] {
            assert!(is_valid_name(good), "{good:?} should be accepted");
        }
    }

    #[test]
    fn duplicate_columns_are_rejected() {
        let mut schema = Schema::default_person();
        let first = schema.tables[0].columns[0].clone();
        schema.tables[0].columns.push(first);
        assert!(matches!(
            schema.validate(),
            Err(SchemaError::DuplicateName(_))
        ));
    }

    #[test]
    fn rows_are_validated_by_type_and_presence() {
        let schema = Schema::default_person();
        let person = schema.table("person").unwrap();
        assert_eq!(
            person.validate_fields(&fields(json!({"name": "Jane", "age": 25}))),
            Ok(())
        );
        assert!(matches!(
            person.validate_fields(&fields(json!({"age": 25}))),
            Err(SchemaError::InvalidValue { column, .. }) if column == "name"
        ));
        assert!(matches!(
            person.validate_fields(&fields(json!({"name": "  "}))),
            Err(SchemaError::InvalidValue { .. })
        ));
        assert!(matches!(
            person.validate_fields(&fields(json!({"name": "Jane", "age": "old"}))),
            Err(SchemaError::InvalidValue { column, .. }) if column == "age"
        ));
        assert!(matches!(
            person.validate_fields(&fields(json!({"name": "Jane", "age": 2.5}))),
            Err(SchemaError::InvalidValue { .. })
        ));
        assert!(matches!(
            person.validate_fields(&fields(json!({"name": "Jane", "shoe": 9}))),
            Err(SchemaError::UnknownColumn { column, .. }) if column == "shoe"
        ));
        let mut checked = person.clone();
        for (column, format) in [
            ("email", ValueFormat::Email),
            ("phone", ValueFormat::Phone),
            ("age", ValueFormat::NonNegative),
        ] {
            if let Some(c) = checked.columns.iter_mut().find(|c| c.name == column) {
                c.format = Some(format);
            }
        }
        assert_eq!(
            person.validate_fields(&fields(json!({"name": "J", "email": "x", "age": -1}))),
            Ok(()),
            "no format, no check"
        );
        for (bad, column) in [
            (json!({"name": "J", "email": "jane-at-home"}), "email"),
            (json!({"name": "J", "email": "a@b"}), "email"),
            (json!({"name": "J", "phone": "call me"}), "phone"),
            (json!({"name": "J", "age": -1}), "age"),
        ] {
            assert!(
                matches!(
                    checked.validate_fields(&fields(bad.clone())),
                    Err(SchemaError::InvalidValue { column: c, .. }) if c == column
                ),
                "{bad}"
            );
        }
        assert_eq!(
            checked.validate_fields(&fields(
                json!({"name": "J", "email": "j@example.org", "phone": "+33 (1) 23-45", "age": 0})
            )),
            Ok(())
        );
        let long = "x".repeat(201);
        assert!(matches!(
            person.validate_fields(&fields(json!({"name": long}))),
            Err(SchemaError::InvalidValue { .. })
        ));
        // The limit counts characters, not bytes: 200 two-byte characters fit.
        let wide = "é".repeat(200);
        assert_eq!(
            person.validate_fields(&fields(json!({"name": wide}))),
            Ok(())
        );
        let wider = "é".repeat(201);
        assert!(matches!(
            person.validate_fields(&fields(json!({"name": wider}))),
            Err(SchemaError::InvalidValue { reason, .. }) if reason.contains("201 characters")
        ));
        assert!(matches!(
            schema.table("nope"),
            Err(SchemaError::UnknownTable(_))
        ));
    }

    /// `decode_row` gives the verdict `validate_fields` gives for the same object, and
    /// on success the values the row is bound with (absent: the default, else null).
    /// One case per line: the row as JSON text, then the error's start or the values.
    #[test]
    fn decoding_a_row_checks_it_as_validating_its_map_does() {
        let mut schema = Schema::default_person();
        let table = &mut schema.tables[0];
        table.columns[1].format = Some(ValueFormat::Email);
        table.columns[4].default = Some(json!("Lyon"));
        let table = &schema.tables[0];
        #[rustfmt::skip]
        let cases: &[(&str, Result<Value, &str>)] = &[
            (r#"{"name":"Ann","email":"a@b.co","age":3,"city":"Oslo"}"#, Ok(json!(["Ann", "a@b.co", null, 3, "Oslo", null]))),
            (r#"{"name":"Ann"}"#, Ok(json!(["Ann", null, null, null, "Lyon", null]))),
            (r#"{"name":"Ann","city":null}"#, Ok(json!(["Ann", null, null, null, null, null]))),
            (r#"{"name":"A\"n\u006e","age":1,"age":2}"#, Ok(json!(["A\"nn", null, null, 2, "Lyon", null]))),
            (r#"{"na\u006de":"Ann"}"#, Ok(json!(["Ann", null, null, null, "Lyon", null]))),
            (r#"{"name":"Ann","nick":"x"}"#, Err("unknown column \"nick\"")),
            (r#"{"name":"  "}"#, Err("invalid value for person.name: a value is required")),
            (r#"{"age":3}"#, Err("invalid value for person.name: a value is required")),
            (r#"{"name":"Ann","age":"3"}"#, Err("invalid value for person.age: expected")),
            (r#"{"name":"Ann","age":1.5}"#, Err("invalid value for person.age: expected")),
            (r#"{"name":"Ann","email":"nope"}"#, Err("invalid value for person.email: must look like")),
            (r#"["Ann"]"#, Err("the values of a person row are not a JSON object")),
            (r#"{"name":"Ann""#, Err("the values of a person row are not a JSON object")),
            (r#"{"name":"Ann"} {}"#, Err("the values of a person row are not a JSON object")),
        ];
        for (text, expected) in cases {
            let decoded = table.decode_row(text).map(Value::from);
            match (expected, &decoded) {
                (Ok(values), Ok(got)) => assert_eq!(got, values, "{text}"),
                (Err(start), Err(e)) => assert!(e.to_string().starts_with(start), "{text}: {e}"),
                _ => panic!("{text}: expected {expected:?}, got {decoded:?}"),
            }
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
                let validated = table.validate_fields(&map).map_err(|e| e.to_string());
                assert_eq!(validated.is_ok(), decoded.is_ok(), "{text}: {validated:?}");
                if let (Err(a), Err(b)) = (&validated, &decoded) {
                    assert_eq!(a, &b.to_string(), "{text}");
                }
            }
        }
    }
}
