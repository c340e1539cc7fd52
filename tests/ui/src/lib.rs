//! Harness of the WebDriver UI tests: an Xvfb display, the real `roster-server` binary on
//! a free port of 127.0.0.1, and the real `roster-app` binary driven through
//! `tauri-driver` (which runs WebKitWebDriver), each app instance with its own data dir.
//!
//! Nothing here skips: a missing Xvfb, tauri-driver, WebKitWebDriver or binary fails the
//! test with a message saying what to install or build (`cargo xtask test` does both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use roster_testkit::display::{XDisplay, software_rendering, terminate};
use serde_json::{Value, json};

/// How long a UI expectation may take before the test fails.
pub const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// Server config of the UI tests: the app's person table, conflicts deferred to the
/// clients so a person resolves them in the Conflicts view (shared with `cargo xtask run`).
pub const SERVER_CONFIG: &str = include_str!("../../../config/person-defer-to-client.toml");

/// The screenshots the README shows, kept in `docs/screenshots/`.
pub const DOC_SCREENSHOTS: &[&str] = &[
    "list",
    "list-phone",
    "editor",
    "conflicts",
    "history",
    "status-syncing",
    "status-offline",
    "connect",
    "conflicts-phone",
    "history-phone",
    "import",
    "trash",
];

/// The workspace root (two levels above this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Finds `program` on `PATH`, or in `$CARGO_HOME/bin` / `~/.cargo/bin` (where
/// `cargo install` puts tauri-driver).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits until something accepts TCP connections on `addr`; on failure, stops `child`'s
/// process group and fails the test.
fn wait_for_port(addr: SocketAddr, what: &str, child: &mut Child) {
    let deadline = Instant::now() + UI_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_group(child);
    panic!("{what} did not listen on {addr} within {UI_TIMEOUT:?}");
}

/// Kills the process group led by `child`: tauri-driver with its WebKitWebDriver and the
/// app it launched, so nothing outlives the test.
fn kill_group(child: &mut Child) {
    terminate(child, true);
}

/// A private X display (Xvfb) for the app windows, stopped on drop.
pub struct Display(XDisplay);

impl Display {
    /// Starts `Xvfb :N` on the first free display number from 99 (1280x900, 24 bit).
    pub fn start() -> Self {
        Self(XDisplay::start(99).unwrap_or_else(|error| {
            panic!(
                "cannot start Xvfb: {error} (the UI tests need it: apt-get install xvfb; \
                 `cargo xtask test` installs it)"
            )
        }))
    }

    /// The value for `DISPLAY`, e.g. `:99`.
    pub fn name(&self) -> String {
        self.0.name()
    }
}

/// One device on a server: an app window on its own display, with its own data dir.
pub struct Device {
    /// The window.
    pub app: App,
    // Dropped after the app (fields drop in order): the window closes first.
    _display: Display,
    _dir: tempfile::TempDir,
}

impl Device {
    /// Launches a window on `server`; `label` names it in the logs.
    pub async fn launch(server: &roster_e2e::TestServer, label: &str) -> Self {
        let display = Display::start();
        let dir = tempfile::tempdir().expect("a temp dir");
        let app = App::launch(
            &display.name(),
            dir.path(),
            &server.url(),
            server.token(),
            label,
        )
        .await;
        Self {
            app,
            _display: display,
            _dir: dir,
        }
    }

    /// Closes the window.
    pub async fn quit(self) {
        self.app.quit().await;
    }
}

