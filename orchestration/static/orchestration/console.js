// The console's few behaviours, kept out of inline handlers so the Content-Security-Policy
// needs no 'unsafe-inline' for scripts.
"use strict";

// A checkbox with data-select-all="<name>" ticks or clears every checkbox named <name> in its form.
document.addEventListener("change", (event) => {
  const box = event.target;
  if (!(box instanceof HTMLInputElement) || !box.dataset.selectAll) return;
  const scope = box.form || document;
  for (const other of scope.querySelectorAll(`input[type=checkbox][name="${box.dataset.selectAll}"]`)) {
    other.checked = box.checked;
  }
});

// A polling element marked data-hold-while-editing skips its refresh while the focus is inside it
// (someone typing a reason), unless on a button: what an hx-trigger filter would say, without
// the eval a filter needs.
document.addEventListener("htmx:beforeRequest", (event) => {
  const element = event.detail.elt;
  if (!(element instanceof Element) || !element.hasAttribute("data-hold-while-editing")) return;
  const focused = document.activeElement;
  if (focused && element.contains(focused) && focused.tagName !== "BUTTON") event.preventDefault();
});
