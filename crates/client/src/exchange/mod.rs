//! Import and export of people as CSV and vCard.
//!
//! A file's columns (CSV headers) or properties (vCard) are mapped to the table's declared
//! columns; every row is checked with the same rules as an edit (the schema's types,
//! required fields, lengths and formats), all of a row's problems at once. Rows that pass
//! are written in chunks of [`IMPORT_CHUNK_ROWS`], each chunk one transaction, with a
//! progress call after each; the rows refused are listed in the [`ImportReport`] with
//! their number in the file and the reasons, and nothing else is lost. Export writes every
//! live row (or the listed ones) in the table's column order, to a temporary file renamed
//! into place, so an interrupted export never leaves half a file under the name asked for.
//!
//! A round trip (export, then import into a store with the same schema) gives the same
//! people, with new ids: an import adds people, it does not overwrite anyone. An empty
//! text value and a missing one are the same to both formats (`null`).

mod csv;
mod vcard;

use std::io::Write;
use std::path::Path;

use roster_protocol::{ColumnDef, ColumnType, Fields, RowId, SchemaError, TableSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ClientError, ListQuery, LocalStore, MAX_LIST_LIMIT};

/// Rows written per transaction by an import.
pub const IMPORT_CHUNK_ROWS: usize = 1000;

/// Largest file an import reads (bytes), so a wrong file cannot exhaust memory.
pub const MAX_IMPORT_BYTES: u64 = 512 * 1024 * 1024;

/// A file format for import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated values with a header row naming the columns (RFC 4180).
    Csv,
    /// vCard (RFC 6350; version 3.0 and 2.1 files are read too), one card per person.
    Vcard,
}

impl Format {
    /// The format a file name's extension names: `.csv`, or `.vcf` / `.vcard`.
    pub fn from_path(path: &Path) -> Result<Self, ClientError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("vcf" | "vcard") => Ok(Format::Vcard),
            _ => Err(ClientError::BadInput(format!(
                "cannot tell the format of {}: name the file .csv or .vcf",
                path.display()
            ))),
        }
    }
}

/// A row of the file that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRow {
    /// The row's number in the file: 1 for the first data row of a CSV (the header is
    /// not counted), 1 for the first card of a vCard file.
    pub row: u64,
    /// A short label for the row (its first non-empty value), to find it in the file.
    pub label: String,
    /// Every problem of the row, as sentences about its fields.
    pub reasons: Vec<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Rows (CSV lines or cards) read from the file.
    pub rows: u64,
    /// Rows written to the store.
    pub imported: u64,
    /// Rows refused, in file order.
    pub refused: Vec<RefusedRow>,
    /// File columns (CSV headers or vCard properties) that match no declared column and
    /// were skipped.
    pub ignored_columns: Vec<String>,
}

/// How far an import is, after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProgress {
    /// Rows of the file handled so far (imported or refused).
    pub done: u64,
    /// Rows in the file.
    pub total: u64,
}

/// One problem with one field of a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// The column.
    pub field: String,
    /// A sentence about it, e.g. "Age must be a whole number".
    pub message: String,
}

/// A row as read from a file, before it is checked: the values by column, and the
/// problems met while converting its text (with the columns they were met in).
#[derive(Default)]
struct SourceRow {
    label: String,
    fields: Fields,
    problems: Vec<String>,
    unconverted: Vec<String>,
}

impl SourceRow {
    /// Converts `text` for `column` into the row, or notes why it cannot be.
    fn set(&mut self, column: &ColumnDef, text: &str) {
        match convert(column, text) {
            Ok(value) => {
                self.fields.insert(column.name.clone(), value);
            }
            Err(problem) => {
                self.problems.push(problem);
                self.unconverted.push(column.name.clone());
            }
        }
    }
}

/// A parsed file: its rows, and the file columns matching no declared column.
struct Parsed {
    rows: Vec<SourceRow>,
    ignored_columns: Vec<String>,
}

/// Every problem of the row `fields` of `table` at once (type, required, length, format),
/// each worded for a person; empty if the row is valid. The same rules as
/// [`TableSchema::validate_fields`], which the store and the server apply.
pub fn field_problems(table: &TableSchema, fields: &Fields) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    for key in fields.keys() {
        if table.column(key).is_none() {
            problems.push(FieldProblem {
                field: key.clone(),
                message: format!("{} is not a field of {}", label_of(key), table.name),
            });
        }
    }
    for column in &table.columns {
        let single = TableSchema {
            name: table.name.clone(),
            columns: vec![column.clone()],
        };
        let mut one = Fields::new();
        if let Some(value) = fields.get(&column.name) {
            one.insert(column.name.clone(), value.clone());
        }
        let message = match single.validate_fields(&one) {
            Err(SchemaError::InvalidValue { reason, .. }) => value_message(&column.name, &reason),
            Err(other) => other.to_string(),
            Ok(()) => continue,
        };
        problems.push(FieldProblem {
            field: column.name.clone(),
            message,
        });
    }
    problems
}

