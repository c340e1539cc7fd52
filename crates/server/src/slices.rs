//! Partial sync on the server: the subscription filters the config declares
//! ([`SubscriptionDef`]), checking and binding a device's subscriptions to them
//! ([`Slices::resolve`], `:user` bound here to the authenticated user), and the resolved
//! [`Slice`] a request's pull is answered with (its SQL lives in each backend's `rows`
//! module; [`Slice::matches`] decides a row in Rust, for change scans and the request's
//! own writes).

use std::collections::{BTreeMap, HashSet};

use roster_protocol::slice::{MAX_PARAM_VALUES, USER_PARAM};
use roster_protocol::{
    ApiError, ColumnType, ErrorCode, Fields, Schema, Subscription, TableSchema,
    schema::is_valid_name,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A named, parameterised filter of one table, declared in the server's config:
///
/// ```toml
/// [[subscriptions]]
/// name = "by_city"
/// table = "person"
/// filter = { city = ":city" }
/// ```
///
/// Every listed column must equal its parameter (a device may give a list: any of its
/// values). `:user` is bound by the server to the authenticated user's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionDef {
    /// The name devices subscribe by.
    pub name: String,
    /// The table it filters.
    pub table: String,
    /// Column name → `:parameter`.
    pub filter: BTreeMap<String, String>,
}

impl SubscriptionDef {
    /// The columns it filters on, in index order.
    pub fn columns(&self) -> Vec<&str> {
        self.filter.keys().map(String::as_str).collect()
    }

    /// Why the declaration does not fit `schema`, if it does not.
    pub fn problem(&self, schema: &Schema) -> Option<String> {
        if !is_valid_name(&self.name) {
            return Some(format!(
                "subscription name {:?} is not a valid name",
                self.name
            ));
        }
        let Ok(table) = schema.table(&self.table) else {
            return Some(format!(
                "subscription {} names an unknown table {}",
                self.name, self.table
            ));
        };
        if self.filter.is_empty() {
            return Some(format!("subscription {} filters on no column", self.name));
        }
        for (column, param) in &self.filter {
            let Some(def) = table.column(column) else {
                return Some(format!(
                    "subscription {} filters on unknown column {}.{column}",
                    self.name, self.table
                ));
            };
            if def.ty == ColumnType::Real {
                return Some(format!(
                    "subscription {} filters on {}.{column}, a real column: only text, \
                     integer and boolean columns can be matched exactly",
                    self.name, self.table
                ));
            }
            if !param.strip_prefix(':').is_some_and(is_valid_name) {
                return Some(format!(
                    "subscription {}: the value of {column} must be a parameter like \
                     \":{column}\", not {param:?}",
                    self.name
                ));
            }
        }
        None
    }
}

/// One column of a resolved filter and the values it may have.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMatch {
    /// The column.
    pub column: String,
    /// Its type (how a value is bound in SQL).
    pub ty: ColumnType,
    /// The accepted values (never empty, never null).
    pub values: Vec<Value>,
}

/// A subscription bound to its values: rows of `table` whose every column has one of
/// its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The declaration's name (also the name of its index).
    pub name: String,
    /// The table.
    pub table: String,
    /// The columns, in the declaration's (index) order.
    pub columns: Vec<ColumnMatch>,
}

impl Filter {
    /// Whether a live row of `table` with `fields` matches.
    pub fn matches(&self, table: &str, fields: &Fields) -> bool {
        table == self.table
            && self.columns.iter().all(|c| {
                let value = fields.get(&c.column).unwrap_or(&Value::Null);
                c.values.iter().any(|v| same_value(v, value))
            })
    }
}

/// Values equal as the stores compare them (numbers by value).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A request's slice: the rows matching at least one filter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slice {
    /// The resolved subscriptions.
    pub filters: Vec<Filter>,
    /// Only fetch live matching rows (a new subscription's first fetch).
    pub backfill: bool,
}

impl Slice {
    /// Whether a live row of `table` with `fields` is in the slice.
    pub fn matches(&self, table: &str, fields: &Fields) -> bool {
        self.filters.iter().any(|f| f.matches(table, fields))
    }
}

/// The config's subscription declarations over the schema.
#[derive(Debug, Clone, Default)]
pub struct Slices {
    defs: Vec<(SubscriptionDef, TableSchema)>,
}

/// Why a device's subscription is refused: 400 `bad_subscription`.
fn refuse(message: String) -> ApiError {
    ApiError::new(ErrorCode::BadSubscription, message)
}

impl Slices {
    /// The declarations of a validated config.
    pub fn new(defs: &[SubscriptionDef], schema: &Schema) -> Self {
        Self {
            defs: defs
                .iter()
                .filter_map(|d| Some((d.clone(), schema.table(&d.table).ok()?.clone())))
                .collect(),
        }
    }

    /// Every declaration (each gets an index on both backends).
    pub fn defs(&self) -> impl Iterator<Item = &SubscriptionDef> {
        self.defs.iter().map(|(d, _)| d)
    }

