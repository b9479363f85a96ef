// Stowage console: a single page on the public REST API, with the user's token.
//
// - The token lives in sessionStorage (gone when the tab closes), is sent only as an
//   Authorization header, and is never put in a URL or logged.
// - Lists follow watches: a list, then a watch from its resourceVersion; a watch that ends is
//   resumed from the last version seen, and one answered 410 Gone lists again.
// - Everything shown is built as DOM text nodes, never as HTML: names, labels and event
//   messages come from tenants.

const TOKEN_KEY = "stowage.console.token";
const ROW_HEIGHT = 30;

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(message, isError) {
  const box = document.getElementById("toast");
  const item = h("div", { class: isError ? "error" : "", role: isError ? "alert" : null }, message);
  box.append(item);
  setTimeout(() => item.remove(), isError ? 9000 : 4000);
}

// ---------------------------------------------------------------- quantities and times

const UNITS = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, m: 1e-3 };

function bytesOf(q) {
  if (q === undefined || q === null) return 0;
  const m = /^([0-9.]+)([A-Za-z]*)$/.exec(String(q).trim());
  if (!m) return 0;
  const n = parseFloat(m[1]);
  return m[2] ? n * (UNITS[m[2]] || 0) : n;
}

function validQuantity(q) {
  return /^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/.test(q.trim());
}

function formatBytes(b) {
  if (!b) return "0";
  const units = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (Math.round(b * 10) / 10) + units[i];
}

function timeOf(e) {
  return e.lastTimestamp || e.eventTime || e.firstTimestamp || (e.metadata && e.metadata.creationTimestamp) || "";
}

function age(ts) {
  if (!ts) return "";
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 120) return Math.floor(s) + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  if (s < 172800) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function failure(resp) {
  let message = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.message) message = body.message;
  } catch (_) { /* not a Status */ }
  const err = new ApiError(resp.status, message);
  err.retryAfter = parseInt(resp.headers.get("Retry-After") || "0", 10);
  return err;
}

class Api {
  constructor(token) { this.token = token; }

  headers(extra) {
    return Object.assign({ Authorization: "Bearer " + this.token, Accept: "application/json" }, extra || {});
  }

  async request(method, path, body, contentType) {
    const init = { method, headers: this.headers(body ? { "Content-Type": contentType || "application/json" } : null),
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) init.body = JSON.stringify(body);
    const resp = await fetch(path, init);
    if (!resp.ok) throw await failure(resp);
    return resp.status === 204 ? null : resp.json();
  }

  // A create with nothing written (dryRun=All): the server's Warning texts, or its refusal.
  async dryRun(path, body) {
    const resp = await fetch(path + "?dryRun=All", { method: "POST", headers: this.headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body), cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
    if (!resp.ok) throw await failure(resp);
    // Each warning is `299 - "text"`, `"` and `\` escaped with a backslash; several are joined
    // by ", ". A header's bytes arrive one per character: its UTF-8 is decoded here.
    const raw = resp.headers.get("Warning") || "";
    const text = new TextDecoder().decode(Uint8Array.from(raw, (c) => c.charCodeAt(0) & 255));
    return [...text.matchAll(/299 - "((?:[^"\\]|\\.)*)"/g)].map((m) => m[1].replace(/\\(.)/g, "$1"));
  }

  get(path) { return this.request("GET", path); }
  post(path, body) { return this.request("POST", path, body); }
  patch(path, body) { return this.request("PATCH", path, body, "application/merge-patch+json"); }
  del(path) { return this.request("DELETE", path); }
}

// A collection kept current by a watch. `error` is set when the token may not list it.
class Live {
  constructor(api, path) {
    this.api = api;
    this.path = path;
    this.items = new Map();
    this.error = null;
    this.loaded = false;
    this.listeners = new Set();
    this.abort = new AbortController();
    this.run();
  }

  key(o) { return (o.metadata.namespace || "") + "/" + o.metadata.name; }

  changed() { for (const f of this.listeners) f(); }

  async list() {
    this.error = null;
    const resp = await fetch(this.path, { headers: this.api.headers(), signal: this.abort.signal, cache: "no-store", credentials: "omit" });
    if (!resp.ok) throw await failure(resp);
    const body = await resp.json();
    this.items = new Map((body.items || []).map((o) => [this.key(o), o]));
    this.loaded = true;
    this.error = null;
    this.changed();
    return body.metadata.resourceVersion;
  }

  async run() {
    let rv = null;
    let backoff = 250;
    let failures = 0;
    const pause = (ms) => new Promise((r) => setTimeout(r, ms));
    while (!this.abort.signal.aborted) {
      const began = Date.now();
      try {
        if (rv === null) rv = await this.list();
        rv = await this.watch(rv);
        failures = 0;
        // A watch that ends at once is not a reason to hammer the server.
        if (Date.now() - began < 1000) await pause(backoff);
        backoff = Date.now() - began < 1000 ? Math.min(backoff * 2, 5000) : 250;
      } catch (e) {
        if (this.abort.signal.aborted) return;
        if (e instanceof ApiError && e.status === 410) { rv = null; await pause(100); continue; }
        if (e instanceof ApiError && e.status === 429) { await pause(Math.max(e.retryAfter || 1, 1) * 1000); continue; }
        if (e instanceof ApiError && (e.status === 403 || e.status === 401)) {
          this.error = e.message;
          this.loaded = true;
          this.changed();
          if (e.status === 401) { signOut("Your token is no longer accepted."); return; }
          await new Promise((r) => setTimeout(r, 30000));
          continue;
        }
        // Say so after a few tries (a view waiting on this list stops waiting), and go on.
        if (++failures >= 3 && !this.error) {
          this.error = "cannot reach the server (" + e.message + "); retrying";
          this.loaded = true;
          this.changed();
        }
        await pause(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  // Follows changes from `rv`; returns the last version seen when the server ends the watch.
  async watch(rv) {
    const sep = this.path.includes("?") ? "&" : "?";
    const resp = await fetch(this.path + sep + "watch=1&allowWatchBookmarks=true&resourceVersion=" + encodeURIComponent(rv),
      { headers: this.api.headers(), signal: this.abort.signal, cache: "no-store", credentials: "omit" });
    if (!resp.ok) throw await failure(resp);
    const reader = resp.body.getReader();
    try {
      return await this.follow(reader, rv);
    } finally {
      // Whatever ended it, the connection goes back (or away).
      reader.cancel().catch(() => {});
    }
  }

  async follow(reader, rv) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return rv;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      let touched = false;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === "ERROR") {
          throw new ApiError(ev.object && ev.object.code || 500, ev.object && ev.object.message || "watch failed");
        }
        rv = ev.object.metadata.resourceVersion || rv;
        if (ev.type === "BOOKMARK") continue;
        if (ev.type === "DELETED") this.items.delete(this.key(ev.object));
        else this.items.set(this.key(ev.object), ev.object);
        touched = true;
      }
      if (touched) this.changed();
    }
  }

