//! The Roster desktop app: a Tauri 2 shell over [`roster_client`].
//!
//! * [`startup`]: data dir, settings, local store (offline-capable first start), sync task.
//! * [`commands`]: the typed commands the UI invokes; errors are [`error::AppError`].
//! * [`background`]: the sync task (interval, debounced after edits, on reconnect, backoff).
//! * [`settings`]: settings persisted with tauri-plugin-store.
//! * [`conflicts`]: this device's conflict handling.
//! * [`store_key`]: the encrypted store's key (OS keyring, or a passphrase).
//!
//! The UI is plain HTML/CSS/JS in `ui/`, loaded without a build step.

pub mod background;
pub mod commands;
pub mod conflicts;
pub mod error;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store_key;

use tauri::{Manager, WebviewUrl, WebviewWindowBuilder};

/// When [`run`] began: the origin of the startup log's timings.
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Label of the app's one window.
pub const MAIN_WINDOW: &str = "main";

/// The window title for a device name.
pub fn window_title(device_name: &str) -> String {
    format!("Roster — {device_name}")
}

/// Opens the main window. On the desktop it gets a title, a size and, per data dir, its
/// own web storage (so two instances never share it).
fn main_window(
    app: &mut tauri::App,
    title: &str,
    webview_dir: Option<std::path::PathBuf>,
) -> tauri::Result<()> {
    let builder = WebviewWindowBuilder::new(app, MAIN_WINDOW, WebviewUrl::App("index.html".into()));
    #[cfg(desktop)]
    let builder = {
        let mut builder = builder
            .title(title)
            .inner_size(1100.0, 720.0)
            .min_inner_size(360.0, 480.0);
        if let Some(dir) = webview_dir {
            builder = builder.data_directory(dir);
        }
        builder
    };
    #[cfg(mobile)]
    let _ = (title, webview_dir);
    builder.build()?;
    Ok(())
}

/// Logs to stderr; `RUST_LOG` filters (default: info).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts the app: plugins, commands, state, the main window. Returns when the last
/// window closes; exits with status 1 if Tauri itself cannot start.
#[cfg_attr(mobile, tauri::mobile_entry_point)]
pub fn run() {
    STARTED.get_or_init(std::time::Instant::now);
    init_tracing();
    let result = tauri::Builder::default()
        .plugin(tauri_plugin_store::Builder::default().build())
        .invoke_handler(tauri::generate_handler![
            commands::app::get_schema,
            commands::app::app_info,
            commands::app::first_page_painted,
            commands::records::list_records,
            commands::records::get_record,
            commands::records::create_record,
            commands::records::update_record,
            commands::records::delete_record,
            commands::exchange::import_file,
            commands::exchange::import_text,
            commands::exchange::export_file,
            commands::trash::list_trash,
            commands::trash::restore_from_trash,
            commands::trash::empty_trash,
            commands::links::open_contact,
            commands::sync::sync_now,
            commands::conflicts::list_conflicts,
            commands::conflicts::resolve_conflict,
            commands::conflicts::resolve_all_conflicts,
            commands::conflicts::conflict_history,
            commands::conflicts::rule_decisions,
            commands::sync::sync_status,
            commands::settings::get_settings,
            commands::settings::set_settings,
            commands::subscriptions::list_subscriptions,
            commands::subscriptions::subscribe,
            commands::subscriptions::unsubscribe,
            commands::subscriptions::sync_everything,
            commands::connect::test_connection,
            commands::connect::connect_server,
            commands::connect::work_offline,
            commands::connect::local_data,
            commands::connect::reset_local_data,
            commands::unlock::unlock_store,
        ])
        .setup(|app| {
            let state = startup::start(app.handle());
            let title = match state.settings() {
                Ok(settings) => window_title(&settings.device_name),
                Err(_) => "Roster".to_owned(),
            };
            let webview_dir = state.get().ok().map(|ready| ready.data_dir.join("webview"));
            app.manage(state);
            main_window(app, &title, webview_dir)?;
            Ok(())
        })
        .run(tauri::generate_context!());
    if let Err(error) = result {
        tracing::error!(%error, "roster-app failed");
        std::process::exit(1);
    }
}
