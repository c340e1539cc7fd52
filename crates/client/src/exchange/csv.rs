//! CSV files (RFC 4180, through the `csv` crate): a header row naming the columns, then
//! one person per row. Headers match declared columns ignoring case, spaces and
//! punctuation ("E-mail" is `email`, "First Name" is `first_name`); other headers are
//! skipped and reported. A row with fewer values than headers leaves the rest empty; a
//! row with more is refused.

use roster_protocol::{Fields, TableSchema};

use super::{Parsed, SourceRow, row_label, text_of};
use crate::ClientError;

/// A header or column name reduced to lowercase letters and digits, for matching.
fn match_key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn bad_file(error: &csv::Error) -> ClientError {
    let line = error
        .position()
        .map(|p| format!(" (line {})", p.line()))
        .unwrap_or_default();
    ClientError::BadInput(format!("the CSV file cannot be read{line}: {error}"))
}

/// Reads a whole CSV file into rows of `table`.
pub(super) fn parse(table: &TableSchema, text: &str) -> Result<Parsed, ClientError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| bad_file(&e))?.clone();
    let mut columns = Vec::with_capacity(headers.len());
    let mut ignored_columns = Vec::new();
    for header in &headers {
        let key = match_key(header);
        let column = table.columns.iter().find(|c| match_key(&c.name) == key);
        if let Some(column) = column {
            if columns
                .iter()
                .flatten()
                .any(|c: &&roster_protocol::ColumnDef| c.name == column.name)
            {
                return Err(ClientError::BadInput(format!(
                    "the CSV file has two columns for {}: keep one",
                    column.name
                )));
            }
        } else if !header.trim().is_empty() {
            ignored_columns.push(header.trim().to_owned());
        }
        columns.push(column);
    }
    if columns.iter().all(Option::is_none) {
        let expected: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        return Err(ClientError::BadInput(format!(
            "no column of the CSV file's first line matches a field; name them {}",
            expected.join(", ")
        )));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad_file(&e))?;
        let mut row = SourceRow {
            label: row_label(record.iter()),
            ..SourceRow::default()
        };
        if record.len() > headers.len() {
            row.problems.push(format!(
                "The row has {} values but the file has {} columns",
                record.len(),
                headers.len()
            ));
        }
        for (column, text) in columns.iter().zip(record.iter()) {
            if let Some(column) = column {
                row.set(column, text);
            }
        }
        rows.push(row);
    }
    Ok(Parsed {
        rows,
        ignored_columns,
    })
}

/// `rows` of `table` as a CSV file: a header of the column names, then one line each.
pub(super) fn write(table: &TableSchema, rows: &[Fields]) -> Result<Vec<u8>, ClientError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let failed = |e: csv::Error| ClientError::BadInput(format!("cannot write CSV: {e}"));
    writer
        .write_record(table.columns.iter().map(|c| c.name.as_str()))
        .map_err(failed)?;
    for row in rows {
        let values = table
            .columns
            .iter()
            .map(|c| row.get(&c.name).map(text_of).unwrap_or_default());
        writer.write_record(values).map_err(failed)?;
    }
    writer
        .into_inner()
        .map_err(|e| ClientError::BadInput(format!("cannot write CSV: {e}")))
}
