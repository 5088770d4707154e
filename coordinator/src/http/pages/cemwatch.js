// cemwatch status pages: refresh the page in place every few seconds (the body's
// data-refresh, in seconds; 0 for never). Without this script every page is complete; with
// it, the page follows the fleet without reloading. It loads nothing but this page's own URL.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh") || "0");
  var refreshed = 0;
  if (!(seconds > 0) || !window.fetch || !window.DOMParser) return;
  function busy() {
    var a = document.activeElement;
    return document.hidden || (a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA"));
  }
  function refresh() {
    if (busy()) return schedule();
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html");
        var main = next.getElementById("main");
        if (main && !busy()) {
          document.getElementById("main").replaceWith(main);
          document.title = next.title;
          document.body.setAttribute("data-refresh", next.body.getAttribute("data-refresh") || "0");
          document.body.setAttribute("data-refreshed", String(++refreshed));
        }
      })
      .catch(function () {})
      .then(schedule);
  }
  function schedule() {
    var s = Number(document.body.getAttribute("data-refresh") || "0");
    if (s > 0) setTimeout(refresh, s * 1000);
  }
  schedule();
})();