/// Two devices on one server: two app windows, each with its own display (WebKit's
/// screenshots hang for a window another one covers) and its own data dir, named
/// "Laptop" and "Phone" and syncing only on edits, the change feed and "Sync now".
pub struct TwoDevices {
    /// The "Laptop" window.
    pub first: App,
    /// The "Phone" window.
    pub second: App,
    // Dropped after the apps (fields drop in order): the windows close first.
    _displays: (Display, Display),
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl TwoDevices {
    /// Launches both windows on `server`; `label` prefixes their log labels.
    pub async fn launch(server: &roster_e2e::TestServer, label: &str) -> Self {
        let displays = (Display::start(), Display::start());
        let dirs = (
            tempfile::tempdir().expect("a temp dir"),
            tempfile::tempdir().expect("a temp dir"),
        );
        let launch = |display: &Display, dir: &tempfile::TempDir, which: &str| {
            let (display, dir) = (display.name(), dir.path().to_path_buf());
            let label = format!("{label}-{which}");
            async move { App::launch(&display, &dir, &server.url(), server.token(), &label).await }
        };
        let first = launch(&displays.0, &dirs.0, "first").await;
        let second = launch(&displays.1, &dirs.1, "second").await;
        first.slow_interval("Laptop").await;
        second.slow_interval("Phone").await;
        Self {
            first,
            second,
            _displays: displays,
            _dirs: dirs,
        }
    }

    /// Closes both windows.
    pub async fn quit(self) {
        self.first.quit().await;
        self.second.quit().await;
    }
}

/// Starts the real `roster-server` with [`SERVER_CONFIG`] on a free port of 127.0.0.1,
/// with the end-to-end tests' harness (`kill` stops it, `restart` brings it back on the
/// same port and database).
pub fn start_server() -> roster_e2e::TestServer {
    roster_e2e::TestServer::start_with_config(SERVER_CONFIG)
}

/// [`start_server`] with the change feed off (`max_streams = 0`): the apps poll on
/// their interval and never go live, so a test can let two devices edit the same row
/// before either hears of the other's edit (and the apps' fallback to polling runs).
pub fn start_server_without_feed() -> roster_e2e::TestServer {
    roster_e2e::TestServer::start_with_config(&format!("max_streams = 0\n{SERVER_CONFIG}"))
}

/// One running app instance: its own data dir, its own tauri-driver, one WebDriver
/// session. Dropping it ends the session's processes.
pub struct App {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    data_dir: PathBuf,
    /// `ROSTER_SERVER_URL` and `ROSTER_TOKEN` for the app, or none (an installed app).
    env: Option<(String, String)>,
    display: String,
    /// A label for screenshots and messages, e.g. "first".
    pub label: String,
}

impl App {
    /// Starts `roster-app` with `data_dir`, `server_url` and the bearer `token` (passed as
    /// `ROSTER_TOKEN`) on the X display `display` (e.g. `:99`), and waits until its
    /// records view is shown.
    pub async fn launch(
        display: &str,
        data_dir: &Path,
        server_url: &str,
        token: &str,
        label: &str,
    ) -> Self {
        let env = Some((server_url.to_owned(), token.to_owned()));
        let app = Self::start(display, data_dir, env, label).await;
        app.wait_for("view-records").await;
        app.wait_ready().await;
        app
    }

    /// Starts `roster-app` like the desktop menu does: no `ROSTER_SERVER_URL`, no
    /// `ROSTER_TOKEN` (only the data dir, so the test owns it). Waits until the UI has
    /// started, on whatever view it shows first.
    pub async fn launch_installed(display: &str, data_dir: &Path, label: &str) -> Self {
        let app = Self::start(display, data_dir, None, label).await;
        app.wait_ready().await;
        app
    }

    /// Starts `roster-app` like [`App::launch_installed`], but with no key at hand: no
    /// passphrase file and no keyring (its D-Bus session address leads nowhere), so the
    /// app asks for a passphrase on its unlock screen. Waits until the UI has started.
    pub async fn launch_without_key(display: &str, data_dir: &Path, label: &str) -> Self {
        let app = Self::start_with(display, data_dir, None, label, false).await;
        app.wait_ready().await;
        app
    }

    /// Waits until the UI says it has started (`body[data-ready]`).
    pub async fn wait_ready(&self) {
        self.eventually("the UI has started", || async {
            let ready = self
                .client
                .execute("return document.body.dataset.ready === 'true';", vec![])
                .await
                .ok()?;
            (ready == Value::Bool(true)).then_some(())
        })
        .await;
    }

    async fn start(
        display: &str,
        data_dir: &Path,
        env: Option<(String, String)>,
        label: &str,
    ) -> Self {
        Self::start_with(display, data_dir, env, label, true).await
    }

