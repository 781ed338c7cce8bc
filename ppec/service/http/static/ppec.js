// ppec web UI: refresh the page's live part in place, and keep "N s ago" ticking.
// No build step, no library: plain browser JavaScript, served from the package.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("refresh");
  if (!live) { return; }
  var every = Number(live.dataset.refresh || 3) * 1000;
  var loadedAt = Date.now();

  function ago(seconds) {
    if (seconds < 90) { return Math.round(seconds) + " s ago"; }
    if (seconds < 5400) { return Math.round(seconds / 60) + " min ago"; }
    return (seconds / 3600).toFixed(1) + " h ago";
  }

  function tickAges() {
    var extra = (Date.now() - loadedAt) / 1000;
    live.querySelectorAll("[data-age]").forEach(function (el) {
      el.textContent = ago(Number(el.dataset.age) + extra);
    });
  }

  function refresh() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        loadedAt = Date.now();
        live.dataset.refreshed = String(loadedAt);
        status.textContent = "refreshed " + new Date(loadedAt).toLocaleTimeString();
        status.classList.remove("failed");
      })
      .catch(function (e) {
        status.textContent = "refresh failed (" + e.message + "); retrying";
        status.classList.add("failed");
      })
      .finally(function () { window.setTimeout(refresh, every); });
  }

  window.setInterval(tickAges, 1000);
  window.setTimeout(refresh, every);
})();
