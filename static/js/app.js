// rlhf-lab shared page script (no inline scripts: the Content-Security-Policy forbids them).
"use strict";
window.rlhf = window.rlhf || {};
// The CSRF token of this page, for fetch() calls that change state.
window.rlhf.csrfToken = function () {
  var meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
};
// Buttons with data-confirm ask before submitting their form.
document.addEventListener("click", function (event) {
  var el = event.target.closest("[data-confirm]");
  if (el && !window.confirm(el.getAttribute("data-confirm"))) { event.preventDefault(); }
});
