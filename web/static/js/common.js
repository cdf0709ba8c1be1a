// Shared helpers: JSON API calls with the CSRF header, a focus trap for modal dialogs.
// Never builds HTML from data (textContent only).
"use strict";
window.camlabel = (function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = meta ? meta.getAttribute("content") : "";

  async function api(method, url, body) {
    const options = { method: method, headers: { "Accept": "application/json", "X-CSRFToken": csrfToken }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (e) { data = null; }
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  function errorText(result) {
    if (result.data && result.data.error) return result.data.error.message;
    return "request failed (HTTP " + result.status + ")";
  }

  // Keep Tab inside an open modal <dialog>: from its last control to its first and back
  // (the browser would otherwise move focus out to its own toolbar).
  function trapFocus(dialog) {
    dialog.addEventListener("keydown", function (event) {
      if (event.key !== "Tab" || !dialog.open) return;
      const controls = Array.from(dialog.querySelectorAll("button, [href], input, select, textarea, [tabindex]:not([tabindex='-1'])"))
        .filter(function (el) { return !el.disabled && el.getClientRects().length > 0; });
      if (!controls.length) return;
      const first = controls[0], last = controls[controls.length - 1];
      if (event.shiftKey && (document.activeElement === first || !dialog.contains(document.activeElement))) { last.focus(); event.preventDefault(); }
      else if (!event.shiftKey && (document.activeElement === last || !dialog.contains(document.activeElement))) { first.focus(); event.preventDefault(); }
    });
  }

  return { api: api, errorText: errorText, csrfToken: csrfToken, trapFocus: trapFocus };
})();
