//! The cost of the encrypted device store (SQLCipher): a first sync of the same server's
//! rows into an encrypted store and into a plain one, interleaved A/B in one run (plain,
//! encrypted, plain, encrypted, ...) so drift of the machine hits both alike; reported as
//! the ratio of the median times.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use roster_client::{ConnectionSecurity, Credentials, StoreKey, SyncClient};

use super::{Ctx, discard, label};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, seed};
use crate::stats::median;

/// Pairs of pulls (one plain, one encrypted each).
const PAIRS: usize = 3;

/// One first sync of the server's rows into a new store in `dir`, encrypted with `key`
/// when given; returns its seconds and the rows it pulled.
async fn pull_once(
    dir: &std::path::Path,
    url: &str,
    token: &str,
    key: Option<&StoreKey>,
) -> Result<(f64, u64)> {
    let credentials = Credentials::token(token);
    let client = SyncClient::init_with_key(
        dir,
        url,
        &credentials,
        &ConnectionSecurity::default(),
        key,
        None,
    )
    .await?;
    let started = Instant::now();
    let report = client.sync().await?;
    let secs = started.elapsed().as_secs_f64();
    drop(client);
    discard(dir);
    Ok((secs, report.downloaded))
}

/// Seeds one server with the first pull size and pulls it [`PAIRS`] times into a plain
/// and an encrypted (random 256-bit raw key) store, alternating.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let Some(n) = ctx.sizes.pull.first().copied() else {
        return Ok(());
    };
    let dir = ctx.dir("encryption")?;
    let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let deadline = Instant::now() + ctx.max_pull.max(Duration::from_secs(60));
    let seeded = seed(&raw, n, &mut RowGen::new(21), deadline).await?;
    if seeded.rows < n {
        bail!("seeding reached only {} of {n} rows", seeded.rows);
    }
    let key = StoreKey::generate()?;
    let (mut plain, mut encrypted) = (Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        for encrypt in [false, true] {
            let client_dir = dir.join(format!("client-{pair}-{encrypt}"));
            let (secs, rows) = pull_once(
                &client_dir,
                server.url(),
                server.token(),
                encrypt.then_some(&key),
            )
            .await?;
            if rows != n {
                bail!("pulled {rows} of {n} rows");
            }
            if encrypt {
                encrypted.push(secs);
            } else {
                plain.push(secs);
            }
        }
    }
    server.check_alive()?;
    let (plain_secs, encrypted_secs) = (median(&plain), median(&encrypted));
    ctx.record(
        Entry::new(
            "encryption",
            format!("first sync of {} rows, encrypted vs plain store", label(n)),
            n,
        )
        .timed(encrypted_secs)
        .metric("plain_s", plain_secs)
        .metric("encrypted_s", encrypted_secs)
        .metric("ratio", encrypted_secs / plain_secs.max(1e-9))
        .note(format!(
            "SQLCipher with a raw 256-bit key vs no key, same server and rows, in process; \
             median of {PAIRS} interleaved A/B pairs"
        )),
    );
    drop(server);
    discard(&dir);
    Ok(())
}
