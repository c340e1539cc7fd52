// Entry point: loads the schema, builds the views, follows the sync events.

import { api, on } from "./api.js";
import { $ } from "./util.js";
import { applySchema, initRecords, leaveEditor, onRecordsChanged, tableColumns } from "./records.js";
import { initConflicts, loadConflicts } from "./conflicts.js";
import { initHistory, loadHistory } from "./history.js";
import { initSettings, loadSettings } from "./settings.js";
import { initStatus, showStatus } from "./status.js";
import { initConnect } from "./connect.js";
import { showUnlock } from "./unlock.js";
import { initExchange, showExchange } from "./exchange.js";
import { initTrash, loadTrash } from "./trash.js";

const VIEWS = ["records", "conflicts", "history", "trash", "exchange", "settings", "help"];
let currentView = "records";

async function showView(view) {
  if (view !== currentView && currentView === "records" && !(await leaveEditor())) return;
  currentView = view;
  for (const name of VIEWS) {
    $(`view-${name}`).hidden = name !== view;
    const tab = document.querySelector(`.tab[data-view="${name}"]`);
    if (name === view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  if (view === "conflicts") loadConflicts();
  if (view === "history") loadHistory();
  if (view === "trash") loadTrash();
  if (view === "exchange") showExchange();
  if (view === "settings") loadSettings().catch((e) => console.error(e));
}

function showDevice(name) {
  $("device-name").textContent = name ? `· ${name}` : "";
}

async function start() {
  let info;
  let schema;
  try {
    [info, schema] = await Promise.all([api.appInfo(), api.schema()]);
  } catch (error) {
    if (error.kind === "locked") {
      showUnlock(error);
      return;
    }
    $("startup-error").textContent = error.message;
    $("startup-error").hidden = false;
    $("view-records").hidden = true;
    return;
  }
  showDevice(info.device_name);
  if (info.connection === "unset") {
    // First start of an installed app: name the server, or choose to work offline.
    $("view-records").hidden = true;
    $("view-connect").hidden = false;
    document.querySelector(".tabs").hidden = true;
    $("status-bar").hidden = true;
    initConnect();
    document.body.dataset.ready = "true";
    return;
  }
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  initRecords(schema);
  initConflicts(tableColumns);
  initHistory(tableColumns);
  const mainTable = schema.tables.find((t) => t.name === "person") ?? schema.tables[0];
  initExchange(mainTable.name);
  initTrash(mainTable.name, mainTable.columns);
  initSettings((settings) => showDevice(settings.device_name));
  initStatus(() => showView("conflicts"), () => showView("settings"));

  await on("sync-status", (status) => {
    const previous = showStatus(status);
    // A sync may have made the store follow a newer server schema (a new column).
    api.schema().then(applySchema).catch((error) => console.error(error));
    if (currentView === "conflicts" && previous && previous.open_conflicts !== status.open_conflicts) {
      loadConflicts();
    }
  });
  await on("records-changed", () => {
    onRecordsChanged();
    if (currentView === "conflicts") loadConflicts();
    if (currentView === "history") loadHistory();
    if (currentView === "trash") loadTrash();
  });
  showStatus(await api.syncStatus());
  document.body.dataset.ready = "true";
}

start();