/// A validation reason from the schema as a sentence about the field, e.g. "expected an
/// integer, got text" on `age` -> "Age must be a whole number".
pub fn value_message(column: &str, reason: &str) -> String {
    let label = label_of(column);
    if reason.starts_with("expected an integer") {
        format!("{label} must be a whole number")
    } else if reason.starts_with("expected a number") {
        format!("{label} must be a number")
    } else if reason.starts_with("expected true or false") {
        format!("{label} must be yes or no")
    } else if reason.starts_with("must ") || reason.starts_with("may ") {
        format!("{label} {reason}")
    } else if reason.starts_with("a value is required") {
        format!("{label} is required")
    } else if let Some(rest) = reason.strip_prefix("text is ") {
        // "text is N characters long, at most M allowed"
        let max = rest.rsplit("at most ").next().unwrap_or(rest);
        format!("{label} is too long: at most {max}")
    } else {
        format!("{label}: {reason}")
    }
}

/// A column name as a label: `first_name` -> "First name".
fn label_of(column: &str) -> String {
    let text = column.replace('_', " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The typed value of `text` read from a file for `column`: blank is `null`, numbers and
/// yes/no are parsed by the column's type. A problem is worded like an edit's.
fn convert(column: &ColumnDef, text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Value::Null);
    }
    let wrong = |ty: &str| value_message(&column.name, &format!("expected {ty}, got text"));
    match column.ty {
        ColumnType::Text => Ok(Value::String(text.to_owned())),
        ColumnType::Integer => trimmed
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| wrong("an integer")),
        ColumnType::Real => trimmed
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| wrong("a number")),
        ColumnType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "y" => Ok(Value::Bool(true)),
            "false" | "no" | "0" | "n" => Ok(Value::Bool(false)),
            _ => Err(wrong("true or false")),
        },
    }
}

/// The text a file holds for `value` (`null` is empty).
fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The first non-empty value of a row, as its label in a report (at most 60 characters).
fn row_label<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let first = values
        .into_iter()
        .map(str::trim)
        .find(|v| !v.is_empty())
        .unwrap_or("");
    first.chars().take(60).collect()
}

