// Choosing the server: the first-run connect screen ("Test connection", "Connect",
// "Work offline for now") and the same flow from Settings (switch server, reset).

import { api } from "./api.js";
import { $, askDialog, plural, toast } from "./util.js";

const FIELDS = ["server_url", "token", "ca_cert", "schema_file"];

function clearErrors(prefix) {
  for (const name of FIELDS) {
    const node = $(`error-${prefix}-${name}`);
    if (node) { node.hidden = true; node.textContent = ""; }
    $(`${prefix}-${name}`)?.removeAttribute("aria-invalid");
  }
}

/** Shows `message` next to field `field` of the form whose ids start with `prefix`. */
export function fieldError(prefix, field, message) {
  const node = field && $(`error-${prefix}-${field}`);
  if (!node) return false;
  node.textContent = message;
  node.hidden = false;
  $(`${prefix}-${field}`).setAttribute("aria-invalid", "true");
  return true;
}

/** The server kind (Roster, or an existing Azure Mobile Apps backend with the schema
 *  file it needs), the CA file and cleartext fields of the form whose ids start with
 *  `prefix`: written once here for the connect screen and Settings, put where the page
 *  has a `data-security-fields="PREFIX"` slot. */
function securityFields(p) {
  return `<div class="field">
    <label for="${p}-protocol">Server kind</label>
    <select id="${p}-protocol" data-testid="${p}-protocol" aria-describedby="hint-${p}-protocol">
      <option value="roster">Roster server</option>
      <option value="azure-mobile-apps">Azure Mobile Apps backend</option>
    </select>
    <small id="hint-${p}-protocol" class="hint" data-testid="hint-${p}-protocol"></small>
  </div>
  <div class="field" data-ama-only="${p}" hidden>
    <label for="${p}-schema_file">Schema file</label>
    <input id="${p}-schema_file" data-testid="${p}-schema_file" type="text" placeholder="/path/to/schema.json"
           autocomplete="off" spellcheck="false" aria-describedby="error-${p}-schema_file hint-${p}-schema_file">
    <small id="hint-${p}-schema_file" class="hint">An Azure Mobile Apps backend does not say which tables it has:
      the JSON file of the tables and columns to sync (as <code>roster init --schema</code> takes).</small>
    <span class="field-error" id="error-${p}-schema_file" data-testid="error-${p}-schema_file" hidden></span>
  </div>
  <div class="field">
    <label for="${p}-ca_cert">CA certificate file (optional)</label>
    <input id="${p}-ca_cert" data-testid="${p}-ca_cert" type="text" placeholder="/path/to/ca.pem"
           autocomplete="off" spellcheck="false" aria-describedby="error-${p}-ca_cert hint-${p}-ca_cert">
    <small id="hint-${p}-ca_cert" class="hint">For a server with a certificate from its own authority: that
      authority's PEM file, trusted besides the system's.</small>
    <span class="field-error" id="error-${p}-ca_cert" data-testid="error-${p}-ca_cert" hidden></span>
  </div>
  <div class="field">
    <label class="check"><input type="checkbox" id="${p}-allow_http" data-testid="${p}-allow_http">
      Allow unencrypted HTTP to this server</label>
    <p class="field-error" id="warning-${p}-allow_http" data-testid="warning-${p}-allow_http" role="alert" hidden>
      Unencrypted: anyone on the network between this device and the server can read and change
      your people and your access token. Allow it only on a network you trust.</p>
  </div>`;
}

// Module code runs after the page is parsed and before any view reads these fields.
for (const slot of document.querySelectorAll("[data-security-fields]")) {
  slot.outerHTML = securityFields(slot.dataset.securityFields);
}

/** The server kind and connection security the form whose ids start with `prefix` asks
 *  for: {ca_cert_path, allow_http, protocol, schema_file}. */
export function readSecurity(prefix) {
  return {
    ca_cert_path: $(`${prefix}-ca_cert`).value.trim(),
    allow_http: $(`${prefix}-allow_http`).checked,
    protocol: $(`${prefix}-protocol`).value,
    schema_file: $(`${prefix}-schema_file`).value.trim(),
  };
}

const PROTOCOL_HINT = {
  roster: "Roster's own sync server: changes arrive live, conflicts follow the server's rules.",
  "azure-mobile-apps": "An existing Azure Mobile Apps backend (ZUMO-API-VERSION 2.0.0): one request per change, conflicts decided on this device, and no live changes — the app asks for changes at every sync interval.",
};