  stop() { this.abort.abort(); }
}

// ---------------------------------------------------------------- state

const PATHS = {
  claims: "/api/v1/persistentvolumeclaims",
  volumes: "/api/v1/persistentvolumes",
  attachments: "/apis/storage.k8s.io/v1/volumeattachments",
  nodes: "/api/v1/nodes",
  classes: "/apis/storage.k8s.io/v1/storageclasses",
  events: "/api/v1/events",
  drivers: "/apis/storage.k8s.io/v1/csidrivers",
  csinodes: "/apis/storage.k8s.io/v1/csinodes",
  capacities: "/apis/storage.k8s.io/v1/csistoragecapacities",
  leases: "/apis/coordination.k8s.io/v1/namespaces/stowage-node-lease/leases",
  pods: "/api/v1/pods",
};

let api = null;
const live = {};
let scheduled = false;
let currentView = null;

function collection(name) {
  if (!live[name]) {
    live[name] = new Live(api, PATHS[name]);
    live[name].listeners.add(scheduleRender);
  }
  return live[name];
}

function items(name) { return [...collection(name).items.values()]; }

function scheduleRender() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => { scheduled = false; if (currentView) currentView.update(); });
}

// ---------------------------------------------------------------- sign-in

// The token of a kubeconfig's current context (the YAML kubectl and Stowage write).
function tokenFromKubeconfig(text) {
  const lines = text.split(/\r?\n/);
  const scalar = (v) => v.trim().replace(/^["']|["']$/g, "");
  let current = null;
  for (const l of lines) {
    const m = /^current-context:\s*(.+)$/.exec(l);
    if (m) current = scalar(m[1]);
  }
  // Blocks of `- name: X` items under a top-level key, as key/value pairs found inside.
  const blocks = (section) => {
    const out = [];
    let inSection = false;
    let item = null;
    for (const l of lines) {
      // A top-level key (sequences may sit at column 0: "- name: ...").
      if (/^[^\s-]/.test(l)) { inSection = l.startsWith(section + ":"); continue; }
      if (!inSection) continue;
      if (/^-\s|^\s{0,2}-\s/.test(l)) { item = {}; out.push(item); }
      const kv = /^[\s-]*([A-Za-z-]+):\s*(.*)$/.exec(l);
      if (item && kv && kv[2] !== "" && !(kv[1] in item)) item[kv[1]] = scalar(kv[2]);
    }
    return out;
  };
  const contexts = blocks("contexts");
  const users = blocks("users");
  const clusters = blocks("clusters");
  // Only the current context's own user, and only if its cluster is this server: a token for
  // another cluster is never sent here.
  const ctx = contexts.find((c) => c.name === current);
  if (!ctx) throw new Error("the kubeconfig has no current context");
  const cluster = clusters.find((c) => c.name === ctx.cluster);
  let origin = null;
  try { origin = cluster && new URL(cluster.server).origin; } catch (_) { /* not a URL */ }
  if (origin !== location.origin) {
    throw new Error("the kubeconfig's current context is for " + (cluster ? cluster.server : "another cluster") +
      ", not this server; paste the token instead if you mean to use it here");
  }
  const user = users.find((u) => u.name === ctx.user);
  return user && user.token ? user.token : null;
}

async function signIn(token) {
  token = token.trim();
  const probe = new Api(token);
  // Any authenticated request tells whether the token works; discovery is open to all roles.
  await probe.get("/api/v1");
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const l of Object.values(live)) l.stop();
  for (const k of Object.keys(live)) delete live[k];
  api = null;
  showSignIn(why);
}

function showSignIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  const error = h("p", { class: "error", role: "alert" }, message || "");
  const area = h("textarea", { id: "token", "aria-label": "Bearer token", autocomplete: "off", spellcheck: "false" });
  const file = h("input", { type: "file", id: "kubeconfig", accept: ".yaml,.yml,.conf,text/*" });
  const useText = async (text) => {
    let token = null;
    try { token = tokenFromKubeconfig(text); } catch (e) { error.textContent = "Not used: " + e.message; return; }
    if (!token) { error.textContent = "No token found in that kubeconfig's current context."; return; }
    try { await signIn(token); } catch (e) { error.textContent = "Sign-in failed: " + e.message; }
  };
  file.addEventListener("change", async () => { if (file.files[0]) useText(await file.files[0].text()); });
  const drop = h("div", { class: "drop" }, "Or drop a kubeconfig file here");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) useText(await e.dataTransfer.files[0].text());
  });
  const form = h("form", { class: "signin", onsubmit: async (e) => {
    e.preventDefault();
    try { await signIn(area.value); } catch (err) { error.textContent = "Sign-in failed: " + err.message; }
  } },
  h("h1", {}, "Sign in"),
  h("p", {}, "Paste a bearer token (kept for this browser tab only), or use a kubeconfig file."),
  h("label", { for: "token" }, "Bearer token"), area,
  h("p", {}, h("button", { type: "submit", class: "primary" }, "Sign in")),
  h("label", { for: "kubeconfig" }, "Kubeconfig file"), file, drop, error);
  const main = document.getElementById("main");
  main.replaceChildren(form);
  currentView = null;
  area.focus();
}

async function start(token) {
  api = new Api(token);
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("who").textContent = "Signed in";
  route();
}

// ---------------------------------------------------------------- a virtualized table

// Only the rows in view (and a few around) exist in the DOM: a list of 10,000 claims costs as
// much to show as a list of 30.
class VTable {
  constructor(columns, { height = 480, label } = {}) {
    this.columns = columns;
    this.rows = [];
    this.sort = { index: 0, dir: 1 };
    const template = columns.map((c) => c.width || "1fr").join(" ");
    this.head = h("div", { class: "thead", role: "row", style: "grid-template-columns:" + template });
    this.headers = columns.map((c, i) => {
      const cell = h("span", { role: "columnheader", "aria-sort": "none" },
        h("button", { type: "button", onclick: () => this.sortBy(i) }, c.title));
      this.head.append(cell);
      return cell;
    });
    this.body = h("div", { role: "rowgroup", style: "position:relative" });
    this.scroller = h("div", { class: "scroller", style: "height:" + height + "px", tabindex: "0" }, this.body);
    this.scroller.addEventListener("scroll", () => this.draw());
    this.template = template;
    this.count = h("p", { class: "count" });
    this.el = h("div", {}, this.count, h("div", { class: "table", role: "table", "aria-label": label }, this.head, this.scroller));
    this.markSort();
  }