impl LocalStore {
    /// Imports the file at `path` into `table`, the format from its extension (see
    /// [`Format::from_path`]); `progress` is called after each chunk.
    pub fn import_file(
        &self,
        table: &str,
        path: &Path,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport, ClientError> {
        let format = Format::from_path(path)?;
        let io = |source: std::io::Error| {
            ClientError::BadInput(format!("cannot read {}: {source}", path.display()))
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_IMPORT_BYTES {
            return Err(ClientError::BadInput(format!(
                "{} is {size} bytes; an import reads at most {MAX_IMPORT_BYTES}",
                path.display()
            )));
        }
        let data = std::fs::read(path).map_err(io)?;
        self.import(table, format, &data, progress)
    }

    /// Imports `data` (a whole file in `format`) into `table`: valid rows are written in
    /// chunks of [`IMPORT_CHUNK_ROWS`], one transaction each, with a `progress` call
    /// after each; invalid rows are refused and reported. A file that cannot be read at
    /// all (no usable header, broken encoding) is an error and writes nothing.
    pub fn import(
        &self,
        table: &str,
        format: Format,
        data: &[u8],
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport, ClientError> {
        let schema = self.schema().table(table)?.clone();
        let text = std::str::from_utf8(data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data))
            .map_err(|e| {
                ClientError::BadInput(format!(
                    "the file is not UTF-8 text (byte {}): save it as UTF-8 and try again",
                    e.valid_up_to()
                ))
            })?;
        let parsed = match format {
            Format::Csv => csv::parse(&schema, text)?,
            Format::Vcard => vcard::parse(&schema, text)?,
        };
        let total = parsed.rows.len() as u64;
        let mut report = ImportReport {
            rows: total,
            ignored_columns: parsed.ignored_columns,
            ..ImportReport::default()
        };
        let mut number = 0u64;
        for chunk in parsed.rows.chunks(IMPORT_CHUNK_ROWS) {
            let mut valid = Vec::with_capacity(chunk.len());
            for row in chunk {
                number += 1;
                let mut reasons = row.problems.clone();
                // A value that could not be converted is reported once, not again as missing.
                reasons.extend(
                    field_problems(&schema, &row.fields)
                        .into_iter()
                        .filter(|p| !row.unconverted.contains(&p.field))
                        .map(|p| p.message),
                );
                if reasons.is_empty() {
                    valid.push(row.fields.clone());
                } else {
                    report.refused.push(RefusedRow {
                        row: number,
                        label: row.label.clone(),
                        reasons,
                    });
                }
            }
            report.imported += valid.len() as u64;
            if !valid.is_empty() {
                self.insert_many(table, valid)?;
            }
            progress(ImportProgress {
                done: number,
                total,
            });
        }
        if total == 0 {
            progress(ImportProgress { done: 0, total: 0 });
        }
        tracing::info!(
            table,
            rows = report.rows,
            imported = report.imported,
            refused = report.refused.len(),
            "import done"
        );
        Ok(report)
    }

    /// Writes the live rows of `table` (all, or those of `ids` in that order) to `path`
    /// in the format its extension names, through a temporary file renamed into place.
    /// Returns the number of people written.
    pub fn export_file(
        &self,
        table: &str,
        path: &Path,
        ids: Option<&[RowId]>,
    ) -> Result<u64, ClientError> {
        let format = Format::from_path(path)?;
        let (data, count) = self.export(table, format, ids)?;
        let io = |source: std::io::Error| {
            ClientError::BadInput(format!("cannot write {}: {source}", path.display()))
        };
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut file = tempfile_in(dir).map_err(io)?;
        file.1.write_all(&data).map_err(io)?;
        file.1.sync_all().map_err(io)?;
        drop(file.1);
        std::fs::rename(&file.0, path).map_err(|source| {
            let _ = std::fs::remove_file(&file.0);
            io(source)
        })?;
        Ok(count)
    }

    /// The live rows of `table` (all, or those of `ids` in that order) as a file in
    /// `format`, and their number.
    pub fn export(
        &self,
        table: &str,
        format: Format,
        ids: Option<&[RowId]>,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        let schema = self.schema().table(table)?.clone();
        let rows: Vec<Fields> = match ids {
            Some(ids) => ids
                .iter()
                .map(|id| self.get(table, *id).map(|r| r.fields))
                .collect::<Result<_, _>>()?,
            None => {
                let mut all = Vec::new();
                loop {
                    let query = ListQuery {
                        limit: MAX_LIST_LIMIT,
                        offset: all.len() as u64,
                        ..ListQuery::default()
                    };
                    let page = self.list(table, &query)?;
                    let last = page.len() < MAX_LIST_LIMIT as usize;
                    all.extend(page.into_iter().map(|r| r.fields));
                    if last {
                        break all;
                    }
                }
            }
        };
        let data = match format {
            Format::Csv => csv::write(&schema, &rows)?,
            Format::Vcard => vcard::write(&schema, &rows),
        };
        Ok((data, rows.len() as u64))
    }
}

/// A new file in `dir` with a name no other export uses at once: its path and handle.
fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let path = dir.join(format!(".roster-export-{}.tmp", uuid::Uuid::now_v7()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use roster_protocol::Schema;
    use serde_json::json;

    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut schema = Schema::default_person();
        for column in &mut schema.tables[0].columns {
            column.format = match column.name.as_str() {
                "email" => Some(roster_protocol::ValueFormat::Email),
                "age" => Some(roster_protocol::ValueFormat::NonNegative),
                _ => None,
            };
        }
        let store = LocalStore::create(dir.path(), "http://127.0.0.1:9", &schema).unwrap();
        (dir, store)
    }

    fn names(store: &LocalStore) -> Vec<Fields> {
        let query = ListQuery {
            sort: Some("name".into()),
            ..ListQuery::default()
        };
        store
            .list("person", &query)
            .unwrap()
            .into_iter()
            .map(|r| r.fields)
            .collect()
    }

    #[test]
    fn format_comes_from_the_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/b.CSV")).unwrap(),
            Format::Csv
        );
        assert_eq!(
            Format::from_path(Path::new("x.vcf")).unwrap(),
            Format::Vcard
        );
        assert_eq!(
            Format::from_path(Path::new("x.vcard")).unwrap(),
            Format::Vcard
        );
        assert!(matches!(
            Format::from_path(Path::new("x.txt")),
            Err(ClientError::BadInput(_))
        ));
    }

