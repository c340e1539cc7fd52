//! The round against an Azure Mobile Apps backend: carries out the steps of
//! [`crate::ama::push`] and [`crate::ama::pull`] over HTTP and applies their results to the
//! store through the same path as Roster's answers.
//!
//! Push first: the pending changes edited before the round, oldest first, one request
//! (or a few, for a conflict) each, since the table protocol has no batches; every
//! [`PUSH_BATCH`] settled changes are applied in one local transaction, and what was
//! settled before a failure is applied before the error is returned (so a change the
//! server took is never pushed again on its old version). Then each table is pulled
//! from its watermark, each page applied in one transaction with the new watermark (while
//! the next page is fetched), so an interrupted pull resumes where it stopped.

use roster_protocol::{Ack, PulledChange, PulledResponse, ServerChange, SyncResponse, TableSchema};
use serde_json::Value;

use super::{SyncClient, blocking};
use crate::ClientError;
use crate::ama::pull::PullCursor;
use crate::ama::push::{Answer, ChangePush, Next, Request};
use crate::ama::{AmaSettings, Item, text_literal};
use crate::local::AmaAnswer;
use crate::round::{CollectSpec, SentChange, SyncProgress, SyncReport};

/// Pending changes settled per local transaction.
const PUSH_BATCH: usize = 200;

/// Most rows asked per page: an AMA backend's default `maxTop` (a larger `$top` is
/// refused by it, and lowered to this by Roster's `/tables`).
pub(crate) const MAX_PAGE: u32 = 1000;

/// A round's answer in Roster's form, with the AMA version strings of its rows.
struct Settled {
    response: PulledResponse,
    versions: Vec<(String, roster_protocol::RowId, String)>,
    sent: Vec<SentChange>,
}

impl Settled {
    fn new(watermark: u64) -> Self {
        Self {
            response: SyncResponse {
                acks: Vec::new(),
                conflicts: Vec::new(),
                changes: Vec::new(),
                watermark,
                has_more: false,
                newest: 0,
                staged: false,
                rollback: None,
                epoch: 0,
                rebase: None,
                schema_version: 0,
                evicted: Vec::new(),
            },
            versions: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// The path of `table`'s items, or of one of them.
fn table_path(table: &str, id: Option<roster_protocol::RowId>) -> String {
    match id {
        Some(id) => format!("/tables/{table}/{id}"),
        None => format!("/tables/{table}"),
    }
}

/// The items of a list answer (an array, or `{"results": [...]}` with a count).
fn list_items(table: &TableSchema, body: Option<Value>) -> Result<Vec<Item>, ClientError> {
    let items = match body {
        Some(Value::Array(items)) => items,
        Some(Value::Object(mut object)) => match object.remove("results") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ClientError::Protocol(format!(
                    "the Azure Mobile Apps backend answered the {} list with an object \
                     without results",
                    table.name
                )));
            }
        },
        _ => {
            return Err(ClientError::Protocol(format!(
                "the Azure Mobile Apps backend answered the {} list without items",
                table.name
            )));
        }
    };
    items
        .into_iter()
        .map(|item| Item::from_json(table, item))
        .collect()
}

