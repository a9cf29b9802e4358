// The campaign form's live preview: post the form to /dashboard/campaigns/preview as the operator types and
// swap in the panel it returns (the same server-side lint, compose and audience dry run as sending uses).
(function () {
  "use strict";
  var form = document.getElementById("campaign-form");
  if (!form) { return; }
  var tz = document.getElementById("c-tz");
  if (tz && !tz.dataset.default && window.Intl) {
    var mine = Intl.DateTimeFormat().resolvedOptions().timeZone;
    for (var i = 0; i < tz.options.length; i++) {
      if (tz.options[i].value === mine) { tz.value = mine; break; }
    }
  }
  var timer = null;
  var seq = 0;
  function refresh() {
    var body = new URLSearchParams(new FormData(form));
    var mine = ++seq;
    fetch(form.dataset.preview, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || mine !== seq) { return; }
        var current = document.getElementById("preview");
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("#preview");
        if (current && fresh) { current.replaceWith(fresh); }
      });
  }
  function later() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  }
  form.addEventListener("input", later);
  form.addEventListener("change", later);
  refresh();
}());
