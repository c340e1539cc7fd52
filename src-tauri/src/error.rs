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
    /// The sync server did not accept this device's token (fix it in Settings).
    Unauthorized,
    /// The action would set local data aside: ask the person, then repeat it confirmed.
    NeedsConfirm,
    /// The local store failed or is damaged.
    Storage,
    /// The app is still starting, or failed to start.
    NotReady,
    /// This device's data is encrypted and waits for its passphrase (`field` is
    /// `passphrase`, or `new_passphrase` when the store is yet to be created), or the
    /// passphrase given does not open it.
    Locked,
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
    /// Every invalid field of a form at once (the first is also in `field`/`message`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The column or setting.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl AppError {
    /// An error of `kind` with `message` and no field.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            errors: Vec::new(),
        }
    }

    /// An [`ErrorKind::Invalid`] error about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(ErrorKind::Invalid, message)
        }
    }

    /// One [`ErrorKind::Invalid`] error listing every field error of a form; `None` when
    /// `errors` is empty.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Option<Self> {
        let first = errors.first()?.clone();
        Some(Self {
            errors,
            ..Self::invalid(&first.field, first.message)
        })
    }

    /// A [`ErrorKind::BadInput`] error.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// A [`ErrorKind::Locked`] error asking for the passphrase in `field`.
    pub fn locked(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(ErrorKind::Locked, message)
        }
    }

    /// A sync that the app's switch to another server or store (connect, switch, reset)
    /// cut or left unanswered: the replaced sync task gave it up, and nothing was lost.
    pub fn switched() -> Self {
        Self::new(
            ErrorKind::NotReady,
            "Roster switched to another server or store during this sync. Changes stay on \
             this device; sync again.",
        )
    }

    /// A [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl From<SchemaError> for AppError {
    fn from(error: SchemaError) -> Self {
        match &error {
            SchemaError::InvalidValue { column, reason, .. } => {
                Self::invalid(column, value_message(column, reason))
            }
            SchemaError::UnknownColumn { column, .. } => Self::invalid(column, error.to_string()),
            other => Self::new(ErrorKind::Invalid, other.to_string()),
        }
    }
}

/// A validation reason from the schema as a sentence about the field, e.g. "expected an
/// integer, got text" on `age` -> "Age must be a whole number".
pub fn value_message(column: &str, reason: &str) -> String {
    roster_client::value_message(column, reason)
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
            ClientError::Unreachable { url, .. } => {
                return Self::new(
                    ErrorKind::Offline,
                    format!("Can't reach the server at {url}. Changes stay on this device."),
                );
            }
            ClientError::Unauthorized(_) => {
                return Self::new(
                    ErrorKind::Unauthorized,
                    "The server did not accept this device's access token. Check it in Settings.",
                );
            }
            ClientError::TokenExpired(_) => {
                return Self::new(
                    ErrorKind::Unauthorized,
                    "This device's access token has expired. Ask the server's administrator \
                     for a new one and enter it in Settings; your changes stay on this device.",
                );
            }
            ClientError::Forbidden(_) => {
                return Self::new(
                    ErrorKind::Unauthorized,
                    "This access token may not use this data. Ask the server's administrator.",
                );
            }
            ClientError::Tls { url, reason } => {
                return Self::new(
                    ErrorKind::Server,
                    format!(
                        "The secure connection to {url} failed: {reason}. Nothing was sent; \
                         changes stay on this device."
                    ),
                );
            }
            ClientError::CleartextRefused { url } => {
                return Self::new(
                    ErrorKind::Invalid,
                    format!(
                        "{url} is not encrypted (http://). Use an https:// address; plain \
                         http is only used for this computer."
                    ),
                );
            }
            ClientError::StoreLocked(_) => {
                return Self::locked(
                    "passphrase",
                    "This device's data is encrypted. Enter its passphrase to open it.",
                );
            }
            ClientError::WrongStoreKey(_) => {
                return Self::locked(
                    "passphrase",
                    "That passphrase does not open this device's data; nothing was changed. \
                     (If the key was kept in the system keyring, unlock the keyring and \
                     restart Roster.)",
                );
            }
            ClientError::StoreInUse(_) => {
                return Self::new(
                    ErrorKind::Storage,
                    "This device's data is open in another program (another Roster window \
                     or the roster command). Close it and restart Roster.",
                );
            }
            ClientError::Closed => return Self::switched(),
            ClientError::DeadlineExceeded { .. } => {
                return Self::new(
                    ErrorKind::Server,
                    "The server took too long to finish the sync. Changes stay on this \
                     device; the next sync tries again.",
                );
            }
            ClientError::Server { .. }
            | ClientError::Redirected { .. }
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
        assert_eq!(error.message, "Age must be a whole number");
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
        assert_eq!(
            error.message,
            "Can't reach the server at http://127.0.0.1:1. Changes stay on this device."
        );
        let json = serde_json::to_value(&error).unwrap_or_default();
        assert!(json.get("field").is_none());
    }

    #[test]
    fn a_round_cut_by_a_switch_of_server_says_so_and_that_changes_stay() {
        let error: AppError = ClientError::Closed.into();
        assert_eq!(error.kind, ErrorKind::NotReady);
        assert!(
            error
                .message
                .starts_with("Roster switched to another server or store")
                && error.message.contains("Changes stay on this device"),
            "{}",
            error.message
        );
    }
}
