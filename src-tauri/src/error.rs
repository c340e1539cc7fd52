//! The error every command returns: a typed kind plus a readable message, serialised to
//! the UI as `{kind, message, field?}`. Nothing that crosses the boundary is a panic.

use roster_client::ClientError;
use roster_protocol::SchemaError;
use serde::Serialize;

/// What kind of failure a command met; the UI picks its presentation from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A value failed the schema's validation; `field` names the column when known.
    Invalid,
    /// The request itself was unusable (bad argument, unknown column to sort by…).
    BadInput,
    /// No such record (or conflict).
    NotFound,
    /// The sync server could not be reached.
    Offline,
    /// The sync server refused the request.
    Server,
    /// The local store failed or is damaged.
    Storage,
    /// The app is still starting, or failed to start.
    NotReady,
    /// Anything else.
    Internal,
}

/// A command failure as the UI receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, in words a person can act on.
    pub message: String,
    /// The column a validation error is about, for an inline message next to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl AppError {
    /// An error of `kind` with `message` and no field.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
        }
    }

    /// A [`ErrorKind::BadInput`] error.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// A [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl From<SchemaError> for AppError {
    fn from(error: SchemaError) -> Self {
        let field = match &error {
            SchemaError::InvalidValue { column, .. }
            | SchemaError::UnknownColumn { column, .. } => Some(column.clone()),
            _ => None,
        };
        let message = match &error {
            // The field is shown next to its input, so the reason alone reads better.
            SchemaError::InvalidValue { reason, .. } => capitalise(reason),
            other => other.to_string(),
        };
        Self {
            kind: ErrorKind::Invalid,
            message,
            field,
        }
    }
}

impl From<ClientError> for AppError {
    fn from(error: ClientError) -> Self {
        Self::from(&error)
    }
}

impl From<&ClientError> for AppError {
    fn from(error: &ClientError) -> Self {
        let kind = match error {
            ClientError::Invalid(schema) => return schema.clone().into(),
            ClientError::BadInput(_) => ErrorKind::BadInput,
            ClientError::NotFound { .. } => ErrorKind::NotFound,
            ClientError::Unreachable { .. } => ErrorKind::Offline,
            ClientError::Server { .. }
            | ClientError::Unauthorized(_)
            | ClientError::Forbidden(_)
            | ClientError::Protocol(_)
            | ClientError::SchemaMismatch(_) => ErrorKind::Server,
            ClientError::NotInitialised(_)
            | ClientError::AlreadyInitialised(_)
            | ClientError::Database(_)
            | ClientError::Corrupt(_)
            | ClientError::Io { .. } => ErrorKind::Storage,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, error.to_string())
    }
}

impl From<tauri::Error> for AppError {
    fn from(error: tauri::Error) -> Self {
        Self::internal(error.to_string())
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::internal(format!("background task failed: {error}"))
    }
}

/// `text` with its first letter in upper case.
fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_name_their_field() {
        let error: AppError = ClientError::Invalid(SchemaError::InvalidValue {
            table: "person".into(),
            column: "age".into(),
            reason: "expected an integer, got text".into(),
        })
        .into();
        assert_eq!(error.kind, ErrorKind::Invalid);
        assert_eq!(error.field.as_deref(), Some("age"));
        assert_eq!(error.message, "Expected an integer, got text");
        let json = serde_json::to_value(&error).unwrap_or_default();
        assert_eq!(json["kind"], "invalid");
    }

    #[test]
    fn unreachable_is_offline() {
        let error: AppError = ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        }
        .into();
        assert_eq!(error.kind, ErrorKind::Offline);
        assert!(error.message.contains("connection refused"));
        let json = serde_json::to_value(&error).unwrap_or_default();
        assert!(json.get("field").is_none());
    }
}