  sortBy(i) {
    this.sort = { index: i, dir: this.sort.index === i ? -this.sort.dir : 1 };
    this.markSort();
    this.setRows(this.rows);
  }

  markSort() {
    this.headers.forEach((cell, i) => cell.setAttribute("aria-sort",
      i === this.sort.index ? (this.sort.dir > 0 ? "ascending" : "descending") : "none"));
  }

  setRows(rows) {
    // Unchanged rows (another collection moved) are not redrawn: a row's buttons stay put.
    const signature = Math.floor(Date.now() / 10000) + "/" + this.sort.index + "/" + this.sort.dir + "/" +
      rows.map((r) => r.metadata.uid + ":" + r.metadata.resourceVersion).join(",");
    if (signature === this.signature) return;
    this.signature = signature;
    const col = this.columns[this.sort.index];
    const key = col.sort || col.value;
    const clean = (v) => (typeof v === "number" && Number.isNaN(v) ? 0 : v);
    const id = (o) => (o.metadata.namespace || "") + "/" + o.metadata.name;
    this.rows = rows.slice().sort((a, b) => {
      const x = clean(key(a)), y = clean(key(b));
      const byKey = (x < y ? -1 : x > y ? 1 : 0) * this.sort.dir;
      return byKey || (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0);
    });
    this.count.textContent = this.rows.length + (this.rows.length === 1 ? " item" : " items");
    this.body.style.height = this.rows.length * ROW_HEIGHT + "px";
    this.draw();
  }

  draw() {
    // Keep keyboard focus on the same row and column across redraws.
    const active = document.activeElement;
    let focusKey = null, focusCol = -1;
    if (active && this.body.contains(active)) {
      const row = active.closest(".row");
      focusKey = row && row.dataset.key;
      focusCol = row ? [...row.children].findIndex((c) => c.contains(active)) : -1;
    }
    const top = this.scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - 10);
    const last = Math.min(this.rows.length, Math.ceil((top + this.scroller.clientHeight + 1) / ROW_HEIGHT) + 10);
    const out = [];
    for (let i = first; i < last; i++) {
      const row = this.rows[i];
      const el = h("div", { class: "row", role: "row", "aria-rowindex": i + 2,
        "data-key": (row.metadata.namespace || "") + "/" + row.metadata.name,
        style: "top:" + i * ROW_HEIGHT + "px;grid-template-columns:" + this.template });
      for (const c of this.columns) {
        const content = c.render ? c.render(row) : c.value(row);
        el.append(h("span", { role: "cell", class: c.cls ? c.cls(row) : "" }, content));
      }
      out.push(el);
    }
    this.body.replaceChildren(...out);
    if (focusKey !== null) {
      const row = out.find((r) => r.dataset.key === focusKey);
      const target = row && row.children[focusCol] && row.children[focusCol].querySelector("a, button");
      if (target) target.focus({ preventScroll: true });
    }
  }
}

// ---------------------------------------------------------------- views

function forbidden(name) {
  const l = collection(name);
  return l.error ? h("p", { class: "warn" }, "Not shown: " + l.error) : null;
}

function select(label, id, options, onchange) {
  const s = h("select", { id, onchange }, h("option", { value: "" }, "all"),
    ...options.map((o) => h("option", { value: o }, o)));
  return [h("label", { for: id }, label, s), s];
}

function refillSelect(s, options) {
  const now = JSON.stringify(options);
  if (s.dataset.options === now) return;
  s.dataset.options = now;
  const keep = s.value;
  s.replaceChildren(h("option", { value: "" }, "all"), ...options.map((o) => h("option", { value: o }, o)));
  s.value = options.includes(keep) ? keep : "";
}

const uniq = (xs) => [...new Set(xs.filter(Boolean))].sort();

// Object names as Kubernetes allows them (DNS subdomains): anything else never reaches a path.
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
function claimPath(namespace, name) {
  if (!NAME.test(namespace) || !NAME.test(name)) throw new Error("not a valid claim name: " + namespace + "/" + name);
  return "/api/v1/namespaces/" + encodeURIComponent(namespace) + "/persistentvolumeclaims/" + encodeURIComponent(name);
}
function objectPath(base, name) {
  if (!NAME.test(name)) throw new Error("not a valid name: " + name);
  return base + "/" + encodeURIComponent(name);
}
const claimClass = (c) => (c.spec && c.spec.storageClassName) || "";
const claimPhase = (c) => (c.status && c.status.phase) || "Pending";
const claimRequest = (c) => bytesOf(c.spec && c.spec.resources && c.spec.resources.requests && c.spec.resources.requests.storage);
const volumeSize = (v) => bytesOf(v.spec && v.spec.capacity && v.spec.capacity.storage);
const storyLink = (c) => h("a", { href: "#/story/" + encodeURIComponent(c.metadata.namespace) + "/" + encodeURIComponent(c.metadata.name) }, c.metadata.name);

function labelMatches(obj, selector) {
  if (!selector) return true;
  const labels = obj.metadata.labels || {};
  return selector.split(",").every((term) => {
    const [k, v] = term.split("=").map((s) => s.trim());
    return v === undefined ? k in labels : labels[k] === v;
  });
}

// The newest event about each object, by kind/namespace/name (built once per update).
function lastEvents() {
  const out = new Map();
  for (const e of items("events")) {
    const o = e.involvedObject || {};
    const k = o.kind + "/" + (o.namespace || "") + "/" + o.name;
    const best = out.get(k);
    if (!best || timeOf(e) > timeOf(best)) out.set(k, e);
  }
  return out;
}

function bar(label, value, max, text, cls) {
  const pct = max > 0 ? Math.min(100, (value / max) * 100) : 0;
  return h("div", { class: "bar" }, h("span", {}, label),
    h("div", { class: "track", role: "img", "aria-label": label + ": " + text },
      h("div", { class: "fill " + (cls || ""), style: "width:" + pct.toFixed(1) + "%" })),
    h("span", { class: "value" }, text));
}

