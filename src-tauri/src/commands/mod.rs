//! The typed commands the UI invokes. Each returns `Result<_, AppError>`, so failures
//! reach the UI as `{kind, message, field?}`; SQLite work runs on blocking threads, never
//! on the async runtime.

pub mod app;
pub mod conflicts;
pub mod connect;
pub mod exchange;
pub mod links;
pub mod records;
pub mod settings;
pub mod subscriptions;
pub mod sync;
pub mod trash;
pub mod unlock;

use crate::error::AppError;

/// Runs `work` on tokio's blocking pool and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work).await?
}
