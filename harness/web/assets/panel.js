// toolclash's panel: asks toolclash/data every 2 s (before, during and after a ramp) and draws
// the verdict, the SLA and audit tables, the figures, turns, workflows and history tables and the
// charts. No library, no CDN.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const hovered = {};  // chart key -> the time the pointer is on, kept across refreshes

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function count(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
}

function figure(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? count(value) : String(Number(value.toPrecision(4)));
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function darkMode() {
  const theme = localStorage.getItem("theme");  // Locust's own choice, shared by its page
  return theme === "dark" || (theme === null && window.matchMedia("(prefers-color-scheme: dark)").matches);
}

// -- the verdict ------------------------------------------------------------------------------

function renderStatus(data) {
  const status = $("#tc-status");
  const verdict = $("#tc-verdict");
  const text = $("#tc-status-text");
  const reasons = $("#tc-reasons");
  const report = data.verdict;
  reasons.replaceChildren();
  verdict.textContent = "";
  verdict.className = "";
  if (data.status === "done") {
    const v = report.verdict;
    status.dataset.status = v;
    verdict.textContent = v.toUpperCase();
    verdict.className = v;
    const run = report.run;
    text.textContent = `ramp ${data.ramp} (run ${run.run_id}): ${run.agents} agents, ${run.duration_s.toFixed(1)} s,`
      + ` exit code ${report.exit_code}` + (v === "pass" ? ": the audits and every SLA held" : "")
      + (data.exit_code > report.exit_code
        ? ` (the process will exit with ${data.exit_code}: the worst of its ramps so far)` : "");
    for (const reason of failureReasons(report)) reasons.append(el("li", {}, reason));
  } else {
    status.dataset.status = data.status;
    text.textContent = {
      ready: "No ramp yet: start one from Locust's form. Each ramp is audited when it stops.",
      running: `Ramp ${data.ramp} running: ${data.agents} agents. The verdict comes when it stops.`,
      auditing: `Ramp ${data.ramp} stopped: auditing the servers' data…`,
      audit_error: `Ramp ${data.ramp} could not be audited: ${data.audit_error}`,
    }[data.status] || data.status;
  }
}

function failureReasons(report) {
  const reasons = [];
  for (const problem of report.evidence.problems) reasons.push(`not evidence: ${problem.kind}: ${problem.detail}`);
  for (const check of report.audit.checks.filter((c) => !c.ok)) {
    reasons.push(`audit ${check.name}: expected ${figure(check.expected)}, observed ${figure(check.observed)}`);
  }
  for (const [name, value] of Object.entries(report.anomalies)) {
    if (value) reasons.push(`anomaly ${name}: ${value}`);
  }
  for (const rule of report.sla.filter((r) => !r.ok)) {
    reasons.push(`SLA ${rule.name}: observed ${figure(rule.observed)}, needs ${rule.op} ${figure(rule.threshold)}`);
  }
  return reasons;
}

function renderOutcome(report) {
  $("#tc-outcome").hidden = !report;
  if (!report) return;
  const result = (ok) => el("td", {class: ok ? "tc-ok" : "tc-fail"}, ok ? "ok" : "FAIL");
  const mcp = report.transport && report.transport.mcp;
  $("#tc-transport").hidden = !mcp;
  $("#tc-transport").textContent = mcp ? `over MCP: ${mcp.url} (${mcp.server} server), ${mcp.era} era`
    + ` ${mcp.protocol_version}; sessions opened ${mcp.sessions.opened}, closed ${mcp.sessions.closed};`
    + ` isError ${mcp.is_error_replies}, re-issued ${mcp.reissues}; attempts: client ${mcp.attempts.client},`
    + ` server ${mcp.attempts.server ?? "not said"}; not measurable: `
    + mcp.not_measurable.map((item) => item.figure).join(", ") : "";
  $("#tc-sla tbody").replaceChildren(...report.sla.map((rule) => el("tr", {"data-rule": rule.name},
    el("td", {}, rule.name), el("td", {"data-value": rule.observed},
                                rule.not_measurable ? "not measurable over MCP" : figure(rule.observed)),
    el("td", {}, `${rule.op} ${figure(rule.threshold)}`), result(rule.ok))));
  $("#tc-audit-summary").textContent = (report.audit.ok ? "the data stayed right" : "the data did NOT stay right")
    + (report.not_audited_by_identity.length
       ? `; not audited by identity: ${report.not_audited_by_identity.join(", ")}` : "");
  $("#tc-audit tbody").replaceChildren(...report.audit.checks.map((check) => el("tr", {"data-check": check.name},
    el("td", {}, check.name, check.detail ? el("div", {class: "tc-detail"}, check.detail) : null),
    el("td", {}, figure(check.expected)), el("td", {}, figure(check.observed)), result(check.ok))));
}

// -- the figures ------------------------------------------------------------------------------

const NOTES = {
  ready: "",
  running: "live",
  auditing: "the load has stopped",
  done: "final: the report's figures",
  audit_error: "the load has stopped",
};

function renderFigures(data) {
  const figures = data.figures;
  $("#tc-figures-note").textContent = NOTES[data.status] || "";
  $("#tc-figures thead").replaceChildren(el("tr", {}, el("th", {}, "tool"),
    figures.columns.map((column) => el("th", {"data-column": column}, figures.labels[column]))));
  $("#tc-figures tbody").replaceChildren(...figures.rows.map((row, index) => el("tr",
    {"data-tool": row.tool, class: index === figures.rows.length - 1 ? "tc-total" : null},
    el("td", {}, row.tool),
    figures.columns.map((column) => el("td", {
      "data-column": column,
      class: row[column] ? (figures.conflicts.includes(column) ? "tc-hot" : null) : "tc-zero",
    }, count(row[column]))))));
  $("#tc-now").replaceChildren(...figures.cards.map((card) => el("div", {class: "tc-figure", "data-figure": card.key},
    el("b", {}, figure(card.value)), el("span", {}, card.label))));
}

// -- the turns --------------------------------------------------------------------------------

// The report's `turns`, one column each (docs/agents.md, Turns); latency figures are ms.
const TURN_COLUMNS = [
  ["turns", "turns"], ["calls", "calls"], ["calls_per_turn", "turns by calls (calls: turns)"],
  ["p50", "turn p50 (ms)"], ["p95", "turn p95 (ms)"], ["p99", "turn p99 (ms)"], ["max", "turn max (ms)"],
  ["with_conflicts", "turns with conflicts"], ["same_key_pairs", "same-key pairs"],
  ["overlapping_same_key_pairs", "overlapping same-key pairs"], ["collisions", "collisions"],
];

function turnCell(turns, column) {
  if (column in turns.latency_ms) return figure(turns.latency_ms[column]);
  if (column === "calls_per_turn") {
    const sizes = Object.entries(turns.calls_per_turn);
    return sizes.length ? sizes.map(([calls, n]) => `${calls}: ${count(n)}`).join(", ") : "–";
  }
  if (column === "with_conflicts" && turns.turns) {
    return [count(turns.with_conflicts), " ", el("small", {}, `(${(100 * turns.with_conflicts / turns.turns).toFixed(1)} %)`)];
  }
  return count(turns[column]);
}

function renderTurns(data) {
  const turns = data.turns;
  $("#tc-turns-note").textContent = NOTES[data.status] || "";
  $("#tc-turns thead").replaceChildren(el("tr", {},
    TURN_COLUMNS.map(([column, label]) => el("th", {"data-column": column}, label))));
  const hot = (column) => ["with_conflicts", "collisions"].includes(column) && turns[column];
  $("#tc-turns tbody").replaceChildren(el("tr", {}, TURN_COLUMNS.map(([column]) => el("td", {
    "data-column": column,
    class: hot(column) ? "tc-hot" : (turns.turns ? null : "tc-zero"),
  }, turnCell(turns, column)))));
}

// -- the workflows ----------------------------------------------------------------------------

// The report's `workflows` (docs/agents.md, Workflows across turns): a row per write tool, then
// all of them. Versions behind: null where a tool's data has no versions, shown n/a (never 0).
const STATISTICS = ["p50", "p95", "max"];

function workflowRow(tool, figures, total) {
  const behind = figures.behind_versions;
  const share = figures.writes ? el("small", {}, ` (${(100 * figures.stale_writes / figures.writes).toFixed(1)} %)`) : null;
  const cell = (column, value, hot) => el("td", {"data-column": column, class: hot ? "tc-hot" : (value ? null : "tc-zero")},
                                          value);
  return el("tr", {"data-tool": tool, class: total ? "tc-total" : null},
    el("td", {}, tool),
    cell("writes", count(figures.writes)),
    cell("stale_writes", [count(figures.stale_writes), share], figures.stale_writes > 0),
    STATISTICS.map((k) => behind === null
      ? el("td", {"data-column": `behind_${k}`, class: "tc-zero", title: "this tool's data has no versions"}, "n/a")
      : cell(`behind_${k}`, count(behind[k]))),
    STATISTICS.map((k) => cell(`ms_${k}`, figure(figures.stale_ms[k]))));
}

function renderWorkflows(data) {
  const workflows = data.workflows;
  $("#tc-workflows-section").hidden = !workflows;
  if (!workflows) return;
  $("#tc-workflows-note").textContent = NOTES[data.status] || "";
  $("#tc-workflows tbody").replaceChildren(
    ...Object.entries(workflows.tools).map(([tool, figures]) => workflowRow(tool, figures, false)),
    workflowRow("all write tools", workflows, true));
}

// -- the list_append history -------------------------------------------------------------------

// The report's `history_check` (docs/history-check.md): each anomaly type found, forbidden or
// allowed by the model the level promises, with one case; only once a run with list_append is audited.
function historyExample(caseOf) {
  if (!caseOf) return "";
  if (caseOf.steps) {
    return caseOf.steps.map((s) => `${s.from} -${s.type}-> ${s.to}` + (s.key === undefined ? "" : ` on ${s.key}`)).join("; ");
  }
  if (caseOf.txns) {  // a lost update: transactions that read one state of a key, then each appended to it
    return `${caseOf.txns.map((t) => t.id).join(", ")} read ${caseOf.key} at ${caseOf.value.length} elements, then each appended`;
  }
  return caseOf.op ? `${caseOf.op.id}: ${JSON.stringify(caseOf.mop || caseOf.op.value)}` : JSON.stringify(caseOf);
}

function renderHistory(answer) {
  $("#tc-history-section").hidden = !answer;
  if (!answer) return;
  const word = answer.valid === true ? "valid" : answer.valid === false ? "INVALID" : "unknown";
  $("#tc-history-verdict").textContent = `against ${answer.consistency_model}: ${word},`
    + ` ${count(answer.stats.transactions)} transactions` + (answer.not.length ? `; not ${answer.not.join(", ")}` : "");
  const rows = answer.anomaly_types.map((kind) => {
    const forbidden = answer.forbidden_anomaly_types.includes(kind);
    return el("tr", {"data-anomaly": kind},
      el("td", {}, kind), el("td", {}, count(answer.anomaly_counts[kind])),
      el("td", {class: forbidden ? "tc-hot" : null}, forbidden ? "forbidden" : "allowed"),
      el("td", {}, historyExample((answer.anomalies[kind] || [])[0])));
  });
  $("#tc-history tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", {colspan: 4, class: "tc-zero"},
                                                                                "none found"))]));
}

