(function () {
  var section = document.getElementById("toolclash-report");
  if (!section) return;
  function chosenMode() {
    var stored = null;
    try { stored = window.localStorage.getItem("theme"); } catch (e) {}
    if (window.theme) return window.theme === "dark" ? "dark" : "light";
    if (stored) return stored === "dark" ? "dark" : "light";
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function shownMode() {
    var color = getComputedStyle(document.body).backgroundColor;
    var m = /rgba?\((\d+),\s*(\d+),\s*(\d+)(?:,\s*([\d.]+))?/.exec(color);
    if (!m || m[4] === "0") return null;
    return 0.299 * m[1] + 0.587 * m[2] + 0.114 * m[3] < 128 ? "dark" : "light";
  }
  section.setAttribute("data-mode", chosenMode());
  function place() {
    var titles = document.querySelectorAll("#root h1"), title = null;
    for (var i = 0; i < titles.length; i++) if (/Locust/.test(titles[i].textContent)) title = titles[i];
    var summary = title && title.parentElement && title.parentElement.nextElementSibling;
    if (!summary) return false;
    summary.parentNode.insertBefore(section, summary.nextSibling);
    section.setAttribute("data-placed", "after-summary");
    section.setAttribute("data-mode", shownMode() || chosenMode());
    return true;
  }
  if (!place()) {
    var observer = new MutationObserver(function () { if (place()) observer.disconnect(); });
    observer.observe(document.getElementById("root") || document.body, {childList: true, subtree: true});
  }
})();
