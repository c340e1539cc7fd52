//! Checks a decoded [`SyncRequest`] against the schema before anything is stored, so an
//! invalid request is rejected whole and changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::evolve::RenamedColumns;
use crate::{
    ApiError, Change, ErrorCode, MAX_CHANGES_PER_REQUEST, MAX_PULL_LIMIT, PROTOCOL_VERSION, RowId,
    Schema, SchemaError, SyncRequest,
};

/// Decodes a sync request body and validates it against `schema`: the one gate every
/// request passes before the store sees it. Any byte string gives either a valid request
/// or an [`ApiError`] (`malformed_request` for bytes that are not a sync request, the
/// validation codes otherwise); it never panics (fuzzed by `fuzz/` and a property test).
pub fn decode_request(body: &[u8], schema: &Schema) -> Result<SyncRequest, ApiError> {
    decode_request_retiring(body, schema, &RetiredColumns::default()).map(|(request, _)| request)
}

/// Column names an older version of a server's schema declared and the current one does
/// not: dropped columns, and renamed ones with their current names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetiredColumns {
    /// Per table, the dropped columns: their values are removed from requests.
    pub dropped: BTreeMap<String, BTreeSet<String>>,
    /// Per table, renamed columns (old name to current name): their values are moved to
    /// the current name (see [`crate::evolve::renamed_after`]).
    pub renamed: RenamedColumns,
}

impl RetiredColumns {
    /// Whether no column was ever dropped or renamed.
    pub fn is_empty(&self) -> bool {
        self.dropped.is_empty() && self.renamed.is_empty()
    }

    /// Moves the values of renamed columns in `change` (values and base values) to
    /// their current names (a value already sent under the current name wins) and
    /// removes those of dropped columns; returns the columns whose values were removed.
    pub fn retire(&self, change: &mut Change) -> Vec<String> {
        let mut discarded = Vec::new();
        let renamed = self.renamed.get(&change.table);
        let dropped = self.dropped.get(&change.table);
        for (n, fields) in [&mut change.fields, &mut change.base_fields]
            .into_iter()
            .enumerate()
        {
            let Some(fields) = fields else { continue };
            for (from, to) in renamed.into_iter().flatten() {
                if let Some(value) = fields.remove(from) {
                    fields.entry(to.clone()).or_insert(value);
                }
            }
            for column in dropped.into_iter().flatten() {
                if fields.remove(column).is_some() && n == 0 {
                    discarded.push(column.clone());
                }
            }
        }
        discarded
    }
}

/// A change's values of a column the server's schema dropped, removed by
/// [`decode_request_retiring`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// The table.
    pub table: String,
    /// The row.
    pub id: RowId,
    /// The dropped column.
    pub column: String,
}

/// [`decode_request`] for a schema that dropped or renamed columns: the values of
/// `retired` columns are moved to their current names (renamed) or removed (dropped, and
/// listed in the result, for the log) in every change before it is validated, so a
/// device that has not followed the change yet is neither refused nor loses an edit of
/// a renamed column; any other unknown column is still refused.
pub fn decode_request_retiring(
    body: &[u8],
    schema: &Schema,
    retired: &RetiredColumns,
) -> Result<(SyncRequest, Vec<Discarded>), ApiError> {
    let mut request: SyncRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            format!("invalid sync request: {e}"),
        )
    })?;
    let mut discarded = Vec::new();
    if !retired.is_empty() {
        for change in &mut request.changes {
            for column in retired.retire(change) {
                discarded.push(Discarded {
                    table: change.table.clone(),
                    id: change.id,
                    column,
                });
            }
        }
    }
    validate_request(&request, schema)?;
    Ok((request, discarded))
}

