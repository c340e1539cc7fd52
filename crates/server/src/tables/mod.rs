//! The Azure Mobile Apps table protocol (`ZUMO-API-VERSION: 2.0.0`), served next to
//! `/v1/*` so that apps built with the AMA offline SDKs can sync with Roster.
//!
//! * `GET /tables/{table}`: the list query ([`odata`]); `POST /tables/{table}`: insert.
//! * `GET /tables/{table}/{id}`, `PATCH` (update), `DELETE` (soft delete), and
//!   `POST /tables/{table}/{id}` (undelete).
//!
//! Items are the rows `/v1/sync` serves (same data sets, same bearer tokens, sent as
//! `Authorization: Bearer` or `X-ZUMO-AUTH`), shown with the system columns `id`,
//! `version` (the row's version as text, also its ETag), `createdAt`, `updatedAt` and
//! `deleted`. Every write is turned into one [`Change`] and applied by the store's one
//! request flow ([`SyncStore::sync_answer`]), so it meets the same validation, conflict
//! classification, resolution (policies, field rules, the owner's handler) and conflict
//! log as a device's change. The answer is then said the way AMA clients expect: a
//! write that stands is 200 (201 for an insert) with the item and its `ETag`; one the
//! server refused (`server_wins`, `deferred`, a rollback) is 412 for an update, delete or
//! undelete with a stale `If-Match`, and 409 for an insert of an existing id, each with
//! the server's current item as the body and its `ETag`.
//!
//! `updatedAt` is the row's write time, which the store never lets go backwards in
//! commit order (see `store::round::write_time`), so an incremental pull by
//! `updatedAt ge T` misses nothing.

pub mod odata;

pub use roster_protocol::timestamp::format_ms;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use roster_protocol::validate::validate_request;
use roster_protocol::{
    ApiError, Change, ChangeOp, ErrorCode, Fields, PROTOCOL_VERSION, Resolution, RowId,
    SyncRequest, TableSchema,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use self::odata::{Projection, SystemColumn};
use crate::http::{HttpError, Scope, ServerState};
use crate::store::{Answer, ItemRow, StoreError};

/// The header (or query parameter) naming the protocol version an AMA client speaks.
pub const API_VERSION_HEADER: &str = "zumo-api-version";

/// The header an AMA client may send its token in instead of `Authorization: Bearer`.
pub const ZUMO_AUTH_HEADER: &str = "x-zumo-auth";

/// The header naming an AMA client's installation (a UUID): recorded as the client of
/// its writes and conflicts.
pub const INSTALLATION_HEADER: &str = "x-zumo-installation-id";

/// The routes of the table protocol; the caller puts the authorisation and body
/// layers of `/v1/*` around them.
pub(crate) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/tables/{table}", get(list).post(insert))
        .route(
            "/tables/{table}/{id}",
            get(read).patch(update).delete(delete).post(undelete),
        )
        .route_layer(middleware::from_fn(require_api_version))
}

fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::MalformedRequest, message)
}

/// Refuses a request that does not say it speaks version 2 of the protocol (in the
/// `ZUMO-API-VERSION` header or query parameter), as AMA's own servers do.
async fn require_api_version(request: Request, next: Next) -> Result<Response, HttpError> {
    let from_header = request
        .headers()
        .get(API_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            name.eq_ignore_ascii_case(API_VERSION_HEADER)
                .then(|| value.to_owned())
        })
    });
    match from_header.or(from_query) {
        Some(version) if version.trim().starts_with("2.") => Ok(next.run(request).await),
        Some(version) => Err(bad_request(format!(
            "ZUMO-API-VERSION {version} is not supported; this server speaks 2.0.0"
        ))),
        None => Err(bad_request(
            "the ZUMO-API-VERSION header is missing; this server speaks 2.0.0",
        )),
    }
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(HttpError::from)
}

fn table_of(state: &ServerState, name: &str) -> Result<TableSchema, HttpError> {
    state.schema().table(name).cloned().map_err(|_| {
        HttpError::new(
            ErrorCode::NotFound,
            format!("no table {name:?} on this server"),
        )
    })
}