    /// [`App::start`]; with `passphrase_file`, the store's passphrase comes from a file
    /// (`ROSTER_PASSPHRASE_FILE`), else no key is at hand at all.
    async fn start_with(
        display: &str,
        data_dir: &Path,
        env: Option<(String, String)>,
        label: &str,
        passphrase_file: bool,
    ) -> Self {
        let driver_path = find_program("tauri-driver").expect(
            "tauri-driver is not installed: `cargo install tauri-driver --locked` \
             (`cargo xtask test` does it)",
        );
        assert!(
            find_program("WebKitWebDriver").is_some(),
            "WebKitWebDriver is not installed: apt-get install webkit2gtk-driver \
             (`cargo xtask test` does it)"
        );
        // No keyring under Xvfb: the store's passphrase comes from a file, as in a
        // scripted run (the unlock screen is not what these tests are about).
        std::fs::create_dir_all(data_dir).unwrap();
        let passphrase = data_dir.join("test-passphrase");
        std::fs::write(&passphrase, "ui test passphrase\n").unwrap();
        let port = free_port();
        let native_port = free_port();
        let mut command = Command::new(driver_path);
        command
            .args(["--port", &port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .env("DISPLAY", display)
            .env("ROSTER_DATA_DIR", data_dir)
            .env_remove("ROSTER_SERVER_URL")
            .env_remove("ROSTER_TOKEN")
            // A raw key file of the caller's environment would bypass the key paths
            // these tests choose.
            .env_remove("ROSTER_STORE_KEY_FILE");
        if passphrase_file {
            command.env("ROSTER_PASSPHRASE_FILE", &passphrase);
        } else {
            command.env_remove("ROSTER_PASSPHRASE_FILE").env(
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/roster-test-bus",
            );
        }
        if let Some((server_url, token)) = &env {
            command
                .env("ROSTER_SERVER_URL", server_url)
                .env("ROSTER_TOKEN", token);
        }
        let mut driver = software_rendering(&mut command)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("cannot start tauri-driver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_port(addr, "tauri-driver", &mut driver);
        // tauri-driver listens before the WebKitWebDriver it started does, and drops a
        // new-session request it cannot forward yet.
        let native: SocketAddr = format!("127.0.0.1:{native_port}").parse().unwrap();
        wait_for_port(native, "WebKitWebDriver", &mut driver);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "tauri:options".into(),
            json!({ "application": roster_e2e::bin_path("roster-app") }),
        );
        caps.insert("browserName".into(), json!("wry"));
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&format!("http://{addr}"))
            .await;
        let client = match client {
            Ok(client) => client,
            Err(error) => {
                kill_group(&mut driver);
                panic!("cannot open a WebDriver session on the app: {error}");
            }
        };
        Self {
            client,
            driver,
            data_dir: data_dir.to_path_buf(),
            env,
            display: display.to_owned(),
            label: label.to_owned(),
        }
    }

    /// Names the device and sets a 10-minute sync interval in Settings, so only edits,
    /// the change feed and "Sync now" trigger rounds; back on the People view after.
    pub async fn slow_interval(&self, device: &str) {
        self.click("nav-settings").await;
        self.fill("setting-device_name", device).await;
        self.fill("setting-sync_interval_secs", "600").await;
        self.click("save-settings").await;
        self.wait_for("settings-saved").await;
        self.wait_contains("device-name", device).await;
        self.click("nav-records").await;
    }

    /// Opens the editor on a new person, fills `fields` (`data-testid` suffix, text) and
    /// saves; waits for "Saved".
    pub async fn create_person(&self, fields: &[(&str, &str)]) {
        self.click("nav-records").await;
        self.click("new-record").await;
        self.wait_contains("editor-title", "New").await;
        self.fill_and_save(fields).await;
    }

    /// Fills `fields` in the open editor and saves; waits for "Saved".
    pub async fn fill_and_save(&self, fields: &[(&str, &str)]) {
        for (name, value) in fields {
            self.fill(&format!("field-{name}"), value).await;
        }
        self.click("save").await;
        self.wait_for("saved").await;
    }

    /// Shows the People view and types `text` into the search box.
    pub async fn search(&self, text: &str) {
        self.click("nav-records").await;
        self.fill("search", text).await;
    }

    /// The text of column `column` in the topmost list row, if any row is shown.
    pub async fn first_cell(&self, column: &str) -> Option<String> {
        let script = format!(
            "const rows = [...document.querySelectorAll('[data-testid=\"record-row\"]')]; \
             rows.sort((a, b) => a.offsetTop - b.offsetTop); \
             const cell = rows[0] && rows[0].querySelector('[data-col=\"{column}\"]'); \
             return cell ? cell.textContent : null;"
        );
        match self.client.execute(&script, vec![]).await.ok()? {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The texts of the list rows on screen.
    pub async fn row_texts(&self) -> Vec<String> {
        self.texts("[data-testid=\"record-row\"]").await
    }

    /// Closes the app and starts it again on the same data dir.
    pub async fn restart(self) -> Self {
        let (data_dir, env, display, label) = (
            self.data_dir.clone(),
            self.env.clone(),
            self.display.clone(),
            self.label.clone(),
        );
        self.quit().await;
        match env {
            Some((server_url, token)) => {
                Self::launch(&display, &data_dir, &server_url, &token, &label).await
            }
            None => Self::launch_installed(&display, &data_dir, &label).await,
        }
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// Waits until the page has no element whose content is wider than it (nothing scrolls
    /// sideways) inside the element with `data-testid="ID"`.
    pub async fn wait_no_sideways_scroll(&self, testid: &str) {
        let script = format!(
            "const v = document.querySelector('[data-testid=\"{testid}\"]'); \
             return !!v && v.scrollWidth <= v.clientWidth + 1 && \
               document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1;"
        );
        self.eventually(&format!("{testid} does not scroll sideways"), || async {
            (self.js(&script).await == Value::Bool(true)).then_some(())
        })
        .await;
    }

    /// Ends the WebDriver session (which closes the app) and stops tauri-driver.
    pub async fn quit(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        // Give the app a moment to exit on its own before the driver goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill_group(&mut self.driver);
    }

    /// The element with `data-testid="ID"`.
    pub async fn find(&self, testid: &str) -> Element {
        self.wait_for(testid).await
    }

    /// Waits for an element with `data-testid="ID"` to exist and be displayed.
    pub async fn wait_for(&self, testid: &str) -> Element {
        let selector = format!("[data-testid=\"{testid}\"]");
        self.eventually(&format!("{testid} is shown"), || async {
            let element = self.client.find(Locator::Css(&selector)).await.ok()?;
            element
                .is_displayed()
                .await
                .ok()
                .filter(|shown| *shown)
                .map(|_| element)
        })
        .await
    }

    /// Waits until no displayed element has `data-testid="ID"`.
    pub async fn wait_gone(&self, testid: &str) {
        let selector = format!("[data-testid=\"{testid}\"]");
        self.eventually(&format!("{testid} is gone"), || async {
            let elements = self.client.find_all(Locator::Css(&selector)).await.ok()?;
            for element in elements {
                if element.is_displayed().await.unwrap_or(false) {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// Prints a step of the test to stderr, so a failing run shows how far it got.
    pub fn log(&self, message: &str) {
        eprintln!("[ui {}] {message}", self.label);
    }

    /// Clicks the element with `data-testid="ID"` once it is shown.
    pub async fn click(&self, testid: &str) {
        self.log(&format!("click {testid}"));
        let element = self.wait_for(testid).await;
        // Inside a scrolled pane WebKitWebDriver does not always bring it into view.
        let _ = self
            .client
            .execute(
                "arguments[0].scrollIntoView({block: 'center'});",
                vec![serde_json::to_value(&element).unwrap_or(Value::Null)],
            )
            .await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("[{}] cannot click {testid}: {e}", self.label));
    }

    /// Replaces the text of the input with `data-testid="ID"`.
    pub async fn fill(&self, testid: &str, text: &str) {
        self.log(&format!("fill {testid} with {text:?}"));
        let element = self.wait_for(testid).await;
        element.clear().await.unwrap();
        if !text.is_empty() {
            element.send_keys(text).await.unwrap();
        }
    }

    /// The visible text of the element with `data-testid="ID"`.
    pub async fn text(&self, testid: &str) -> String {
        self.wait_for(testid).await;
        self.js_text(&format!("[data-testid=\"{testid}\"]"))
            .await
            .unwrap_or_default()
    }

    /// The current value of the input with `data-testid="ID"`.
    pub async fn value(&self, testid: &str) -> String {
        self.wait_for(testid)
            .await
            .prop("value")
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Waits until the text of `data-testid="ID"` satisfies `check`; returns it.
    pub async fn wait_text(
        &self,
        testid: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let selector = format!("[data-testid=\"{testid}\"]");
        self.log(&format!("wait until {testid} {what}"));
        self.eventually(&format!("{testid} {what}"), || async {
            let text = self.js_text(&selector).await?;
            check(&text).then_some(text)
        })
        .await
    }

    /// The rendered text (`innerText`) of the first element matching `selector`, if that
    /// element is shown.
    pub async fn js_text(&self, selector: &str) -> Option<String> {
        let value = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); \
                 return e && e.getClientRects().length > 0 ? e.innerText : null;",
                vec![Value::String(selector.to_owned())],
            )
            .await
            .ok()?;
        match value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// Waits until the text of `data-testid="ID"` contains `needle`.
    pub async fn wait_contains(&self, testid: &str, needle: &str) -> String {
        self.wait_text(testid, &format!("contains {needle:?}"), |text| {
            text.contains(needle)
        })
        .await
    }

    /// The rendered texts of every displayed element matching the CSS `selector`.
    pub async fn texts(&self, selector: &str) -> Vec<String> {
        let value = self
            .client
            .execute(
                "return [...document.querySelectorAll(arguments[0])] \
                 .filter(e => e.getClientRects().length > 0).map(e => e.innerText);",
                vec![Value::String(selector.to_owned())],
            )
            .await
            .unwrap_or(Value::Null);
        match value {
            Value::Array(items) => items
                .into_iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Clicks the list row whose text contains `needle`, opening it in the editor. A row
    /// redrawn between finding and clicking it (a sync round reloaded the list) is
    /// looked up again.
    pub async fn open_row(&self, needle: &str) {
        self.eventually(&format!("a row containing {needle:?} opened"), || async {
            let rows = self
                .client
                .find_all(Locator::Css("[data-testid=\"record-row\"]"))
                .await
                .ok()?;
            let texts = self.texts("[data-testid=\"record-row\"]").await;
            let index = texts.iter().position(|t| t.contains(needle))?;
            rows.into_iter().nth(index)?.click().await.ok()
        })
        .await;
        self.wait_for("editor").await;
    }

    /// Waits until `server` holds a person called `name`: the sign that this app pushed
    /// it, where the UI's own marks of a pending row may not be drawn yet.
    pub async fn wait_until_server_holds(&self, server: &roster_e2e::TestServer, name: &str) {
        self.eventually(&format!("the server holds {name}"), || async {
            let live = server.live("person").await;
            live.values()
                .any(|row| row["name"] == json!(name))
                .then_some(())
        })
        .await;
    }

    /// Polls `probe` until it yields a value, failing the test after [`UI_TIMEOUT`]
    /// with `what` and a screenshot saved for the post-mortem.
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            // A WebDriver call that never answers counts as a failed probe.
            if let Ok(Some(value)) = tokio::time::timeout(Duration::from_secs(10), probe()).await {
                return value;
            }
            if Instant::now() > deadline {
                let shot = self
                    .screenshot(&format!("failure-{}", sanitise(what)))
                    .await;
                let status = tokio::time::timeout(
                    Duration::from_secs(10),
                    self.js_text("[data-testid=\"status-bar\"]"),
                )
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| "(not readable)".to_owned());
                panic!(
                    "[{}] timed out after {UI_TIMEOUT:?} waiting until {what}; status bar: \
                     {status}; screenshot: {}",
                    self.label,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the window as `target/ui-screenshots/NAME.png`; with
    /// `ROSTER_UPDATE_SCREENSHOTS=1`, the ones in [`DOC_SCREENSHOTS`] also as
    /// `docs/screenshots/NAME.png`. Returns the first path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        // WebKit takes a snapshot at its next rendering update; on a page where nothing
        // changes that may never come, so change something invisible first.
        let _ = self
            .client
            .execute(
                "const m = document.createElement('div'); \
                 m.style.cssText = 'position:fixed;left:0;top:0;width:1px;height:1px;opacity:0.01'; \
                 document.body.append(m); requestAnimationFrame(() => setTimeout(() => m.remove(), 500));",
                vec![],
            )
            .await;
        let png = tokio::time::timeout(Duration::from_secs(20), self.client.screenshot())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let dir = workspace_root().join("target").join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        if std::env::var("ROSTER_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1")
            && DOC_SCREENSHOTS.contains(&name)
        {
            let docs = workspace_root().join("docs").join("screenshots");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
        }
        path
    }

    /// Resizes the window (for the phone-width screenshots).
    pub async fn resize(&self, width: u32, height: u32) {
        let _ = self.client.set_window_size(width, height).await;
    }
}

/// A string safe as a file name.
fn sanitise(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect()
}

impl Drop for App {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