const views = {
  overview() {
    const cards = h("div", { class: "cards" });
    const pending = h("div");
    const el = h("section", {}, h("h1", {}, "Overview"), cards, h("h2", {}, "Pending claims"), pending);
    return { el, update() {
      const claims = items("claims"), volumes = items("volumes"), caps = items("capacities");
      const NONE = "(no class)";
      const classOf = (c) => claimClass(c) || NONE;
      const classes = uniq([...items("classes").map((c) => c.metadata.name), ...claims.map(classOf)]);
      cards.replaceChildren(...classes.map((name) => {
        const mine = claims.filter((c) => classOf(c) === name);
        const phases = {};
        for (const c of mine) phases[claimPhase(c)] = (phases[claimPhase(c)] || 0) + 1;
        const requested = mine.reduce((s, c) => s + claimRequest(c), 0);
        const provisioned = volumes.filter((v) => v.spec.storageClassName === name).reduce((s, v) => s + volumeSize(v), 0);
        const free = caps.filter((c) => c.storageClassName === name && c.capacity !== undefined);
        const freeBytes = free.reduce((s, c) => s + bytesOf(c.capacity), 0);
        const total = provisioned + freeBytes;
        // One scale for the three capacity bars.
        const scale = Math.max(requested, total, provisioned, 1);
        return h("article", { class: "card", "aria-label": "class " + name }, h("h3", {}, name),
          ...["Bound", "Pending", "Lost"].map((p) => bar(p, phases[p] || 0, mine.length, (phases[p] || 0) + " of " + mine.length + " claims", "phase-" + p)),
          bar("Requested", requested, scale, formatBytes(requested) + " requested"),
          bar("Provisioned", provisioned, scale, formatBytes(provisioned) + " provisioned"),
          free.length ? bar("Free", freeBytes, scale, formatBytes(freeBytes) + " free for new volumes", freeBytes === 0 ? "full" : "")
            : h("p", { class: "count" }, "Free capacity not published"));
      }));
      const waiting = claims.filter((c) => claimPhase(c) === "Pending");
      const last = lastEvents();
      pending.replaceChildren(waiting.length > 200 ? h("p", { class: "count" }, "The first 200 of " + waiting.length + " (all in Claims, phase Pending)") : "",
        waiting.length ? h("ul", {}, ...waiting.slice(0, 200).map((c) => {
        const e = last.get("PersistentVolumeClaim/" + c.metadata.namespace + "/" + c.metadata.name);
        return h("li", {}, storyLink(c), " (" + c.metadata.namespace + ", " + (claimClass(c) || "no class") + "): ",
          e ? e.reason + ": " + e.message : "no event yet");
      })) : h("p", {}, "None."), forbidden("claims") || "");
    } };
  },

  claims() {
    const [nsLabel, ns] = select("Namespace", "f-ns", [], () => this_.update());
    const [clLabel, cl] = select("Class", "f-class", [], () => this_.update());
    const [phLabel, ph] = select("Phase", "f-phase", ["Bound", "Pending", "Lost"], () => this_.update());
    const label = h("input", { id: "f-label", placeholder: "key=value", oninput: () => this_.update() });
    const table = new VTable([
      { title: "Namespace", value: (c) => c.metadata.namespace, width: "1fr" },
      { title: "Name", value: (c) => c.metadata.name, render: storyLink, width: "2fr" },
      { title: "Phase", value: claimPhase, cls: (c) => "phase-" + claimPhase(c), width: "0.8fr" },
      { title: "Class", value: claimClass, width: "1fr" },
      { title: "Request", value: (c) => formatBytes(claimRequest(c)), sort: claimRequest, width: "0.8fr" },
      { title: "Volume", value: (c) => (c.spec && c.spec.volumeName) || "", width: "2fr" },
      { title: "Age", value: (c) => age(c.metadata.creationTimestamp), sort: (c) => -Date.parse(c.metadata.creationTimestamp || 0), width: "0.6fr" },
    ], { label: "Claims" });
    const el = h("section", {}, h("h1", {}, "Claims"),
      h("div", { class: "filters" }, nsLabel, clLabel, phLabel, h("label", { for: "f-label" }, "Label", label)), table.el);
    const this_ = { el, update() {
      const all = items("claims");
      refillSelect(ns, uniq(all.map((c) => c.metadata.namespace)));
      refillSelect(cl, uniq(all.map(claimClass)));
      table.setRows(all.filter((c) => (!ns.value || c.metadata.namespace === ns.value)
        && (!cl.value || claimClass(c) === cl.value) && (!ph.value || claimPhase(c) === ph.value)
        && labelMatches(c, label.value.trim())));
      const f = forbidden("claims");
      if (f) table.count.textContent = f.textContent;
    } };
    return this_;
  },

  volumes() {
    const [clLabel, cl] = select("Class", "f-class", [], () => this_.update());
    const [phLabel, ph] = select("Phase", "f-phase", ["Available", "Bound", "Released", "Failed"], () => this_.update());
    const table = new VTable([
      { title: "Name", value: (v) => v.metadata.name, width: "2fr" },
      { title: "Phase", value: (v) => (v.status && v.status.phase) || "", cls: (v) => "phase-" + ((v.status && v.status.phase) || ""), width: "0.8fr" },
      { title: "Capacity", value: (v) => formatBytes(volumeSize(v)), sort: volumeSize, width: "0.8fr" },
      { title: "Class", value: (v) => v.spec.storageClassName || "", width: "1fr" },
      { title: "Claim", value: (v) => v.spec.claimRef ? v.spec.claimRef.namespace + "/" + v.spec.claimRef.name : "",
        render: (v) => v.spec.claimRef ? storyLink({ metadata: v.spec.claimRef }) : "", width: "2fr" },
      { title: "Reclaim", value: (v) => v.spec.persistentVolumeReclaimPolicy || "", width: "0.8fr" },
      { title: "Actions", value: () => "", render: (v) => volumeActions(v), width: "1.2fr" },
    ], { label: "Volumes" });
    const el = h("section", {}, h("h1", {}, "Volumes"), h("div", { class: "filters" }, clLabel, phLabel), table.el);
    const this_ = { el, update() {
      const all = items("volumes");
      refillSelect(cl, uniq(all.map((v) => v.spec.storageClassName)));
      table.setRows(all.filter((v) => (!cl.value || v.spec.storageClassName === cl.value)
        && (!ph.value || (v.status && v.status.phase) === ph.value)));
      const f = forbidden("volumes");
      if (f) table.count.textContent = f.textContent;
    } };
    return this_;
  },

  attachments() {
    const [noLabel, no] = select("Node", "f-node", [], () => this_.update());
    const table = new VTable([
      { title: "Name", value: (a) => a.metadata.name, width: "2fr" },
      { title: "Volume", value: (a) => a.spec.source.persistentVolumeName || "", width: "2fr" },
      { title: "Node", value: (a) => a.spec.nodeName, width: "1fr" },
      { title: "Attached", value: (a) => (a.status && a.status.attached) ? "yes" : "no", cls: (a) => (a.status && a.status.attached) ? "ok" : "warn", width: "0.6fr" },
      { title: "Error", value: (a) => (a.status && (a.status.attachError || a.status.detachError || {}).message) || "", width: "2fr" },
    ], { label: "Attachments" });
    const el = h("section", {}, h("h1", {}, "Attachments"), h("div", { class: "filters" }, noLabel), table.el);
    const this_ = { el, update() {
      const all = items("attachments");
      refillSelect(no, uniq(all.map((a) => a.spec.nodeName)));
      table.setRows(all.filter((a) => !no.value || a.spec.nodeName === no.value));
      const f = forbidden("attachments");
      if (f) table.count.textContent = f.textContent;
    } };
    return this_;
  },

  nodes() {
    const list = h("div", { class: "cards" });
    const el = h("section", {}, h("h1", {}, "Nodes"), list);
    return { el, update() {
      const attachments = items("attachments"), csinodes = items("csinodes"), leases = items("leases");
      list.replaceChildren(forbidden("nodes") || "", ...items("nodes").sort((a, b) => a.metadata.name < b.metadata.name ? -1 : 1).map((n) => {
        const name = n.metadata.name;
        const attached = attachments.filter((a) => a.spec.nodeName === name && a.status && a.status.attached).length;
        const csi = csinodes.find((c) => c.metadata.name === name);
        const limits = ((csi && csi.spec.drivers) || []).map((d) => d.allocatable && d.allocatable.count).filter((x) => x);
        const limit = limits.length ? Math.max(...limits) : 0;
        const lease = leases.find((l) => l.metadata.name === name);
        const renewed = lease && lease.spec.renewTime ? (Date.now() - Date.parse(lease.spec.renewTime)) / 1000 : null;
        const healthy = renewed !== null && renewed < ((lease.spec.leaseDurationSeconds || 40) * 1.5);
        const taints = (n.spec && n.spec.taints) || [];
        return h("article", { class: "card", "aria-label": "node " + name }, h("h3", {}, name),
          h("p", { class: healthy ? "ok" : "bad" }, healthy ? "Healthy (lease renewed " + Math.round(renewed) + "s ago)" :
            renewed === null ? "No lease: no node agent has reported" : "Unhealthy: lease last renewed " + Math.round(renewed) + "s ago"),
          bar("Attached", attached, limit || attached || 1, attached + (limit ? " of " + limit + " volumes" : " volumes (no limit known)"), limit && attached >= limit ? "full" : ""),
          taints.length ? h("p", {}, "Taints: ", ...taints.map((t) => h("span", { class: t.key === "node.kubernetes.io/out-of-service" ? "taint-oos" : "" },
            t.key + (t.value ? "=" + t.value : "") + ":" + t.effect + " "))) : h("p", { class: "count" }, "No taints"));
      }));
    } };
  },

  events() {
    const [nsLabel, ns] = select("Namespace", "f-ns", [], () => this_.update());
    const [tyLabel, ty] = select("Type", "f-type", ["Normal", "Warning"], () => this_.update());
    const reason = h("input", { id: "f-reason", oninput: () => this_.update() });
    const table = new VTable([
      { title: "Last seen", value: (e) => age(timeOf(e)), sort: (e) => -Date.parse(timeOf(e) || 0), width: "0.7fr" },
      { title: "Type", value: (e) => e.type || "", cls: (e) => e.type === "Warning" ? "bad" : "", width: "0.7fr" },
      { title: "Reason", value: (e) => e.reason || "", width: "1.2fr" },
      { title: "Object", value: (e) => (e.involvedObject.kind || "") + "/" + (e.involvedObject.name || ""), width: "2fr" },
      { title: "Message", value: (e) => e.message || "", width: "4fr" },
    ], { label: "Events" });
    const el = h("section", {}, h("h1", {}, "Events"),
      h("div", { class: "filters" }, nsLabel, tyLabel, h("label", { for: "f-reason" }, "Reason contains", reason)), table.el);
    const this_ = { el, update() {
      const all = items("events");
      refillSelect(ns, uniq(all.map((e) => e.metadata.namespace)));
      const r = reason.value.trim().toLowerCase();
      table.setRows(all.filter((e) => (!ns.value || e.metadata.namespace === ns.value) && (!ty.value || e.type === ty.value)
        && (!r || (e.reason || "").toLowerCase().includes(r))));
    } };
    return this_;
  },

  providers() {
    const table = new VTable([
      { title: "Provider", value: (d) => d.metadata.name, width: "2fr" },
      { title: "Attach required", value: (d) => String(!!d.spec.attachRequired), width: "1fr" },
      { title: "Capacity published", value: (d) => String(!!d.spec.storageCapacity), width: "1fr" },
      { title: "fsGroup policy", value: (d) => d.spec.fsGroupPolicy || "", width: "1fr" },
      { title: "Modes", value: (d) => (d.spec.volumeLifecycleModes || []).join(", "), width: "1fr" },
    ], { height: 240, label: "Providers" });
    // What each provider the server runs can do, and the class parameters it takes: fixed
    // while the server runs, so read once.
    const details = h("div", { class: "cards" });
    providerDescriptions().then((described) => details.replaceChildren(...described.map(providerCard)));
    const el = h("section", {}, h("h1", {}, "Providers"), table.el, h("h2", {}, "What they do"), details);
    return { el, update() {
      table.setRows(items("drivers"));
      const f = forbidden("drivers");
      if (f) table.count.textContent = f.textContent;
    } };
  },

  classes() {
    const table = new VTable([
      { title: "Name", value: (c) => c.metadata.name, width: "1.5fr" },
      { title: "Provisioner", value: (c) => c.provisioner, width: "1.5fr" },
      { title: "Default", value: (c) => isDefault(c) ? "yes" : "", width: "0.6fr" },
      { title: "Reclaim", value: (c) => c.reclaimPolicy || "Delete", width: "0.8fr" },
      { title: "Binding", value: (c) => c.volumeBindingMode || "Immediate", width: "1.2fr" },
      { title: "Expansion", value: (c) => c.allowVolumeExpansion ? "yes" : "no", width: "0.7fr" },
      { title: "Actions", value: () => "", render: (c) => h("span", {},
        isDefault(c) ? "" : h("button", { type: "button", onclick: () => setDefault(c) }, "Make default"), " ",
        h("button", { type: "button", class: "danger", onclick: () => remove(objectPath(PATHS.classes, c.metadata.name), "storage class " + c.metadata.name) }, "Delete")), width: "2fr" },
    ], { height: 320, label: "Storage classes" });
    const el = h("section", {}, h("h1", {}, "Storage classes"),
      h("p", {}, h("button", { type: "button", class: "primary", onclick: createClass }, "New storage class")), table.el);
    return { el, update() {
      table.setRows(items("classes"));
      const f = forbidden("classes");
      if (f) table.count.textContent = f.textContent;
    } };
  },

  story(namespace, name) {
    const body = h("div");
    // Buttons live outside what each change redraws, so they keep focus and stay clickable.
    // They act only on the claim shown, by its own (checked) name, never on the URL's text.
    const shown = () => collection("claims").items.get(namespace + "/" + name);
    const actions = h("p", { hidden: true }, h("button", { type: "button", onclick: () => {
      const c = shown();
      if (c) resize(c);
    } }, "Resize"), " ",
    h("button", { type: "button", class: "danger", onclick: () => {
      const c = shown();
      if (c) remove(claimPath(c.metadata.namespace, c.metadata.name), "claim " + c.metadata.namespace + "/" + c.metadata.name);
    } }, "Delete claim"));
    const volumeBar = h("p");
    let volumeKey = null;
    const el = h("section", {}, h("h1", {}, "Claim " + namespace + "/" + name), actions, body, volumeBar);
    return { el, update() {
      const claim = collection("claims").items.get(namespace + "/" + name);
      actions.hidden = !claim;
      if (!claim) {
        body.replaceChildren(h("p", {}, collection("claims").loaded ? "This claim does not exist (or your token may not read it)." : "Loading…"));
        return;
      }
      const volumeName = claim.spec.volumeName;
      const volume = volumeName ? collection("volumes").items.get("/" + volumeName) : null;
      const attachments = items("attachments").filter((a) => volumeName && a.spec.source.persistentVolumeName === volumeName);
      const pods = items("pods").filter((p) => p.metadata.namespace === namespace && ((p.spec && p.spec.volumes) || [])
        .some((v) => v.persistentVolumeClaim && v.persistentVolumeClaim.claimName === name));
      const about = (e) => {
        const o = e.involvedObject || {};
        return (o.kind === "PersistentVolumeClaim" && o.namespace === namespace && o.name === name)
          || (volumeName && o.kind === "PersistentVolume" && o.name === volumeName)
          || (o.kind === "VolumeAttachment" && attachments.some((a) => a.metadata.name === o.name))
          || (o.kind === "Pod" && o.namespace === namespace && pods.some((p) => p.metadata.name === o.name));
      };
      const events = items("events").filter(about).sort((a, b) => timeOf(a) < timeOf(b) ? -1 : 1);
      const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v === undefined || v === null || v === "" ? "—" : v)];
      body.replaceChildren(
        h("h2", {}, "Claim"),
        h("dl", { class: "facts" }, fact("Phase", claimPhase(claim)), fact("Class", claimClass(claim)),
          fact("Requested", claim.spec.resources.requests.storage),
          fact("Capacity", claim.status && claim.status.capacity && claim.status.capacity.storage),
          fact("Access modes", (claim.spec.accessModes || []).join(", ")), fact("Volume", volumeName),
          fact("Created", claim.metadata.creationTimestamp)),
        h("h2", {}, "Volume"),
        volume ? h("dl", { class: "facts" }, fact("Name", volume.metadata.name), fact("Phase", volume.status && volume.status.phase),
          fact("Capacity", volume.spec.capacity && volume.spec.capacity.storage), fact("Provider", volume.spec.csi && volume.spec.csi.driver),
          fact("Handle", volume.spec.csi && volume.spec.csi.volumeHandle), fact("Reclaim policy", volume.spec.persistentVolumeReclaimPolicy))
          : h("p", {}, volumeName ? "Volume " + volumeName + " (not readable with this token)" : "No volume yet."),
        h("h2", {}, "Attachments"),
        attachments.length ? h("ul", {}, ...attachments.map((a) => h("li", {}, a.metadata.name + " → node " + a.spec.nodeName + ": " +
          ((a.status && a.status.attached) ? "attached" : "not attached") +
          ((a.status && a.status.attachError) ? " (" + a.status.attachError.message + ")" : "")))) : h("p", {}, "None."),
        h("h2", {}, "Pods"),
        pods.length ? h("ul", {}, ...pods.map((p) => h("li", {}, p.metadata.name + (p.spec.nodeName ? " on " + p.spec.nodeName : " (not scheduled)")))) : h("p", {}, "None."),
        h("h2", {}, "Events (newest last)"),
        events.length ? h("ol", { class: "story" }, ...events.map((e) => h("li", { class: e.type || "" },
          h("strong", {}, e.reason || ""), " ", (e.involvedObject.kind || "") + "/" + (e.involvedObject.name || ""), ": ", e.message || "",
          h("span", { class: "count" }, " — " + age(timeOf(e)) + " ago" + (e.count > 1 ? " (×" + e.count + ")" : ""))))) : h("p", {}, "None."));
      const key = volume ? volume.metadata.name + "/" + (volume.status && volume.status.phase) + "/" + volume.spec.persistentVolumeReclaimPolicy : "";
      if (key !== volumeKey) {
        volumeKey = key;
        volumeBar.replaceChildren(volume ? h("span", {}, "Volume " + volume.metadata.name + ": ", volumeActions(volume)) : "");
      }
    } };
  },
};

