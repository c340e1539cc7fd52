// Import and export: CSV or vCard files picked with the system's file picker or named by
// their path (the format comes from the extension). An import shows a progress bar fed by "import-progress" events and, after
// it, how many people were added and every refused row with its reasons.

import { api, on } from "./api.js";
import { $, el, fmtNumber, plural } from "./util.js";
import { currentSearch } from "./records.js";

let table = null;

function showProgress({ done, total }) {
  const bar = $("import-progress");
  bar.hidden = false;
  bar.max = Math.max(total, 1);
  bar.value = done;
  $("import-progress-text").hidden = false;
  $("import-progress-text").textContent = `${fmtNumber(done)} of ${fmtNumber(total)} rows`;
}

function showReport(report) {
  const lines = [`Imported ${plural(report.imported, "person", "people")} of ${fmtNumber(report.rows)} rows.`];
  if (report.refused.length) lines.push(`${plural(report.refused.length, "row was", "rows were")} refused (below).`);
  if (report.ignored_columns.length) lines.push(`Skipped columns: ${report.ignored_columns.join(", ")}.`);
  $("import-result").textContent = lines.join(" ");
  $("import-result").hidden = false;
  const body = $("import-refused-body");
  body.replaceChildren(...report.refused.map((row) =>
    el("tr", { "data-testid": "import-refused-row" },
      el("td", { text: String(row.row) }),
      el("td", { text: row.label || "(empty)" }),
      el("td", {}, el("ul", {}, row.reasons.map((reason) => el("li", { text: reason })))))));
  $("import-refused").hidden = report.refused.length === 0;
}

function showError(node, error) {
  node.textContent = error.message;
  node.hidden = false;
}

/** The import to run: the picked file's text (read here), else the typed path. */
async function importRequest() {
  const picked = $("import-picker").files?.[0];
  if (picked && !$("import-path").value.trim()) {
    const text = await picked.text();
    return api.importText(table, picked.name, text);
  }
  return api.importFile(table, $("import-path").value);
}

async function runImport(event) {
  event.preventDefault();
  const button = $("import-run");
  $("import-error").hidden = true;
  $("import-result").hidden = true;
  $("import-refused").hidden = true;
  button.disabled = true;
  showProgress({ done: 0, total: 0 });
  try {
    showReport(await importRequest());
  } catch (error) {
    showError($("import-error"), error);
  } finally {
    button.disabled = false;
    $("import-progress").hidden = true;
    $("import-progress-text").hidden = true;
  }
}

async function runExport(event) {
  event.preventDefault();
  const button = $("export-run");
  $("export-error").hidden = true;
  $("export-result").hidden = true;
  button.disabled = true;
  try {
    const path = $("export-path").value;
    const search = $("export-matching").checked ? currentSearch() : null;
    const count = await api.exportFile(table, path, null, search || null);
    $("export-result").textContent = `Exported ${plural(count, "person", "people")} to ${path.trim()}.`;
    $("export-result").hidden = false;
  } catch (error) {
    showError($("export-error"), error);
  } finally {
    button.disabled = false;
  }
}

/** Called when the view is shown: offers to export only the people the People view's
 *  search finds, when it has one. */
export function showExchange() {
  const search = currentSearch();
  $("export-matching-label").hidden = !search;
  if (!search) $("export-matching").checked = false;
  $("export-matching-text").textContent = search ? `Only the people found by the search “${search}”` : "";
}

/** Wires the Import/Export view for `tableName`. */
export function initExchange(tableName) {
  table = tableName;
  $("import-form").addEventListener("submit", runImport);
  // Picking a file clears a typed path, and typing a path clears the pick.
  $("import-picker").addEventListener("change", () => { $("import-path").value = ""; });
  $("import-path").addEventListener("input", () => { $("import-picker").value = ""; });
  $("export-form").addEventListener("submit", runExport);
  on("import-progress", showProgress);
}
