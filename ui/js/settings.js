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
  $("subscribe-form").addEventListener("submit", (e) => { e.preventDefault(); subscribe(); });
  $("sync-everything").addEventListener("click", () =>
    changeSlice(() => api.syncEverything()));
  showSecurityWarning = wireSecurity("setting");
}

export async function loadSettings() {
  clearErrors();
  loadSubscriptions().catch((e) => console.error(e));
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
  $("setting-protocol").value = settings.protocol;
  $("setting-schema_file").value = settings.schema_file ?? "";
  showSecurityWarning();
  const connected = settings.connection === "server";
  $("switch-server").textContent = connected ? "Switch server" : "Connect";
  $("hint-server_url").textContent = connected
    ? "To use another server, enter its address and token and press Switch server."
    : "Not connected yet: enter your server's address and access token, then press Connect. The people on this device move to that server.";
  $("about").replaceChildren(
    el("dt", {}, "Version"), el("dd", {}, info.version),
    el("dt", {}, "Data folder"), el("dd", { "data-testid": "about-data-dir" }, info.data_dir),
    el("dt", {}, "Device id"), el("dd", {}, info.client_id));
}

function clearErrors() {
  for (const name of [...FIELDS, "schema_file"]) {
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

/** `city=Paris, city=Lyon, age=5` as parameters: a name given twice is a list. */
export function parseParams(text) {
  const params = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) throw { message: `"${part}" is not name=value` };
    const name = part.slice(0, at).trim();
    const raw = part.slice(at + 1).trim();
    const value = /^-?\d+$/.test(raw) ? Number(raw) : raw === "true" ? true : raw === "false" ? false : raw;
    if (!(name in params)) params[name] = value;
    else if (Array.isArray(params[name])) params[name].push(value);
    else params[name] = [params[name], value];
  }
  return params;
}

function describe(subscription) {
  const values = Object.entries(subscription.params || {})
    .map(([name, value]) => `${name} = ${Array.isArray(value) ? value.join(" or ") : value}`);
  return values.length ? `${subscription.name}: ${values.join(", ")}` : subscription.name;
}

async function loadSubscriptions() {
  const list = await api.subscriptions();
  $("subscriptions-state").textContent = list === null
    ? "This device holds all the people of its data set."
    : list.length === 0
      ? "This device holds only people it has not sent yet."
      : "This device holds only the people these subscriptions match:";
  $("subscriptions-list").replaceChildren(...(list || []).map((subscription) => {
    const remove = el("button", { type: "button", class: "link", "data-testid": "unsubscribe" }, "Remove");
    remove.addEventListener("click", () =>
      changeSlice(() => api.unsubscribe(subscription.name, subscription.params || {})));
    return el("li", { "data-testid": "subscription" }, el("span", {}, describe(subscription)), " ", remove);
  }));
  $("sync-everything").hidden = list === null;
}

async function changeSlice(action) {
  const error = $("subscribe-error");
  error.hidden = true;
  try {
    await action();
    await loadSubscriptions();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

async function subscribe() {
  const name = $("subscribe-name").value.trim();
  let params;
  try {
    if (!name) throw { message: "Enter the name of a subscription" };
    params = parseParams($("subscribe-params").value);
  } catch (e) {
    $("subscribe-error").textContent = e.message;
    $("subscribe-error").hidden = false;
    return;
  }
  await changeSlice(async () => {
    await api.subscribe(name, params);
    $("subscribe-name").value = "";
    $("subscribe-params").value = "";
  });
}
