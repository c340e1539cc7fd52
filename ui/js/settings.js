// The Settings view.

import { api } from "./api.js";
import { $, el } from "./util.js";
import { connectTo, readSecurity, resetLocalData, wireSecurity } from "./connect.js";

const FIELDS = ["server_url", "token", "device_name", "sync_interval_secs", "conflict_mode"];
let onSaved = () => {};
let showSecurityWarning = () => {};

export function initSettings(savedCallback) {
  onSaved = savedCallback;
  $("settings-form").addEventListener("submit", (e) => { e.preventDefault(); save(); });
  $("settings-form").addEventListener("input", () => { $("settings-saved").hidden = true; });
  $("switch-server").addEventListener("click", async () => {
    clearErrors();
    $("switch-server").disabled = true;
    await connectTo($("setting-server_url").value.trim(), $("setting-token").value.trim(),
      (field, message) => showError({ field, message }), readSecurity("setting"));
    $("switch-server").disabled = false;
  });
  $("reset-local").addEventListener("click", () => resetLocalData());
  showSecurityWarning = wireSecurity("setting");
}

export async function loadSettings() {
  clearErrors();
  $("settings-saved").hidden = true;
  const [settings, info] = await Promise.all([api.settings(), api.appInfo()]);
  api.localData().then((data) => {
    $("setting-allow_http").checked = data.allow_http;
    $("setting-ca_cert").placeholder = data.custom_ca
      ? "A CA of its own is trusted (leave empty to keep it)"
      : "/path/to/ca.pem";
    showSecurityWarning();
  }).catch((e) => console.error(e));
  for (const name of FIELDS) $(`setting-${name}`).value = String(settings[name]);
  const connected = settings.connection === "server";
  $("switch-server").textContent = connected ? "Switch server" : "Connect";
  $("server-hint").textContent = connected
    ? "To use another server, enter its address and token and press Switch server."
    : "Not connected yet: enter your server's address and access token, then press Connect. The people on this device move to that server.";
  $("about").replaceChildren(
    el("dt", {}, "Version"), el("dd", {}, info.version),
    el("dt", {}, "Data folder"), el("dd", { "data-testid": "about-data-dir" }, info.data_dir),
    el("dt", {}, "Device id"), el("dd", {}, info.client_id));
}

function clearErrors() {
  for (const name of FIELDS) {
    const node = $(`error-setting-${name}`);
    if (node) { node.hidden = true; node.textContent = ""; }
    $(`setting-${name}`).removeAttribute("aria-invalid");
  }
  $("settings-error").hidden = true;
}

function showError(error) {
  const node = error.field && $(`error-setting-${error.field}`);
  if (node) {
    node.textContent = error.message;
    node.hidden = false;
    $(`setting-${error.field}`).setAttribute("aria-invalid", "true");
    $(`setting-${error.field}`).focus();
  } else {
    $("settings-error").textContent = error.message;
    $("settings-error").hidden = false;
  }
}

async function save() {
  clearErrors();
  const interval = $("setting-sync_interval_secs").value.trim();
  if (!/^\d+$/.test(interval)) {
    showError({ field: "sync_interval_secs", message: "Enter a whole number of seconds" });
    return;
  }
  const settings = {
    server_url: $("setting-server_url").value.trim(),
    device_name: $("setting-device_name").value.trim(),
    sync_interval_secs: Number(interval),
    conflict_mode: $("setting-conflict_mode").value,
    token: $("setting-token").value.trim(),
    connection: "server",
  };
  try {
    const saved = await api.saveSettings(settings);
    $("settings-saved").hidden = false;
    onSaved(saved);
  } catch (error) {
    showError(error);
  }
}
