// The People view: a virtual list over server-side pages (smooth on 100k rows), search
// as you type, sortable columns, and the detail editor with inline validation errors.

import { api } from "./api.js";
import { $, el, askDialog, debounce, fmtNumber, labelFor, plural, show, toast, confirmDialog } from "./util.js";

const ROW_H = 44;       // must match --row-h in styles.css
const PAGE = 100;       // rows per list_records call
const OVERSCAN = 8;     // rows rendered above and below the viewport
const LONG_TEXT = 1000; // text columns longer than this get a textarea and stay out of the list

const state = {
  table: null,          // the table shown ("person" when the schema has it)
  columns: [],          // its column definitions
  listColumns: [],      // the columns shown in the list
  search: "",
  sort: null,
  descending: false,
  total: 0,
  pages: new Map(),     // page index -> rows
  stale: new Map(),     // pages from before the last reload, shown until replaced
  inflight: new Set(),  // page indexes being fetched
  known: false,         // whether `total` is known
  generation: 0,        // bumped by every reload; stale answers are dropped
  active: -1,           // keyboard-selected row index
  openId: null,         // record in the editor (null: new record)
  openedAt: 0,          // when the editor was opened (ms), for the device-rule notice
  shown: null,          // the record's fields as last filled into the form
  dirty: false,
  conflictIds: new Set(), // rows held by an open conflict
  painted: false,       // whether the first page was reported painted (startup log)
};

/** Takes the columns of `schema`'s shown table (list, editor, and through
 *  `tableColumns` the conflict and history views); false when they did not change. */
function takeColumns(schema) {
  const table = schema.tables.find((t) => t.name === "person") ?? schema.tables[0];
  if (state.table === table.name && JSON.stringify(state.columns) === JSON.stringify(table.columns)) {
    return false;
  }
  state.table = table.name;
  state.columns = table.columns;
  state.listColumns = table.columns
    .filter((c) => !(c.type === "text" && (c.max_len ?? 10000) > LONG_TEXT))
    .slice(0, 5);
  return true;
}

/** Follows a schema the store took from the server after a sync (a new column): the list
 *  and the editor are rebuilt with it, the open record refilled; unsaved typing in the
 *  editor keeps its form until it is saved or closed. */
export function applySchema(schema) {
  if (state.dirty && !$("editor").hidden) return;
  if (!takeColumns(schema)) return;
  buildHead();
  buildForm();
  reload(true);
  if (!$("editor").hidden && state.openId) {
    const id = state.openId;
    api.get(state.table, id).then((record) => { if (id === state.openId) fillForm(record); })
      .catch((error) => console.error(error));
  }
}

/** Builds the view for `schema` and loads the first page. */
export function initRecords(schema) {
  takeColumns(schema);
  buildHead();
  buildForm();

  const body = $("record-list");
  body.addEventListener("scroll", () => requestAnimationFrame(render));
  body.addEventListener("keydown", onListKey);
  new ResizeObserver(() => render()).observe(body);

  const onSearch = debounce(() => {
    const search = $("search").value.trim();
    if (search === state.search) return;
    state.search = search;
    state.active = -1;
    body.scrollTop = 0;
    reload(true);
  }, 250);
  // "search" fires when the box's clear button empties it; "change" when a script does.
  for (const event of ["input", "search", "change"]) $("search").addEventListener(event, onSearch);
  $("search").addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") { e.preventDefault(); body.focus(); moveActive(0); }
  });
  $("new-record").addEventListener("click", () => openAsked(null));
  $("close-editor").addEventListener("click", () => closeAsked());
  $("editor-form").addEventListener("submit", (e) => { e.preventDefault(); save(); });
  $("editor-form").addEventListener("input", () => { state.dirty = true; $("saved").hidden = true; });
  $("delete").addEventListener("click", remove);
  $("editor").addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); closeAsked(); } });
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "f") { e.preventDefault(); $("search").focus(); }
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "n") { e.preventDefault(); openAsked(null); }
  });
  reload();
}

