// The conflict history: every conflict this device was told about, newest first.

import { api } from "./api.js";
import { $, el, fmtTime, labelFor, show, toast } from "./util.js";
import { KIND_TEXT } from "./conflicts.js";

const RESOLUTION_TEXT = {
  server_wins: "The server's version was kept",
  client_wins: "This device's version was kept",
  deferred: "Left for a person to decide",
  kept_mine: "You kept this device's version",
  kept_theirs: "You kept the server's version",
  merge_row: "A merged version was kept",
  auto_merged: "Different fields changed; merged automatically",
  rollback: "The whole sync was undone",
  merged: "You merged both versions",
};

let firstColumn = () => "name";

export function initHistory(columns) {
  firstColumn = () => columns()[0]?.name ?? "name";
}

/** A row's display name from whichever side of the record has one. */
function nameOf(entry) {
  const key = firstColumn();
  for (const side of [entry.outcome, entry.client_row, entry.server_row]) {
    if (!side) continue;
    const fields = side.fields ?? side.data ?? side;
    if (fields && fields[key]) return show(fields[key]);
  }
  return entry.id;
}

export async function loadHistory() {
  let entries;
  try {
    entries = await api.history(200);
  } catch (error) {
    toast(`Cannot load the history: ${error.message}`);
    return;
  }
  $("no-history").hidden = entries.length > 0;
  $("history-table").hidden = entries.length === 0;
  $("history-body").replaceChildren(...entries.map((entry) => el("tr", { "data-testid": "history-row" },
    el("td", {}, fmtTime(entry.at_ms)),
    el("td", {}, nameOf(entry)),
    el("td", {}, KIND_TEXT[entry.kind] ?? labelFor(entry.kind)),
    el("td", {}, RESOLUTION_TEXT[entry.resolution] ?? labelFor(entry.resolution)))));
}