// ---------------------------------------------------------------- actions

// A modal dialog; resolves {ok: true} when confirmed. `check`, if given, runs on confirm and
// returns what is wrong (shown in the dialog, which stays open) or "" to go on.
function dialog(title, fields, confirmLabel, danger, check) {
  return new Promise((resolve) => {
    const d = h("dialog", { "aria-label": title });
    const error = h("p", { class: "error", role: "alert" });
    const submit = h("button", { type: "submit", value: "ok", class: danger ? "danger" : "primary" }, confirmLabel);
    // With a check of its own, the page says what is wrong in words, so the browser's are off.
    const form = h("form", { method: "dialog", novalidate: !!check }, h("h2", {}, title), ...fields, error,
      h("div", { class: "buttons" }, h("button", { type: "button", value: "cancel", onclick: () => { d.close(); } }, "Cancel"), submit));
    d.append(form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (check) {
        submit.disabled = true;
        error.textContent = "";
        let wrong;
        try { wrong = await check(); } catch (err) { wrong = err.message; }
        submit.disabled = false;
        if (wrong) { error.textContent = wrong; return; }
      }
      resolve({ ok: true, error, close: () => { d.close(); d.remove(); } });
    });
    d.addEventListener("close", () => { d.remove(); resolve({ ok: false }); });
    document.body.append(d);
    d.showModal();
  });
}

