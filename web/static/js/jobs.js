// Live job progress: polls /api/v1/jobs/<id> for every unfinished job row and updates it in place.
"use strict";
(function () {
  const FINISHED = ["succeeded", "failed", "cancelled"];
  const rows = Array.from(document.querySelectorAll("tr.job"));

  // the same text as web/job_text.py: "8/16", "cancelled at 8/16", "8" while the total is unknown
  function countText(job) {
    const progress = job.total === null ? String(job.done) : job.done + "/" + job.total;
    if (job.status === "cancelled") return "cancelled at " + progress;
    if (job.status === "queued" && !job.done) return "waiting";
    return progress;
  }

  function render(row, job) {
    row.dataset.status = job.status;
    row.querySelector(".job-status").textContent = job.status + (job.cancel_requested && !FINISHED.includes(job.status) ? " (cancelling)" : "");
    const bar = row.querySelector(".job-progress");
    bar.max = job.total || 1;
    bar.value = job.total ? job.done : (job.status === "succeeded" ? 1 : 0);
    row.querySelector(".job-count").textContent = countText(job);
    row.querySelector(".job-error").textContent = job.error || "";
    const summary = row.querySelector(".job-summary");
    if (summary) summary.textContent = (job.result && job.result.summary) || "";
    if (FINISHED.includes(job.status)) {
      const cancel = row.querySelector(".job-cancel");
      if (cancel) cancel.remove();
      const download = row.querySelector(".job-download");
      if (job.result && job.result.export_key && download && !download.firstChild) {
        const link = document.createElement("a");
        link.href = "/api/v1/jobs/" + job.id + "/download";
        link.textContent = "download " + (job.result.filename || "export");
        download.appendChild(link);
      }
    }
  }

  async function poll(row) {
    const result = await window.camlabel.api("GET", "/api/v1/jobs/" + row.dataset.jobId);
    if (result.ok) {
      render(row, result.data);
      if (FINISHED.includes(result.data.status)) return;
    }
    setTimeout(function () { poll(row); }, 1000);
  }

  rows.forEach(function (row) {
    if (!FINISHED.includes(row.dataset.status)) poll(row);
  });
})();
