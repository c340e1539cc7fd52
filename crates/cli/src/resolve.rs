//! Turning `roster resolve` arguments into a [`Choice`].

use roster_client::{Choice, ClientError, LocalStore};
use roster_protocol::RowId;

use crate::args::ChoiceArg;
use crate::fields;

/// The choice for the open conflict on row `id`. `merge` starts from this device's row,
/// takes the `theirs` fields from the server's row and then applies the `set`
/// assignments; the result must be a valid row.
pub fn choice(
    store: &LocalStore,
    table: &str,
    id: RowId,
    choice: ChoiceArg,
    theirs: &[String],
    set: &[String],
) -> anyhow::Result<Choice> {
    if choice != ChoiceArg::Merge && !(theirs.is_empty() && set.is_empty()) {
        return Err(ClientError::BadInput("--theirs and --set go with merge only".into()).into());
    }
    match choice {
        ChoiceArg::KeepMine => return Ok(Choice::KeepMine),
        ChoiceArg::KeepTheirs => return Ok(Choice::KeepTheirs),
        ChoiceArg::Merge => {}
    }
    let conflict = store
        .open_conflicts()?
        .into_iter()
        .find(|c| c.table == table && c.id == id)
        .ok_or_else(|| ClientError::BadInput(format!("no open conflict on {table} {id}")))?;
    let schemas = store.schema();
    let schema = schemas.table(table)?;
    let mut row = conflict
        .local
        .clone()
        .or_else(|| conflict.remote.clone())
        .unwrap_or_default();
    for field in theirs {
        if schema.column(field).is_none() {
            return Err(ClientError::BadInput(format!("{table} has no field {field:?}")).into());
        }
        let value = conflict
            .remote
            .as_ref()
            .and_then(|r| r.get(field))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        row.insert(field.clone(), value);
    }
    row.extend(fields::parse(schema, set)?);
    Ok(Choice::Merge(row))
}
