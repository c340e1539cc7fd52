//! Parsing `FIELD=VALUE` arguments into typed values using the table's schema.

use roster_protocol::{ColumnType, Fields, TableSchema};
use serde_json::Value;

/// A `FIELD=VALUE` argument that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(String);

/// Parses assignments; an empty value means null. Unknown fields and values that do not
/// fit the column's type are errors naming the field.
pub fn parse(table: &TableSchema, assignments: &[String]) -> Result<Fields, FieldError> {
    let mut fields = Fields::new();
    for assignment in assignments {
        let Some((name, raw)) = assignment.split_once('=') else {
            return Err(FieldError(format!("{assignment:?} is not FIELD=VALUE")));
        };
        let column = table.column(name).ok_or_else(|| {
            let known: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            FieldError(format!(
                "{} has no field {name:?}; fields are {}",
                table.name,
                known.join(", ")
            ))
        })?;
        let bad = |what: &str| FieldError(format!("{name} expects {what}, got {raw:?}"));
        let value = if raw.is_empty() {
            Value::Null
        } else {
            match column.ty {
                ColumnType::Text => Value::String(raw.to_owned()),
                ColumnType::Integer => {
                    Value::from(raw.parse::<i64>().map_err(|_| bad("an integer"))?)
                }
                ColumnType::Real => Value::from(raw.parse::<f64>().map_err(|_| bad("a number"))?),
                ColumnType::Boolean => match raw.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => Value::Bool(true),
                    "false" | "no" | "0" => Value::Bool(false),
                    _ => return Err(bad("true or false")),
                },
            }
        };
        fields.insert(name.to_owned(), value);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_protocol::Schema;

    #[test]
    fn assignments_are_typed_by_schema() {
        let schema = Schema::default_person();
        let person = schema.table("person").unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let fields = parse(person, &args(&["name=Jane Doe", "age=25", "city="])).unwrap();
        assert_eq!(fields["name"], Value::from("Jane Doe"));
        assert_eq!(fields["age"], Value::from(25));
        assert_eq!(fields["city"], Value::Null);
        assert!(parse(person, &args(&["age=old"])).is_err());
        assert!(parse(person, &args(&["shoe=9"])).is_err());
        assert!(parse(person, &args(&["name"])).is_err());
    }
}