    /// Checks `subscriptions` and binds their parameters (`:user` to `user`): an unknown
    /// name, a missing or unknown parameter, a parameter named `user`, or a value that
    /// does not fit its column refuses the whole list.
    pub fn resolve(
        &self,
        subscriptions: &[Subscription],
        backfill: bool,
        user: &str,
    ) -> Result<Slice, ApiError> {
        let mut filters = Vec::with_capacity(subscriptions.len());
        for sub in subscriptions {
            let Some((def, table)) = self.defs.iter().find(|(d, _)| d.name == sub.name) else {
                return Err(refuse(format!(
                    "the server declares no subscription named {:?}",
                    sub.name
                )));
            };
            if sub.params.contains_key(USER_PARAM) {
                return Err(refuse(format!(
                    "subscription {}: the parameter {USER_PARAM} is bound by the server to \
                     the signed-in user and cannot be set",
                    sub.name
                )));
            }
            let wanted: HashSet<&str> = def
                .filter
                .values()
                .map(|p| p.trim_start_matches(':'))
                .collect();
            if let Some(unknown) = sub.params.keys().find(|k| !wanted.contains(k.as_str())) {
                return Err(refuse(format!(
                    "subscription {} has no parameter {unknown:?}",
                    sub.name
                )));
            }
            let mut columns = Vec::with_capacity(def.filter.len());
            for (column, param) in &def.filter {
                let param = param.trim_start_matches(':');
                let values = if param == USER_PARAM {
                    vec![Value::String(user.to_owned())]
                } else {
                    let Some(given) = sub.params.get(param) else {
                        return Err(refuse(format!(
                            "subscription {} needs a value for {param}",
                            sub.name
                        )));
                    };
                    check_values(&sub.name, param, table, column, given)?
                };
                let ty = table.column(column).map_or(ColumnType::Text, |c| c.ty);
                columns.push(ColumnMatch {
                    column: column.clone(),
                    ty,
                    values,
                });
            }
            filters.push(Filter {
                name: def.name.clone(),
                table: def.table.clone(),
                columns,
            });
        }
        Ok(Slice { filters, backfill })
    }
}

/// The values of one parameter (one value or a non-empty list), each checked against
/// its column like a row's value (type, length, format).
fn check_values(
    sub: &str,
    param: &str,
    table: &TableSchema,
    column: &str,
    given: &Value,
) -> Result<Vec<Value>, ApiError> {
    let values = match given {
        Value::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    if values.is_empty() || values.len() > MAX_PARAM_VALUES {
        return Err(refuse(format!(
            "subscription {sub}: {param} needs 1 to {MAX_PARAM_VALUES} values, got {}",
            values.len()
        )));
    }
    let Some(def) = table.column(column) else {
        return Err(refuse(format!(
            "subscription {sub}: unknown column {column}"
        )));
    };
    let single = TableSchema {
        name: table.name.clone(),
        columns: vec![roster_protocol::ColumnDef {
            required: true,
            ..def.clone()
        }],
    };
    for value in &values {
        let mut fields = Fields::new();
        fields.insert(column.to_owned(), value.clone());
        single
            .validate_fields(&fields)
            .map_err(|e| refuse(format!("subscription {sub}: {param}: {e}")))?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slices() -> Slices {
        let schema = Schema::default_person();
        let defs = vec![SubscriptionDef {
            name: "by_city".into(),
            table: "person".into(),
            filter: BTreeMap::from([("city".into(), ":city".into())]),
        }];
        Slices::new(&defs, &schema)
    }

    fn sub(name: &str, params: Value) -> Subscription {
        Subscription {
            name: name.into(),
            params: serde_json::from_value(params).unwrap(),
        }
    }

    #[test]
    fn a_subscription_binds_one_value_or_a_list_and_matches_rows_by_them() {
        let slice = slices()
            .resolve(
                &[sub("by_city", json!({"city": ["Paris", "Lyon"]}))],
                false,
                "ann",
            )
            .unwrap();
        let row = |city: &str| -> Fields { serde_json::from_value(json!({"city": city})).unwrap() };
        assert!(slice.matches("person", &row("Lyon")));
        assert!(!slice.matches("person", &row("Nice")));
        assert!(!slice.matches("other", &row("Lyon")));
    }

    #[test]
    fn bad_subscriptions_are_refused_with_their_reason() {
        let slices = slices();
        for (subscription, words) in [
            (sub("nope", json!({})), "no subscription named"),
            (sub("by_city", json!({})), "needs a value for city"),
            (sub("by_city", json!({"town": "x"})), "no parameter"),
            (
                sub("by_city", json!({"city": "x", "user": "bob"})),
                "bound by the server",
            ),
            (sub("by_city", json!({"city": 5})), "expected text"),
            (sub("by_city", json!({"city": []})), "1 to"),
            (
                sub("by_city", json!({"city": "x".repeat(500)})),
                "characters long",
            ),
        ] {
            let error = slices.resolve(&[subscription], false, "ann").unwrap_err();
            assert_eq!(error.error.code, ErrorCode::BadSubscription);
            assert!(
                error.error.message.contains(words),
                "{}",
                error.error.message
            );
        }
    }
}