// Runs an action; says what happened, or the server's own message for why not.
async function act(doing, done, f) {
  try { await f(); toast(done); return true; } catch (e) { toast(doing + " failed: " + e.message, true); return false; }
}

// Resolves once a collection has been read (or refused).
function loaded(name) {
  const l = collection(name);
  if (l.loaded) return Promise.resolve();
  return new Promise((resolve) => {
    const f = () => { if (l.loaded) { l.listeners.delete(f); resolve(); } };
    l.listeners.add(f);
  });
}

async function remove(path, what) {
  if (!path) return;
  const r = await dialog("Delete " + what + "?", [h("p", {}, "This deletes " + what + ". It cannot be undone.")], "Delete", true);
  if (!r.ok) return;
  r.close();
  await act("Deleting " + what, "Deleted " + what, () => api.del(path));
}

async function resize(claim) {
  const input = h("input", { id: "new-size", value: claim.spec.resources.requests.storage, required: true,
    pattern: "[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", "aria-describedby": "size-help" });
  const r = await dialog("Resize claim " + claim.metadata.name, [h("label", { for: "new-size" }, "New size", input),
    h("p", { id: "size-help", class: "count" }, "A quantity such as 10Gi. The class must allow expansion.")], "Resize");
  if (!r.ok) return;
  if (!validQuantity(input.value)) { r.error.textContent = "Not a quantity: use a number with a unit such as Gi."; r.close(); toast("Not resized: not a quantity", true); return; }
  r.close();
  await act("Resizing " + claim.metadata.name, "Resize of " + claim.metadata.name + " requested", () => api.patch(
    claimPath(claim.metadata.namespace, claim.metadata.name),
    { spec: { resources: { requests: { storage: input.value.trim() } } } }));
}

