//! The first pull of a Roster client in Azure Mobile Apps mode (`--protocol
//! azure-mobile-apps`) through the server's `/tables`, against the same client's first
//! pull through Roster's own `/v1/sync`, from the same server in the same run.
//!
//! The AMA pull asks pages of 1000 rows (`$top`, the table protocol's largest) by
//! `updatedAt ge`, each a separate request and local transaction; Roster's protocol pulls
//! pages of 2000 rows with the next request pipelined. Rows seeded in large batches share
//! their `updatedAt` millisecond, so the AMA pull also goes through runs of equal
//! `updatedAt` by key.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use roster_client::{AmaSettings, ConnectionSecurity, Credentials, Protocol, SyncClient};

use super::{Ctx, discard, label, new_client};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, seed};
use crate::stats::CpuMeter;

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.pull.first().copied().unwrap_or(100_000);
    let dir = ctx.dir("tables")?;
    let server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let deadline = Instant::now() + ctx.max_pull.max(Duration::from_secs(60));
    let seeded = seed(&raw, n, &mut RowGen::new(17), deadline).await?;
    if seeded.rows < n {
        bail!("seeding reached only {} of {n} rows", seeded.rows);
    }

    let roster = new_client(&dir.join("roster"), server.url(), server.token()).await?;
    let (client_cpu, server_cpu) = (CpuMeter::start("self"), server.cpu());
    let t = Instant::now();
    let report = roster.sync().await?;
    let roster_secs = t.elapsed().as_secs_f64();
    let roster_cpu = (client_cpu.secs(), server_cpu.secs());
    if report.downloaded != n {
        bail!(
            "the Roster-protocol pull got {} of {n} rows",
            report.downloaded
        );
    }

    let ama = SyncClient::init_with_protocol(
        &dir.join("ama"),
        server.url(),
        &Credentials::token(server.token()),
        &ConnectionSecurity::default(),
        None,
        Some(roster.store().schema().as_ref().clone()),
        (Protocol::AzureMobileApps, AmaSettings::default()),
    )
    .await?;
    let (client_cpu, server_cpu) = (CpuMeter::start("self"), server.cpu());
    let t = Instant::now();
    let ama_report = ama.sync().await?;
    let ama_secs = t.elapsed().as_secs_f64();
    let ama_cpu = (client_cpu.secs(), server_cpu.secs());
    if ama_report.downloaded != n {
        bail!("the /tables pull got {} of {n} rows", ama_report.downloaded);
    }
    if ama.store().count("person", None)? != n {
        bail!("the /tables pull left a store without {n} rows");
    }
    ctx.record(
        Entry::new(
            "tables",
            format!(
                "first pull of {} rows through /tables (AMA protocol)",
                label(n)
            ),
            n,
        )
        .timed(ama_secs)
        .metric("requests", f64::from(ama_report.requests))
        .metric("roster_protocol_s", roster_secs)
        .metric("ratio_to_roster_protocol", ama_secs / roster_secs.max(1e-9))
        .metric("client_cpu_s", ama_cpu.0)
        .metric("server_cpu_s", ama_cpu.1)
        .metric("roster_protocol_client_cpu_s", roster_cpu.0)
        .metric("roster_protocol_server_cpu_s", roster_cpu.1)
        .target(
            "server CPU of the /tables pull at most 2x that of /v1/sync (list pages pass \
             the stored JSON through)",
            ama_cpu.1 <= 2.0 * roster_cpu.1,
        )
        .note(format!(
            "same client library and server; /v1/sync took {roster_secs:.2} s in {} requests",
            report.requests
        )),
    );
    drop((roster, ama, server));
    discard(&dir);
    Ok(())
}
