// Shared helpers: JSON API calls with the CSRF header. Never builds HTML from data (textContent only).
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

  return { api: api, errorText: errorText, csrfToken: csrfToken };
})();