/** Shows the cleartext warning of form `prefix` while its box is ticked, and the schema
 *  file field while the server kind is Azure Mobile Apps. Returns the function that
 *  brings both up to date (after the fields were filled in). */
export function wireSecurity(prefix) {
  const box = $(`${prefix}-allow_http`);
  const kind = $(`${prefix}-protocol`);
  const sync = () => {
    $(`warning-${prefix}-allow_http`).hidden = !box.checked;
    document.querySelector(`[data-ama-only="${prefix}"]`).hidden = kind.value !== "azure-mobile-apps";
    $(`hint-${prefix}-protocol`).textContent = PROTOCOL_HINT[kind.value] ?? "";
  };
  box.addEventListener("change", sync);
  kind.addEventListener("change", sync);
  sync();
  return sync;
}

/** Connects to `url` with `token` and `security` (see readSecurity); asks before leaving
 *  changes behind. Resolves true when connected (the page reloads on the new data), false
 *  otherwise; errors go to `showError(field, message)`. */
export async function connectTo(url, token, showError, security = {}) {
  try {
    await api.connect(url, token, false, security);
  } catch (error) {
    if (error.kind !== "needs_confirm") { showError(error.field, error.message); return false; }
    const answer = await askDialog("Switch server?",
      `${error.message} The data of this device stays on disk, but the app starts over from the new server.`,
      "Switch and start over", "Sync them first");
    if (answer === "alt") {
      try { await api.syncNow(); } catch (e) { showError(null, e.message); return false; }
      const data = await api.localData();
      if (data.pending > 0) {
        showError(null, `${plural(data.pending, "change is", "changes are")} still waiting; try again when the old server answers.`);
        return false;
      }
    } else if (answer !== "ok") {
      return false;
    }
    try {
      await api.connect(url, token, true, security);
    } catch (e) {
      showError(e.field, e.message);
      return false;
    }
  }
  location.reload();
  return true;
}

/** Sets up the connect screen. */
export function initConnect() {
  wireSecurity("connect");
  const result = $("connect-result");
  const show = (field, message, ok = false) => {
    if (!fieldError("connect", field, message)) {
      result.textContent = message;
      result.hidden = false;
    }
    result.classList.toggle("ok", ok);
  };
  $("test-connection").addEventListener("click", async () => {
    clearErrors("connect");
    result.hidden = true;
    $("test-connection").disabled = true;
    try {
      const report = await api.testConnection($("connect-server_url").value.trim(),
        $("connect-token").value.trim(), readSecurity("connect"));
      result.textContent = report.message;
      result.title = report.detail;
      result.hidden = false;
      result.classList.toggle("ok", report.ok);
      if (report.field) $(`connect-${report.field}`).setAttribute("aria-invalid", "true");
    } catch (error) {
      show(error.field, error.message);
    } finally {
      $("test-connection").disabled = false;
    }
  });
  $("connect-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors("connect");
    result.hidden = true;
    $("connect").disabled = true;
    result.textContent = "Connecting…";
    result.hidden = false;
    const ok = await connectTo($("connect-server_url").value.trim(), $("connect-token").value.trim(),
      (field, message) => { result.hidden = true; show(field, message); }, readSecurity("connect"));
    $("connect").disabled = false;
    if (!ok && result.textContent === "Connecting…") result.hidden = true;
  });
  $("work-offline").addEventListener("click", async () => {
    try {
      await api.workOffline();
      location.reload();
    } catch (error) {
      toast(error.message);
    }
  });
}

/** Settings → "Reset local data…": warns with the count of waiting changes. */
export async function resetLocalData() {
  const data = await api.localData();
  const waiting = data.pending > 0
    ? `${plural(data.pending, "change has", "changes have")} not reached the server yet and would be lost. `
    : "";
  const answer = await askDialog("Reset local data?",
    `${waiting}Roster starts over with an empty list${data.connection === "server" ? " and downloads everything from the server again" : ""}. The old data stays on disk in the data folder.`,
    "Reset", data.pending > 0 && data.connection === "server" ? "Sync first" : null);
  if (answer === "alt") {
    try { await api.syncNow(); toast("Synced. Press Reset again to start over."); } catch (e) { toast(e.message); }
    return;
  }
  if (answer !== "ok") return;
  try {
    await api.resetLocal(true);
    location.reload();
  } catch (error) {
    toast(error.message);
  }
}