fn not_found(table: &str, id: &str) -> HttpError {
    HttpError::new(
        ErrorCode::NotFound,
        format!("no item {id:?} in table {table:?}"),
    )
}

/// A row id from a URL path: Roster's ids are UUIDs, so anything else names no item.
fn path_id(table: &str, id: &str) -> Result<RowId, HttpError> {
    RowId::parse_str(id).map_err(|_| not_found(table, id))
}

/// A version as the protocol's opaque `version` text (and ETag).
fn version_text(version: u64) -> String {
    version.to_string()
}

/// The item a row is, showing the columns `projection` names (`id` always). A live row
/// shows every declared column, `null` where it has no value; a deleted row has no
/// values left (Roster's tombstones keep none).
fn item_json(
    row: &ItemRow,
    table: &TableSchema,
    projection: &Projection,
) -> Result<Map<String, Value>, StoreError> {
    let mut item = Map::new();
    item.insert("id".into(), Value::String(row.id.clone()));
    if let Some(data) = &row.data {
        let mut fields: Fields =
            serde_json::from_str(data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for column in &table.columns {
            let shown = projection
                .fields
                .as_ref()
                .is_none_or(|names| names.contains(&column.name));
            if shown {
                let value = fields.remove(&column.name).unwrap_or(Value::Null);
                item.insert(column.name.clone(), value);
            }
        }
    }
    for system in &projection.system {
        let value = match system {
            SystemColumn::Version => Value::String(version_text(row.version)),
            SystemColumn::CreatedAt => Value::String(format_ms(row.created_at_ms)),
            SystemColumn::UpdatedAt => Value::String(format_ms(row.updated_at_ms)),
            SystemColumn::Deleted => Value::Bool(row.deleted),
        };
        item.insert(system.name().into(), value);
    }
    Ok(item)
}

/// A list's items as one JSON array, each item written as text: a row's stored values
/// are spliced in as stored (each shown column's raw JSON, `null` where the row has
/// none), never decoded into values and encoded again, as `/v1/sync` passes pulled rows
/// through (`store::answer`). The same items as [`item_json`] gives; a row whose stored
/// text cannot be read that way (a column name written with escapes) goes through it.
fn items_json(
    rows: &[ItemRow],
    table: &TableSchema,
    projection: &Projection,
) -> Result<String, StoreError> {
    let encode =
        |text: &str| serde_json::to_string(text).map_err(|e| StoreError::Corrupt(e.to_string()));
    // Each shown column with its key as written (`"name":`), once per list.
    let mut columns = Vec::new();
    for column in &table.columns {
        if projection
            .fields
            .as_ref()
            .is_none_or(|names| names.contains(&column.name))
        {
            columns.push((column.name.as_str(), format!("{}:", encode(&column.name)?)));
        }
    }
    let mut out = String::with_capacity(rows.len() * 256 + 2);
    let mut times = ItemTimes::default();
    out.push('[');
    for (index, row) in rows.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let values = match row
            .data
            .as_deref()
            .map(serde_json::from_str::<StoredValues<'_>>)
        {
            None => None,
            Some(Ok(values)) => Some(values),
            Some(Err(_)) => {
                let item = Value::Object(item_json(row, table, projection)?);
                out.push_str(&item.to_string());
                continue;
            }
        };
        write_item(
            &mut out,
            row,
            values,
            &columns,
            projection,
            &encode(&row.id)?,
            &mut times,
        );
    }
    out.push(']');
    Ok(out)
}

/// A stored row's values as its JSON text holds them, each borrowed from it: a list of
/// a handful of pairs, where a map per row cost an allocation of its nodes and a search
/// per insert.
struct StoredValues<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> StoredValues<'a> {
    /// The value stored for `name`.
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find_map(|(key, value)| (*key == name).then_some(*value))
    }
}