function volumeActions(v) {
  const phase = v.status && v.status.phase;
  const out = h("span", {});
  if (phase === "Released" && v.spec.persistentVolumeReclaimPolicy === "Retain") {
    out.append(h("button", { type: "button", onclick: () => release(v) }, "Release"), " ");
  }
  out.append(h("button", { type: "button", class: "danger", onclick: () => remove(objectPath(PATHS.volumes, v.metadata.name), "volume " + v.metadata.name) }, "Delete"));
  return out;
}

async function release(v) {
  const r = await dialog("Make volume " + v.metadata.name + " available again?", [h("p", { class: "warnbox" },
    "The volume keeps the data of its previous claim (" + (v.spec.claimRef ? v.spec.claimRef.namespace + "/" + v.spec.claimRef.name : "") +
    "). Once available, any claim that matches it may bind to it and read that data. Only do this if the data may be read by whoever claims it next.")], "Release");
  if (!r.ok) return;
  r.close();
  await act("Releasing " + v.metadata.name, "Volume " + v.metadata.name + " released", () => api.patch(objectPath(PATHS.volumes, v.metadata.name), { spec: { claimRef: null } }));
}

const DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class";
const isDefault = (c) => (c.metadata.annotations || {})[DEFAULT_ANNOTATION] === "true";

async function setDefault(c) {
  const r = await dialog("Make " + c.metadata.name + " the default class?", [h("p", {}, "Claims that name no class get this one. Other classes stop being the default.")], "Make default");
  if (!r.ok) return;
  r.close();
  await act("Making " + c.metadata.name + " the default", c.metadata.name + " is the default class", async () => {
    await api.patch(objectPath(PATHS.classes, c.metadata.name), { metadata: { annotations: { [DEFAULT_ANNOTATION]: "true" } } });
    for (const other of items("classes")) {
      if (other.metadata.name !== c.metadata.name && isDefault(other)) {
        await api.patch(objectPath(PATHS.classes, other.metadata.name), { metadata: { annotations: { [DEFAULT_ANNOTATION]: null } } });
      }
    }
  });
}

// The class parameters each provider the server runs takes (`/apis/stowage.dev/v1/providers`).
async function providerDescriptions() {
  try {
    return (await api.get("/apis/stowage.dev/v1/providers")).items || [];
  } catch (_) {
    return []; // Not for this token, or an older server: the form still takes key=value lines.
  }
}

// One field per parameter a provider describes: a list of its values, or text checked
// against its pattern; its description and default are the field's help.
function parameterFields(provider) {
  return (provider ? provider.parameters || [] : []).filter((p) => !p.numbered).map((p) => {
    const id = "sc-param-" + p.name;
    const help = h("small", { id: id + "-help" }, p.description + (p.default !== undefined ? " (default " + p.default + ")" : ""));
    const input = p.values
      ? h("select", { id, "aria-describedby": id + "-help" }, h("option", { value: "" }, p.required ? "choose…" : "default"),
        ...p.values.map((v) => h("option", { value: v }, v)))
      : h("input", { id, "aria-describedby": id + "-help", placeholder: p.default || "", required: p.required });
    input.dataset.parameter = p.name;
    return h("label", { for: id }, p.name + (p.required ? " (required)" : ""), input, help);
  });
}

// What is wrong with `parameters` for `provider`, by the rules it describes; "" if nothing.
function parameterProblems(provider, parameters) {
  const described = provider ? provider.parameters || [] : [];
  if (!described.length) return "";
  for (const p of described) {
    if (p.required && !parameters[p.name]) return p.name + " is required by " + provider.name;
  }
  for (const [name, value] of Object.entries(parameters)) {
    const p = described.find((d) => d.numbered ? name.startsWith(d.name) : d.name === name);
    if (!p) {
      return name + " is not a parameter of " + provider.name + "; it takes " +
        described.map((d) => d.numbered ? d.name + "N" : d.name).join(", ");
    }
    if (p.values && !p.values.includes(value)) return name + " must be one of " + p.values.join(", ") + ", not \"" + value + "\"";
    let pattern = null;
    try { pattern = p.pattern && new RegExp("^(?:" + p.pattern + ")$"); } catch (_) { /* the server's dry run still checks */ }
    if (pattern && !pattern.test(value)) return name + " \"" + value + "\" is not valid: " + p.description;
  }
  return "";
}

