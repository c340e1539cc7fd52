// The app's commands and events, over Tauri's global API (app.withGlobalTauri).
// Every command rejects with {kind, message, field?} (see src-tauri/src/error.rs).

const tauri = window.__TAURI__;

/** Calls a command; rejects with an {kind, message, field?} object. */
export async function call(command, args = {}) {
  if (!tauri) {
    throw { kind: "internal", message: "Not running inside the Roster app (no Tauri API)." };
  }
  try {
    return await tauri.core.invoke(command, args);
  } catch (error) {
    if (error && typeof error === "object" && "message" in error) throw error;
    throw { kind: "internal", message: String(error) };
  }
}

/** Subscribes to an event; `handler` gets its payload. */
export function on(event, handler) {
  if (!tauri) return Promise.resolve(() => {});
  return tauri.event.listen(event, (e) => handler(e.payload));
}

/** The server kind and connection security arguments of a command
 *  ({ca_cert_path, allow_http, protocol, schema_file}). */
function securityArgs(security) {
  return {
    ca_cert_path: security.ca_cert_path || null,
    allow_http: Boolean(security.allow_http),
    protocol: security.protocol || null,
    schema_file: security.schema_file || null,
  };
}

export const api = {
  schema: () => call("get_schema"),
  appInfo: () => call("app_info"),
  firstPagePainted: (rows) => call("first_page_painted", { rows }),
  list: (table, query) => call("list_records", { table, query }),
  get: (table, id) => call("get_record", { table, id }),
  create: (table, fields) => call("create_record", { table, fields }),
  update: (table, id, fields) => call("update_record", { table, id, fields }),
  remove: (table, id) => call("delete_record", { table, id }),
  trash: (table) => call("list_trash", { table }),
  restore: (table, id) => call("restore_from_trash", { table, id }),
  emptyTrash: (table) => call("empty_trash", { table }),
  openContact: (action, value) => call("open_contact", { action, value }),
  importFile: (table, path) => call("import_file", { table, path }),
  importText: (table, name, text) => call("import_text", { table, name, text }),
  exportFile: (table, path, ids, search) => call("export_file", { table, path, ids, search }),
  syncNow: () => call("sync_now"),
  syncStatus: () => call("sync_status"),
  conflicts: () => call("list_conflicts"),
  resolve: (table, id, choice) => call("resolve_conflict", { table, id, choice }),
  resolveAll: (side) => call("resolve_all_conflicts", { side }),
  history: (limit) => call("conflict_history", { limit }),
  settings: () => call("get_settings"),
  saveSettings: (settings) => call("set_settings", { settings }),
  subscriptions: () => call("list_subscriptions"),
  subscribe: (name, params) => call("subscribe", { name, params }),
  unsubscribe: (name, params) => call("unsubscribe", { name, params }),
  syncEverything: () => call("sync_everything"),
  testConnection: (server_url, token, security = {}) =>
    call("test_connection", { server_url, token, ...securityArgs(security) }),
  connect: (server_url, token, replace_local, security = {}) =>
    call("connect_server", { server_url, token, replace_local, ...securityArgs(security) }),
  workOffline: () => call("work_offline"),
  localData: () => call("local_data"),
  resetLocal: (confirmed) => call("reset_local_data", { confirmed }),
  ruleDecisions: (sinceMs) => call("rule_decisions", { sinceMs }),
  unlock: (passphrase) => call("unlock_store", { passphrase }),
};