// -- the charts -------------------------------------------------------------------------------

const W = 440, H = 180, LEFT = 42, RIGHT = 12, TOP = 10, BOTTOM = 34;

function niceStep(span, ticks) {
  const raw = span / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw) || raw;
}

function chartSpecs(series) {
  const load = series.load, server = series.server;
  return [
    {key: "agents", title: "agents", lines: [{name: "agents", points: load.map((p) => [p.t, p.agents]), color: "#0099ff"}]},
    {key: "calls_per_s", title: "calls/s", unit: " /s",
     lines: [{name: "calls", points: load.map((p) => [p.t, p.calls_per_s]), color: "#00ca5a"}]},
    {key: "conflict_rate", title: "conflict rate (% of attempts)", unit: "%",
     lines: [{name: "conflicts", color: "#ff6d6d",
              points: load.map((p) => [p.t, p.conflict_rate === null ? null : p.conflict_rate * 100])}]},
    {key: "deadlocks_per_s", title: "deadlocks/s (the server's count)",
     unit: " /s", lines: [{name: "deadlocks", points: server.map((p) => [p.t, p.deadlocks_per_s]), color: "#8e4585"}]},
    {key: "locks", title: "lock waiters and longest blocking chain",
     lines: [{name: "lock waiters", points: server.map((p) => [p.t, p.lock_waiters]), color: "#ff9f00"},
             {name: "longest chain", points: server.map((p) => [p.t, p.blocking_chain]), color: "#9966cc"}]},
    {key: "pool_waiting", title: "pool requests waiting",
     lines: [{name: "waiting", points: load.map((p) => [p.t, p.pool_waiting]), color: "#8a2be2"}]},
  ];
}

