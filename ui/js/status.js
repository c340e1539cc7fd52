// The status bar: sync state, progress, pending changes, open conflicts, last sync.

import { api } from "./api.js";
import { $, fmtNumber, fmtTime, plural, toast } from "./util.js";

const STATE_TEXT = {
  idle: "Synced",
  syncing: "Syncing…",
  offline: "Offline – changes stay on this device",
  error: "Sync failed",
  not_connected: "Not connected to a server – changes stay on this device",
};

let current = null;

export function initStatus(goToConflicts, goToSettings) {
  $("status-conflicts").addEventListener("click", goToConflicts);
  $("status-settings").addEventListener("click", goToSettings);
  $("sync-now").addEventListener("click", async () => {
    $("sync-now").disabled = true;
    try {
      await api.syncNow();
    } catch (error) {
      toast(error.message);
    } finally {
      $("sync-now").disabled = false;
    }
  });
}

/** Shows `status` (the payload of a sync-status event). Returns the previous one. */
export function showStatus(status) {
  const previous = current;
  current = status;
  const bar = $("status-bar");
  bar.dataset.state = status.state;
  let text = STATE_TEXT[status.state] ?? status.state;
  if (status.state === "idle" && !status.last_sync_ms) text = "Not synced yet";
  $("sync-state-text").textContent = text;
  $("sync-state").title = status.message ?? "";
  if (status.state === "error" && status.message) {
    $("sync-state-text").textContent = `${text}: ${status.message}`;
  }

  // The change feed is open: other devices' edits arrive as they are made.
  $("sync-live").hidden = !status.live;
  // A server without a change feed (an Azure Mobile Apps backend): the app polls.
  const polling = $("sync-polling");
  polling.hidden = status.polling_secs == null;
  if (status.polling_secs != null) polling.textContent = `Polling every ${fmtNumber(status.polling_secs)} s`;

  const progress = $("sync-progress");
  const progressText = $("progress-text");
  const p = status.state === "syncing" ? status.progress : null;
  progress.hidden = !p;
  progressText.hidden = !p;
  if (p) {
    if (p.to_upload > 0 && p.uploaded < p.to_upload) {
      progress.value = Math.round((100 * p.uploaded) / p.to_upload);
    } else if (p.pull_total > 0) {
      progress.value = Math.min(100, Math.round((100 * p.pull_done) / p.pull_total));
    } else {
      progress.removeAttribute("value"); // indeterminate until the first answer
    }
    const parts = [];
    if (p.to_upload > 0) parts.push(`${fmtNumber(p.uploaded)} of ${fmtNumber(p.to_upload)} sent`);
    parts.push(`${fmtNumber(p.downloaded)} received`);
    progressText.textContent = parts.join(" · ");
  }

  // Rows held back by an open conflict are waiting too, until someone resolves them.
  const pending = $("pending-count");
  const held = status.open_conflicts;
  let waitingText = status.pending === 0 && held === 0
    ? "No changes waiting"
    : `${plural(status.pending + held, "change", "changes")} waiting`;
  if (held > 0) waitingText += ` (${fmtNumber(held)} held by ${held === 1 ? "a conflict" : "conflicts"})`;
  pending.textContent = waitingText;
  pending.classList.toggle("clear", status.pending + held === 0);
  const settingsLink = $("status-settings");
  settingsLink.hidden = !(status.needs_settings || status.state === "not_connected");
  settingsLink.textContent = status.state === "not_connected" ? "Connect…" : "Open Settings";

  const conflicts = $("status-conflicts");
  conflicts.hidden = status.open_conflicts === 0;
  conflicts.textContent = plural(status.open_conflicts, "conflict", "conflicts");
  const badge = $("conflicts-badge");
  badge.hidden = status.open_conflicts === 0;
  badge.textContent = fmtNumber(status.open_conflicts);
  badge.setAttribute("aria-label", plural(status.open_conflicts, "open conflict", "open conflicts"));

  $("last-sync").textContent = status.last_sync_ms ? `Last sync ${fmtTime(status.last_sync_ms)}` : "";
  $("sync-now").disabled = status.state === "syncing";
  return previous;
}