impl<'de> serde::Deserialize<'de> for StoredValues<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = StoredValues<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of a row's values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(pair) = map.next_entry::<&'de str, &'de RawValue>()? {
                    pairs.push(pair);
                }
                Ok(StoredValues(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// The times of a list's items as text, each remembered while the next rows share it:
/// the rows of one pushed batch share their millisecond, and formatting a time was
/// a tenth of a list page's server CPU.
#[derive(Default)]
struct ItemTimes {
    created: LastTime,
    updated: LastTime,
}

/// The last time written, in milliseconds and as text.
#[derive(Default)]
struct LastTime(Option<(i64, String)>);

impl LastTime {
    /// `ms` as [`format_ms`] writes it, formatted only when it differs from the last.
    fn text(&mut self, ms: i64) -> &str {
        if self.0.as_ref().is_none_or(|(at, _)| *at != ms) {
            self.0 = Some((ms, format_ms(ms)));
        }
        self.0.as_ref().map_or("", |(_, text)| text.as_str())
    }
}

/// Writes one item: `id` (as JSON text in `id_json`), the `columns` (name, key as
/// written) from the row's stored `values` (`None` for a tombstone), then the system
/// columns of `projection`.
fn write_item(
    out: &mut String,
    row: &ItemRow,
    values: Option<StoredValues<'_>>,
    columns: &[(&str, String)],
    projection: &Projection,
    id_json: &str,
    times: &mut ItemTimes,
) {
    out.push_str("{\"id\":");
    out.push_str(id_json);
    if let Some(values) = values {
        for (name, key) in columns {
            out.push(',');
            out.push_str(key);
            out.push_str(values.get(name).map_or("null", RawValue::get));
        }
    }
    for system in &projection.system {
        out.push_str(",\"");
        out.push_str(system.name());
        out.push_str("\":");
        // Versions and times are digits, `-`, `:`, `.`, `T` and `Z`: nothing to escape.
        let version;
        let text = match system {
            SystemColumn::Version => {
                version = version_text(row.version);
                version.as_str()
            }
            SystemColumn::CreatedAt => times.created.text(row.created_at_ms),
            SystemColumn::UpdatedAt => times.updated.text(row.updated_at_ms),
            SystemColumn::Deleted => {
                out.push_str(if row.deleted { "true" } else { "false" });
                continue;
            }
        };
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
    out.push('}');
}

/// One item with its `ETag`, under `status`.
fn item_response(
    status: StatusCode,
    row: &ItemRow,
    table: &TableSchema,
) -> Result<Response, HttpError> {
    let item = item_json(row, table, &Projection::all())?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", version_text(row.version)))
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((status, [(header::ETAG, etag)], Json(Value::Object(item))).into_response())
}

async fn list(
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    Path(table): Path<String>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let schema = table_of(&state, &table)?;
    let list = odata::list_query(&params, &schema).map_err(|e| bad_request(e.0))?;
    let store = state.store();
    // Read and written on the blocking thread, as `/v1/sync` answers are.
    let body = blocking(move || {
        let rows = store.items(&scope.dataset, &list.query)?;
        items_json(&rows, &schema, &list.projection)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn read(
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    Path((table, id_text)): Path<(String, String)>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let schema = table_of(&state, &table)?;
    let id = path_id(&table, &id_text)?;
    let include_deleted = params
        .iter()
        .any(|(name, value)| name == "__includeDeleted" && value.eq_ignore_ascii_case("true"));
    let row = current(&state, &scope, &table, id).await?;
    match row {
        Some(row) if include_deleted || !row.deleted => {
            item_response(StatusCode::OK, &row, &schema)
        }
        _ => Err(not_found(&table, &id_text)),
    }
}

/// The stored row (a tombstone too).
async fn current(
    state: &ServerState,
    scope: &Scope,
    table: &str,
    id: RowId,
) -> Result<Option<ItemRow>, HttpError> {
    let store = state.store();
    let (dataset, table) = (scope.dataset.clone(), table.to_owned());
    blocking(move || store.item(&dataset, &table, id)).await
}

/// The JSON object of a request body.
fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, HttpError> {
    let body = body.map_err(|rejection| bad_request(rejection.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(bad_request("the body must be a JSON object (an item)")),
        Err(e) => Err(bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// An item's declared columns (everything but `id` and the system columns, which the
/// server sets) and its `id`, if it has one.
fn split_item(mut object: Map<String, Value>) -> (Option<Value>, Fields) {
    let id = object.remove("id");
    object.retain(|name, _| SystemColumn::named(name).is_none());
    (id, object)
}

/// The version an `If-Match` header asks for: `None` without one (or `*`); a value that
/// is no version of this server matches nothing.
fn if_match(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::IF_MATCH)?.to_str().ok()?.trim();
    if value == "*" {
        return None;
    }
    let value = value.strip_prefix("W/").unwrap_or(value).trim_matches('"');
    Some(value.parse::<u64>().unwrap_or(0))
}

/// The installation an AMA client names, recorded as the client of its writes.
fn installation(headers: &HeaderMap) -> uuid::Uuid {
    headers
        .get(INSTALLATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v.trim()).ok())
        .unwrap_or_default()
}

/// Whether a write stood: applied as sent or by a resolution that wrote; `false` when
/// the server's row stayed (server wins, deferred, rolled back).
fn stood(answer: &Answer) -> bool {
    if answer.rollback.is_some() {
        return false;
    }
    match answer.conflicts.first() {
        Some(conflict) => !matches!(
            conflict.resolution,
            Resolution::ServerWins | Resolution::Deferred | Resolution::Rollback
        ),
        None => !answer.acks.is_empty(),
    }
}

/// How a write is answered.
struct Answering {
    /// The status when the write stood.
    written: StatusCode,
    /// The status when the server's row stayed.
    refused: StatusCode,
    /// An insert of an id that was taken before: refused even when it "stood" because
    /// the server already held the same values.
    existed: bool,
}

/// An update, delete or undelete: 200, or 412 when the server's row stayed.
const CONDITIONAL: Answering = Answering {
    written: StatusCode::OK,
    refused: StatusCode::PRECONDITION_FAILED,
    existed: false,
};

/// Applies one change through the store's request flow and answers as AMA clients
/// expect (see [`Answering`]), with the row as it then stands on the server.
async fn apply(
    state: &ServerState,
    scope: &Scope,
    headers: &HeaderMap,
    schema: &TableSchema,
    change: Change,
    answering: Answering,
) -> Result<Response, HttpError> {
    let id = change.id;
    let request = SyncRequest {
        protocol: PROTOCOL_VERSION,
        client_id: installation(headers),
        since: 0,
        changes: vec![change],
        pull_limit: 0,
        round: None,
        batch_id: None,
        // The table protocol carries no epoch: its `If-Match` versions are checked
        // against the rows as they are, restored or not.
        epoch: None,
        // The table protocol's clients hold what they pull: no slice.
        slice: None,
    };
    // The rules first: a schema swapped in between makes the store refuse the request
    // (its rules' version is older than the stored one), never a mismatched write.
    let resolver = state.resolver();
    validate_request(&request, &state.schema())?;
    let (store, dataset, reloading) = (state.store(), scope.dataset.clone(), state.clone());
    let answer = blocking(move || {
        let answer = store.sync_answer(&dataset, &request, &resolver);
        if let Err(StoreError::SchemaChanged { .. }) = &answer {
            // Served from the next request on; this one is refused (503, retryable).
            reloading.reload_schema()?;
        }
        answer
    })
    .await?;
    let status = if stood(&answer) && !answering.existed {
        answering.written
    } else {
        answering.refused
    };
    match current(state, scope, &schema.name, id).await? {
        Some(row) => item_response(status, &row, schema),
        None => Err(not_found(&schema.name, &id.to_string())),
    }
}

async fn insert(
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let schema = table_of(&state, &table)?;
    let (id, fields) = split_item(body_object(body)?);
    let id = match id {
        None | Some(Value::Null) => RowId::now_v7(),
        Some(Value::String(text)) => RowId::parse_str(&text).map_err(|_| {
            bad_request(format!(
                "id {text:?} is not a UUID; Roster's ids are UUIDs (leave id out and the \
                 server makes one)"
            ))
        })?,
        Some(other) => return Err(bad_request(format!("id must be text, not {other}"))),
    };
    let existed = current(&state, &scope, &table, id).await?.is_some();
    let change = Change {
        table: table.clone(),
        id,
        op: ChangeOp::Insert,
        base_version: None,
        fields: Some(fields),
        base_fields: None,
        edited_at_ms: None,
    };
    apply(
        &state,
        &scope,
        &headers,
        &schema,
        change,
        Answering {
            written: StatusCode::CREATED,
            refused: StatusCode::CONFLICT,
            existed,
        },
    )
    .await
}

/// The values of a live stored row.
fn stored_fields(row: &ItemRow) -> Result<Fields, HttpError> {
    match &row.data {
        Some(data) => serde_json::from_str(data)
            .map_err(|e| HttpError::from(StoreError::Corrupt(e.to_string()))),
        None => Ok(Fields::new()),
    }
}

async fn update(
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    Path((table, id_text)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let schema = table_of(&state, &table)?;
    let id = path_id(&table, &id_text)?;
    let (body_id, patch) = split_item(body_object(body)?);
    if let Some(Value::String(other)) = &body_id
        && RowId::parse_str(other).ok() != Some(id)
    {
        return Err(bad_request(format!(
            "the body's id {other:?} is not the id in the URL"
        )));
    }
    if patch.is_empty() {
        return Err(bad_request(
            "the PATCH changes no column: send the columns to change",
        ));
    }
    let row = live_item(&state, &scope, &table, id, &id_text).await?;
    let base = stored_fields(&row)?;
    let mut fields = base.clone();
    fields.extend(patch);
    let change = conditional_change(
        &row,
        &table,
        id,
        ChangeOp::Update,
        &headers,
        Some(fields),
        Some(base),
    );
    apply(&state, &scope, &headers, &schema, change, CONDITIONAL).await
}

/// The stored item `id` of `table`, or 404 when it is missing or deleted.
async fn live_item(
    state: &ServerState,
    scope: &Scope,
    table: &str,
    id: RowId,
    id_text: &str,
) -> Result<ItemRow, HttpError> {
    match current(state, scope, table, id).await? {
        Some(row) if !row.deleted => Ok(row),
        _ => Err(not_found(table, id_text)),
    }
}

/// The change a conditional write makes to the stored `row`: based on the `If-Match`
/// version, or on the stored one when the request has none. `base` (the stored values)
/// becomes the change's base values only when that base is the stored version.
fn conditional_change(
    row: &ItemRow,
    table: &str,
    id: RowId,
    op: ChangeOp,
    headers: &HeaderMap,
    fields: Option<Fields>,
    base: Option<Fields>,
) -> Change {
    let base_version = if_match(headers).unwrap_or(row.version);
    Change {
        table: table.to_owned(),
        id,
        op,
        base_version: Some(base_version),
        fields,
        base_fields: base.filter(|_| base_version == row.version),
        edited_at_ms: None,
    }
}

async fn delete(
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    Path((table, id_text)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let schema = table_of(&state, &table)?;
    let id = path_id(&table, &id_text)?;
    let row = live_item(&state, &scope, &table, id, &id_text).await?;
    let change = conditional_change(&row, &table, id, ChangeOp::Delete, &headers, None, None);
    apply(&state, &scope, &headers, &schema, change, CONDITIONAL).await
}

/// `POST /tables/{table}/{id}`: brings a deleted item back. Roster's tombstones keep no
/// values, so the body carries the item's columns (AMA clients send the item).
async fn undelete(
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    Path((table, id_text)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let schema = table_of(&state, &table)?;
    let id = path_id(&table, &id_text)?;
    let row = match current(&state, &scope, &table, id).await? {
        Some(row) => row,
        None => return Err(not_found(&table, &id_text)),
    };
    if !row.deleted {
        return item_response(StatusCode::OK, &row, &schema);
    }
    let (_, fields) = split_item(body_object(body)?);
    if fields.is_empty() {
        return Err(HttpError::from(ApiError::new(
            ErrorCode::InvalidChange,
            "Roster keeps no values of a deleted item: send the item's columns in the body \
             to bring it back",
        )));
    }
    let change = conditional_change(
        &row,
        &table,
        id,
        ChangeOp::Update,
        &headers,
        Some(fields),
        None,
    );
    apply(&state, &scope, &headers, &schema, change, CONDITIONAL).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_with_milliseconds_in_utc() {
        assert_eq!(format_ms(1_769_860_800_123), "2026-01-31T12:00:00.123Z");
        assert_eq!(
            odata::parse_date_ms(&format_ms(1_769_860_800_123)),
            Some(1_769_860_800_123)
        );
    }

    /// The spliced list says what decoding each row gives, with and without `$select`:
    /// every declared column (`null` where the row has none), never a stored key the
    /// schema does not declare, tombstones without values, and a stored text it cannot
    /// splice (an escaped key) through the decoding path.
    #[test]
    fn a_list_spliced_from_stored_text_equals_the_decoded_items() {
        let schema = roster_protocol::Schema::default_person();
        let table = &schema.tables[0];
        // Rows 1 and 3 share their times, row 2 between them has others: each item
        // shows its own row's times, however the list remembers the last ones.
        let row = |id: u128, deleted: bool, data: Option<&str>, later_ms: i64| ItemRow {
            id: RowId::from_u128(id).to_string(),
            version: 7,
            deleted,
            data: data.map(str::to_owned),
            created_at_ms: 1_769_860_800_123 + later_ms,
            updated_at_ms: 1_769_860_800_456 + later_ms,
        };
        let rows = [
            row(
                1,
                false,
                Some(r#"{"name": "Jane \"J\"", "age": 25.5, "dropped": 1}"#),
                0,
            ),
            row(2, true, None, 1),
            row(
                3,
                false,
                Some(r#"{"n\u0061me": "Escaped", "city": "Oslo"}"#),
                0,
            ),
        ];
        let selected = Projection {
            fields: Some(vec!["name".into()]),
            system: vec![SystemColumn::UpdatedAt, SystemColumn::Deleted],
        };
        for projection in [Projection::all(), selected] {
            let spliced: Value =
                serde_json::from_str(&items_json(&rows, table, &projection).unwrap()).unwrap();
            let decoded: Vec<Value> = rows
                .iter()
                .map(|row| Value::Object(item_json(row, table, &projection).unwrap()))
                .collect();
            assert_eq!(spliced, Value::Array(decoded), "{projection:?}");
        }
        let all: Value =
            serde_json::from_str(&items_json(&rows, table, &Projection::all()).unwrap()).unwrap();
        assert_eq!(all[0]["name"], "Jane \"J\"");
        assert_eq!(all[0]["email"], Value::Null);
        assert!(all[0].get("dropped").is_none());
        assert_eq!(all[1]["deleted"], true);
        assert!(all[1].get("name").is_none());
        assert_eq!(all[2]["name"], "Escaped");
        assert_eq!(items_json(&[], table, &Projection::all()).unwrap(), "[]");
    }

    #[test]
    fn if_match_takes_quoted_weak_or_bare_versions_and_star() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
            if_match(&headers)
        };
        assert_eq!(with("\"42\""), Some(42));
        assert_eq!(with("W/\"42\""), Some(42));
        assert_eq!(with("42"), Some(42));
        assert_eq!(with("*"), None);
        assert_eq!(
            with("\"AAAAAAAAB9E=\""),
            Some(0),
            "not ours: matches nothing"
        );
        assert_eq!(if_match(&HeaderMap::new()), None);
    }
}
