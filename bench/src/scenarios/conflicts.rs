//! N rows edited on both sides, resolved in one sync round under each policy.
//!
//! Set-up per policy: a client inserts and pushes N rows; another writer updates every
//! row on the server (`name` and `age`) through raw requests; the client edits every row
//! locally (`name` and `city`) with `LocalStore::update`. The timed round then pushes N
//! updates that all meet a `both_updated` conflict on `name` (the other fields merge on
//! their own), and adopts the outcomes.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use roster_client::{ListQuery, Record};
use roster_protocol::Fields;
use serde_json::Value;

use super::{Ctx, discard, label, new_client};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, person_config, push_raw, update_change};
use crate::stats::CpuMeter;

pub const POLICIES: [&str; 4] = ["server-wins", "client-wins", "merge", "defer-to-client"];

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.conflicts;
    for policy in POLICIES {
        let dir = ctx.dir(&format!("conflicts-{policy}"))?;
        let config = person_config(policy);
        let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), Some(&config))?;
        let raw = Raw::new(server.url(), server.token())?;
        let client = new_client(&dir.join("client"), server.url(), server.token()).await?;
        let store = client.store_handle();
        let rows = RowGen::new(300).fields(usize::try_from(n)?);
        tokio::task::spawn_blocking(move || store.insert_many("person", rows)).await??;
        client.sync().await?;

        let store = client.store_handle();
        let records: Vec<Record> = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            loop {
                let page = store.list(
                    "person",
                    &ListQuery {
                        limit: 10_000,
                        offset: all.len() as u64,
                        ..ListQuery::default()
                    },
                )?;
                if page.is_empty() {
                    return anyhow::Ok(all);
                }
                all.extend(page);
            }
        })
        .await??;
        let mut server_edits = Vec::with_capacity(records.len());
        for record in &records {
            let Some(base_version) = record.base_version else {
                bail!("row {} was not acknowledged by the set-up push", record.id);
            };
            let mut fields = record.fields.clone();
            let name = text(&fields, "name");
            fields.insert("name".into(), Value::String(format!("{name} (server)")));
            let age = fields.get("age").and_then(Value::as_i64).unwrap_or(30);
            fields.insert("age".into(), Value::from(age + 1));
            server_edits.push(update_change(
                record.id,
                base_version,
                &record.fields,
                &fields,
            ));
        }
        push_raw(
            &raw,
            server_edits,
            Instant::now() + Duration::from_secs(300),
        )
        .await?;

        let store = client.store_handle();
        let started = Instant::now();
        let edited = tokio::task::spawn_blocking(move || {
            for record in &records {
                let mut patch = Fields::new();
                let name = text(&record.fields, "name");
                patch.insert("name".into(), Value::String(format!("{name} (device)")));
                patch.insert("city".into(), Value::String("Quimper".into()));
                store.update("person", record.id, patch)?;
            }
            anyhow::Ok(records.len())
        })
        .await??;
        let edit_secs = started.elapsed().as_secs_f64();
        tracing::info!(
            policy,
            edited,
            ms_per_edit = edit_secs * 1e3 / edited.max(1) as f64,
            "local edits made"
        );

        let (client_cpu, server_cpu) = (CpuMeter::start("self"), server.cpu());
        let started = Instant::now();
        let report = client.sync().await?;
        let secs = started.elapsed().as_secs_f64();
        let (client_cpu, server_cpu) = (client_cpu.secs(), server_cpu.secs());
        server.check_alive()?;
        let mut entry = Entry::new(
            "conflicts",
            format!("{} both_updated rows, {policy}", label(n)),
            n,
        )
        .timed(secs)
        .vs(ctx.baseline_for(n))
        .metric("conflicts", report.conflicts_detected as f64)
        .metric("deferred", report.conflicts_deferred as f64)
        .metric("requests", f64::from(report.requests))
        .metric("client_cpu_s", client_cpu)
        .metric("server_cpu_s", server_cpu);
        if report.conflicts_detected != n {
            entry = entry.note(format!(
                "{} conflicts reported for {n} conflicting rows",
                report.conflicts_detected
            ));
        }
        ctx.record(entry);
        drop(client);
        drop(server);
        discard(&dir);
    }
    Ok(())
}

fn text(fields: &Fields, name: &str) -> String {
    fields
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
