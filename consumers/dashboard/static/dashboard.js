// The dashboard refreshes itself by fetching its own content and swapping it in;
// without this script the page is still complete, only not live.
(function () {
  var lang = document.documentElement.lang;
  var state = document.getElementById("refresh-state");
  var content = document.getElementById("content");
  var every = Number(content.dataset.refreshMs) || 5000;
  function refresh() {
    fetch(location.pathname + "?part=content&lang=" + lang, {cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        content.innerHTML = html; state.textContent = ""; state.className = "";
        // Counted so a test (or an operator) can tell the page is live.
        content.dataset.refreshes = String((Number(content.dataset.refreshes) || 0) + 1);
      })
      .catch(function () { state.textContent = state.dataset.stale; state.className = "stale"; });
  }
  setInterval(refresh, every);
})();
