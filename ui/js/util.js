// Small DOM and formatting helpers.

/** Creates an element with attributes and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

/** Calls `fn` after `ms` of quiet. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** 100000 -> "100,000" (thousands grouped the same way whatever the system locale). */
export function fmtNumber(n) {
  const [whole, fraction] = String(n).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return fraction ? `${grouped}.${fraction}` : grouped;
}

/** "1 person" / "2 people"-style plurals. */
export function plural(n, one, many) {
  return `${fmtNumber(n)} ${n === 1 ? one : many}`;
}

/** A time as "14:03:22" today, else a date and time. */
export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  const date = new Date(ms);
  const today = new Date();
  if (date.toDateString() === today.toDateString()) return date.toLocaleTimeString();
  return date.toLocaleString();
}

/** A column name as a label: "sync_interval" -> "Sync interval". */
export function labelFor(name) {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A field value for display. */
export function show(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "Yes" : "No";
  return String(value);
}

let toastTimer;
/** Shows a short message at the bottom of the window; with `action` ({label, run}), a
 *  button (e.g. Undo) that runs it once. */
export function toast(message, action = null) {
  const node = $("toast");
  $("toast-text").textContent = message;
  const button = $("toast-action");
  button.hidden = !action;
  button.onclick = null;
  if (action) {
    button.textContent = action.label;
    button.onclick = () => { node.hidden = true; action.run(); };
  }
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, action ? 8000 : 5000);
}

/** Asks in the app's dialog; resolves "ok", "alt" (the optional third button) or
 *  "cancel". */
export function askDialog(title, text, okLabel, altLabel = null, cancelLabel = "Cancel") {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  $("confirm-cancel").textContent = cancelLabel;
  $("confirm-alt").hidden = !altLabel;
  if (altLabel) $("confirm-alt").textContent = altLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue || "cancel"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

/** Asks for confirmation in the app's dialog; resolves true when confirmed. */
export async function confirmDialog(title, text, okLabel = "Delete") {
  return (await askDialog(title, text, okLabel)) === "ok";
}

/** A date and time, always with the date ("27 Nov 2026, 14:03"). */
export function fmtDateTime(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}
