// Single-image review with Annotorious (vendored in /static/vendor/annotorious).
// Every edit is saved at once through the JSON API with the box's row version; a 409 shows a
// visible conflict message and puts the server's current box back (never a silent overwrite).
// Each box shows its class and score; the keyboard covers the whole loop (shortcuts.js holds the
// remappable map): step through boxes, set the class with number keys, accept all and go on,
// undo / redo every edit (kept per image for this browser tab), zoom and pan.
// All text from the server is inserted with textContent, never innerHTML.
"use strict";
(function () {
  const api = window.camlabel.api;
  const errorText = window.camlabel.errorText;
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const image = document.getElementById("review-image");
  const canvas = document.getElementById("canvas");
  const listEl = document.getElementById("box-list");
  const conflictEl = document.getElementById("conflict");
  const saveState = document.getElementById("save-state");
  const newCategory = document.getElementById("new-category");
  const heatToggle = document.getElementById("heatmap-toggle");
  const heatOpacity = document.getElementById("heatmap-opacity");
  const heatCategory = document.getElementById("heatmap-category");
  const help = document.getElementById("help");
  const drawButton = document.getElementById("draw-toggle");
  const keepDrawing = document.getElementById("keep-drawing");
  const undoButton = document.getElementById("undo");
  const redoButton = document.getElementById("redo");
  const zoomLevel = document.getElementById("zoom-level");

  const boxes = new Map();  // id (string) -> box JSON from the API
  data.boxes.forEach(function (b) { boxes.set(String(b.id), b); });
  const categoryName = new Map(data.categories.map(function (c) { return [c.id, c.name]; }));
  let selectedId = null;
  let anno = null;
  let overlay = null;
  let labelLayer = null;

  const COLORS = { proposed: "#f5c518", accepted: "#2ecc71", rejected: "#e74c3c", edited: "#3498db" };
  const FIELDS = ["status", "category_id", "x1", "y1", "x2", "y2"];

  function toAnnotation(box) {
    const w = box.x2 - box.x1, h = box.y2 - box.y1;
    return {
      id: String(box.id),
      bodies: [],
      target: {
        annotation: String(box.id),
        selector: { type: "RECTANGLE", geometry: { x: box.x1, y: box.y1, w: w, h: h, bounds: { minX: box.x1, minY: box.y1, maxX: box.x2, maxY: box.y2 } } },
      },
    };
  }

  function geometryOf(annotation) {
    const g = annotation.target.selector.geometry;
    return { x1: g.x, y1: g.y, x2: g.x + g.w, y2: g.y + g.h };
  }

  function style(annotation) {
    const box = boxes.get(annotation.id);
    const color = box ? COLORS[box.status] || "#ffffff" : "#ffffff";
    return { stroke: color, strokeWidth: 2, fill: color, fillOpacity: box && box.status === "rejected" ? 0.05 : 0.12 };
  }

  function boxLabel(box) {
    const name = categoryName.get(box.category_id) || "class " + box.category_id;
    return name + " " + (box.score === null ? "drawn" : box.score.toFixed(2));
  }

  function message(text, isConflict) {
    if (isConflict) {
      conflictEl.textContent = text;
      conflictEl.hidden = false;
    }
    saveState.textContent = text;
  }

  function clearConflict() { conflictEl.hidden = true; conflictEl.textContent = ""; }

  function sortedBoxes() {
    return Array.from(boxes.values()).sort(function (a, b) { return a.id - b.id; });
  }

  function refresh() {
    renderList();
    renderLabels();
  }

  // one change to the annotator; if it was still settling (a key pressed or a reply arriving
  // right after the page loaded) and throws, the saved boxes are the truth: it gets all of them again
  function syncAnnotator(change) {
    if (!anno) return;
    try {
      change();
    } catch (e) {
      anno.setAnnotations(sortedBoxes().map(toAnnotation));
    }
  }

  function putBox(box) {
    boxes.set(String(box.id), box);
    syncAnnotator(function () {
      if (anno.getAnnotationById(String(box.id))) anno.updateAnnotation(toAnnotation(box));
      else anno.addAnnotation(toAnnotation(box));
    });
    if (anno) anno.setStyle(style);
  }

  function dropBox(id) {
    boxes.delete(String(id));
    syncAnnotator(function () { if (anno.getAnnotationById(String(id))) anno.removeAnnotation(String(id)); });
    if (selectedId === String(id)) selectedId = null;
  }

  function handleFailure(result, box) {
    if (result.status === 409) {
      const current = result.data && result.data.error && result.data.error.current;
      message("Conflict: " + errorText(result) + (current ? " (box #" + current.id + " now at version " + current.version + ")" : ""), true);
      if (current) putBox(current);
      else if (box) dropBox(box.id);
    } else if (result.status === 404 && box && result.data && result.data.error && result.data.error.code === "box_deleted") {
      dropBox(box.id);  // deleted in another session: never keep showing it
      message("Box #" + box.id + " was deleted by someone else, so it is removed from this view.", true);
    } else {
      message("Not saved: " + errorText(result), true);
      if (box) putBox(box);  // put the last saved state back on screen
    }
    refresh();
  }

  // -- history: undo / redo of every edit, per image, for this tab -----------------------------
  // Entries: {kind: "patch", id, before, after} (status, class, geometry), {kind: "group", items}
  // (accept all), {kind: "delete", box}, {kind: "create", box}. A box deleted and drawn again by
  // undo / redo gets a new id; every entry naming the old one is rewritten.
  const HISTORY_KEY = "camlabel.history." + data.image.id;
  let history = { undo: [], redo: [] };
  try {
    const saved = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "null");
    if (saved && Array.isArray(saved.undo) && Array.isArray(saved.redo)) history = saved;
  } catch (e) { /* ignore a bad stored value */ }

  function saveHistory() {
    sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history));
    undoButton.disabled = history.undo.length === 0;
    redoButton.disabled = history.redo.length === 0;
  }

  let progressTimer = null;
  function progressSoon() {  // the counts line follows the edits (one request after a burst of them)
    clearTimeout(progressTimer);
    progressTimer = setTimeout(function () { if (window.camlabel.refreshProgress) window.camlabel.refreshProgress(); }, 400);
  }

  function record(entry) {
    progressSoon();
    history.undo.push(entry);
    if (history.undo.length > 200) history.undo.shift();
    history.redo = [];
    saveHistory();
  }

  function snapshot(box) {
    const s = {};
    FIELDS.forEach(function (k) { s[k] = box[k]; });
    return s;
  }

  function renameBox(oldId, newId) {
    function fix(entry) {
      if (entry.kind === "group") entry.items.forEach(fix);
      else if (entry.kind === "patch" && entry.id === oldId) entry.id = newId;
      else if (entry.box && entry.box.id === oldId) entry.box.id = newId;
    }
    history.undo.forEach(fix);
    history.redo.forEach(fix);
  }

  // -- writes ------------------------------------------------------------------------------------
  async function patch(box, changes, recordIt) {
    message("Saving…");
    const before = snapshot(box);
    const result = await api("PATCH", "/api/v1/boxes/" + box.id, Object.assign({ version: box.version }, changes));
    if (result.ok) {
      clearConflict();
      message("Saved box #" + box.id + " (" + result.data.status + ").");
      putBox(result.data);
      if (recordIt !== false) record({ kind: "patch", id: box.id, before: before, after: snapshot(result.data) });
      refresh();
    } else {
      handleFailure(result, box);
    }
    return result.ok ? result.data : null;
  }

  async function removeBox(box, recordIt) {
    message("Deleting…");
    const result = await api("DELETE", "/api/v1/boxes/" + box.id + "?version=" + box.version);
    if (result.ok) {
      clearConflict();
      dropBox(box.id);
      if (recordIt !== false) record({ kind: "delete", box: Object.assign(snapshot(box), { id: box.id }) });
      refresh();
      message("Deleted box #" + box.id + ".");
    } else {
      handleFailure(result, box);
    }
    return result.ok;
  }

  // Draw a box (a new one, or one put back by undo / redo): saved as a human box, then given
  // the status it had when it was put back.
  async function createBox(shape, status) {
    const result = await api("POST", "/api/v1/images/" + data.image.id + "/boxes",
      { category_id: shape.category_id, x1: shape.x1, y1: shape.y1, x2: shape.x2, y2: shape.y2 });
    if (!result.ok) { message("Not saved: " + errorText(result), true); return null; }
    clearConflict();
    let box = result.data;
    putBox(box);
    if (status && status !== box.status) box = (await patch(box, { status: status }, false)) || box;
    return box;
  }

  async function applyEntry(entry, direction) {
    // direction "undo" puts ``before`` back, "redo" puts ``after`` back
    if (entry.kind === "group") {
      for (const item of entry.items) if (!(await applyEntry(item, direction))) return false;
      return true;
    }
    if (entry.kind === "patch") {
      const box = boxes.get(String(entry.id));
      if (!box) { message("Box #" + entry.id + " is gone; nothing to " + direction + ".", true); return false; }
      return (await patch(box, direction === "undo" ? entry.before : entry.after, false)) !== null;
    }
    const putBack = (entry.kind === "delete") === (direction === "undo");
    if (putBack) {
      const box = await createBox(entry.box, entry.box.status);
      if (!box) return false;
      renameBox(entry.box.id, box.id);
      selectedId = String(box.id);
      return true;
    }
    const box = boxes.get(String(entry.box.id));
    return box ? removeBox(box, false) : false;
  }

  async function step(direction) {
    const from = direction === "undo" ? history.undo : history.redo;
    const to = direction === "undo" ? history.redo : history.undo;
    const entry = from.pop();
    if (!entry) { message("Nothing to " + direction + "."); return; }
    const ok = await applyEntry(entry, direction);
    if (ok) to.push(entry);
    progressSoon();
    saveHistory();
    refresh();
    if (ok) message((direction === "undo" ? "Undone: " : "Redone: ") + describe(entry) + ".");
  }

  function describe(entry) {
    if (entry.kind === "group") return "accept all (" + entry.items.length + " boxes)";
    if (entry.kind === "delete") return "delete of box #" + entry.box.id;
    if (entry.kind === "create") return "drawing of box #" + entry.box.id;
    const changed = FIELDS.filter(function (k) { return entry.before[k] !== entry.after[k]; });
    if (changed.indexOf("x1") >= 0 || changed.indexOf("y1") >= 0 || changed.indexOf("x2") >= 0 || changed.indexOf("y2") >= 0) return "move of box #" + entry.id;
    if (changed.indexOf("category_id") >= 0) return "class change of box #" + entry.id;
    return entry.after.status + " of box #" + entry.id;
  }

  // -- selection, list, labels -----------------------------------------------------------------
  function selected() { return selectedId ? boxes.get(selectedId) : null; }

  function select(id) {
    selectedId = id;
    if (anno && !anno.isDrawingEnabled()) anno.setSelected(id || undefined);
    refresh();
  }

  function stepBox(delta) {
    const list = sortedBoxes();
    if (!list.length) return false;
    const at = list.findIndex(function (b) { return String(b.id) === selectedId; });
    const next = at < 0 ? (delta > 0 ? 0 : list.length - 1) : at + delta;
    if (next < 0 || next >= list.length) return false;
    select(String(list[next].id));
    const item = listEl.querySelector("li[data-box-id='" + list[next].id + "']");
    if (item) item.scrollIntoView({ block: "nearest" });
    return true;
  }

  function button(label, className, onClick, name) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = className;
    b.textContent = label;
    if (name) b.setAttribute("aria-label", name);
    b.addEventListener("click", function (event) { event.stopPropagation(); onClick(); });
    return b;
  }

  // One list row per box, rebuilt only when what it shows changed: a row under the pointer is
  // never swapped out by an unrelated refresh, so a click on it is never lost.
  const rows = new Map();  // box id -> {li, key}

  function rowKey(box) {
    return [box.version, box.status, box.category_id, box.score, String(box.id) === selectedId].join("|");
  }

  function buildRow(box) {
    const li = document.createElement("li");
    li.className = "box-item status-" + box.status + (String(box.id) === selectedId ? " selected" : "");
    li.dataset.boxId = String(box.id);
    li.dataset.status = box.status;
    li.dataset.version = String(box.version);
    li.setAttribute("aria-current", String(box.id) === selectedId ? "true" : "false");
    const title = document.createElement("button");
    title.type = "button";
    title.className = "box-title";
    title.textContent = "#" + box.id + " " + boxLabel(box) + " · " + box.status;
    title.addEventListener("click", function (event) { event.stopPropagation(); select(String(box.id)); });
    const cat = document.createElement("select");
    cat.className = "box-category";
    cat.setAttribute("aria-label", "class of box " + box.id);
    data.categories.forEach(function (c) {
      const option = document.createElement("option");
      option.value = String(c.id);
      option.textContent = c.name;
      option.selected = c.id === box.category_id;
      cat.appendChild(option);
    });
    cat.addEventListener("change", function () { patch(box, { category_id: Number(cat.value) }); });
    cat.addEventListener("click", function (event) { event.stopPropagation(); });
    li.append(title, cat,
      button("Accept", "accept", function () { patch(box, { status: "accepted" }); }, "accept box " + box.id),
      button("Reject", "reject", function () { patch(box, { status: "rejected" }); }, "reject box " + box.id),
      button("Delete", "delete", function () { removeBox(box); }, "delete box " + box.id));
    li.addEventListener("click", function () { select(String(box.id)); });
    return li;
  }

  function renderList() {
    // focus stays where the user was: the same control of the same box when its row is rebuilt
    const active = document.activeElement;
    const activeItem = active && listEl.contains(active) ? active.closest("li") : null;
    const focusKey = activeItem ? [activeItem.dataset.boxId, active.className.split(" ")[0]] : null;
    const shown = new Set();
    let previous = null;
    sortedBoxes().forEach(function (box) {
      const id = String(box.id);
      const key = rowKey(box);
      let row = rows.get(id);
      if (!row || row.key !== key) {
        if (row) row.li.remove();
        row = { li: buildRow(box), key: key };
        rows.set(id, row);
      }
      const expected = previous ? previous.nextSibling : listEl.firstChild;
      if (row.li !== expected) listEl.insertBefore(row.li, expected);
      previous = row.li;
      shown.add(id);
    });
    rows.forEach(function (row, id) {
      if (!shown.has(id)) { row.li.remove(); rows.delete(id); }
    });
    if (focusKey && !listEl.contains(active)) {
      const again = listEl.querySelector("li[data-box-id='" + focusKey[0] + "'] ." + focusKey[1]);
      if (again) again.focus();
      else canvas.focus();
    }
  }

  function renderLabels() {
    if (!labelLayer) return;
    labelLayer.replaceChildren();
    const w = data.image.width || image.naturalWidth, h = data.image.height || image.naturalHeight;
    sortedBoxes().forEach(function (box) {
      const label = document.createElement("span");
      label.className = "box-label status-" + box.status + (String(box.id) === selectedId ? " selected" : "") +
        (box.y1 / h < 0.08 ? " inside" : "");  // no room above the box: drawn just inside its top edge
      label.dataset.boxId = String(box.id);
      label.textContent = boxLabel(box);
      label.style.left = (box.x1 / w * 100) + "%";
      label.style.top = (box.y1 / h * 100) + "%";
      labelLayer.appendChild(label);
    });
  }

  // -- accept all, next, previous (with the queue's history) -------------------------------------
  async function acceptAll() {
    const versions = {};
    const before = {};
    boxes.forEach(function (box) { if (box.status === "proposed") { versions[box.id] = box.version; before[box.id] = snapshot(box); } });
    if (Object.keys(versions).length === 0) { message("No proposed boxes to accept."); return true; }
    const result = await api("POST", "/api/v1/images/" + data.image.id + "/accept-all", { versions: versions });
    const updated = result.ok ? result.data.updated : (result.status === 409 && result.data.error.updated) || [];
    updated.forEach(putBox);
    if (updated.length) {
      record({ kind: "group", items: updated.map(function (b) { return { kind: "patch", id: b.id, before: before[b.id], after: snapshot(b) }; }) });
    }
    if (result.ok) {
      clearConflict();
      message("Accepted " + updated.length + " box(es).");
    } else if (result.status === 409) {
      (result.data.error.conflicts || []).forEach(function (c) { if (c) putBox(c); });
      message("Conflict: " + result.data.error.message, true);
    } else {
      message("Not saved: " + errorText(result), true);
    }
    refresh();
    return result.ok;
  }

  const TRAIL_KEY = "camlabel.trail." + data.collection_id;
  function trail() {
    try { return JSON.parse(sessionStorage.getItem(TRAIL_KEY) || "[]"); } catch (e) { return []; }
  }

  function goNext() {
    if (!data.next_url) { message("This is the last image of this filter."); return; }
    const t = trail();
    t.push(location.pathname + location.search);
    sessionStorage.setItem(TRAIL_KEY, JSON.stringify(t.slice(-200)));
    window.location.href = data.next_url;
  }

  function goPrev() {
    // the images this tab came through come first: in "to review", the image just accepted
    // has left the filter, yet K goes back to it
    const t = trail();
    const back = t.pop();
    sessionStorage.setItem(TRAIL_KEY, JSON.stringify(t));
    if (back) window.location.href = back;
    else if (data.prev_url) window.location.href = data.prev_url;
  }

  async function acceptAllNext() {
    if (await acceptAll()) goNext();
  }

  // "no objects": rejects the image's boxes (at the versions shown) and marks it a reviewed negative
  const noObjectsButton = document.getElementById("no-objects");
  const reviewState = document.getElementById("review-state");
  const STATE_TEXT = { unreviewed: "Not reviewed yet", reviewed: "Reviewed", no_objects: "Reviewed: no objects" };

  function showReviewState(state) {
    reviewState.dataset.state = state;
    reviewState.textContent = STATE_TEXT[state] || state;
    noObjectsButton.setAttribute("aria-pressed", state === "no_objects" ? "true" : "false");
  }

  async function toggleNoObjects() {
    const marked = noObjectsButton.getAttribute("aria-pressed") === "true";
    const versions = {};
    boxes.forEach(function (box) { if (box.status !== "rejected" && box.source !== "ground_truth") versions[box.id] = box.version; });
    const result = marked ? await api("DELETE", "/api/v1/images/" + data.image.id + "/no-objects")
      : await api("POST", "/api/v1/images/" + data.image.id + "/no-objects", { versions: versions });
    if (result.ok) {
      clearConflict();
      result.data.boxes.forEach(putBox);
      refresh();
      showReviewState(result.data.review_state);
      progressSoon();
      message(marked ? "No longer marked “no objects”." : "Marked “no objects” (" + result.data.boxes.length + " box(es) rejected).");
    } else {
      handleFailure(result, null);
      const current = result.data && result.data.error && result.data.error.current;
      if (current) { putBox(current); refresh(); }
    }
  }

  // -- drawing -----------------------------------------------------------------------------------
  function setDrawing(on) {
    if (!anno) return;
    if (on) anno.cancelSelected();  // a pending selection would swallow the first drag
    anno.setDrawingEnabled(on);
    drawButton.classList.toggle("active", on);
    drawButton.setAttribute("aria-pressed", on ? "true" : "false");
    if (on) message("Drawing: drag on the image to add a " + (categoryName.get(Number(newCategory.value)) || "") + " box.");
  }

  function setClass(n) {
    const category = data.categories[n - 1];
    if (!category) { message("There is no class " + n + "."); return; }
    const box = selected();
    if (box) {
      if (box.category_id !== category.id) patch(box, { category_id: category.id });
    } else {
      newCategory.value = String(category.id);
      message("New boxes: " + category.name + ".");
    }
  }

  // -- zoom and pan: the image fits the stage; zoom multiplies that ----------------------------------
  let zoom = 1;
  function fitScale() {
    const w = data.image.width || image.naturalWidth, h = data.image.height || image.naturalHeight;
    const room = canvas.getBoundingClientRect();
    const height = Math.max(200, window.innerHeight - room.top - 16);
    return Math.max(0.05, Math.min((canvas.clientWidth || room.width) / w, height / h));
  }

  function applyZoom(factor, around) {
    const w = data.image.width || image.naturalWidth;
    const old = image.getBoundingClientRect();
    zoom = Math.max(1, Math.min(8, factor));
    const scale = fitScale() * zoom;
    image.style.width = Math.round(w * scale) + "px";
    canvas.style.height = zoom > 1 ? Math.round(fitScale() * (data.image.height || image.naturalHeight)) + "px" : "";
    canvas.classList.toggle("zoomed", zoom > 1);
    zoomLevel.textContent = Math.round(scale * 100) + "%";
    if (around && old.width) {  // keep the point under the pointer in place
      const ratio = image.getBoundingClientRect().width / old.width;
      const cr = canvas.getBoundingClientRect();
      canvas.scrollLeft = (canvas.scrollLeft + around.x - cr.left) * ratio - (around.x - cr.left);
      canvas.scrollTop = (canvas.scrollTop + around.y - cr.top) * ratio - (around.y - cr.top);
    }
  }

  canvas.addEventListener("wheel", function (event) {
    event.preventDefault();
    applyZoom(zoom * (event.deltaY < 0 ? 1.25 : 0.8), { x: event.clientX, y: event.clientY });
  }, { passive: false });
  let pan = null;
  canvas.addEventListener("pointerdown", function (event) {
    if (event.button !== 1) return;  // middle button pans; the left one draws and moves boxes
    event.preventDefault();
    pan = { x: event.clientX, y: event.clientY, left: canvas.scrollLeft, top: canvas.scrollTop };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!pan) return;
    canvas.scrollLeft = pan.left - (event.clientX - pan.x);
    canvas.scrollTop = pan.top - (event.clientY - pan.y);
  });
  canvas.addEventListener("pointerup", function () { pan = null; });
  window.addEventListener("resize", function () { applyZoom(zoom); });

  // -- heatmap overlay (painted from the concept map by heatmap.js) -----------------------------
  function setupHeatmap(host) {
    const seen = new Set();
    data.maps.forEach(function (m) {
      if (seen.has(m.category_id)) return;  // newest model version first
      seen.add(m.category_id);
      const option = document.createElement("option");
      option.value = m.url;
      option.textContent = categoryName.get(m.category_id) || String(m.category_id);
      heatCategory.appendChild(option);
    });
    heatToggle.disabled = data.maps.length === 0;
    overlay = document.createElement("canvas");
    overlay.className = "heatmap";
    overlay.hidden = true;
    const svg = host.querySelector("svg");
    host.insertBefore(overlay, svg);
    applyHeatmap();
  }

  function applyHeatmap() {
    const on = heatToggle.checked && heatCategory.value;
    overlay.style.opacity = heatOpacity.value;
    if (!on) { overlay.hidden = true; return; }
    const url = heatCategory.value;
    window.camlabel.heatmap.show(overlay, url, data.image.width, data.image.height).then(function () {
      overlay.hidden = !(heatToggle.checked && heatCategory.value === url);
    }, function () { overlay.hidden = true; });
  }

  // -- keyboard (remappable: shortcuts.js) -------------------------------------------------------
  const shortcuts = window.camlabel.shortcuts.create(document.getElementById("shortcut-list"),
    document.getElementById("keys-status"), document.getElementById("keys-reset"));

  window.camlabel.trapFocus(help);

  function toggleHelp() {
    if (help.open) help.close();
    else help.showModal();
  }

  let escapeCaptured = false;
  document.addEventListener("keydown", function (event) {
    escapeCaptured = shortcuts.handleCapture(event) && event.key === "Escape";
  }, true);
  help.addEventListener("cancel", function (event) {
    // Esc while a key is being remapped cancels the remapping, not the dialog
    if (escapeCaptured) event.preventDefault();
    escapeCaptured = false;
  });

  // Ctrl+Z / Ctrl+Shift+Z / Ctrl+Y: ours, before Annotorious' own (geometry-only) undo sees them
  window.addEventListener("keydown", function (event) {
    if (!(event.ctrlKey || event.metaKey) || event.altKey || help.open) return;
    if (event.target.closest("input, select, textarea")) return;
    const key = event.key.toLowerCase();
    if (key !== "z" && key !== "y") return;
    event.preventDefault();
    event.stopImmediatePropagation();
    step(key === "y" || event.shiftKey ? "redo" : "undo");
  }, true);

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (help.open) {  // the dialog keeps focus; only its own keys work
      if (shortcuts.actionFor(event) === "help") { help.close(); event.preventDefault(); }
      return;
    }
    if (event.target.closest("input, select, textarea")) return;
    if ((event.key === " " || event.key === "Enter") && event.target.closest("button, a")) return;  // the focused control's own key
    if (event.key === "Tab") {
      if (event.target === canvas && stepBox(event.shiftKey ? -1 : 1)) event.preventDefault();
      return;  // elsewhere (or past the last box) Tab moves focus as usual
    }
    const box = selected();
    const action = event.key === "Escape" ? "escape" : shortcuts.actionFor(event);
    if (action === "help") { toggleHelp(); }
    else if (action === "escape") { setDrawing(false); if (anno) anno.cancelSelected(); selectedId = null; refresh(); }
    else if (action === "next") { goNext(); }
    else if (action === "prev") { goPrev(); }
    else if (action === "acceptAll") { acceptAll(); }
    else if (action === "acceptAllNext") { acceptAllNext(); }
    else if (action === "noObjects") { toggleNoObjects(); }
    else if (action === "reject" && box) { patch(box, { status: "rejected" }); }
    else if (action === "accept" && box) { patch(box, { status: "accepted" }); }
    else if (action === "delete" && box) { removeBox(box); }
    else if (action === "nextBox") { stepBox(1); }
    else if (action === "prevBox") { stepBox(-1); }
    else if (action === "draw") { setDrawing(!(anno && anno.isDrawingEnabled())); }
    else if (action === "undo") { step("undo"); }
    else if (action === "redo") { step("redo"); }
    else if (action === "zoomIn") { applyZoom(zoom * 1.25); }
    else if (action === "zoomOut") { applyZoom(zoom * 0.8); }
    else if (action === "zoomFit") { applyZoom(1); }
    else if (action === "heatmap") { heatToggle.checked = !heatToggle.checked; applyHeatmap(); }
    else if (action && action.indexOf("class") === 0) { setClass(Number(action.slice(5))); }
    else return;
    event.preventDefault();
  }

  // -- start ---------------------------------------------------------------------------------
  data.categories.forEach(function (c) {
    const option = document.createElement("option");
    option.value = String(c.id);
    option.textContent = c.name;
    newCategory.appendChild(option);
  });
  if (data.image.tags && data.image.tags.length) newCategory.value = String(data.image.tags[0]);  // new boxes: the image's tag
  keepDrawing.checked = localStorage.getItem("camlabel.keepDrawing") === "1";
  keepDrawing.addEventListener("change", function () { localStorage.setItem("camlabel.keepDrawing", keepDrawing.checked ? "1" : "0"); });

  function start() {
    applyZoom(1);
    anno = Annotorious.createImageAnnotator(image, { drawingEnabled: false, autoSave: true, style: style });
    anno.setDrawingTool("rectangle");
    anno.setAnnotations(sortedBoxes().map(toAnnotation));
    const host = anno.element || image.parentElement;
    labelLayer = document.createElement("div");
    labelLayer.className = "box-labels";
    labelLayer.setAttribute("aria-hidden", "true");
    host.appendChild(labelLayer);

    anno.on("selectionChanged", function (annotations) {
      selectedId = annotations && annotations.length ? annotations[0].id : null;
      refresh();
    });
    anno.on("createAnnotation", async function (annotation) {
      const shape = Object.assign({ category_id: Number(newCategory.value) }, geometryOf(annotation));
      anno.removeAnnotation(annotation.id);
      const box = await createBox(shape, null);
      const keep = keepDrawing.checked;
      if (box) {
        record({ kind: "create", box: Object.assign(snapshot(box), { id: box.id }) });
        selectedId = String(box.id);  // the new box stays selected (number keys set its class)
        message("Added box #" + box.id + ".");
      }
      if (!keep) {
        setDrawing(false);
        if (box) anno.setSelected(String(box.id));
      }
      refresh();
      canvas.focus();
    });
    anno.on("updateAnnotation", function (annotation) {
      const box = boxes.get(annotation.id);
      if (!box) return;
      const g = geometryOf(annotation);
      const moved = ["x1", "y1", "x2", "y2"].some(function (k) { return Math.abs(g[k] - box[k]) >= 0.5; });
      if (moved) patch(box, g);  // Annotorious may report the same edit twice (idle timer and deselect)
    });
    anno.on("deleteAnnotation", function (annotation) {
      const box = boxes.get(annotation.id);
      if (box) removeBox(box);
    });
    setupHeatmap(host);
    saveHistory();
    refresh();
    if (data.next_src) { const next = new window.Image(); next.src = data.next_src; }  // the next image is in the cache when J is pressed
    const back = trail();
    const prevLink = document.getElementById("prev-image");
    if (back.length) { prevLink.href = back[back.length - 1]; prevLink.hidden = false; }
    canvas.focus({ preventScroll: true });
    document.body.dataset.ready = "1";
  }

  // the grid link returns to the page, sort and filter the grid was left at
  const gridLink = document.getElementById("grid-link");
  const savedGrid = sessionStorage.getItem("camlabel.grid." + data.collection_id);
  if (savedGrid) gridLink.href = savedGrid;

  document.getElementById("accept-all").addEventListener("click", acceptAll);
  document.getElementById("accept-next").addEventListener("click", acceptAllNext);
  noObjectsButton.addEventListener("click", toggleNoObjects);
  drawButton.addEventListener("click", function () { setDrawing(!(anno && anno.isDrawingEnabled())); });
  undoButton.addEventListener("click", function () { step("undo"); });
  redoButton.addEventListener("click", function () { step("redo"); });
  document.getElementById("zoom-in").addEventListener("click", function () { applyZoom(zoom * 1.25); });
  document.getElementById("zoom-out").addEventListener("click", function () { applyZoom(zoom * 0.8); });
  document.getElementById("zoom-fit").addEventListener("click", function () { applyZoom(1); });
  document.getElementById("help-button").addEventListener("click", toggleHelp);
  document.getElementById("help-close").addEventListener("click", function () { help.close(); });
  document.getElementById("prev-image").addEventListener("click", function (event) { event.preventDefault(); goPrev(); });
  const nextLink = document.getElementById("next-image");
  if (nextLink) nextLink.addEventListener("click", function (event) { event.preventDefault(); goNext(); });
  heatToggle.addEventListener("change", applyHeatmap);
  heatOpacity.addEventListener("input", applyHeatmap);
  heatCategory.addEventListener("change", applyHeatmap);
  document.addEventListener("keydown", onKey);
  if (image.complete && image.naturalWidth) start();
  else image.addEventListener("load", start, { once: true });
})();
