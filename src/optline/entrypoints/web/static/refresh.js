// A sending campaign's page reloads itself while the campaign sends (no inline script: the CSP forbids it).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var seconds = parseInt(live.dataset.refresh || "5", 10);
  setTimeout(function () { window.location.reload(); }, seconds * 1000);
}());