/// Validates protocol version, batch size, pull limit, and every change: shape, table,
/// columns, value types and lengths (of `fields` and `base_fields` alike), non-nil id,
/// and at most one change per row.
pub fn validate_request(request: &SyncRequest, schema: &Schema) -> Result<(), ApiError> {
    if request.protocol != PROTOCOL_VERSION {
        return Err(ApiError::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                request.protocol
            ),
        ));
    }
    if request.changes.len() > MAX_CHANGES_PER_REQUEST {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "{} changes in one request; at most {MAX_CHANGES_PER_REQUEST} are accepted",
                request.changes.len()
            ),
        ));
    }
    if request.pull_limit > MAX_PULL_LIMIT {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "pull_limit {} is above the maximum of {MAX_PULL_LIMIT}",
                request.pull_limit
            ),
        ));
    }
    if let Some(slice) = &request.slice {
        if slice.subscriptions.len() > crate::slice::MAX_SUBSCRIPTIONS {
            return Err(ApiError::new(
                ErrorCode::BadSubscription,
                format!(
                    "{} subscriptions in one request; at most {} are accepted",
                    slice.subscriptions.len(),
                    crate::slice::MAX_SUBSCRIPTIONS
                ),
            ));
        }
        if slice.backfill && (!request.changes.is_empty() || request.round.is_some()) {
            return Err(ApiError::new(
                ErrorCode::InvalidChange,
                "a backfill request carries no changes and belongs to no round",
            ));
        }
    }
    let mut seen = HashSet::with_capacity(request.changes.len());
    for (index, change) in request.changes.iter().enumerate() {
        let at = |message: String| format!("change #{index} ({}): {message}", change.id);
        if change.id.is_nil() {
            return Err(ApiError::new(
                ErrorCode::InvalidChange,
                at("the nil UUID is not a valid row id".into()),
            ));
        }
        change
            .check_shape()
            .map_err(|e| ApiError::new(ErrorCode::InvalidChange, at(e.to_string())))?;
        let table = schema
            .table(&change.table)
            .map_err(|e| schema_error(e, &at))?;
        if let Some(fields) = &change.fields {
            table
                .validate_fields(fields)
                .map_err(|e| schema_error(e, &at))?;
        }
        // The base values are stored in the conflict log and served back by
        // `/v1/conflicts`: they meet the same rules (columns, types, lengths) as the row.
        if let Some(base) = &change.base_fields {
            table
                .validate_fields(base)
                .map_err(|e| schema_error(e, &|m: String| at(format!("base_fields: {m}"))))?;
        }
        if !seen.insert((change.table.as_str(), change.id)) {
            return Err(ApiError::new(
                ErrorCode::InvalidChange,
                at("the row appears more than once in this request".into()),
            ));
        }
    }
    Ok(())
}

