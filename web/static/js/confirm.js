// Confirmations before deleting: a form with data-confirm-name="<name>" submits only once the
// name is typed into its confirm_name field (the server checks it again); a form with
// data-confirm="<question>" asks the question first.
"use strict";
(function () {
  document.querySelectorAll("form[data-confirm-name]").forEach(function (form) {
    const input = form.querySelector("input[name=confirm_name]");
    const button = form.querySelector("button[type=submit]");
    const expected = form.dataset.confirmName;
    function update() { button.disabled = input.value !== expected; }
    input.addEventListener("input", update);
    form.addEventListener("submit", function (event) {
      if (input.value !== expected) { event.preventDefault(); input.focus(); }
    });
    update();
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
