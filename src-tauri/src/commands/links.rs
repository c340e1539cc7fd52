//! Clickable email addresses and phone numbers: the UI asks to write to or call a value,
//! and the app hands a `mailto:` or `tel:` URL to the system's default handler.
//!
//! The web view gets no general "open this URL" permission: this command builds the URL
//! itself, only with those two schemes, only from a value that passes the schema's email
//! or phone format, percent-encoded. (Done here instead of through tauri-plugin-opener:
//! that plugin needs a newer tauri than the one locked and brings zbus to the Linux
//! build; its whole use here is these two schemes.)

use roster_protocol::{ColumnDef, ColumnType, Fields, TableSchema, ValueFormat};
use serde::Deserialize;

use crate::error::AppError;

/// What to do with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactAction {
    /// Write an email (`mailto:`).
    Mail,
    /// Call (`tel:`).
    Call,
}

/// Whether `value` passes `format` (the schema's own rule).
fn passes(format: ValueFormat, value: &str) -> bool {
    let column = ColumnDef {
        name: "value".into(),
        ty: ColumnType::Text,
        required: true,
        max_len: Some(320),
        format: Some(format),
        default: None,
    };
    let table = TableSchema {
        name: "contact".into(),
        columns: vec![column],
    };
    let mut fields = Fields::new();
    fields.insert("value".into(), value.into());
    table.validate_fields(&fields).is_ok()
}

/// The `mailto:` or `tel:` URL for `value`, or why there is none.
pub fn contact_url(action: ContactAction, value: &str) -> Result<String, AppError> {
    let value = value.trim();
    match action {
        ContactAction::Mail if passes(ValueFormat::Email, value) => {
            let encoded: String = value
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'@' | b'.' | b'-' | b'_' | b'+' => {
                        (b as char).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect();
            Ok(format!("mailto:{encoded}"))
        }
        ContactAction::Call if passes(ValueFormat::Phone, value) => {
            let number: String = value
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect();
            Ok(format!("tel:{number}"))
        }
        ContactAction::Mail => Err(AppError::bad_input(format!(
            "{value:?} is not an email address"
        ))),
        ContactAction::Call => Err(AppError::bad_input(format!(
            "{value:?} is not a phone number"
        ))),
    }
}

/// The program that opens a URL with the user's default application.
#[cfg(desktop)]
fn opener(url: &str) -> std::process::Command {
    #[cfg(target_os = "macos")]
    let command = {
        let mut command = std::process::Command::new("open");
        command.arg(url);
        command
    };
    #[cfg(windows)]
    let command = {
        let mut command = std::process::Command::new("rundll32");
        command.args(["url.dll,FileProtocolHandler", url]);
        command
    };
    #[cfg(not(any(target_os = "macos", windows)))]
    let command = {
        let mut command = std::process::Command::new("xdg-open");
        command.arg(url);
        command
    };
    command
}

/// Opens the mail or phone app for `value`.
#[tauri::command(rename_all = "snake_case")]
pub async fn open_contact(action: ContactAction, value: String) -> Result<(), AppError> {
    let url = contact_url(action, &value)?;
    #[cfg(desktop)]
    {
        let mut child = opener(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                AppError::internal(format!("Cannot open {url}: no program to open it ({e})"))
            })?;
        // Reap it whenever it exits, off the async runtime.
        std::thread::spawn(move || child.wait());
        tracing::info!(scheme = url.split(':').next(), "opened a contact link");
        Ok(())
    }
    #[cfg(mobile)]
    {
        Err(AppError::internal(format!(
            "Opening {url} is not supported on this platform yet"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_emails_and_phones_become_mailto_and_tel_urls() {
        assert_eq!(
            contact_url(ContactAction::Mail, " ann+x@example.org ").ok(),
            Some("mailto:ann+x@example.org".to_owned())
        );
        assert_eq!(
            contact_url(ContactAction::Mail, "a'b@example.org").ok(),
            Some("mailto:a%27b@example.org".to_owned())
        );
        assert_eq!(
            contact_url(ContactAction::Call, "+33 (1) 23-45").ok(),
            Some("tel:+3312345".to_owned())
        );
        for (action, bad) in [
            (ContactAction::Mail, "javascript:alert(1)"),
            (ContactAction::Mail, "x@y"),
            (ContactAction::Call, "file:///etc/passwd"),
            (ContactAction::Call, "12"),
        ] {
            assert!(contact_url(action, bad).is_err(), "{bad}");
        }
    }
}