/** The column header: one sort button per listed column. */
function buildHead() {
  const widths = state.listColumns.map((c, i) =>
    i === 0 ? "2fr" : c.type === "text" ? "1.6fr" : "0.7fr");
  const grid = $("grid");
  grid.style.setProperty("--grid-cols", widths.join(" "));
  const last = state.listColumns.length - 1;
  grid.style.setProperty("--grid-cols-narrow", last > 0 ? "1.6fr 1fr" : "1fr");
  const head = $("grid-head");
  head.replaceChildren(...state.listColumns.map((c, i) => el("div", {
    role: "columnheader",
    class: optionalClass(i),
  }, el("button", {
    type: "button",
    class: "sort",
    "data-testid": `sort-${c.name}`,
    "aria-sort": "none",
    "aria-label": `Sort by ${labelFor(c.name)}`,
    onclick: () => sortBy(c.name),
  }, labelFor(c.name)))));
}

/** Columns other than the first and the last are hidden on narrow screens. */
function optionalClass(index) {
  return index === 0 || index === state.listColumns.length - 1 ? "" : "col-optional";
}

function sortBy(column) {
  if (state.sort === column) state.descending = !state.descending;
  else { state.sort = column; state.descending = false; }
  for (const button of $("grid-head").querySelectorAll(".sort")) {
    const name = button.dataset.testid.slice("sort-".length);
    button.setAttribute("aria-sort", name !== state.sort ? "none" : state.descending ? "descending" : "ascending");
  }
  $("record-list").scrollTop = 0;
  reload(true);
}

/** Refetches what is on screen. After a sync or a save the old rows stay until the new
 *  ones arrive (no flicker); a new search or sort (`fresh`) drops them at once. */
export function reload(fresh = false) {
  loadConflictIds();
  state.generation += 1;
  state.stale = fresh ? new Map() : new Map([...state.stale, ...state.pages]);
  state.pages = new Map();
  state.inflight.clear();
  if (fresh) state.known = false;
  render();
}

/** Fetches page `index` unless cached or on its way. */
async function ensurePage(index) {
  if (state.pages.has(index) || state.inflight.has(index)) return;
  const generation = state.generation;
  state.inflight.add(index);
  try {
    const page = await api.list(state.table, {
      search: state.search || null,
      sort: state.sort,
      descending: state.descending,
      limit: PAGE,
      offset: index * PAGE,
    });
    if (generation !== state.generation) return;
    state.pages.set(index, page.rows);
    state.total = page.total;
    state.known = true;
    if (state.pages.size === 1) state.stale = new Map([...state.stale].filter(([i]) => i * PAGE < page.total));
    showCount();
    render();
    if (!state.painted) reportPainted(page.rows.length);
  } catch (error) {
    if (generation === state.generation) toast(`Cannot load people: ${error.message}`);
  } finally {
    if (generation === state.generation) state.inflight.delete(index);
  }
}

/** Tells the app once, after the frame holding the first page was painted (the second
 *  animation frame after the rows went into the DOM), so its log shows the cold start's
 *  end; `cargo xtask bench` reads that line. */
function reportPainted(rows) {
  state.painted = true;
  requestAnimationFrame(() => requestAnimationFrame(() => {
    api.firstPagePainted(rows).catch((error) => console.error(error));
  }));
}

/** Reads which rows an open conflict holds, to mark them in the list and the editor. */
async function loadConflictIds() {
  try {
    const open = await api.conflicts();
    const ids = new Set(open.filter((c) => c.table === state.table).map((c) => c.id));
    const changed = ids.size !== state.conflictIds.size || [...ids].some((id) => !state.conflictIds.has(id));
    state.conflictIds = ids;
    if (changed) render();
    $("editor-conflict").hidden = !(state.openId && ids.has(state.openId));
  } catch (error) {
    console.error(error);
  }
}

function showCount() {
  const n = state.total;
  $("empty-state").hidden = !(n === 0 && !state.search);
  const text = state.search
    ? `${plural(n, "person matches", "people match")} “${state.search}”`
    : plural(n, "person", "people");
  $("result-count").textContent = text;
}

/** Draws the rows in and around the viewport. */
function render() {
  const body = $("record-list");
  const known = state.known;
  const total = known ? state.total : 0;
  $("grid-spacer").style.height = `${total * ROW_H}px`;
  const first = Math.max(0, Math.floor(body.scrollTop / ROW_H) - OVERSCAN);
  const visible = Math.ceil((body.clientHeight || 600) / ROW_H) + 2 * OVERSCAN;
  const last = known ? Math.min(total, first + visible) : first + visible;
  // The first page on screen is always (re)fetched, even when the known total is 0.
  if (!state.pages.has(Math.floor(first / PAGE))) ensurePage(Math.floor(first / PAGE));
  const rows = [];
  for (let i = first; i < last; i++) {
    const page = Math.floor(i / PAGE);
    if (!state.pages.has(page)) ensurePage(page);
    const record = (state.pages.get(page) ?? state.stale.get(page))?.[i - page * PAGE];
    if (!record) {
      if (known) {
        rows.push(el("div", { class: "grid-row loading", role: "row", style: `top:${i * ROW_H}px` },
          el("div", { class: "cell" }, "Loading…")));
      }
      continue;
    }
    rows.push(rowElement(record, i));
  }
  body.replaceChildren($("grid-spacer"), ...rows);
  if (state.active >= 0) body.setAttribute("aria-activedescendant", `row-${state.active}`);
  else body.removeAttribute("aria-activedescendant");
}

