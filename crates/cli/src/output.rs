//! Printing results for people (aligned text) or scripts (`--json`).

use std::path::Path;

use roster_client::{ConflictRecord, ImportReport, OpenConflict, Record, Status, SyncReport};
use roster_protocol::{ConflictLogEntry, RowId, Schema, Subscription, TableSchema};
use serde_json::{Value, json};

/// Where and how results are printed.
pub struct Output {
    /// Print JSON instead of text.
    pub json: bool,
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A Unix-milliseconds instant as RFC 3339 UTC, or "never".
fn format_time(unix_ms: Option<i64>) -> String {
    let Some(ms) = unix_ms else {
        return "never".to_owned();
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} (unix ms)"))
}

fn pending_label(record: &Record) -> &'static str {
    match record.pending {
        Some(op) => op.as_str(),
        None => "synced",
    }
}

impl Output {
    /// Prints an error on stderr.
    pub fn error(&self, error: &anyhow::Error, kind: crate::FailureKind) {
        if self.json {
            let message = format!("{error:#}");
            eprintln!(
                "{}",
                json!({"error": {"kind": kind.as_str(), "message": message}})
            );
        } else {
            eprintln!("error: {error:#}");
        }
    }

    /// After `init`.
    pub fn initialised(&self, dir: &Path, status: &Status, schema: &Schema) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"data_dir": dir, "status": status, "schema": schema}));
        }
        let tables: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        println!(
            "Initialised {} for {} (client {}; tables: {})",
            dir.display(),
            status.server_url,
            status.client_id,
            tables.join(", ")
        );
        Ok(())
    }

    /// One line after add/edit: the verb and the record's id.
    pub fn changed(&self, verb: &str, table: &str, record: &Record) -> anyhow::Result<()> {
        if self.json {
            return print_json(record);
        }
        println!("{verb} {table} {}", record.id);
        Ok(())
    }

    /// One record, field by field in the schema's column order.
    pub fn record(&self, table: &TableSchema, record: &Record) -> anyhow::Result<()> {
        if self.json {
            return print_json(record);
        }
        println!("{:>10}  {}", "id", record.id);
        for column in &table.columns {
            let value = record.fields.get(&column.name).unwrap_or(&Value::Null);
            println!("{:>10}  {}", column.name, cell(value));
        }
        println!("{:>10}  {}", "sync", pending_label(record));
        Ok(())
    }

    /// After import: counts, then each refused row with its reasons.
    pub fn imported(&self, file: &Path, report: &ImportReport) -> anyhow::Result<()> {
        if self.json {
            return print_json(report);
        }
        println!(
            "Imported {} of {} rows from {} ({} refused; pushed at the next sync)",
            report.imported,
            report.rows,
            file.display(),
            report.refused.len()
        );
        if !report.ignored_columns.is_empty() {
            println!("Skipped columns: {}", report.ignored_columns.join(", "));
        }
        for refused in &report.refused {
            println!(
                "row {} ({}): {}",
                refused.row,
                refused.label,
                refused.reasons.join("; ")
            );
        }
        Ok(())
    }

    /// After export.
    pub fn exported(&self, file: &Path, count: u64) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"exported": count, "file": file}));
        }
        println!("Exported {count} people to {}", file.display());
        Ok(())
    }

    /// After delete.
    pub fn deleted(&self, table: &str, id: RowId) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"deleted": id, "table": table}));
        }
        println!("Deleted {table} {id} (pushed at the next sync)");
        Ok(())
    }

    /// A page of records as an aligned table.
    pub fn list(&self, table: &TableSchema, total: u64, records: &[Record]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"total": total, "records": records}));
        }
        let mut header = vec!["id".to_owned()];
        header.extend(table.columns.iter().map(|c| c.name.clone()));
        header.push("sync".to_owned());
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                let mut row = vec![r.id.to_string()];
                row.extend(
                    table
                        .columns
                        .iter()
                        .map(|c| cell(r.fields.get(&c.name).unwrap_or(&Value::Null))),
                );
                row.push(pending_label(r).to_owned());
                row
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count().min(40))
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| {
                    let c: String = c.chars().take(40).collect();
                    format!("{c:<w$}")
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        println!("{}", line(&header));
        for row in &rows {
            println!("{}", line(row));
        }
        println!("({} of {total} {})", records.len(), table.name);
        Ok(())
    }

    /// After sync.
    pub fn synced(&self, report: &SyncReport) -> anyhow::Result<()> {
        if self.json {
            return print_json(report);
        }
        println!(
            "Synced: {} uploaded, {} downloaded, {} conflicts ({} resolved, {} waiting for you), \
             {} merged automatically, {} left this device's subscriptions, in {} requests, {} ms",
            report.uploaded,
            report.downloaded,
            report.conflicts_detected,
            report.conflicts_resolved,
            report.conflicts_deferred,
            report.auto_merged,
            report.evicted,
            report.requests,
            report.duration_ms
        );
        Ok(())
    }

    /// The conflict history.
    pub fn conflicts(&self, conflicts: &[ConflictRecord]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&conflicts);
        }
        if conflicts.is_empty() {
            println!("No conflicts.");
        }
        for c in conflicts {
            let fields = |v: &Option<Value>| match v {
                Some(v) => v.get("fields").unwrap_or(v).to_string(),
                None => "(none)".to_owned(),
            };
            println!(
                "#{} {} {} {}/{}: {}",
                c.seq,
                format_time(Some(c.at_ms)),
                c.kind,
                c.table,
                c.id,
                c.resolution
            );
            println!(
                "    mine:   {}",
                c.client_row
                    .as_ref()
                    .map_or("(deleted)".into(), Value::to_string)
            );
            println!("    server: {}", fields(&c.server_row));
            println!("    now:    {}", fields(&c.outcome));
        }
        Ok(())
    }

    /// Conflicts waiting for a choice, with both rows side by side.
    pub fn open_conflicts(&self, conflicts: &[OpenConflict]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&conflicts);
        }
        if conflicts.is_empty() {
            println!("No conflicts waiting for a choice.");
        }
        let show = |row: &Option<roster_protocol::Fields>, field: &str| match row {
            Some(row) => cell(row.get(field).unwrap_or(&Value::Null)),
            None => "(deleted)".to_owned(),
        };
        for c in conflicts {
            println!(
                "{} {}/{} (since {})",
                c.kind,
                c.table,
                c.id,
                format_time(Some(c.detected_at_ms))
            );
            let fields: Vec<String> = match (&c.local, &c.remote) {
                (Some(_), Some(_)) => c.differing_fields.clone(),
                (Some(row), None) | (None, Some(row)) => row.keys().cloned().collect(),
                (None, None) => Vec::new(),
            };
            println!("    {:<12} {:<24} {:<24} base", "field", "mine", "theirs");
            for field in fields {
                println!(
                    "    {:<12} {:<24} {:<24} {}",
                    field,
                    show(&c.local, &field),
                    show(&c.remote, &field),
                    c.base.as_ref().map_or(String::new(), |b| cell(
                        b.get(&field).unwrap_or(&Value::Null)
                    ))
                );
            }
            println!(
                "    resolve: roster resolve {} keep-mine|keep-theirs|merge",
                c.id
            );
        }
        Ok(())
    }

    /// After resolve.
    pub fn resolved(&self, table: &str, id: RowId) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"resolved": id, "table": table}));
        }
        println!("Resolved {table} {id}; the next sync pushes the choice");
        Ok(())
    }

    /// The server's conflict log.
    pub fn server_conflicts(&self, entries: &[ConflictLogEntry]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&entries);
        }
        if entries.is_empty() {
            println!("The server has logged no conflicts.");
        }
        for e in entries {
            println!(
                "#{} {} {} {}/{}: {} (client {})",
                e.seq,
                format_time(Some(e.at_ms)),
                e.kind,
                e.table,
                e.id,
                e.resolution.as_str(),
                e.client_id
            );
        }
        Ok(())
    }

    /// After subscribe.
    pub fn subscribed(&self, subscription: &Subscription, added: bool) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"subscribed": subscription, "added": added}));
        }
        if added {
            println!("Subscribed to {subscription}");
        } else {
            println!("Already subscribed to {subscription}");
        }
        Ok(())
    }

    /// After unsubscribe (`None`: every subscription dropped).
    pub fn unsubscribed(
        &self,
        subscription: Option<&Subscription>,
        removed: bool,
    ) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"unsubscribed": subscription, "removed": removed}));
        }
        match (subscription, removed) {
            (Some(s), true) => println!("Unsubscribed from {s}"),
            (Some(s), false) => println!("Not subscribed to {s}"),
            (None, _) => println!("No subscriptions: this device syncs the whole data set"),
        }
        Ok(())
    }

    /// The device's subscriptions (`None`: the whole data set).
    pub fn subscriptions(&self, list: Option<&[Subscription]>) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"whole_dataset": list.is_none(), "subscriptions": list}));
        }
        match list {
            None => println!("No subscriptions: this device syncs the whole data set"),
            Some([]) => {
                println!("Subscribed to nothing: this device holds only its own unpushed rows")
            }
            Some(list) => {
                for s in list {
                    println!("{s}");
                }
            }
        }
        Ok(())
    }

    /// After status.
    pub fn status(&self, status: &Status) -> anyhow::Result<()> {
        if self.json {
            return print_json(status);
        }
        println!("server:     {}", status.server_url);
        println!("client id:  {}", status.client_id);
        println!("pending:    {}", status.pending);
        println!("watermark:  {}", status.watermark);
        println!(
            "open:       {} conflicts waiting for a choice",
            status.open_conflicts
        );
        println!("history:    {} conflicts", status.conflicts_logged);
        println!("last sync:  {}", format_time(status.last_sync_ms));
        Ok(())
    }
}
