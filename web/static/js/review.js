// Single-image review with Annotorious (vendored in /static/vendor/annotorious).
// Every edit is saved at once through the JSON API with the box's row version; a 409 shows a
// visible conflict message and puts the server's current box back (never a silent overwrite).
// All text from the server is inserted with textContent, never innerHTML.
"use strict";
(function () {
  const api = window.camlabel.api;
  const errorText = window.camlabel.errorText;
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const image = document.getElementById("review-image");
  const listEl = document.getElementById("box-list");
  const conflictEl = document.getElementById("conflict");
  const saveState = document.getElementById("save-state");
  const newCategory = document.getElementById("new-category");
  const heatToggle = document.getElementById("heatmap-toggle");
  const heatOpacity = document.getElementById("heatmap-opacity");
  const heatCategory = document.getElementById("heatmap-category");
  const help = document.getElementById("help");
  const drawButton = document.getElementById("draw-toggle");

  const boxes = new Map();  // id (string) -> box JSON from the API
  data.boxes.forEach(function (b) { boxes.set(String(b.id), b); });
  const categoryName = new Map(data.categories.map(function (c) { return [c.id, c.name]; }));
  let selectedId = null;
  let anno = null;
  let overlay = null;

  const COLORS = { proposed: "#f5c518", accepted: "#2ecc71", rejected: "#e74c3c", edited: "#3498db" };

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

  function message(text, isConflict) {
    if (isConflict) {
      conflictEl.textContent = text;
      conflictEl.hidden = false;
    }
    saveState.textContent = text;
  }

  function clearConflict() { conflictEl.hidden = true; conflictEl.textContent = ""; }

  function replaceBox(box) {
    boxes.set(String(box.id), box);
    renderList();
    if (anno) {
      anno.updateAnnotation(toAnnotation(box));
      anno.setStyle(style);
    }
  }

  function handleFailure(result, box) {
    if (result.status === 409) {
      const current = result.data && result.data.error && result.data.error.current;
      message("Conflict: " + errorText(result) + (current ? " (box #" + current.id + " now at version " + current.version + ")" : ""), true);
      if (current) replaceBox(current);
      else if (box) { boxes.delete(String(box.id)); if (anno) anno.removeAnnotation(String(box.id)); renderList(); }
    } else {
      message("Not saved: " + errorText(result), true);
      if (box) replaceBox(box);  // put the last saved state back on screen
    }
  }

  async function patch(box, changes) {
    message("Saving…");
    const result = await api("PATCH", "/api/v1/boxes/" + box.id, Object.assign({ version: box.version }, changes));
    if (result.ok) {
      clearConflict();
      message("Saved box #" + box.id + " (" + result.data.status + ").");
      replaceBox(result.data);
    } else {
      handleFailure(result, box);
    }
    return result.ok;
  }

  async function removeBox(box) {
    message("Deleting…");
    const result = await api("DELETE", "/api/v1/boxes/" + box.id + "?version=" + box.version);
    if (result.ok) {
      clearConflict();
      boxes.delete(String(box.id));
      if (anno) anno.removeAnnotation(String(box.id));
      if (selectedId === String(box.id)) selectedId = null;
      renderList();
      message("Deleted box #" + box.id + ".");
    } else {
      handleFailure(result, box);
    }
  }

  function selected() { return selectedId ? boxes.get(selectedId) : null; }

  function select(id) {
    selectedId = id;
    if (anno) anno.setSelected(id || undefined);
    renderList();
  }

  function button(label, className, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = className;
    b.textContent = label;
    b.addEventListener("click", function (event) { event.stopPropagation(); onClick(); });
    return b;
  }

  function renderList() {
    listEl.replaceChildren();
    Array.from(boxes.values()).sort(function (a, b) { return a.id - b.id; }).forEach(function (box) {
      const li = document.createElement("li");
      li.className = "box-item status-" + box.status + (String(box.id) === selectedId ? " selected" : "");
      li.dataset.boxId = String(box.id);
      li.dataset.status = box.status;
      li.dataset.version = String(box.version);
      const title = document.createElement("span");
      title.className = "box-title";
      title.textContent = "#" + box.id + " " + (box.score === null ? box.source : box.score.toFixed(2)) + " · " + box.status;
      const cat = document.createElement("select");
      cat.className = "box-category";
      cat.setAttribute("aria-label", "category of box " + box.id);
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
        button("Accept", "accept", function () { patch(box, { status: "accepted" }); }),
        button("Reject", "reject", function () { patch(box, { status: "rejected" }); }),
        button("Delete", "delete", function () { removeBox(box); }));
      li.addEventListener("click", function () { select(String(box.id)); });
      listEl.appendChild(li);
    });
  }

  async function acceptAll() {
    const versions = {};
    boxes.forEach(function (box) { if (box.status === "proposed") versions[box.id] = box.version; });
    if (Object.keys(versions).length === 0) { message("No proposed boxes to accept."); return; }
    const result = await api("POST", "/api/v1/images/" + data.image.id + "/accept-all", { versions: versions });
    if (result.ok) {
      clearConflict();
      result.data.updated.forEach(replaceBox);
      message("Accepted " + result.data.updated.length + " box(es).");
    } else if (result.status === 409) {
      const err = result.data.error;
      (err.updated || []).forEach(replaceBox);
      (err.conflicts || []).forEach(function (c) { if (c) replaceBox(c); });
      message("Conflict: " + err.message, true);
    } else {
      message("Not saved: " + errorText(result), true);
    }
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
      result.data.boxes.forEach(replaceBox);
      showReviewState(result.data.review_state);
      message(marked ? "No longer marked “no objects”." : "Marked “no objects” (" + result.data.boxes.length + " box(es) rejected).");
    } else {
      handleFailure(result, null);
      const current = result.data && result.data.error && result.data.error.current;
      if (current) replaceBox(current);
    }
  }

  function setDrawing(on) {
    if (!anno) return;
    if (on) anno.cancelSelected();  // a pending selection would swallow the first drag
    anno.setDrawingEnabled(on);
    drawButton.classList.toggle("active", on);
    drawButton.setAttribute("aria-pressed", on ? "true" : "false");
    if (on) message("Drawing: drag on the image to add a " + (categoryName.get(Number(newCategory.value)) || "") + " box.");
  }

  // -- heatmap overlay ---------------------------------------------------------------------
  function setupHeatmap() {
    const seen = new Set();
    data.overlays.forEach(function (o) {
      if (seen.has(o.category_id)) return;  // newest model version first
      seen.add(o.category_id);
      const option = document.createElement("option");
      option.value = o.url;
      option.textContent = categoryName.get(o.category_id) || String(o.category_id);
      heatCategory.appendChild(option);
    });
    heatToggle.disabled = data.overlays.length === 0;
    overlay = document.createElement("img");
    overlay.className = "heatmap";
    overlay.alt = "";
    overlay.hidden = true;
    const host = anno ? anno.element : image.parentElement;
    const svg = host.querySelector("svg");
    host.insertBefore(overlay, svg);
    applyHeatmap();
  }

  function applyHeatmap() {
    const on = heatToggle.checked && heatCategory.value;
    overlay.hidden = !on;
    if (on && overlay.getAttribute("src") !== heatCategory.value) overlay.src = heatCategory.value;
    overlay.style.opacity = heatOpacity.value;
  }

  // -- keyboard (remappable: shortcuts.js) -------------------------------------------------------
  const shortcuts = window.camlabel.shortcuts.create(document.getElementById("shortcut-list"),
    document.getElementById("keys-status"), document.getElementById("keys-reset"));

  function onKey(event) {
    if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const box = selected();
    const action = event.key === "Escape" ? "escape" : shortcuts.actionFor(event);
    if (action === "help") { help.hidden = !help.hidden; }
    else if (action === "escape") { help.hidden = true; setDrawing(false); if (anno) anno.cancelSelected(); selectedId = null; renderList(); }
    else if (action === "next") { if (data.next_url) window.location.href = data.next_url; }
    else if (action === "prev") { if (data.prev_url) window.location.href = data.prev_url; }
    else if (action === "acceptAll") { acceptAll(); }
    else if (action === "noObjects") { toggleNoObjects(); }
    else if (action === "reject" && box) { patch(box, { status: "rejected" }); }
    else if (action === "accept" && box) { patch(box, { status: "accepted" }); }
    else if (action === "delete" && box) { removeBox(box); }
    else if (action === "draw") { setDrawing(!(anno && anno.isDrawingEnabled())); }
    else if (action === "heatmap") { heatToggle.checked = !heatToggle.checked; applyHeatmap(); }
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

  function start() {
    anno = Annotorious.createImageAnnotator(image, { drawingEnabled: false, autoSave: true, style: style });
    anno.setDrawingTool("rectangle");
    anno.setAnnotations(Array.from(boxes.values()).map(toAnnotation));

    anno.on("selectionChanged", function (annotations) {
      selectedId = annotations && annotations.length ? annotations[0].id : null;
      renderList();
    });
    anno.on("createAnnotation", async function (annotation) {
      const categoryId = Number(newCategory.value);
      const result = await api("POST", "/api/v1/images/" + data.image.id + "/boxes", Object.assign({ category_id: categoryId }, geometryOf(annotation)));
      anno.removeAnnotation(annotation.id);
      if (result.ok) {
        clearConflict();
        boxes.set(String(result.data.id), result.data);
        anno.addAnnotation(toAnnotation(result.data));
        anno.setStyle(style);
        selectedId = String(result.data.id);
        renderList();
        message("Added box #" + result.data.id + ".");
      } else {
        message("Not saved: " + errorText(result), true);
      }
      setDrawing(false);
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
    setupHeatmap();
    renderList();
    document.body.dataset.ready = "1";
  }

  document.getElementById("accept-all").addEventListener("click", acceptAll);
  noObjectsButton.addEventListener("click", toggleNoObjects);
  drawButton.addEventListener("click", function () { setDrawing(!(anno && anno.isDrawingEnabled())); });
  document.getElementById("help-button").addEventListener("click", function () { help.hidden = !help.hidden; });
  document.getElementById("help-close").addEventListener("click", function () { help.hidden = true; });
  heatToggle.addEventListener("change", applyHeatmap);
  heatOpacity.addEventListener("input", applyHeatmap);
  heatCategory.addEventListener("change", applyHeatmap);
  // a key being remapped is taken in the capture phase: it reaches neither a button nor onKey
  document.addEventListener("keydown", shortcuts.handleCapture, true);
  document.addEventListener("keydown", onKey);
  if (image.complete && image.naturalWidth) start();
  else image.addEventListener("load", start, { once: true });
})();