function rowElement(record, index) {
  const cells = state.listColumns.map((c, i) => el("div", {
    class: `cell ${i === 0 ? "name" : ""} ${optionalClass(i)}`,
    role: "gridcell",
    "data-col": c.name,
  }, i === 0 ? statusMark(record) : null,
  show(record.fields[c.name])));
  const classes = ["grid-row"];
  if (index === state.active) classes.push("active");
  return el("div", {
    class: classes.join(" "),
    role: "row",
    id: `row-${index}`,
    "data-testid": "record-row",
    "data-id": record.id,
    "aria-selected": index === state.active ? "true" : "false",
    style: `top:${index * ROW_H}px`,
    onclick: async () => {
      if (!(await leaveEditor())) return;
      state.active = index; openEditor(record.id); render();
    },
  }, cells);
}

/** The dot before a row's name: in conflict (red), or not synced yet (orange). */
function statusMark(record) {
  if (state.conflictIds.has(record.id)) {
    return el("span", { class: "pending-dot conflict-dot", "data-testid": "conflict-dot",
      title: "In conflict: see Conflicts", "aria-label": "in conflict" });
  }
  if (!record.pending) return null;
  return el("span", { class: "pending-dot", "data-testid": "pending-dot", title: "Not synced yet", "aria-label": "not synced yet" });
}

function onListKey(e) {
  const pageRows = Math.max(1, Math.floor($("record-list").clientHeight / ROW_H) - 1);
  const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: pageRows, PageUp: -pageRows };
  if (e.key in moves) {
    e.preventDefault();
    moveActive(Math.max(0, state.active) + (state.active < 0 ? 0 : moves[e.key]));
  } else if (e.key === "Home") {
    e.preventDefault(); moveActive(0);
  } else if (e.key === "End") {
    e.preventDefault(); moveActive(state.total - 1);
  } else if (e.key === "Enter" && state.active >= 0) {
    e.preventDefault();
    const page = state.pages.get(Math.floor(state.active / PAGE));
    const record = page?.[state.active % PAGE];
    if (record) openAsked(record.id);
  }
}

function moveActive(index) {
  if (state.total === 0) return;
  state.active = Math.min(Math.max(0, index), state.total - 1);
  const body = $("record-list");
  const top = state.active * ROW_H;
  if (top < body.scrollTop) body.scrollTop = top;
  else if (top + ROW_H > body.scrollTop + body.clientHeight) body.scrollTop = top + ROW_H - body.clientHeight;
  render();
}

// ---- editor ----

/** "mail" or "call" for a column holding email addresses or phone numbers, else null. */
function contactAction(column) {
  if (column.type !== "text") return null;
  if (column.format === "email" || column.name === "email") return "mail";
  if (column.format === "phone" || column.name === "phone") return "call";
  return null;
}

function buildForm() {
  const fields = state.columns.map((c) => {
    const id = `field-${c.name}`;
    const common = {
      id,
      name: c.name,
      "data-testid": id,
      "aria-describedby": `error-${c.name}`,
      "aria-required": c.required ? "true" : null,
    };
    let input;
    if (c.type === "boolean") {
      input = el("input", { ...common, type: "checkbox" });
    } else if (c.type === "text" && (c.max_len ?? 10000) > LONG_TEXT) {
      input = el("textarea", { ...common, rows: 4 });
    } else {
      input = el("input", {
        ...common,
        type: c.name === "email" ? "email" : c.name === "phone" ? "tel" : "text",
        inputmode: c.type === "integer" ? "numeric" : c.type === "real" ? "decimal" : null,
        autocomplete: "off",
      });
    }
    const action = contactAction(c);
    const link = action && el("button", {
      type: "button", class: "link field-link", id: `open-${c.name}`, "data-testid": `open-${c.name}`, hidden: true,
      text: action === "mail" ? "Write" : "Call",
      "aria-label": action === "mail" ? `Write to this ${labelFor(c.name).toLowerCase()}` : `Call this ${labelFor(c.name).toLowerCase()}`,
      onclick: () => api.openContact(action, input.value).catch((error) => toast(error.message)),
    });
    return el("div", { class: "field" },
      el("label", { for: id }, labelFor(c.name), c.required ? el("span", { class: "required", "aria-hidden": "true" }, " *") : null, link),
      input,
      el("span", { class: "field-error", id: `error-${c.name}`, "data-testid": `error-${c.name}`, hidden: true }));
  });
  $("editor-fields").replaceChildren(...fields);
}