    #[test]
    fn csv_import_refuses_bad_rows_with_every_reason_and_imports_the_rest() {
        let (_dir, store) = store();
        let file = "Name,E-mail,Age,Shoe size\n\
                    Ada,ada@example.org,36,40\n\
                    ,not-an-email,-3,41\n\
                    Bob,,x,42\n\
                    \"Lee, Jr.\",lee@example.org,,43\n";
        let mut calls = Vec::new();
        let report = store
            .import("person", Format::Csv, file.as_bytes(), &mut |p| {
                calls.push(p)
            })
            .unwrap();
        assert_eq!(report.rows, 4);
        assert_eq!(report.imported, 2);
        assert_eq!(report.ignored_columns, vec!["Shoe size"]);
        assert_eq!(report.refused.len(), 2);
        assert_eq!(report.refused[0].row, 2);
        assert_eq!(report.refused[0].label, "not-an-email");
        assert_eq!(
            report.refused[0].reasons,
            vec![
                "Name is required",
                "Email must look like name@example.org",
                "Age must be 0 or more"
            ]
        );
        assert_eq!(report.refused[1].row, 3);
        assert_eq!(
            report.refused[1].reasons,
            vec!["Age must be a whole number"]
        );
        assert_eq!(calls, vec![ImportProgress { done: 4, total: 4 }]);
        let people = names(&store);
        assert_eq!(people.len(), 2);
        assert_eq!(people[0]["name"], json!("Ada"));
        assert_eq!(people[0]["age"], json!(36));
        assert_eq!(people[1]["name"], json!("Lee, Jr."));
        assert_eq!(people[1]["age"], Value::Null);
        assert_eq!(
            store.status().unwrap().pending,
            2,
            "imports sync like edits"
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_writes_nothing() {
        let (_dir, store) = store();
        let mut progress = |_| {};
        for (format, data) in [
            (Format::Csv, &b"shoe,hat\n1,2\n"[..]),
            (Format::Csv, &b"name\n\xff\xfe\n"[..]),
            (Format::Csv, &b"name,name\nA,B\n"[..]),
            (Format::Vcard, &b"BEGIN:VCARD\nFN:A\n"[..]),
        ] {
            let error = store.import("person", format, data, &mut progress);
            assert!(matches!(error, Err(ClientError::BadInput(_))), "{error:?}");
        }
        assert_eq!(store.count("person", None).unwrap(), 0);
    }

    #[test]
    fn large_imports_report_progress_per_chunk() {
        let (_dir, store) = store();
        let mut file = String::from("name,age\n");
        for i in 0..2500 {
            file.push_str(&format!("P{i},{}\n", i % 90));
        }
        let mut calls = Vec::new();
        let report = store
            .import("person", Format::Csv, file.as_bytes(), &mut |p| {
                calls.push(p.done)
            })
            .unwrap();
        assert_eq!(report.imported, 2500);
        assert_eq!(calls, vec![1000, 2000, 2500]);
        assert_eq!(store.count("person", None).unwrap(), 2500);
    }

    #[test]
    fn export_then_import_gives_the_same_people_in_both_formats() {
        let (dir, store) = store();
        let people = [
            json!({"name": "Ada Lovelace", "email": "ada@example.org", "phone": "+44 20 7946 0000",
                   "age": 36, "city": "London", "notes": "Wrote; the \"first\" program,\nand more\\"}),
            json!({"name": "Zoë <b>Ü</b>", "email": null, "phone": null, "age": null,
                   "city": "Zürich, CH", "notes": "a long line ".repeat(30)}),
            json!({"name": "  Bob  ", "email": null, "phone": "555", "age": 0, "city": null,
                   "notes": null}),
        ];
        for person in &people {
            store
                .insert("person", person.as_object().unwrap().clone())
                .unwrap();
        }
        let before = names(&store);
        for name in ["people.csv", "people.vcf"] {
            let path = dir.path().join(name);
            assert_eq!(store.export_file("person", &path, None).unwrap(), 3);
            let (_other_dir, other) = self::store();
            let report = other.import_file("person", &path, &mut |_| {}).unwrap();
            assert_eq!(report.imported, 3, "{name}: {report:?}");
            assert!(report.refused.is_empty() && report.ignored_columns.is_empty());
            assert_eq!(names(&other), before, "{name}");
        }
    }

    #[test]
    fn export_of_listed_ids_writes_only_those() {
        let (_dir, store) = store();
        let a = store
            .insert("person", json!({"name": "A"}).as_object().unwrap().clone())
            .unwrap();
        store
            .insert("person", json!({"name": "B"}).as_object().unwrap().clone())
            .unwrap();
        let (data, count) = store.export("person", Format::Csv, Some(&[a.id])).unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            String::from_utf8(data).unwrap(),
            "name,email,phone,age,city,notes\nA,,,,,\n"
        );
    }
}
