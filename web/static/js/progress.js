// Review progress line (templates/review/_progress.html): filled from the review-stats API after
// the page is shown; camlabel.refreshProgress() fills it again after an edit. textContent only.
"use strict";
(function () {
  const line = document.getElementById("review-progress");
  if (!line) return;

  function setCount(id, n, text) {
    const el = document.getElementById(id);
    el.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = String(n);
    el.append(strong, " " + text);
  }

  async function refresh() {
    const result = await window.camlabel.api("GET", line.dataset.statsUrl);
    if (!result.ok) return;
    const c = result.data.images;
    const reviewed = c.reviewed + c.no_objects;
    setCount("count-to-review", c.to_review, "to review");
    setCount("count-reviewed", reviewed, "reviewed" + (c.no_objects ? " (" + c.no_objects + " with no objects)" : ""));
    document.getElementById("count-total").textContent = c.total + (c.total === 1 ? " image" : " images");
    const bar = line.querySelector("progress");
    bar.max = Math.max(c.total, 1);
    bar.value = reviewed;
    line.dataset.loaded = "1";
  }

  window.camlabel.refreshProgress = refresh;
  refresh();
})();