impl SyncClient {
    /// One request of the table protocol, sent again after transient failures (every
    /// request the driver makes is safe to repeat: a repeated write meets `If-Match`
    /// or the id and is settled by [`ChangePush`]).
    async fn table_request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Result<crate::transport::TableAnswer, ClientError> {
        use backon::{ExponentialBuilder, Retryable};
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.options.retry_delay)
            .with_max_times(self.options.retries)
            .with_jitter();
        (|| {
            self.transport
                .table_request(method.clone(), path, query, if_match, body)
        })
        .retry(policy)
        .when(ClientError::is_transient)
        .notify(|error, delay| {
            tracing::warn!(%error, ?delay, path, "retrying Azure Mobile Apps request");
        })
        .await
    }

    /// Sends `request` of the push of a `table` row and reads the answer.
    async fn send_push(
        &self,
        table: &TableSchema,
        id: roster_protocol::RowId,
        request: &Request,
    ) -> Result<Answer, ClientError> {
        use reqwest::Method;
        let item = |body: Option<Value>| body.map(|b| Item::from_json(table, b)).transpose();
        let (method, path, query, if_match, body) = match request {
            Request::Insert(fields) => {
                let mut row = serde_json::Map::from_iter(fields.clone());
                row.insert("id".into(), Value::String(id.to_string()));
                (
                    Method::POST,
                    table_path(&table.name, None),
                    Vec::new(),
                    None,
                    Some(Value::Object(row)),
                )
            }
            Request::Update { if_match, fields } => (
                Method::PATCH,
                table_path(&table.name, Some(id)),
                Vec::new(),
                if_match.clone(),
                Some(Value::Object(serde_json::Map::from_iter(fields.clone()))),
            ),
            Request::Delete { if_match } => (
                Method::DELETE,
                table_path(&table.name, Some(id)),
                Vec::new(),
                if_match.clone(),
                None,
            ),
            Request::Undelete { if_match, fields } => (
                Method::POST,
                table_path(&table.name, Some(id)),
                Vec::new(),
                Some(if_match.clone()),
                Some(Value::Object(serde_json::Map::from_iter(fields.clone()))),
            ),
            Request::Fetch => {
                let query = vec![
                    (
                        "$filter",
                        format!("id eq {}", text_literal(&id.to_string())),
                    ),
                    ("__includeDeleted", "true".to_owned()),
                ];
                let answer = self
                    .table_request(
                        Method::GET,
                        &table_path(&table.name, None),
                        &query,
                        None,
                        None,
                    )
                    .await?;
                if answer.status != 200 {
                    return Err(ClientError::Protocol(format!(
                        "the Azure Mobile Apps backend answered {} to reading {} row {id}",
                        answer.status, table.name
                    )));
                }
                let found = list_items(table, answer.body)?
                    .into_iter()
                    .find(|i| i.id == id);
                return Ok(Answer::Fetched(found));
            }
        };
        let answer = self
            .table_request(method, &path, &query, if_match.as_deref(), body.as_ref())
            .await?;
        Ok(match answer.status {
            412 => Answer::Stale(item(answer.body).ok().flatten()),
            409 => Answer::Exists,
            404 => Answer::Missing,
            _ => Answer::Written(item(answer.body)?),
        })
    }

    /// Pushes one change to settlement, adding its ack or conflict to `settled`;
    /// returns the requests made.
    async fn push_change(
        &self,
        sent: SentChange,
        settings: &AmaSettings,
        settled: &mut Settled,
    ) -> Result<u32, ClientError> {
        let schema = self.store.schema();
        let table = schema.table(&sent.change.table)?;
        let id = sent.change.id;
        let if_match = match sent.change.base_version {
            Some(number) => {
                let store = self.store.clone();
                let name = table.name.clone();
                blocking(move || store.ama_version(&name, id, number)).await?
            }
            None => None,
        };
        let mut push = ChangePush::for_table(sent, if_match, settings);
        let mut request = push.start();
        let mut requests = 0;
        loop {
            requests += 1;
            let answer = self.send_push(table, id, &request).await?;
            match push.on(answer)? {
                Next::Send(next) => request = next,
                Next::Acked { version } => {
                    let number = version.as_deref().map_or(0, crate::ama::version_number);
                    settled.response.acks.push(Ack {
                        table: table.name.clone(),
                        id,
                        version: number,
                        kept: None,
                    });
                    if let Some(version) = version {
                        settled.versions.push((table.name.clone(), id, version));
                    }
                    break;
                }
                Next::Conflict {
                    conflict,
                    outcome_version,
                } => {
                    tracing::info!(table = %table.name, %id, kind = %conflict.kind,
                        resolution = conflict.resolution.as_str(), "Azure Mobile Apps conflict");
                    if let Some(version) = outcome_version {
                        settled.versions.push((table.name.clone(), id, version));
                    }
                    settled.response.conflicts.push(*conflict);
                    break;
                }
            }
        }
        settled.sent.push(push.sent().clone());
        Ok(requests)
    }

    /// Applies what was settled (if anything) in one transaction.
    async fn apply_settled(
        &self,
        settled: Settled,
        since: Option<(String, u64)>,
        report: &mut SyncReport,
    ) -> Result<(), ClientError> {
        if settled.is_empty() && settled.response.changes.is_empty() && since.is_none() {
            return Ok(());
        }
        let store = self.store.clone();
        let handler = self.handler.clone();
        let counts = blocking(move || {
            store.apply_ama_answer(
                AmaAnswer {
                    sent: &settled.sent,
                    response: settled.response,
                    versions: settled.versions,
                    since: since.as_ref().map(|(t, s)| (t.as_str(), *s)),
                },
                handler.as_deref(),
            )
        })
        .await?;
        report.add(counts);
        Ok(())
    }

    /// Applies one pulled page of `table` (if any) with its watermark.
    async fn apply_page(
        &self,
        table: &str,
        page: Option<Settled>,
        report: &mut SyncReport,
    ) -> Result<(), ClientError> {
        let Some(page) = page else {
            return Ok(());
        };
        let since = page.response.watermark;
        self.apply_settled(page, Some((table.to_owned(), since)), report)
            .await
    }

    /// One round against an AMA backend; see the module's documentation.
    pub(super) async fn run_ama_round(
        &self,
        progress: &mut impl FnMut(&SyncProgress),
    ) -> Result<SyncReport, ClientError> {
        let store = self.store.clone();
        let settings = blocking(move || store.ama_settings()).await?;
        let mut report = SyncReport::default();
        let up_to = self.store.edit_counter()?;
        let start_watermark = self.store.watermark()?;
        let mut tell = |report: &SyncReport, watermark: u64| {
            progress(&SyncProgress {
                requests: report.requests,
                uploaded: report.uploaded,
                downloaded: report.downloaded,
                watermark,
                start_watermark,
                pull_target: 0,
            });
        };
        let mut after = 0;
        loop {
            let spec = CollectSpec {
                after,
                up_to,
                max_changes: PUSH_BATCH,
                max_bytes: usize::MAX,
            };
            let batch = self.collect(spec).await?;
            let mut settled = Settled::new(self.store.watermark()?);
            let mut failure = None;
            for sent in batch.sent {
                match self.push_change(sent, &settings, &mut settled).await {
                    Ok(requests) => report.requests += requests,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            report.uploaded += settled.sent.len() as u64;
            self.apply_settled(settled, None, &mut report).await?;
            if let Some(error) = failure {
                return Err(error);
            }
            tell(&report, start_watermark);
            after = batch.cursor;
            if batch.last {
                break;
            }
        }
        let schema = self.store.schema();
        let top = self.options.pull_limit.min(MAX_PAGE);
        for table in &schema.tables {
            let store = self.store.clone();
            let name = table.name.clone();
            let since = blocking(move || store.ama_since(&name)).await?;
            let mut cursor = PullCursor::new(since, top);
            // The page before is applied while the next one is fetched (its query
            // depends only on the page's last row, known once it is read).
            let mut applying: Option<Settled> = None;
            while !cursor.is_done() {
                if cursor.pages() >= crate::round::MAX_PULL_REQUESTS {
                    return Err(ClientError::Protocol(format!(
                        "the Azure Mobile Apps backend kept answering full pages of {}",
                        table.name
                    )));
                }
                let (query, path) = (cursor.query(), table_path(&table.name, None));
                let fetch = self.table_request(reqwest::Method::GET, &path, &query, None, None);
                let apply = self.apply_page(&table.name, applying.take(), &mut report);
                let (answer, applied) = tokio::join!(fetch, apply);
                applied?;
                let answer = answer?;
                report.requests += 1;
                if answer.status != 200 {
                    return Err(ClientError::Protocol(format!(
                        "the Azure Mobile Apps backend answered {} to the {} list",
                        answer.status, table.name
                    )));
                }
                let fresh = cursor.on_page(list_items(table, answer.body)?);
                let mut settled = Settled::new(cursor.watermark_ms());
                for item in fresh {
                    settled
                        .versions
                        .push((table.name.clone(), item.id, item.version.clone()));
                    let change = ServerChange {
                        table: table.name.clone(),
                        id: item.id,
                        row: item.server_row(),
                    };
                    settled
                        .response
                        .changes
                        .push(PulledChange::try_from(change).map_err(|e| {
                            ClientError::Protocol(format!("cannot hold item {}: {e}", item.id))
                        })?);
                }
                applying = Some(settled);
                tell(&report, cursor.watermark_ms());
            }
            self.apply_page(&table.name, applying.take(), &mut report)
                .await?;
            report.watermark = cursor.watermark_ms();
        }
        let store = self.store.clone();
        blocking(move || store.finish_ama_round()).await?;
        Ok(report)
    }
}