const CAPABILITIES = [["dynamicProvisioning", "Provisions volumes"], ["attachRequired", "Attaches to nodes"],
  ["expansion", "Expansion"], ["snapshots", "Snapshots"], ["clones", "Clones"], ["volumeModification", "Modification"],
  ["storageCapacity", "Publishes capacity"], ["topology", "Topology"]];

function providerCard(p) {
  const c = p.capabilities || {};
  const facts = h("dl", { class: "facts" },
    ...CAPABILITIES.flatMap(([k, title]) => [h("dt", {}, title), h("dd", {}, c[k] ? "yes" : "no")]),
    h("dt", {}, "Access modes"), h("dd", {}, (c.accessModes || []).join(", ")),
    h("dt", {}, "Volumes per node"), h("dd", {}, c.maxAttachmentsPerNode ? String(c.maxAttachmentsPerNode) : "no limit"));
  const params = (p.parameters || []).map((q) => h("li", {},
    h("code", {}, q.name + (q.numbered ? "N" : "")), q.required ? " (required)" : "", ": " + q.description,
    q.values ? " One of " + q.values.join(", ") + "." : "", q.default !== undefined ? " Default " + q.default + "." : ""));
  return h("article", { class: "card", "aria-label": "provider " + p.name }, h("h3", {}, p.name), facts,
    h("h4", {}, "Class parameters"), params.length ? h("ul", { class: "params" }, ...params) : h("p", {}, "Not described: any key=value."));
}

async function createClass() {
  await loaded("drivers");
  const described = await providerDescriptions();
  const names = uniq([...described.map((p) => p.name), ...items("drivers").map((d) => d.metadata.name)]);
  const name = h("input", { id: "sc-name", required: true, maxlength: "253" });
  const provisioner = h("select", { id: "sc-provisioner" }, ...names.map((p) => h("option", { value: p }, p)));
  const reclaim = h("select", { id: "sc-reclaim" }, h("option", {}, "Delete"), h("option", {}, "Retain"));
  const binding = h("select", { id: "sc-binding" }, h("option", {}, "Immediate"), h("option", {}, "WaitForFirstConsumer"));
  const expansion = h("input", { id: "sc-expansion", type: "checkbox" });
  const known = h("fieldset", { id: "sc-known" });
  const params = h("textarea", { id: "sc-params", placeholder: "key=value, one per line" });
  const provider = () => described.find((p) => p.name === provisioner.value);
  const showFields = () => {
    const fields = parameterFields(provider());
    known.hidden = !fields.length;
    known.replaceChildren(h("legend", {}, "Parameters of " + provisioner.value), ...fields);
  };
  provisioner.addEventListener("change", showFields);
  showFields();

  let body = null;
  const check = async () => {
    const n = name.value.trim();
    if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(n) || n.length > 253) {
      return "The name must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit";
    }
    const parameters = {};
    for (const input of known.querySelectorAll("[data-parameter]")) {
      if (input.value.trim()) parameters[input.dataset.parameter] = input.value.trim();
    }
    for (const line of params.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const i = line.indexOf("=");
      if (i <= 0) return "Parameter line \"" + line + "\" is not key=value";
      parameters[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    const wrong = parameterProblems(provider(), parameters);
    if (wrong) return wrong;
    body = { apiVersion: "storage.k8s.io/v1", kind: "StorageClass", metadata: { name: n },
      provisioner: provisioner.value, reclaimPolicy: reclaim.value, volumeBindingMode: binding.value,
      allowVolumeExpansion: expansion.checked, parameters };
    // The server's own word, with nothing written: its validation, and its provider's
    // warnings about parameters it would refuse when a claim comes.
    try {
      const warnings = await api.dryRun(PATHS.classes, body);
      return warnings.length ? "Not created: " + warnings.join("; ") : "";
    } catch (e) {
      return "Not created: " + e.message;
    }
  };
  const r = await dialog("New storage class", [
    h("label", { for: "sc-name" }, "Name", name), h("label", { for: "sc-provisioner" }, "Provider", provisioner),
    h("label", { for: "sc-reclaim" }, "Reclaim policy", reclaim), h("label", { for: "sc-binding" }, "Volume binding mode", binding),
    h("label", { for: "sc-expansion" }, "Allow volume expansion", expansion), known,
    h("label", { for: "sc-params" }, "Other parameters", params)], "Create", false, check);
  if (!r.ok) return;
  r.close();
  await act("Creating storage class " + body.metadata.name, "Storage class " + body.metadata.name + " created", () => api.post(PATHS.classes, body));
}

// ---------------------------------------------------------------- routing

// What each view follows. Only those watches stay open: over HTTP/2 (TLS) they share one
// connection, but over plain HTTP/1.1 a browser keeps at most six connections to a server and
// every watch holds one.
const NEEDS = {
  overview: ["claims", "volumes", "classes", "capacities", "events"],
  claims: ["claims"],
  volumes: ["volumes"],
  attachments: ["attachments"],
  nodes: ["nodes", "attachments", "csinodes", "leases"],
  events: ["events"],
  providers: ["drivers"],
  classes: ["classes", "drivers"],
  story: ["claims", "volumes", "attachments", "pods", "events"],
};

function route() {
  if (!api) { showSignIn(); return; }
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decodeURIComponent);
  const [name, ...args] = parts;
  const key = views[name] ? name : "overview";
  for (const [n, l] of Object.entries(live)) {
    if (!NEEDS[key].includes(n)) { l.stop(); delete live[n]; }
  }
  const make = views[key];
  currentView = make(...args);
  document.getElementById("main").replaceChildren(currentView.el);
  document.getElementById("main").focus({ preventScroll: true });
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#/" + key) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  currentView.update();
}

window.addEventListener("hashchange", () => {
  // Only "#/..." is a view; "#main" (the skip link) just moves focus.
  if (location.hash.startsWith("#/") || location.hash === "") route();
});
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
  // Start every collection at once: the first view to need one finds it loading already.
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) start(token); else showSignIn();
});
// Ages go stale: refresh the view every 10 s even without changes.
setInterval(scheduleRender, 10000);
