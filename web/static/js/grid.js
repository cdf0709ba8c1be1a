// Review grid: concept-map overlay toggle and opacity, remembered in localStorage.
"use strict";
(function () {
  const toggle = document.getElementById("overlay-toggle");
  const slider = document.getElementById("overlay-opacity");
  function apply() {
    document.body.classList.toggle("show-overlays", toggle.checked);
    document.documentElement.style.setProperty("--overlay-opacity", slider.value);
    localStorage.setItem("camlabel.overlay", JSON.stringify({ on: toggle.checked, opacity: slider.value }));
  }
  try {
    const saved = JSON.parse(localStorage.getItem("camlabel.overlay") || "null");
    if (saved) { toggle.checked = !!saved.on; slider.value = saved.opacity; }
  } catch (e) { /* ignore a bad stored value */ }
  toggle.addEventListener("change", apply);
  slider.addEventListener("input", apply);
  document.addEventListener("keydown", function (event) {
    if (event.target.closest("input, select, textarea")) return;
    if (event.key === "h" || event.key === "H") { toggle.checked = !toggle.checked; apply(); }
  });
  apply();
})();
