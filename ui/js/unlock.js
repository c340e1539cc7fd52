// The unlock screen: where no system keyring keeps the key of this device's data, the
// person types its passphrase (or chooses one, when the data is new or not yet encrypted).

import { api } from "./api.js";
import { $ } from "./util.js";

function showError(message) {
  const node = $("error-unlock-passphrase");
  node.textContent = message;
  node.hidden = false;
  $("unlock-passphrase").setAttribute("aria-invalid", "true");
}

/** Shows the unlock screen for the startup error `locked` ({kind: "locked", message,
 *  field: "passphrase" | "new_passphrase"}); reloads the page once the data is open. */
export function showUnlock(locked) {
  const choosing = locked.field === "new_passphrase";
  $("view-records").hidden = true;
  document.querySelector(".tabs").hidden = true;
  $("status-bar").hidden = true;
  $("view-unlock").hidden = false;
  $("unlock-reason").textContent = locked.message;
  $("unlock-confirm-field").hidden = !choosing;
  $("unlock-warning").hidden = !choosing;
  $("unlock").textContent = choosing ? "Encrypt and open" : "Unlock";
  $("unlock-passphrase").autocomplete = choosing ? "new-password" : "current-password";
  $("unlock-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error-unlock-passphrase").hidden = true;
    const passphrase = $("unlock-passphrase").value;
    if (!passphrase) { showError("Enter the passphrase."); return; }
    if (choosing && passphrase !== $("unlock-confirm").value) {
      showError("The two passphrases differ.");
      return;
    }
    $("unlock").disabled = true;
    try {
      await api.unlock(passphrase);
      location.reload();
    } catch (error) {
      showError(error.message);
      $("unlock").disabled = false;
    }
  });
  $("unlock-passphrase").focus();
  document.body.dataset.ready = "true";
}
