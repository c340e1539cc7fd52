// The Trash view: people deleted on this device, newest first, each with Restore; the
// restore is an edit like any other, so the next sync brings the person back everywhere.

import { api } from "./api.js";
import { $, el, confirmDialog, fmtDateTime, plural, toast } from "./util.js";

let table = null;
let nameColumn = null;

function nameOf(entry) {
  const value = nameColumn ? entry.fields[nameColumn] : null;
  return value ? String(value) : "(no name)";
}

async function restore(entry, button) {
  button.disabled = true;
  try {
    await api.restore(table, entry.id);
    toast(`Restored ${nameOf(entry)}`);
    await loadTrash();
  } catch (error) {
    button.disabled = false;
    toast(`Cannot restore ${nameOf(entry)}: ${error.message}`);
  }
}

/** Reloads the list of deleted people. */
export async function loadTrash() {
  let entries;
  try {
    entries = await api.trash(table);
  } catch (error) {
    toast(error.message);
    return;
  }
  $("no-trash").hidden = entries.length > 0;
  $("empty-trash").hidden = entries.length === 0;
  $("trash-list").replaceChildren(...entries.map((entry) => {
    const button = el("button", { type: "button", "data-testid": "trash-restore", text: "Restore" });
    button.addEventListener("click", () => restore(entry, button));
    return el("li", { class: "trash-item", "data-testid": "trash-item" },
      el("span", { class: "trash-name", "data-testid": "trash-name", text: nameOf(entry) }),
      el("span", { class: "hint", text: `deleted ${fmtDateTime(entry.deleted_at_ms)}` }),
      button);
  }));
}

async function emptyTrash() {
  const count = $("trash-list").children.length;
  const ok = await confirmDialog("Empty the trash?",
    `${plural(count, "person", "people")} will be gone for good from this device's trash.`, "Empty trash");
  if (!ok) return;
  try {
    await api.emptyTrash(table);
    await loadTrash();
  } catch (error) {
    toast(error.message);
  }
}

/** Wires the Trash view for `tableName`, whose people are named by `columns`' first
 *  text column. */
export function initTrash(tableName, columns) {
  table = tableName;
  nameColumn = (columns.find((c) => c.name === "name") ?? columns.find((c) => c.type === "text"))?.name ?? null;
  $("empty-trash").addEventListener("click", emptyTrash);
}
