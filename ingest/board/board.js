// The status board: plain DOM, no build step. State lives in the URL fragment (#key=...&check=...&tag=...),
// which the browser never sends to a server; the key goes to the API as X-Api-Key only.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
  const DAY_MS = 86400000;
  const MAX_HOURLY_DAYS = 400;
  let timer = null;
  let generation = 0; // a load started before the latest navigation draws nothing

  // --- the fragment ----------------------------------------------------------------

  const params = () => new URLSearchParams(location.hash.slice(1));
  const key = () => params().get("key") || "";

  function link(changes) {
    const p = params();
    for (const [name, value] of Object.entries(changes)) {
      if (value === null || value === undefined || value === "") p.delete(name);
      else p.set(name, value);
    }
    return "#" + p.toString();
  }

  function pathCheck() {
    const m = location.pathname.match(/^\/board\/checks\/([^/]+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  // --- the API ---------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const r = await fetch(path, { headers: { "X-Api-Key": key() }, cache: "no-store", credentials: "omit" });
    if (!r.ok) {
      let message = r.statusText;
      try { message = (await r.json()).error || message; } catch (e) { /* an empty body */ }
      throw new HttpError(r.status, message);
    }
    return r;
  }
  const json = async (path) => (await api(path)).json();

  // --- small helpers -----------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function when(iso) {
    if (!iso) return el("span", { class: "muted" }, "never");
    const t = new Date(iso), seconds = Math.round((t - Date.now()) / 1000), past = seconds <= 0;
    const s = Math.abs(seconds);
    let text;
    if (s < 45) text = past ? "just now" : "in a moment";
    else {
      const [n, unit] = s < 5400 ? [Math.round(s / 60), "min"] : s < 129600 ? [Math.round(s / 3600), "h"]
        : [Math.round(s / 86400), "d"];
      text = past ? `${n} ${unit} ago` : `in ${n} ${unit}`;
    }
    return el("time", { datetime: t.toISOString(), title: t.toLocaleString() }, text);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${(Math.round(seconds * 10) / 10).toFixed(1)} s`;
    const parts = (big, small, a, b) => (small ? `${big} ${a} ${small} ${b}` : `${big} ${a}`);
    if (seconds < 7200) return parts(Math.floor(seconds / 60), Math.round(seconds % 60), "min", "s");
    if (seconds < 172800) return parts(Math.floor(seconds / 3600), Math.round((seconds % 3600) / 60), "h", "min");
    return parts(Math.floor(seconds / 86400), Math.round((seconds % 86400) / 3600), "d", "h");
  }

  const statusPill = (status) => el("span", { class: `status ${status}` }, status);
  const tagsOf = (check) => (check.tags || "").split(" ").filter(Boolean);
  const codeOf = (check) => check.uuid || check.unique_key;

  async function sha1Hex(text) {
    if (!(window.crypto && crypto.subtle)) return null; // not a secure context: uuids are matched as given
    const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function show(section) {
    for (const id of ["login", "list", "check", "missing"]) $(id).hidden = id !== section;
  }

  function fail(error) {
    const box = $("error");
    if (error instanceof HttpError && error.status === 401) {
      box.textContent = "This API key does not open any project.";
      show("login");
    } else {
      box.textContent = `Could not load: ${error.message || error}`;
    }
    box.hidden = false;
  }

  function loaded() {
    $("error").hidden = true;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  // --- the check list ----------------------------------------------------------------

  async function showList(gen) {
    const { checks } = await json("/api/v3/checks/");
    if (gen !== generation) return;
    const tag = params().get("tag");
    const allTags = [...new Set(checks.flatMap(tagsOf))].sort();
    $("tags").replaceChildren(...(allTags.length ? ["", ...allTags] : []).map((t) =>
      el("button", { type: "button", "data-href": link({ tag: t, check: null }), "aria-pressed": String((tag || "") === t) },
        t || "all")));
    const shown = checks.filter((c) => !tag || tagsOf(c).includes(tag))
      .sort((a, b) => (a.name || a.slug || "").localeCompare(b.name || b.slug || ""));
    $("checks").tBodies[0].replaceChildren(...shown.map((c) => el("tr", { "data-status": c.status },
      el("td", { class: "state" }, statusPill(c.status)),
      el("td", { class: "name" }, el("a", { href: link({ check: codeOf(c) }) }, c.name || c.slug || "(unnamed)"),
        el("div", null, ...tagsOf(c).map((t) => el("span", { class: "tag" }, t)))),
      el("td", { class: "last" }, when(c.last_ping)),
      el("td", { class: "next" }, when(c.next_ping)))));
    $("empty").hidden = shown.length > 0;
    const counts = {};
    for (const c of checks) counts[c.status] = (counts[c.status] || 0) + 1;
    $("summary").textContent = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(" · ");
    document.title = counts.down ? `(${counts.down} down) pingstream status board` : "pingstream status board";
    show("list");
  }

  // --- one check -----------------------------------------------------------------------

  function range() {
    const p = params(), today = new Date().toISOString().slice(0, 10);
    let until = p.get("until") || today;
    let since = p.get("since") || new Date(Date.parse(until) - 7 * DAY_MS).toISOString().slice(0, 10);
    if (since > until) [since, until] = [until, since];
    const start = new Date(since + "T00:00:00Z"), end = new Date(Date.parse(until + "T00:00:00Z") + DAY_MS);
    // The API draws at most 10,000 buckets: a longer range goes by day.
    const bucket = p.get("bucket") === "1d" || end - start > MAX_HOURLY_DAYS * DAY_MS ? "1d" : "1h";
    return { since, until, bucket, start, end };
  }

  async function findCheck(checks, code) {
    const hashed = UUID_RE.test(code) ? await sha1Hex(code.replace(/-/g, "")) : null;
    return checks.find((c) => c.uuid === code || c.unique_key === code || (hashed && c.unique_key === hashed));
  }

  async function showCheck(code, gen) {
    const { checks } = await json("/api/v3/checks/");
    const check = await findCheck(checks, code);
    if (gen !== generation) return;
    if (!check) {
      $("summary").textContent = "";
      show("missing");
      return;
    }
    const ref = encodeURIComponent(codeOf(check));
    const r = range();
    const window_ = `since=${r.start.toISOString()}&until=${r.end.toISOString()}`;
    const [svg, runs, flips, pings] = await Promise.all([
      api(`/api/v3/checks/${ref}/durations.svg?bucket=${r.bucket}&${window_}`).then((x) => x.text()),
      json(`/api/v3/checks/${ref}/runs?${window_}&limit=500`),
      json(`/api/v3/checks/${ref}/flips/?start=${Math.floor(r.start / 1000)}&end=${Math.floor(r.end / 1000)}`),
      json(`/api/v3/checks/${ref}/ping-log?limit=25`),
    ]);
    if (gen !== generation) return;
    document.title = `${check.name || check.slug}: pingstream status board`;
    $("check-status").replaceWith(Object.assign(statusPill(check.status), { id: "check-status" }));
    $("check-name").textContent = check.name || check.slug || "(unnamed)";
    const schedule = check.schedule ? `${check.schedule} (${check.tz})` : `every ${duration(check.timeout)}`;
    $("check-meta").replaceChildren(`schedule ${schedule}, grace ${duration(check.grace)} · last ping `,
      when(check.last_ping), " · next expected ", when(check.next_ping), " ",
      ...tagsOf(check).map((t) => el("span", { class: "tag" }, t)));
    $("since").value = r.since;
    $("until").value = r.until;
    $("bucket").value = r.bucket;
    drawChart(svg);
    drawTimeline(flips.flips, check.status, r.start, r.end);
    drawRuns(runs.runs);
    drawPings(pings.pings);
    $("summary").textContent = "";
    show("check");
  }

  function drawChart(text) {
    const doc = new DOMParser().parseFromString(text, "image/svg+xml");
    const svg = doc.documentElement;
    if (svg.nodeName !== "svg") throw new Error("the chart could not be read");
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    $("chart").replaceChildren(document.importNode(svg, true));
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Flips come newest first, to the second; before the first one in range the status is not known
  // (it may have been new or paused). A change within one second still shows, a pixel wide.
  function drawTimeline(flips, status, start, end) {
    const W = 800, H = 46, BAR = 22, stop = Math.min(Date.now(), end.getTime());
    const ordered = [...flips].sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp));
    const x = (t) => ((t - start.getTime()) / (end.getTime() - start.getTime())) * W;
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const segment = (from, to, state, label) => {
      if (to < from) return;
      const rect = svgEl("rect", { x: x(from).toFixed(1), y: 4, width: Math.max(x(to) - x(from), 1).toFixed(1),
                                   height: BAR, class: state });
      rect.append(svgEl("title", {}, label));
      svg.append(rect);
    };
    let from = start.getTime();
    let state = ordered.length || !(status === "up" || status === "down") ? "unknown" : status;
    for (const f of ordered) {
      const at = Date.parse(f.timestamp);
      segment(from, at, state, `${state} until ${new Date(at).toLocaleString()}`);
      from = at;
      state = f.up ? "up" : "down";
    }
    segment(from, stop, state, `${state} since ${new Date(from).toLocaleString()}`);
    svg.append(svgEl("text", { x: 0, y: H - 4 }, start.toLocaleDateString()));
    svg.append(svgEl("text", { x: W, y: H - 4, "text-anchor": "end" }, new Date(end - 1).toLocaleDateString()));
    $("timeline").replaceChildren(svg);
    $("flips").replaceChildren(...flips.slice(0, 20).map((f) => el("li", null, when(f.timestamp), " ",
      statusPill(f.up ? "up" : "down"))));
  }

  function drawRuns(runs) {
    $("runs").tBodies[0].replaceChildren(...(runs.length ? runs.map((r) => el("tr", { class: r.outcome === "fail" ? "fail" : "ok" },
      el("td", null, when(r.finished_at)),
      el("td", null, duration(r.duration_s)),
      el("td", null, r.outcome === "fail" ? "✗ failed" : "✓ ok"),
      el("td", null, r.exit_status === null ? "" : String(r.exit_status)))) : [
      el("tr", null, el("td", { colspan: "4", class: "muted" }, "no runs in this range"))]));
  }

  function drawPings(pings) {
    $("pings").tBodies[0].replaceChildren(...(pings.length ? pings.map((p) => el("tr", { class: p.type === "fail" ? "fail" : "" },
      el("td", null, String(p.n)),
      el("td", null, p.type + (p.exit_status !== null && p.exit_status !== undefined ? ` (${p.exit_status})` : "")),
      el("td", null, when(p.date)),
      el("td", null, duration(p.duration)),
      el("td", null, p.body_size ? `${p.body_size} bytes` : ""))) : [
      el("tr", null, el("td", { colspan: "5", class: "muted" }, "no pings yet"))]));
  }

  // --- routing and refresh ----------------------------------------------------------------

  async function route() {
    const gen = ++generation;
    if (!key()) {
      show("login");
      return;
    }
    const code = params().get("check") || pathCheck();
    $("home").href = link({ check: null });
    $("back").href = $("missing-back").href = link({ check: null });
    try {
      if (code) await showCheck(code, gen);
      else await showList(gen);
      if (gen === generation) loaded();
    } catch (error) {
      if (gen === generation) fail(error);
    }
  }

  function schedule() {
    clearInterval(timer);
    const seconds = Math.max(Number(params().get("refresh")) || 30, 1);
    timer = setInterval(route, seconds * 1000);
  }

  // A check page under /board/checks/<code> goes back to the board itself for the list.
  function go(hash) {
    if (pathCheck() && !new URLSearchParams(hash.slice(1)).get("check")) location.assign("/board/" + hash);
    else location.hash = hash;
  }

  document.addEventListener("click", (event) => {
    const target = event.target.closest("a[href^='#'], button[data-href]");
    if (target) {
      event.preventDefault();
      go(target.getAttribute("href") || target.dataset.href);
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = link({ key: $("key").value.trim() });
    });
    const setRange = (changes) => { location.hash = link(changes); };
    $("since").addEventListener("change", () => setRange({ since: $("since").value }));
    $("until").addEventListener("change", () => setRange({ until: $("until").value }));
    $("bucket").addEventListener("change", () => setRange({ bucket: $("bucket").value }));
    for (const button of document.querySelectorAll(".presets button")) {
      button.addEventListener("click", () => {
        const days = Number(button.dataset.days), today = new Date().toISOString().slice(0, 10);
        const since = new Date(Date.now() - (days - 1) * DAY_MS).toISOString().slice(0, 10);
        setRange({ since, until: today, bucket: days > 14 ? "1d" : "1h" });
      });
    }
    window.addEventListener("hashchange", () => { schedule(); route(); });
    schedule();
    route();
  });
})();