/** When the editor holds unsaved typing, asks what to do with it: save, discard or keep
 *  editing. Resolves true when the editor may be left. */
export async function leaveEditor() {
  if ($("editor").hidden || !state.dirty) return true;
  const name = $("editor-title").textContent;
  const answer = await askDialog("Unsaved changes",
    `You changed ${name} but did not save. Save the changes?`, "Save", "Discard changes", "Keep editing");
  if (answer === "alt") { state.dirty = false; return true; }
  if (answer === "ok") return save();
  $("editor-fields").querySelector("input, textarea")?.focus();
  return false;
}

async function openAsked(id) {
  if (await leaveEditor()) openEditor(id);
}

async function closeAsked() {
  if (await leaveEditor()) closeEditor();
}

/** Opens the editor on record `id`, or on a new record when `id` is null. */
export async function openEditor(id) {
  clearErrors();
  $("saved").hidden = true;
  $("editor-notice").hidden = true;
  state.openId = id;
  state.openedAt = Date.now();
  state.dirty = false;
  let record = null;
  if (id) {
    try {
      record = await api.get(state.table, id);
    } catch (error) {
      toast(error.message);
      return;
    }
  }
  fillForm(record);
  $("editor").hidden = false;
  const first = $("editor-fields").querySelector("input, textarea");
  first?.focus();
}

function fillForm(record) {
  for (const c of state.columns) {
    const input = $(`field-${c.name}`);
    const value = record ? record.fields[c.name] : null;
    if (c.type === "boolean") input.checked = value === true;
    else input.value = value === null || value === undefined ? "" : String(value);
    // The Write / Call link shows for a saved value (not while it is being typed).
    const link = $(`open-${c.name}`);
    if (link) link.hidden = value === null || value === undefined || value === "";
  }
  state.shown = record ? { ...record.fields } : null;
  const name = record ? show(record.fields[state.columns[0].name]) : "";
  $("editor-title").textContent = record ? name || "(no name)" : `New ${state.table}`;
  $("editor-pending").hidden = !record?.pending;
  $("editor-conflict").hidden = !(record && state.conflictIds.has(record.id));
  $("delete").hidden = !record;
  $("editor-meta").textContent = record
    ? `id ${record.id}${record.base_version ? ` · server version ${record.base_version}` : " · not on the server yet"}`
    : "";
}

export function closeEditor() {
  $("editor").hidden = true;
  state.openId = null;
  state.dirty = false;
  $("record-list").focus();
}

/** The form's values, typed by column; unparsable numbers go through as text so the
 *  library's validation message explains them. */
function formFields() {
  const fields = {};
  for (const c of state.columns) {
    const input = $(`field-${c.name}`);
    if (c.type === "boolean") { fields[c.name] = input.checked; continue; }
    const raw = input.value;
    const text = raw.trim();
    if (text === "") { fields[c.name] = null; continue; }
    if (c.type === "integer" && /^[+-]?\d+$/.test(text)) fields[c.name] = Number(text);
    else if (c.type === "real" && text !== "" && !Number.isNaN(Number(text))) fields[c.name] = Number(text);
    else fields[c.name] = c.type === "text" ? raw : text;
  }
  return fields;
}

function clearErrors() {
  for (const c of state.columns) {
    const error = $(`error-${c.name}`);
    if (error) { error.hidden = true; error.textContent = ""; }
    $(`field-${c.name}`)?.removeAttribute("aria-invalid");
  }
  $("form-error").hidden = true;
}

