// Live parts of a page without a build step: every element with data-refresh="URL" is
// refetched every data-every seconds and its content replaced when it changed.
(function () {
  function refresh(el) {
    fetch(el.dataset.refresh, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && html !== el.dataset.last) {
          el.dataset.last = html;
          el.innerHTML = html;
          // elements marked data-mirror="ID" update another part of the page (a state badge)
          el.querySelectorAll("[data-mirror]").forEach(function (m) {
            var target = document.getElementById(m.dataset.mirror);
            if (target) { target.textContent = m.textContent; target.className = m.className; }
          });
        }
      })
      .catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      var every = parseFloat(el.dataset.every || "5") * 1000;
      setInterval(function () { if (!document.hidden) refresh(el); }, every);
    });
  });
})();
