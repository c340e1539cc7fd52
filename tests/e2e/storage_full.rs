//! A full disk, against the real server binary: the database sits on a small tmpfs
//! (mounted by the test, which needs root; it says so and skips where mounting fails),
//! pushes fill it, and the push that no longer fits is answered 507 `storage_full` with
//! `Retry-After`, changing nothing; once the disk is larger the same push succeeds, with
//! no restart. On PostgreSQL the test database is moved to a tablespace on that tmpfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use roster_e2e::{Backend, TWO_TABLE_CONFIG, TestDatabase, TestServer};
use roster_protocol::PROTOCOL_VERSION;
use serde_json::{Value, json};

/// A tmpfs mounted for one test; unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`, or says why it cannot and returns `None`.
    fn mount(megabytes: u32) -> Option<Self> {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("disk");
        std::fs::create_dir(&dir).unwrap();
        let options = format!("size={megabytes}m,mode=0777");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run mount: {error}");
                return None;
            }
        }
        // The PostgreSQL cluster runs as its own user: let it reach and own the disk.
        set_mode(parent.path(), 0o755);
        Some(Self {
            dir,
            _parent: parent,
        })
    }

    /// Grows the tmpfs to `megabytes`.
    fn grow(&self, megabytes: u32) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "cannot grow the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A push of `rows` tasks with 4 KiB titles of random text (hardly compressible, also
/// by PostgreSQL's TOAST).
fn push_body(rows: usize) -> Value {
    let changes: Vec<Value> = (0..rows)
        .map(|_| {
            let title: String = (0..64)
                .map(|_| uuid::Uuid::new_v4().simple().to_string())
                .collect();
            json!({"table": "task", "id": uuid::Uuid::now_v7(), "op": "insert",
                   "fields": {"title": title}})
        })
        .collect();
    json!({"protocol": PROTOCOL_VERSION, "client_id": uuid::Uuid::now_v7(), "since": 0,
           "changes": changes, "pull_limit": 0})
}

async fn post(server: &TestServer, body: &Value) -> (u16, Option<String>, Value) {
    let response = server
        .http()
        .post(format!("{}/v1/sync", server.url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_full_disk_answers_507_storage_full_changes_nothing_and_recovers() {
    let Some(disk) = SmallDisk::mount(24) else {
        return;
    };
    if Backend::from_env().is_postgres() {
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&disk.dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot give the tmpfs to the postgres user"
        );
    }
    let db = TestDatabase::create_in(&disk.dir);
    let server = TestServer::start_with_database(TWO_TABLE_CONFIG, db);

    let mut stored = 0usize;
    let mut refused = None;
    for _ in 0..400 {
        let body = push_body(50);
        let (status, retry_after, answer) = post(&server, &body).await;
        match status {
            200 => stored += answer["acks"].as_array().unwrap().len(),
            _ => {
                refused = Some((status, retry_after, answer, body));
                break;
            }
        }
    }
    let (status, retry_after, answer, body) =
        refused.expect("24 MB never filled up after 400 pushes of 200 KiB");
    assert_eq!(status, 507, "{answer}");
    assert_eq!(answer["error"]["code"], json!("storage_full"), "{answer}");
    assert!(retry_after.is_some(), "507 without Retry-After");
    let tasks = server.live("task").await.len();
    assert_eq!(tasks, stored, "the refused push changed something");

    disk.grow(64);
    let (status, _, answer) = post(&server, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["acks"].as_array().unwrap().len(), 50);
    assert_eq!(server.live("task").await.len(), stored + 50);
    drop(server);
}
