// Added to Locust's page by harness/web/panel.py.
//
// 1. Shows toolclash's panel (the page at ./toolclash) in the toolclash tab, whose own content
//    Locust leaves empty. Locust's page is a React app that re-renders the tab panel as the user
//    switches tabs; this watches it and puts the panel (an iframe of the same origin, sized to its
//    content) right under the tab bar while the toolclash tab is selected, and takes it away
//    otherwise.
// 2. Reloads the page once when a ramp's verdict is in. Locust's page stops asking for the
//    runner's state and logs as soon as it sees a test stopping, and a toolclash ramp stops for
//    seconds (agents finish their calls, then the audit): the page would stay at STOPPING, with
//    no NEW button, and its Logs tab without the summary (Locust issues #2046, #2400). It waits
//    until the runner is stopped: a page loaded while it cleans up would stay at CLEANUP.
(function () {
  "use strict";
  const ID = "toolclash-panel";

  function toolclashTabSelected() {
    const tab = Array.from(document.querySelectorAll('[role="tab"]'))
      .find((button) => button.textContent.trim().toLowerCase() === "toolclash");
    return tab !== undefined && tab.getAttribute("aria-selected") === "true";
  }

  function place() {
    let frame = document.getElementById(ID);
    const tabs = document.querySelector('[role="tablist"]');
    if (!tabs || !toolclashTabSelected()) {
      if (frame) frame.remove();
      return;
    }
    // The tab bar's box; Locust renders a tab's content right after it.
    const bar = tabs.closest(".MuiTabs-root") || tabs;
    const anchor = bar.parentElement && bar.parentElement.parentElement ? bar.parentElement : bar;
    if (!frame) {
      frame = document.createElement("iframe");
      frame.id = ID;
      frame.src = "./toolclash";
      frame.title = "toolclash";
      frame.setAttribute("scrolling", "no");
      frame.style.cssText = "display:block;width:100%;border:0;min-height:400px;margin-top:8px;";
    }
    if (anchor.nextSibling !== frame) anchor.after(frame);
  }

  function fit() {
    const frame = document.getElementById(ID);
    const page = frame && frame.contentDocument && frame.contentDocument.documentElement;
    if (page) frame.style.height = `${page.scrollHeight}px`;
  }

  let verdictAtLoad;  // the verdict this page was loaded with ("" for none), once known

  // Locust's page polls its state only while a test spawns or runs: loaded while its runner
  // still cleans up (a verdict can come first), its header would say CLEANUP for good.
  async function locustSettled() {
    const stats = await (await fetch("./stats/requests", {cache: "no-store"})).json();
    return ["stopped", "ready"].includes(stats.state);
  }

  async function reloadOnNewVerdict() {
    try {
      const data = await (await fetch("./toolclash/status", {cache: "no-store"})).json();
      const verdict = ["done", "audit_error"].includes(data.status) ? `${data.ramp}:${data.status}` : "";
      if (verdictAtLoad === undefined) {
        verdictAtLoad = verdict;
        document.documentElement.dataset.toolclashVerdict = verdict;
      } else if (verdict && verdict !== verdictAtLoad && await locustSettled()) {
        window.location.reload();
      }
    } catch (error) {
      // Locust is gone or busy: ask again later.
    }
  }

  new MutationObserver(place).observe(document.documentElement, {childList: true, subtree: true});
  setInterval(() => { place(); fit(); }, 500);
  reloadOnNewVerdict();
  setInterval(reloadOnNewVerdict, 2000);
})();
