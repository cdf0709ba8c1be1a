// Review grid: concept-map heatmaps (heatmap.js), selection (click the box, Shift-click for a range,
// Ctrl/Cmd-click a thumbnail, or the keyboard), accept / reject of the selection, bulk accept
// by score with a preview, undo of the last bulk write, per-class counts, and remembering this
// page (filter, sort, page) so the image view's "grid" link comes back here.
// Text from the server goes in with textContent only.
"use strict";
(function () {
  const api = window.camlabel.api;
  const errorText = window.camlabel.errorText;
  const toggle = document.getElementById("overlay-toggle");
  const slider = document.getElementById("overlay-opacity");
  const triage = document.getElementById("triage");
  const collectionId = triage.dataset.collectionId;
  const thumbs = Array.from(document.querySelectorAll(".thumb"));
  const countEl = document.getElementById("selection-count");
  const acceptButton = document.getElementById("accept-selection");
  const rejectButton = document.getElementById("reject-selection");
  const noneButton = document.getElementById("select-none");
  const opStatus = document.getElementById("op-status");
  const opText = document.getElementById("op-text");
  const opUndo = document.getElementById("op-undo");
  const MESSAGE_KEY = "camlabel.gridMessage." + collectionId;
  const selected = new Set();
  let anchor = null;  // index of the last thumbnail clicked or toggled (start of a Shift range)

  // -- overlays ------------------------------------------------------------------------------
  function applyOverlay() {
    document.body.classList.toggle("show-overlays", toggle.checked);
    if (toggle.checked) {
      document.querySelectorAll(".thumb canvas.overlay").forEach(function (canvas) {
        window.camlabel.heatmap.show(canvas, canvas.dataset.map, Number(canvas.dataset.width), Number(canvas.dataset.height))
          .catch(function () { /* no heatmap for this thumbnail; the photo stays as it is */ });
      });
    }
    document.documentElement.style.setProperty("--overlay-opacity", slider.value);
    localStorage.setItem("camlabel.overlay", JSON.stringify({ on: toggle.checked, opacity: slider.value }));
  }
  try {
    const saved = JSON.parse(localStorage.getItem("camlabel.overlay") || "null");
    if (saved) { toggle.checked = !!saved.on; slider.value = saved.opacity; }
  } catch (e) { /* ignore a bad stored value */ }
  toggle.addEventListener("change", applyOverlay);
  slider.addEventListener("input", applyOverlay);
  applyOverlay();

  // -- where you are: this page is the one "back to grid" returns to -----------------------------
  sessionStorage.setItem("camlabel.grid." + collectionId, location.pathname + location.search);
  thumbs.forEach(function (t) {
    t.querySelector("a.open").addEventListener("click", function () {
      sessionStorage.setItem("camlabel.lastImage." + collectionId, t.dataset.imageId);
      sessionStorage.removeItem("camlabel.trail." + collectionId);  // K's history starts at the image opened here
    });
  });

  // -- selection -------------------------------------------------------------------------------
  function render() {
    thumbs.forEach(function (t) {
      const on = selected.has(Number(t.dataset.imageId));
      t.classList.toggle("selected", on);
      t.querySelector("input.pick").checked = on;
    });
    countEl.textContent = selected.size + " selected";
    [acceptButton, rejectButton, noneButton].forEach(function (b) { b.disabled = selected.size === 0; });
  }

  function setRange(from, to, on) {
    const lo = Math.min(from, to), hi = Math.max(from, to);
    for (let i = lo; i <= hi; i++) {
      const id = Number(thumbs[i].dataset.imageId);
      if (on) selected.add(id); else selected.delete(id);
    }
  }

  function toggleAt(index, extend) {
    const id = Number(thumbs[index].dataset.imageId);
    if (extend && anchor !== null) setRange(anchor, index, true);
    else if (selected.has(id)) selected.delete(id);
    else selected.add(id);
    anchor = index;
    render();
  }

  thumbs.forEach(function (t, index) {
    const box = t.querySelector("input.pick");
    box.addEventListener("click", function (event) {
      // not cancelled: the browser keeps the state render() gives every box (a cancelled click
      // would put this box back after the handler, out of step with the selection)
      toggleAt(index, event.shiftKey);
    });
    t.querySelector("a.open").addEventListener("click", function (event) {
      if (!(event.shiftKey || event.ctrlKey || event.metaKey)) return;  // a plain click opens the image
      event.preventDefault();
      toggleAt(index, event.shiftKey);
    });
  });
  document.getElementById("select-page").addEventListener("click", function () {
    thumbs.forEach(function (t) { selected.add(Number(t.dataset.imageId)); });
    render();
  });
  noneButton.addEventListener("click", function () { selected.clear(); anchor = null; render(); });

  // -- keyboard: arrows move focus between thumbnails, Space / X select ---------------------------
  function focusedIndex() {
    const t = document.activeElement && document.activeElement.closest(".thumb");
    return t ? thumbs.indexOf(t) : -1;
  }

  function columns() {
    if (thumbs.length < 2) return 1;
    const top = thumbs[0].offsetTop;
    const n = thumbs.findIndex(function (t) { return t.offsetTop !== top; });
    return n < 0 ? thumbs.length : n;
  }

  function moveFocus(index, extend) {
    const target = Math.max(0, Math.min(thumbs.length - 1, index));
    if (extend) {
      const from = focusedIndex();
      if (anchor === null) anchor = from < 0 ? target : from;
      setRange(anchor, target, true);
      render();
    }
    thumbs[target].querySelector("a.open").focus();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (document.querySelector("dialog[open]")) return;
    const inField = event.target.closest("select, textarea, input:not(.pick)");
    if (inField) return;
    if (event.key === " " && event.target.matches("input.pick")) return;  // the box's own click toggles it
    const key = event.key;
    const here = focusedIndex();
    const steps = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
    if (key in steps && thumbs.length) {
      moveFocus(here < 0 ? 0 : here + steps[key], event.shiftKey);
    } else if ((key === " " || key === "x" || key === "X") && here >= 0) {
      toggleAt(here, event.shiftKey);
    } else if ((key === "a" || key === "A") && selected.size) {
      reviewSelection("accepted");
    } else if ((key === "r" || key === "R") && selected.size) {
      reviewSelection("rejected");
    } else if (key === "Escape" && selected.size) {
      selected.clear(); anchor = null; render();
    } else if (key === "h" || key === "H") {
      toggle.checked = !toggle.checked; applyOverlay();
    } else {
      return;
    }
    event.preventDefault();
  });

  // -- writes: selection, bulk accept, undo ------------------------------------------------------
  function reloadWith(message) {
    sessionStorage.setItem(MESSAGE_KEY, JSON.stringify(message));
    location.reload();
  }

  function showMessage(text, isError, operationId) {
    opStatus.hidden = false;
    opStatus.className = "flash " + (isError ? "flash-error" : "flash-ok");
    opText.textContent = text;
    opUndo.hidden = !operationId;
    opUndo.dataset.operationId = operationId || "";
  }

  async function reviewSelection(status) {
    const ids = Array.from(selected);
    const result = await api("POST", "/api/v1/collections/" + collectionId + "/review-selection", { image_ids: ids, status: status });
    if (!result.ok) { showMessage("Not saved: " + errorText(result), true); return; }
    const verb = status === "accepted" ? "Accepted" : "Rejected";
    reloadWith({ text: verb + " " + result.data.n_boxes + " box(es) on " + ids.length + " image(s).", operation: result.data.operation_id });
  }
  acceptButton.addEventListener("click", function () { reviewSelection("accepted"); });
  rejectButton.addEventListener("click", function () { reviewSelection("rejected"); });

  opUndo.addEventListener("click", async function () {
    const id = opUndo.dataset.operationId;
    const result = await api("POST", "/api/v1/collections/" + collectionId + "/review-operations/" + id + "/undo");
    if (!result.ok) { showMessage("Not undone: " + errorText(result), true); return; }
    reloadWith({ text: "Undone: " + result.data.restored + " box(es) restored" +
      (result.data.skipped ? ", " + result.data.skipped + " edited since and left as they are." : "."), operation: null });
  });

  try {
    const message = JSON.parse(sessionStorage.getItem(MESSAGE_KEY) || "null");
    sessionStorage.removeItem(MESSAGE_KEY);
    if (message) {
      showMessage(message.text, false, message.operation);
      if (!opUndo.hidden) opUndo.focus();
    }
  } catch (e) { /* ignore a bad stored value */ }

  // bulk accept: preview (count and lowest-scoring thumbnails), then apply exactly that
  const dialog = document.getElementById("bulk-dialog");
  const bulkCategory = document.getElementById("bulk-category");
  const bulkScore = document.getElementById("bulk-min-score");
  const bulkSummary = document.getElementById("bulk-summary");
  const bulkSamples = document.getElementById("bulk-samples");
  const bulkApply = document.getElementById("bulk-apply");
  const bulkOpen = document.getElementById("bulk-open");

  window.camlabel.trapFocus(dialog);

  function resetPreview() {
    bulkApply.disabled = true;
    bulkApply.textContent = "Accept";
    bulkSummary.textContent = "";
    bulkSamples.replaceChildren();
  }
  bulkOpen.addEventListener("click", function () { resetPreview(); dialog.showModal(); bulkCategory.focus(); });
  document.getElementById("bulk-cancel").addEventListener("click", function () { dialog.close(); });
  dialog.addEventListener("close", function () { bulkOpen.focus(); });
  [bulkCategory, bulkScore].forEach(function (el) { el.addEventListener("input", resetPreview); });

  // a box's score estimates the probability that it is right: their sum, the right boxes expected
  function expectationText(p) {
    if (!p.n_boxes) return "";
    return "Their scores expect about " + Math.round(p.expected_right) + " of them (" +
      Math.round(100 * p.expected_right / p.n_boxes) + "%) to be right.";
  }
  // the check of that estimate: how this class's boxes at this score fared when reviewed one by one
  function reviewedText(r) {
    if (!r.boxes) return "None of this class's boxes at this score has been reviewed box by box yet: the estimate is unchecked.";
    return "Reviewed box by box so far at this score: " + r.accepted + " of " + r.boxes + " accepted as proposed (" +
      Math.round(100 * r.accepted / r.boxes) + "%), " + r.edited + " edited, " + r.rejected + " rejected.";
  }

  document.getElementById("bulk-preview").addEventListener("click", async function () {
    resetPreview();
    const query = "?category_id=" + encodeURIComponent(bulkCategory.value) + "&min_score=" + encodeURIComponent(bulkScore.value);
    const result = await api("GET", "/api/v1/collections/" + collectionId + "/bulk-accept/preview" + query);
    if (!result.ok) { bulkSummary.textContent = errorText(result); return; }
    const p = result.data;
    bulkSummary.textContent = [p.n_boxes + " box(es) on " + p.n_images + " image(s) will be accepted.",
      expectationText(p), reviewedText(p.reviewed), p.samples.length ? "Lowest scores first:" : ""].filter(Boolean).join(" ");
    p.samples.forEach(function (s) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = s.thumb_url;
      img.alt = s.rel_path;
      const caption = document.createElement("figcaption");
      caption.textContent = s.score.toFixed(2);
      figure.append(img, caption);
      bulkSamples.appendChild(figure);
    });
    bulkApply.disabled = p.n_boxes === 0;
    bulkApply.textContent = "Accept " + p.n_boxes + " box(es)";
    bulkApply.focus();
  });

  bulkApply.addEventListener("click", async function () {
    const body = { category_id: Number(bulkCategory.value), min_score: Number(bulkScore.value) };
    const result = await api("POST", "/api/v1/collections/" + collectionId + "/bulk-accept", body);
    if (!result.ok) { bulkSummary.textContent = "Not saved: " + errorText(result); return; }
    dialog.close();
    reloadWith({ text: "Accepted " + result.data.accepted + " box(es) of " + bulkCategory.selectedOptions[0].textContent +
      " scoring at least " + body.min_score + ".", operation: result.data.operation_id });
  });

  // -- totals: "page N of M", counted after the page is shown (capped: "M+" beyond the cap) ---------
  async function loadTotal() {
    const info = document.getElementById("page-info");
    const result = await api("GET", info.dataset.countUrl);
    if (!result.ok) return;
    const plus = result.data.exact ? "" : "+";
    const pages = Math.max(1, Math.ceil(result.data.count / Number(info.dataset.pageSize)));
    info.textContent = "Page " + info.dataset.page + " of " + pages + plus + " · " + result.data.count + plus +
      (result.data.count === 1 && !plus ? " image" : " images");
    if (result.data.exact) document.querySelector("#goto-form input[name=goto]").max = String(pages);
    info.dataset.loaded = "1";
  }
  loadTotal();

  // -- per-class counts: counted when their panel is first opened (a pass over the boxes) -----------
  async function loadCounts() {
    const result = await api("GET", "/api/v1/collections/" + collectionId + "/review-stats");
    if (!result.ok) return;
    const body = document.querySelector("#class-table tbody");
    body.replaceChildren();
    result.data.classes.forEach(function (c) {
      const tr = document.createElement("tr");
      tr.dataset.categoryId = String(c.category_id);
      [c.name, c.proposed, c.reviewed, c.accepted, c.edited, c.rejected].forEach(function (v, i) {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        cell.textContent = String(v);
        tr.appendChild(cell);
      });
      body.appendChild(tr);
    });
  }
  const classPanel = document.getElementById("class-counts");
  classPanel.addEventListener("toggle", function () {
    if (classPanel.open && !classPanel.dataset.loaded) { classPanel.dataset.loaded = "1"; loadCounts(); }
  });

  // focus stays where the user was: the thumbnail of the image last opened from this page
  const last = sessionStorage.getItem("camlabel.lastImage." + collectionId);
  const back = last && thumbs.find(function (t) { return t.dataset.imageId === last; });
  if (back) back.querySelector("a.open").focus();
  render();
  document.body.dataset.ready = "1";
})();
