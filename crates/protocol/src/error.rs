//! The error body of every non-2xx response from the sync service.

use serde::{Deserialize, Serialize};

/// Machine-readable class of an API error. The HTTP status carries the same information
/// coarsely; this says exactly what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON or does not have the expected shape.
    MalformedRequest,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// The request names a table the schema does not declare.
    UnknownTable,
    /// A row names a column the table does not declare.
    UnknownColumn,
    /// A value has the wrong type, is missing while required, or is too long.
    InvalidValue,
    /// A change is inconsistent in itself (for example a delete without a base version).
    InvalidChange,
    /// Too many changes in one request, or a limit out of range.
    BatchTooLarge,
    /// The client speaks a protocol version this server does not.
    UnsupportedProtocol,
    /// A subscription names no filter the server declares, sets a parameter it does not
    /// have (or `user`, which the server binds), misses one, or gives a value that does
    /// not fit its column (HTTP 400). Nothing was read or changed.
    BadSubscription,
    /// The client's watermark is older than the oldest retained tombstone: it must
    /// re-initialise (pull everything again) before syncing.
    ResetRequired,
    /// No such route.
    NotFound,
    /// The route exists but not for this HTTP method.
    MethodNotAllowed,
    /// The request carries no bearer token, or one the server does not know or has
    /// revoked (HTTP 401). Nothing was read or changed.
    Unauthorized,
    /// The bearer token was valid but has expired (HTTP 401): ask for a new one (an
    /// administrator issues or rotates tokens). Nothing was read or changed.
    TokenExpired,
    /// The token is valid but its user may not use the data set the request names
    /// (HTTP 403). Also the answer for a data set that does not exist, so that nobody
    /// learns which data sets exist. Nothing was read or changed.
    Forbidden,
    /// Too many failed authentications from this address (HTTP 429 with
    /// `Retry-After`). Nothing was read or changed.
    TooManyRequests,
    /// The server's storage is full (HTTP 507). Nothing was changed; retry later.
    StorageFull,
    /// The server failed; nothing was changed by this request.
    Internal,
}

/// JSON error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The error, wrapped so the body is self-describing.
    pub error: ApiErrorDetail,
}

/// Code and human-readable message of an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorDetail {
    /// What class of error this is.
    pub code: ErrorCode,
    /// A sentence a person can act on; names the offending table, column or id.
    pub message: String,
}

impl ApiError {
    /// Builds an error body from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ApiErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}
