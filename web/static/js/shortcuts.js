// Remappable keyboard shortcuts of the review tool: the key map (defaults, saved per browser in
// localStorage), the help overlay's list with a "change" button per action, and key capture.
// Text goes in with textContent only.
"use strict";
window.camlabel = window.camlabel || {};
window.camlabel.shortcuts = (function () {
  const STORAGE_KEY = "camlabel.keys";
  // [action, description, default keys]; Escape, Tab and Ctrl+Z/Y are fixed (FIXED below).
  const ACTIONS = [
    ["next", "next image", ["j", "ArrowRight"]],
    ["prev", "previous image", ["k", "ArrowLeft"]],
    ["acceptAll", "accept all proposed boxes", ["a"]],
    ["acceptAllNext", "accept all proposed boxes and go to the next image", [" "]],
    ["noObjects", "mark the image: no objects (toggle)", ["n"]],
    ["accept", "accept selected box", ["e", "Enter"]],
    ["reject", "reject selected box", ["r"]],
    ["delete", "delete selected box", ["Delete", "Backspace"]],
    ["nextBox", "select the next box", ["ArrowDown"]],
    ["prevBox", "select the previous box", ["ArrowUp"]],
    ["draw", "draw a new box (toggle)", ["d"]],
    ["undo", "undo (accept, reject, class, delete, move, draw)", ["z"]],
    ["redo", "redo", ["y"]],
    ["zoomIn", "zoom in", ["+", "="]],
    ["zoomOut", "zoom out", ["-"]],
    ["zoomFit", "fit the image to the screen", ["0"]],
    ["heatmap", "toggle heatmap", ["h"]],
    ["help", "show / hide this help", ["?"]],
  ];
  // Number keys: the class of the selected box (or of new boxes), in the image's class order.
  for (let n = 1; n <= 9; n++) ACTIONS.push(["class" + n, "set class " + n, [String(n)]]);
  // Keys that cannot be remapped, listed after the others.
  const FIXED = [
    ["Esc", "close help, stop drawing, deselect"],
    ["Tab / Shift+Tab", "next / previous box while the image has focus"],
    ["Ctrl+Z / Ctrl+Shift+Z, Ctrl+Y", "undo / redo"],
    ["wheel, middle-drag", "zoom about the pointer, pan"],
  ];
  const UNBINDABLE = new Set(["Escape", "Tab", "Shift", "Control", "Alt", "Meta", "CapsLock", "Dead", "Unidentified"]);
  const NAMES = { ArrowRight: "→", ArrowLeft: "←", ArrowUp: "↑", ArrowDown: "↓", " ": "Space" };

  function norm(key) { return key.length === 1 ? key.toLowerCase() : key; }
  function label(key) { return NAMES[key] || (key.length === 1 ? key.toUpperCase() : key); }
  function describe(action) { return ACTIONS.find(function (a) { return a[0] === action; })[1]; }

  function defaults() {
    const map = {};
    ACTIONS.forEach(function (a) { map[a[0]] = a[2].slice(); });
    return map;
  }

  function load() {
    const map = defaults();
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null"); } catch (e) { saved = null; }
    if (saved && typeof saved === "object") {
      ACTIONS.forEach(function (a) {
        const keys = saved[a[0]];
        if (Array.isArray(keys) && keys.every(function (k) { return typeof k === "string" && k && !UNBINDABLE.has(k); })) {
          map[a[0]] = keys.map(norm);
        }
      });
    }
    return map;
  }

  // create(listEl, statusEl, resetButton) -> { actionFor(event), handleCapture(event), capturing() }
  function create(listEl, statusEl, resetButton) {
    let map = load();
    let capturing = null;  // the action waiting for its new key

    function save() {
      const changed = JSON.stringify(map) !== JSON.stringify(defaults());
      if (changed) localStorage.setItem(STORAGE_KEY, JSON.stringify(map));
      else localStorage.removeItem(STORAGE_KEY);
    }

    function render() {
      document.querySelectorAll("[data-shortcut]").forEach(function (el) {  // hints on buttons
        const keys = map[el.dataset.shortcut] || [];
        el.textContent = keys.length ? "(" + keys.map(label).join(" / ") + ")" : "";
      });
      listEl.textContent = "";
      ACTIONS.forEach(function (a) {
        const dt = document.createElement("dt");
        dt.dataset.action = a[0];
        dt.textContent = map[a[0]].length ? map[a[0]].map(label).join(" / ") : "(none)";
        const dd = document.createElement("dd");
        dd.textContent = a[1] + " ";
        const button = document.createElement("button");
        button.type = "button";
        button.className = "rebind";
        button.dataset.action = a[0];
        button.setAttribute("aria-label", "change the key for " + a[1]);
        button.textContent = capturing === a[0] ? "press a key…" : "change";
        button.addEventListener("click", function () {
          capturing = a[0];
          statusEl.textContent = "Press the new key for “" + a[1] + "” (Esc cancels).";
          render();
        });
        dd.appendChild(button);
        listEl.appendChild(dt);
        listEl.appendChild(dd);
      });
      FIXED.forEach(function (f) {
        const dt = document.createElement("dt");
        dt.textContent = f[0];
        const dd = document.createElement("dd");
        dd.textContent = f[1];
        listEl.appendChild(dt);
        listEl.appendChild(dd);
      });
    }

    // While an action waits for its key, every keydown goes here; true if it was consumed.
    function handleCapture(event) {
      if (!capturing) return false;
      event.preventDefault();
      event.stopPropagation();
      const key = event.key;
      if (key === "Escape") {
        capturing = null;
        statusEl.textContent = "Unchanged.";
        render();
        return true;
      }
      if (UNBINDABLE.has(key)) return true;  // a modifier on its own: wait for the real key
      const k = norm(key);
      const action = capturing;
      const taken = ACTIONS.filter(function (a) { return a[0] !== action && map[a[0]].indexOf(k) >= 0; });
      taken.forEach(function (a) { map[a[0]] = map[a[0]].filter(function (x) { return x !== k; }); });
      map[action] = [k];
      capturing = null;
      save();
      statusEl.textContent = label(k) + " now: “" + describe(action) + "”" +
        (taken.length ? " (no longer: " + taken.map(function (a) { return "“" + a[1] + "”"; }).join(", ") + ")." : ".");
      render();
      return true;
    }

    function actionFor(event) {
      const k = norm(event.key);
      const hit = ACTIONS.find(function (a) { return map[a[0]].indexOf(k) >= 0; });
      return hit ? hit[0] : null;
    }

    resetButton.addEventListener("click", function () {
      map = defaults();
      capturing = null;
      save();
      statusEl.textContent = "Default shortcuts restored.";
      render();
    });
    render();
    return { actionFor: actionFor, handleCapture: handleCapture, capturing: function () { return capturing; } };
  }

  return { create: create };
})();