function showError(error) {
  if (error.errors?.length) {
    // Every invalid field at once; the focus goes to the first.
    for (const item of error.errors) showError({ field: item.field, message: item.message });
    $(`field-${error.errors[0].field}`)?.focus();
    return;
  }
  if (error.field && $(`error-${error.field}`)) {
    const node = $(`error-${error.field}`);
    node.textContent = error.message;
    node.hidden = false;
    const input = $(`field-${error.field}`);
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } else {
    $("form-error").textContent = error.message;
    $("form-error").hidden = false;
  }
}

/** Saves the form; resolves true when saved. */
async function save() {
  clearErrors();
  const fields = formFields();
  const button = $("save");
  button.disabled = true;
  // What an Undo of this edit puts back (nothing for a new person: Delete undoes that).
  const previous = state.openId ? formFieldsOf(state.shown) : null;
  try {
    const record = state.openId
      ? await api.update(state.table, state.openId, fields)
      : await api.create(state.table, fields);
    state.openId = record.id;
    state.dirty = false;
    fillForm(record);
    $("saved").hidden = false;
    $("editor-notice").hidden = true;
    reload();
    if (previous && differs(previous, record.fields)) offerUndoEdit(record.id, previous);
    return true;
  } catch (error) {
    showError(error);
    return false;
  } finally {
    button.disabled = false;
  }
}

/** The toast after an edit, whose Undo writes the values from before it back (an edit
 *  like any other, synced the same way). */
function offerUndoEdit(id, previous) {
  const name = $("editor-title").textContent;
  toast(`Saved ${name}`, {
    label: "Undo",
    run: async () => {
      try {
        const record = await api.update(state.table, id, previous);
        reload();
        if (state.openId === id && !$("editor").hidden && !state.dirty) fillForm(record);
        toast(`Undid the change to ${name}`);
      } catch (error) {
        toast(`Cannot undo: ${error.message}`);
      }
    },
  });
}

async function remove() {
  if (!state.openId) return;
  const name = $("editor-title").textContent;
  const ok = await confirmDialog(`Delete ${name}?`,
    "The person is removed from this device now and from the other devices at the next sync. The Trash keeps them for 30 days.");
  if (!ok) return;
  const id = state.openId;
  try {
    await api.remove(state.table, id);
    closeEditor();
    reload();
    toast(`Deleted ${name}`, {
      label: "Undo",
      run: async () => {
        try {
          const record = await api.restore(state.table, id);
          reload();
          toast(`Restored ${name}`);
          if ($("editor").hidden) openEditor(record.id);
        } catch (error) {
          toast(`Cannot restore ${name}: ${error.message}`);
        }
      },
    });
  } catch (error) {
    showError(error);
  }
}

/** The declared columns of `fields` (a record's values), for re-creating it. */
function formFieldsOf(fields) {
  if (!fields) return null;
  const out = {};
  for (const c of state.columns) out[c.name] = fields[c.name] ?? null;
  return out;
}

/** Whether two records' values differ in a declared column. */
function differs(a, b) {
  return state.columns.some((c) => JSON.stringify(a?.[c.name] ?? null) !== JSON.stringify(b?.[c.name] ?? null));
}

/** Called when a sync changed local rows: reload the list and, unless the person is
 *  typing, the open record; says so when the sync replaced values on screen. */
export async function onRecordsChanged() {
  reload();
  if ($("editor").hidden || !state.openId) return;
  const id = state.openId;
  try {
    const record = await api.get(state.table, id);
    if (id !== state.openId) return;
    const changed = differs(state.shown, record.fields);
    if (!changed) {
      if (!state.dirty) fillForm(record);
      return;
    }
    let byRule = false;
    try {
      const decisions = await api.ruleDecisions(state.openedAt - 1000);
      byRule = decisions.some((d) => d.id === id && d.resolution === "kept_theirs");
    } catch (error) {
      console.error(error);
    }
    const notice = $("editor-notice");
    if (state.dirty) {
      notice.textContent = "Another device changed this person while you were typing. Saving keeps what you typed.";
    } else {
      fillForm(record);
      notice.textContent = byRule
        ? "Another device changed this person too. The server's version won by this device's rule (Settings), and is shown now."
        : "Updated from another device.";
    }
    notice.hidden = false;
  } catch (error) {
    if (error.kind === "not_found") {
      closeEditor();
      toast("This person was deleted on another device.");
    }
  }
}

/** The table the view shows. */
export const currentTable = () => state.table;
/** The text the list is searched for ("" when it shows everyone). */
export const currentSearch = () => state.search;
export const tableColumns = () => state.columns;
export { fmtNumber };