fn schema_error(error: SchemaError, at: &dyn Fn(String) -> String) -> ApiError {
    let code = match error {
        SchemaError::UnknownTable(_) => ErrorCode::UnknownTable,
        SchemaError::UnknownColumn { .. } => ErrorCode::UnknownColumn,
        _ => ErrorCode::InvalidValue,
    };
    ApiError::new(code, at(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Change, ChangeOp, Fields, RowId};
    use serde_json::json;

    fn request(changes: Vec<Change>) -> SyncRequest {
        SyncRequest {
            slice: None,
            protocol: PROTOCOL_VERSION,
            client_id: uuid::Uuid::now_v7(),
            since: 0,
            changes,
            pull_limit: 10,
            round: None,
            batch_id: None,
            epoch: None,
        }
    }

    fn insert(table: &str, fields: serde_json::Value) -> Change {
        Change {
            table: table.into(),
            id: RowId::now_v7(),
            op: ChangeOp::Insert,
            base_version: None,
            fields: fields.as_object().cloned().or(Some(Fields::new())),
            base_fields: None,
            edited_at_ms: None,
        }
    }

    fn code(result: Result<(), ApiError>) -> Option<ErrorCode> {
        result.err().map(|e| e.error.code)
    }

    #[test]
    fn valid_request_passes() {
        let schema = Schema::default_person();
        let req = request(vec![insert("person", json!({"name": "Jane", "age": 25}))]);
        assert_eq!(validate_request(&req, &schema), Ok(()));
    }

    #[test]
    fn each_defect_has_its_code() {
        let schema = Schema::default_person();
        let check = |req: SyncRequest| code(validate_request(&req, &schema));
        assert_eq!(
            check(request(vec![insert("pets", json!({"name": "Rex"}))])),
            Some(ErrorCode::UnknownTable)
        );
        assert_eq!(
            check(request(vec![insert(
                "person",
                json!({"name": "J", "x": 1})
            )])),
            Some(ErrorCode::UnknownColumn)
        );
        assert_eq!(
            check(request(vec![insert("person", json!({"name": 5}))])),
            Some(ErrorCode::InvalidValue)
        );
        let mut nil = insert("person", json!({"name": "J"}));
        nil.id = RowId::nil();
        assert_eq!(check(request(vec![nil])), Some(ErrorCode::InvalidChange));
        let twice = insert("person", json!({"name": "J"}));
        assert_eq!(
            check(request(vec![twice.clone(), twice])),
            Some(ErrorCode::InvalidChange)
        );
        let mut old = request(vec![]);
        old.protocol = 99;
        assert_eq!(check(old), Some(ErrorCode::UnsupportedProtocol));
        let mut greedy = request(vec![]);
        greedy.pull_limit = MAX_PULL_LIMIT + 1;
        assert_eq!(check(greedy), Some(ErrorCode::BatchTooLarge));
    }

    #[test]
    fn base_fields_meet_the_rules_of_fields() {
        let schema = Schema::default_person();
        let with_base = |base: serde_json::Value| {
            let mut change = insert("person", json!({"name": "Jane"}));
            change.op = ChangeOp::Update;
            change.base_version = Some(1);
            change.base_fields = base.as_object().cloned();
            code(validate_request(&request(vec![change]), &schema))
        };
        assert_eq!(with_base(json!({"name": "Jo", "age": 3})), None);
        assert_eq!(
            with_base(json!({"name": "Jo", "shoe": 44})),
            Some(ErrorCode::UnknownColumn)
        );
        assert_eq!(
            with_base(json!({"name": "Jo", "age": "old"})),
            Some(ErrorCode::InvalidValue)
        );
        assert_eq!(
            with_base(json!({"name": "x".repeat(2_000_000)})),
            Some(ErrorCode::InvalidValue)
        );
    }
}

/// Decoding arbitrary and mangled bodies: the stable-toolchain counterpart of the
/// `fuzz/` target, run on every test run.
#[cfg(test)]
mod decode_properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Any JSON value, nested a few levels, with strings that look like SQL, ids and
    /// numbers at the edges of their types.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,40}".prop_map(Value::String),
            Just(json!("'; DROP TABLE rows; --")),
            Just(json!("00000000-0000-0000-0000-000000000000")),
            Just(json!("x".repeat(5000))),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid value or, one time in three, junk in its place.
    fn or_junk(valid: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
        prop_oneof![2 => valid, 1 => any_json()].boxed()
    }

    /// A change shaped like a real one, any part of which may be junk.
    fn change() -> impl Strategy<Value = Value> {
        let id = or_junk(Just(()).prop_map(|_| json!(uuid::Uuid::now_v7())));
        let table = or_junk(prop_oneof![Just(json!("person")), Just(json!("nobody"))]);
        let op = or_junk(prop_oneof![
            Just(json!("insert")),
            Just(json!("update")),
            Just(json!("delete"))
        ]);
        let fields = or_junk(
            (
                ".{0,20}",
                any::<i64>(),
                prop_oneof![Just("name"), Just("age"), Just("shoe")],
            )
                .prop_map(|(text, number, column)| json!({"name": text, column: number})),
        );
        let base_version = or_junk(any::<u32>().prop_map(Value::from));
        (id, table, op, fields, base_version).prop_map(|(id, table, op, fields, base)| {
            json!({"table": table, "id": id, "op": op, "fields": fields, "base_version": base})
        })
    }

    /// A request body: valid JSON of a request with junk parts, possibly cut short.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let request = (
            or_junk(Just(json!(PROTOCOL_VERSION))),
            or_junk(Just(()).prop_map(|_| json!(uuid::Uuid::now_v7()))),
            or_junk(any::<u32>().prop_map(Value::from)),
            prop::collection::vec(change(), 0..6),
            or_junk((1u32..5000).prop_map(Value::from)),
        )
            .prop_map(|(protocol, client, since, changes, limit)| {
                json!({"protocol": protocol, "client_id": client, "since": since,
                       "changes": changes, "pull_limit": limit})
            });
        (request, any::<bool>(), any::<prop::sample::Index>()).prop_map(|(request, cut, at)| {
            let mut bytes = serde_json::to_vec(&request).unwrap_or_default();
            if cut && !bytes.is_empty() {
                bytes.truncate(at.index(bytes.len()));
            }
            bytes
        })
    }

    /// What a decoded request must satisfy whatever the input was.
    fn check(body: &[u8], schema: &Schema) -> Result<(), TestCaseError> {
        match decode_request(body, schema) {
            Ok(request) => {
                prop_assert_eq!(request.protocol, PROTOCOL_VERSION);
                for change in &request.changes {
                    let table = schema.table(&change.table);
                    prop_assert!(table.is_ok(), "unknown table {} passed", change.table);
                    let table = table.expect("checked above");
                    for column in change.fields.iter().flat_map(|f| f.keys()) {
                        prop_assert!(
                            table.columns.iter().any(|c| &c.name == column),
                            "unknown column {} passed",
                            column
                        );
                    }
                }
            }
            Err(error) => {
                prop_assert!(!error.error.message.is_empty());
                prop_assert_ne!(error.error.code, ErrorCode::Internal);
            }
        }
        Ok(())
    }

    /// The fuzzer's seeds are valid requests (so it starts from the accepted shapes).
    #[test]
    fn fuzz_seeds_are_valid_requests() {
        let schema = Schema::default_person();
        for (name, seed) in [
            (
                "insert",
                include_str!("../../../fuzz/seeds/sync_request/insert.json"),
            ),
            (
                "update_round",
                include_str!("../../../fuzz/seeds/sync_request/update_round.json"),
            ),
            (
                "empty",
                include_str!("../../../fuzz/seeds/sync_request/empty.json"),
            ),
        ] {
            if let Err(error) = decode_request(seed.as_bytes(), &schema) {
                panic!("seed {name} is rejected: {error:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn mangled_requests_decode_or_fail_cleanly(body in body()) {
            check(&body, &Schema::default_person())?;
        }

        #[test]
        fn random_bytes_fail_cleanly(body in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&body, &Schema::default_person())?;
        }
    }
}
