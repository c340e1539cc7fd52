//! Checks a decoded [`SyncRequest`] against the schema before anything is stored, so an
//! invalid request is rejected whole and changes nothing.

use std::collections::HashSet;

use roster_protocol::{
    ApiError, ErrorCode, MAX_CHANGES_PER_REQUEST, MAX_PULL_LIMIT, PROTOCOL_VERSION, Schema,
    SchemaError, SyncRequest,
};

/// Validates protocol version, batch size, pull limit, and every change: shape, table,
/// columns, value types, non-nil id, and at most one change per row.
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
    use roster_protocol::{Change, ChangeOp, Fields, RowId};
    use serde_json::json;

    fn request(changes: Vec<Change>) -> SyncRequest {
        SyncRequest {
            protocol: PROTOCOL_VERSION,
            client_id: uuid::Uuid::now_v7(),
            since: 0,
            changes,
            pull_limit: 10,
            round: None,
            batch_id: None,
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
}
