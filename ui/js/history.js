// The conflict history: every conflict this device was told about, newest first.

import { api } from "./api.js";
import { $, el, fmtDateTime, labelFor, show, toast } from "./util.js";
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
  rule_kept_theirs: "The server's version won by this device's rule",
  rule_kept_mine: "This device's version won by this device's rule",
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
  return null;
}

/** Names for every entry: from the entry, another entry about the same row, or the
 *  live row; "(deleted person)" when none is known. */
async function namesOf(entries) {
  const byId = new Map();
  for (const entry of entries) {
    const name = nameOf(entry);
    if (name && !byId.has(entry.id)) byId.set(entry.id, name);
  }
  for (const entry of entries) {
    if (byId.has(entry.id)) continue;
    try {
      const record = await api.get(entry.table, entry.id);
      byId.set(entry.id, show(record.fields[firstColumn()]));
    } catch {
      byId.set(entry.id, "(deleted person)");
    }
  }
  return byId;
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
  const names = await namesOf(entries);
  $("history-body").replaceChildren(...entries.map((entry) => el("tr", { "data-testid": "history-row" },
    el("td", { "data-testid": "history-when" }, fmtDateTime(entry.at_ms)),
    el("td", { "data-testid": "history-person" }, names.get(entry.id)),
    el("td", {}, KIND_TEXT[entry.kind] ?? labelFor(entry.kind)),
    el("td", { "data-testid": "history-outcome" }, RESOLUTION_TEXT[entry.resolution] ?? labelFor(entry.resolution)))));
}
