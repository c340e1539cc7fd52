// The Conflicts view: base, mine and theirs side by side, differing fields highlighted;
// keep mine, keep theirs, pick field by field, or resolve all at once.

import { api } from "./api.js";
import { $, el, labelFor, show, toast, confirmDialog, plural } from "./util.js";

/** Words for each conflict kind, from this device's point of view. */
export const KIND_TEXT = {
  both_updated: "Changed on this device and on another one",
  client_updated_server_deleted: "Changed here, but deleted on another device",
  client_deleted_server_updated: "Deleted here, but changed on another device",
  both_deleted: "Deleted here and on another device",
  client_updated_purged: "Changed here, but deleted on another device some time ago",
  client_inserted_existing: "Created here with an id the server already has",
  client_inserted_deleted: "Created here with an id the server has deleted",
};

let schemaColumns = () => [];
let conflicts = [];

export function initConflicts(columns) {
  schemaColumns = columns;
  $("resolve-all-mine").addEventListener("click", () => resolveAll("keep_mine"));
  $("resolve-all-theirs").addEventListener("click", () => resolveAll("keep_theirs"));
}

/** Reloads the open conflicts. */
export async function loadConflicts() {
  try {
    conflicts = await api.conflicts();
  } catch (error) {
    toast(`Cannot load conflicts: ${error.message}`);
    return;
  }
  $("no-conflicts").hidden = conflicts.length > 0;
  $("resolve-all").hidden = conflicts.length < 2;
  $("conflict-list").replaceChildren(...conflicts.map(card));
}

function nameOf(conflict) {
  const first = schemaColumns()[0]?.name ?? "name";
  for (const side of [conflict.local, conflict.remote, conflict.base]) {
    if (side && side[first]) return show(side[first]);
  }
  return conflict.id;
}

function cell(side, column, testid, label, extraClass = "", absentText = "(deleted)") {
  if (!side) return el("td", { class: `absent ${extraClass}`, "data-testid": testid, "data-label": label }, absentText);
  const value = side[column];
  return el("td", { "data-testid": testid, class: extraClass, "data-label": label },
    value === null || value === undefined ? el("span", { class: "absent" }, "(empty)") : show(value));
}

/** Fields where `a` and `b` (two versions of a row) hold different values. */
function changedBetween(a, b) {
  if (!a || !b) return new Set();
  return new Set(schemaColumns().map((c) => c.name)
    .filter((name) => JSON.stringify(a[name] ?? null) !== JSON.stringify(b[name] ?? null)));
}

function card(conflict) {
  const differing = new Set(conflict.differing_fields ?? []);
  // One side deleted the row: what matters is what the other side changed since the
  // last version both knew (the base).
  const changedThere = conflict.local ? new Set() : changedBetween(conflict.base, conflict.remote);
  const changedHere = conflict.remote ? new Set() : changedBetween(conflict.base, conflict.local);
  for (const name of [...changedThere, ...changedHere]) differing.add(name);
  const canMerge = conflict.local && conflict.remote && differing.size > 0;
  const groupBase = `pick-${conflict.id}`;
  const rows = schemaColumns().map((c) => {
    const differs = differing.has(c.name);
    let pick = el("td", { class: "pick" });
    if (differs && canMerge) {
      pick = el("td", { class: "pick" },
        el("label", {},
          el("input", { type: "radio", name: `${groupBase}-${c.name}`, value: "mine", checked: true,
            "data-testid": `pick-${c.name}-mine`, "aria-label": `${labelFor(c.name)}: use mine` }), "Mine"),
        el("label", {},
          el("input", { type: "radio", name: `${groupBase}-${c.name}`, value: "theirs",
            "data-testid": `pick-${c.name}-theirs`, "aria-label": `${labelFor(c.name)}: use theirs` }), "Theirs"));
    }
    const note = changedThere.has(c.name) ? el("span", { class: "changed-note", "data-testid": `changed-there-${c.name}` }, " changed there")
      : changedHere.has(c.name) ? el("span", { class: "changed-note" }, " changed here") : null;
    return el("tr", { class: differs ? "differs" : "", "data-field": c.name },
      el("th", { scope: "row" }, labelFor(c.name), note),
      cell(conflict.base, c.name, `base-${c.name}`, "Base", "base-col", "(unknown)"),
      cell(conflict.local, c.name, `mine-${c.name}`, "Mine"),
      cell(conflict.remote, c.name, `theirs-${c.name}`, "Theirs"),
      pick);
  });
  const title = nameOf(conflict);
  const node = el("article", {
    class: "conflict",
    "data-testid": "conflict-card",
    "data-id": conflict.id,
    "aria-label": `Conflict on ${title}`,
  },
  el("h3", {}, title),
  el("p", { class: "kind", "data-testid": "conflict-kind" }, KIND_TEXT[conflict.kind] ?? labelFor(conflict.kind)),
  conflict.base && (!conflict.local || !conflict.remote) ? el("p", { class: "hint" },
    `Base shows the last version both devices knew; highlighted fields were changed ${conflict.local ? "here" : "on the other device"} since.`) : null,
  el("table", { class: "compare" },
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Field"),
      el("th", { scope: "col", class: "base-col" }, "Base"),
      el("th", { scope: "col" }, "Mine (this device)"),
      el("th", { scope: "col" }, "Theirs (server)"),
      el("th", { scope: "col", class: "pick" }, canMerge ? "Use" : ""))),
    el("tbody", {}, rows)),
  el("div", { class: "editor-actions" },
    el("button", { type: "button", class: "primary", "data-testid": "keep-mine",
      onclick: () => resolve(conflict, { choice: "keep_mine" }) }, "Keep mine"),
    el("button", { type: "button", "data-testid": "keep-theirs",
      onclick: () => resolve(conflict, { choice: "keep_theirs" }) }, "Keep theirs"),
    canMerge ? el("button", { type: "button", "data-testid": "apply-merge",
      onclick: () => resolve(conflict, { choice: "merge", fields: merged(conflict, node) }) },
    "Use picked values") : null));
  return node;
}

/** The row made of the picked side of each differing field (mine elsewhere). */
function merged(conflict, node) {
  const fields = { ...conflict.local };
  for (const name of conflict.differing_fields ?? []) {
    const theirs = node.querySelector(`input[data-testid="pick-${name}-theirs"]`);
    if (theirs?.checked) fields[name] = conflict.remote[name] ?? null;
  }
  return fields;
}

async function resolve(conflict, choice) {
  try {
    await api.resolve(conflict.table, conflict.id, choice);
    toast(`Resolved ${nameOf(conflict)}; syncing shortly.`);
  } catch (error) {
    toast(`Cannot resolve: ${error.message}`);
  }
  await loadConflicts();
}

async function resolveAll(side) {
  const which = side === "keep_mine" ? "this device's" : "the server's";
  const ok = await confirmDialog(`Resolve ${plural(conflicts.length, "conflict", "conflicts")}?`,
    `Every open conflict keeps ${which} version.`, "Resolve all");
  if (!ok) return;
  try {
    const n = await api.resolveAll(side);
    toast(`Resolved ${plural(n, "conflict", "conflicts")}; syncing shortly.`);
  } catch (error) {
    toast(`Cannot resolve: ${error.message}`);
  }
  await loadConflicts();
}