function agentsAt(series, t) {
  let agents = null;
  for (const p of series.load.length ? series.load : series.server) {
    if (p.t > t + 1e-9) break;
    agents = p.agents;
  }
  return agents;
}

function renderCharts(series) {
  const tMax = Math.max(1, ...series.load.map((p) => p.t), ...series.server.map((p) => p.t));
  $("#tc-charts").replaceChildren(...chartSpecs(series).map((spec) => chart(spec, tMax, series)));
}

function chart(spec, tMax, series) {
  const values = spec.lines.flatMap((line) => line.points.map(([, v]) => v)).filter((v) => v !== null);
  const step = Math.max(niceStep(Math.max(1, ...values), 3), spec.unit ? 0 : 1);  // counts: whole steps
  const yMax = Math.max(step, Math.ceil(Math.max(0, ...values) / step) * step);
  const x = (t) => LEFT + (t / tMax) * (W - LEFT - RIGHT);
  const y = (v) => TOP + (1 - v / yMax) * (H - TOP - BOTTOM);
  const svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, "data-chart": spec.key,
                             "data-points": spec.lines[0].points.length});
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    svg.append(el("svg:line", {class: "tc-grid", x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v)}),
               el("svg:text", {x: LEFT - 4, y: y(v) + 3, "text-anchor": "end"}, figure(Number(v.toPrecision(6)))));
  }
  const tStep = Math.max(1, niceStep(tMax, 5));
  for (let t = 0; t <= tMax + 1e-9; t += tStep) {
    const agents = agentsAt(series, t);
    svg.append(el("svg:text", {x: x(t), y: H - BOTTOM + 13, "text-anchor": "middle"}, `${t} s`),
               el("svg:text", {x: x(t), y: H - BOTTOM + 25, "text-anchor": "middle"},
                  agents === null ? "" : `${agents} ag.`));
  }
  for (const line of spec.lines) {
    let path = "";
    for (const [t, v] of line.points) {
      if (v === null) continue;
      path += `${path ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
    }
    svg.append(el("svg:path", {d: path || "M0,0", fill: "none", stroke: line.color, "stroke-width": 1.8}));
  }
  const hover = el("svg:g", {class: "tc-hover"});
  const catcher = el("svg:rect", {x: LEFT, y: TOP, width: W - LEFT - RIGHT, height: H - TOP - BOTTOM,
                                  fill: "transparent"});
  const show = (t) => {
    hover.replaceChildren();
    if (t === undefined) return;
    const parts = [`${Math.round(t)} s`, `${agentsAt(series, t) ?? "–"} agents`];
    for (const line of spec.lines) {
      const near = line.points.reduce((best, p) => (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t) ? p : best), null);
      if (near) parts.push(`${line.name} ${figure(near[1])}${spec.unit || ""}`);
    }
    const textX = Math.min(Math.max(x(t), LEFT + 90), W - RIGHT - 90);
    hover.append(el("svg:line", {x1: x(t), x2: x(t), y1: TOP, y2: H - BOTTOM}),
                 el("svg:text", {x: textX, y: TOP + 10, "text-anchor": "middle"}, parts.join(" · ")));
  };
  catcher.addEventListener("mousemove", (event) => {
    const box = svg.getBoundingClientRect();
    const t = ((event.clientX - box.left) * (W / box.width) - LEFT) / (W - LEFT - RIGHT) * tMax;
    hovered[spec.key] = Math.max(0, Math.min(tMax, t));
    show(hovered[spec.key]);
  });
  catcher.addEventListener("mouseleave", () => { delete hovered[spec.key]; show(undefined); });
  svg.append(catcher, hover);
  show(hovered[spec.key]);
  const last = spec.lines.map((line) => {
    const known = line.points.filter(([, v]) => v !== null);
    return known.length ? `${line.name} ${figure(known[known.length - 1][1])}${spec.unit || ""}` : null;
  }).filter(Boolean).join(", ");
  const legend = spec.lines.length > 1
    ? el("div", {class: "tc-legend"}, spec.lines.map((line) => [el("i", {style: `background:${line.color}`}), line.name]))
    : null;
  return el("div", {class: "tc-chart"}, el("h3", {}, spec.title, " ", el("span", {}, last ? `(last: ${last})` : "")),
            svg, legend);
}

// -- polling ----------------------------------------------------------------------------------

const drawn = {};

function redraw(part, shown, draw) {
  const key = JSON.stringify(shown === undefined ? null : shown);
  if (drawn[part] === key) return;
  draw();
  drawn[part] = key;
}

async function refresh() {
  document.body.classList.toggle("dark", darkMode());
  try {
    const response = await fetch("toolclash/data", {cache: "no-store"});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    // Each part is drawn again only when what it shows changed: a user selecting text or
    // hovering a chart is not interrupted every 2 s for nothing.
    redraw("status", [data.status, data.ramp, data.agents, data.audit_error, data.exit_code,
                      data.verdict && data.verdict.run.run_id],
           () => renderStatus(data));
    redraw("outcome", data.verdict && data.verdict.run.run_id, () => renderOutcome(data.verdict));
    redraw("figures", [data.status, data.figures], () => renderFigures(data));
    redraw("turns", [data.status, data.turns], () => renderTurns(data));
    redraw("workflows", [data.status, data.workflows], () => renderWorkflows(data));
    redraw("history", data.verdict && data.verdict.run.run_id, () => renderHistory(data.verdict && data.verdict.history_check));
    redraw("charts", data.series, () => renderCharts(data.series));
    document.body.dataset.ramp = data.ramp;
    document.body.dataset.status = data.status;
  } catch (error) {
    $("#tc-status").dataset.status = "audit_error";
    $("#tc-status-text").textContent = `toolclash is not answering (${error.message}): is Locust still running?`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
