// xent-conformance report: matrix filters and copy buttons. No network, no dependencies.
(function () {
  "use strict";
  function byId(id) { return document.getElementById(id); }

  function applyFilters() {
    var table = byId("matrix");
    if (!table) { return; }
    var fw = byId("f-framework").value, dt = byId("f-dtype").value, q = byId("f-quantity").value;
    var text = byId("f-text").value.trim().toLowerCase();
    var shown = 0, rows = table.querySelectorAll("tbody tr.matrix-row");
    rows.forEach(function (tr) {
      var ok = (!fw || tr.dataset.framework === fw) && (!q || tr.dataset.quantity === q) &&
               (!text || tr.dataset.api.toLowerCase().indexOf(text) >= 0);
      tr.classList.toggle("hidden", !ok);
      if (ok) { shown += 1; }
    });
    table.querySelectorAll("[data-dtype]").forEach(function (cell) {
      cell.classList.toggle("hidden", !!dt && cell.dataset.dtype !== dt);
    });
    table.querySelectorAll("thead th.cat").forEach(function (th) {
      th.colSpan = dt ? 1 : th.dataset.span;
    });
    byId("shown").textContent = shown + " of " + rows.length + " rows shown";
    var params = new URLSearchParams();
    if (fw) { params.set("framework", fw); }
    if (dt) { params.set("dtype", dt); }
    if (q) { params.set("quantity", q); }
    if (text) { params.set("q", text); }
    var hash = params.toString();
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", hash ? "#" + hash : window.location.pathname);
    }
  }

  function initFilters() {
    var table = byId("matrix");
    if (!table) { return; }
    table.querySelectorAll("thead th.cat").forEach(function (th) { th.dataset.span = th.colSpan; });
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    [["f-framework", "framework"], ["f-dtype", "dtype"], ["f-quantity", "quantity"], ["f-text", "q"]].forEach(function (p) {
      var el = byId(p[0]);
      if (params.get(p[1]) !== null) { el.value = params.get(p[1]); }
      el.addEventListener(el.tagName === "INPUT" ? "input" : "change", applyFilters);
    });
    applyFilters();
  }

  function initCopy() {
    document.querySelectorAll("button.copy").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var code = btn.parentNode.querySelector("pre code").textContent;
        function done(ok) { btn.textContent = ok ? "copied" : "select and copy"; }
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(code).then(function () { done(true); }, function () { done(false); });
        } else {
          var range = document.createRange();
          range.selectNodeContents(btn.parentNode.querySelector("pre code"));
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          var ok = false;
          try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
          done(ok);
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { initFilters(); initCopy(); });
}());
