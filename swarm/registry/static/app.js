// The swarm registry dashboard. Vanilla JavaScript, no build step, no external requests.
// Every string that comes from the registry is written with textContent (never innerHTML):
// agents are hostile, and their ids, names, capabilities and metadata end up here.
"use strict";

(function () {
  const TOKEN_KEY = "swarm-ui-token";
  const state = {
    token: null,
    agents: new Map(),      // agent_id -> registration (GET /agents, then watch events)
    gone: new Map(),        // agent_id -> ms when an expired/deregistered event removed it
    breakers: new Map(),    // agent_id -> breaker hash fields
    protection: false,
    lastEventId: null,
    view: "agents",
    detail: null,
    topic: null,
    watchAbort: null,
    renderQueued: false,
    timers: [],
  };

  const $ = (id) => document.getElementById(id);

  // el("td", {className: "x", title: "..."}, "text", childNode...): text children become text nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === "dataset") Object.assign(node.dataset, v);
        else node[k] = v;
      }
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fill(tbody, rows) {
    clear(tbody);
    const frag = document.createDocumentFragment();
    for (const row of rows) frag.appendChild(row);
    tbody.appendChild(frag);
  }

  // -- token and fetch ---------------------------------------------------------------

  function loadToken() {
    return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (state.token) h.Authorization = "Bearer " + state.token;
    return h;
  }

  class AuthError extends Error {}

  async function api(path) {
    const resp = await fetch(path, { headers: headers(), cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      let detail = resp.status + "";
      try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new AuthError(String(detail));
    }
    if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
    return resp.json();
  }

  function showLogin(message) {
    if (state.watchAbort) state.watchAbort.abort();
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    $("main").hidden = true;
    $("login").hidden = false;
    $("logout").hidden = true;
    $("login-error").textContent = message || "";
  }

  async function start() {
    try {
      const overview = await api("/ui/api/overview");
      applyOverview(overview);
    } catch (e) {
      if (e instanceof AuthError) { showLogin("refused: " + e.message); return; }
      showLogin(String(e));
      return;
    }
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = false;
    if (!state.timers.length) {
      watch();
      state.timers = [setInterval(tick, 1000), setInterval(refreshOverview, 2000), setInterval(refreshView, 3000)];
    }
    route();
  }

  // -- the watch: fetch() + ReadableStream, SSE parsed here ----------------------------

  function setConn(text, cls) {
    const c = $("conn");
    c.textContent = text;
    c.className = "conn " + (cls || "");
  }

  async function loadSnapshot() {
    const list = await api("/agents");
    const fresh = new Map();
    for (const reg of list.agents) {
      const mine = state.agents.get(reg.agent_id);
      const goneAt = state.gone.get(reg.agent_id);
      if (mine && mine.updated_at > reg.updated_at) fresh.set(reg.agent_id, mine);
      else if (goneAt === undefined || reg.updated_at > goneAt) fresh.set(reg.agent_id, reg);
    }
    // agents an event added after the snapshot was taken
    for (const [id, reg] of state.agents) if (!fresh.has(id)) fresh.set(id, reg);
    state.agents = fresh;
    scheduleRender();
  }

  async function watch() {
    let delay = 500;
    for (;;) {
      const abort = new AbortController();
      state.watchAbort = abort;
      try {
        const extra = { Accept: "text/event-stream" };
        if (state.lastEventId) extra["Last-Event-ID"] = state.lastEventId;
        const resp = await fetch("/agents/watch", { headers: headers(extra), signal: abort.signal, cache: "no-store" });
        if (resp.status === 401 || resp.status === 403) { showLogin("the watch refused the token"); return; }
        if (!resp.ok || !resp.body) throw new Error("watch: HTTP " + resp.status);
        setConn("live", "live");
        delay = 500;
        // the stream now starts after the registry's newest event: the snapshot cannot miss one
        if (!state.lastEventId) await loadSnapshot();
        await readEvents(resp.body.getReader());
        setConn("reconnecting", "down");
      } catch (e) {
        if (abort.signal.aborted) return;
        setConn("disconnected: retrying", "down");
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  async function readEvents(reader) {
    const decoder = new TextDecoder();
    let buf = "";
    let fields = { data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      for (;;) {
        const i = buf.search(/[\r\n]/);
        if (i < 0) break;
        if (buf[i] === "\r" && i === buf.length - 1) break;  // maybe \r\n split across chunks
        const line = buf.slice(0, i);
        buf = buf.slice(buf[i] === "\r" && buf[i + 1] === "\n" ? i + 2 : i + 1);
        if (line === "") {
          if (fields.data.length) dispatch(fields);
          fields = { data: [] };
        } else if (line[0] !== ":") {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val[0] === " ") val = val.slice(1);
          if (name === "data") fields.data.push(val);
          else fields[name] = val;
        }
      }
    }
  }

  function dispatch(fields) {
    if (fields.id) state.lastEventId = fields.id;
    let data;
    try { data = JSON.parse(fields.data.join("\n")); } catch (e) { return; }
    if (!data || typeof data !== "object") return;
    const type = fields.event || "message";
    const id = typeof data.agent_id === "string" ? data.agent_id : null;
    if (type === "reset") {
      state.agents = new Map((data.agents || []).map((a) => [a.agent_id, a]));
    } else if (type === "registered" || type === "updated") {
      if (id) { state.agents.set(id, data); state.gone.delete(id); }
    } else if (type === "expired" || type === "deregistered") {
      if (id) { state.agents.delete(id); state.gone.set(id, Date.now()); }
    } else if (type === "breaker-opened" || type === "breaker-closed") {
      if (id) {
        const b = Object.assign({}, state.breakers.get(id) || {}, { state: String(data.state),
          failures: String(data.failures) });
        state.breakers.set(id, b);
        renderBanners();
      }
    }
    scheduleRender();
    if (state.detail && id === state.detail) loadDetail(id);
  }

  // -- overview: banners and breakers -----------------------------------------------------

  function applyOverview(o) {
    $("swarm-name").textContent = String(o.swarm || "");
    state.protection = !!o.protection;
    state.breakers = new Map(Object.entries(o.breakers || {}));
    renderBanners();
    scheduleRender();
  }

  async function refreshOverview() {
    try { applyOverview(await api("/ui/api/overview")); } catch (e) { if (e instanceof AuthError) showLogin(e.message); }
  }

  function openBreakers() {
    const out = [];
    for (const [id, b] of state.breakers) if (b.state === "open" || b.state === "half_open") out.push(id);
    return out.sort();
  }

  function renderBanners() {
    const box = $("banners");
    clear(box);
    if (state.protection) {
      box.appendChild(el("div", { id: "banner-protection", className: "banner-protection" },
        "Protection mode: too many leases expired at once; the registry is not evicting agents."));
    }
    const open = openBreakers();
    if (open.length) {
      box.appendChild(el("div", { id: "banner-breakers", className: "banner-breakers" },
        "Open breakers (" + open.length + "): " + open.join(", ")));
    }
  }

  // -- agents table -------------------------------------------------------------------------

  function scheduleRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => { state.renderQueued = false; renderAgents(); });
  }

  function secs(ms) { return Math.round(ms / 1000) + "s"; }

  function renderAgents() {
    const text = $("f-text").value.trim().toLowerCase();
    const role = $("f-role").value;
    const status = $("f-status").value;
    const now = Date.now();
    const roles = new Set();
    const rows = [];
    const ids = Array.from(state.agents.keys()).sort();
    for (const id of ids) {
      const a = state.agents.get(id);
      if (a.role) roles.add(a.role);
      const caps = (a.capabilities || []).join(", ");
      const b = state.breakers.get(id);
      const bstate = b ? String(b.state) : "closed";
      const expires = Number(a.lease_expires_at || 0);
      // as the registry computes it (store._registration); watch events carry no status
      const st = expires <= now ? "expiring" : (bstate === "open" || bstate === "half_open") ? "critical" : "healthy";
      if (role && a.role !== role) continue;
      if (status && st !== status) continue;
      if (text && ![id, a.agent_name, a.version, a.role, caps].some((s) => String(s || "").toLowerCase().includes(text))) continue;
      const last = expires - Number(a.ttl_seconds || 0) * 1000;
      rows.push(el("tr", { dataset: { agentId: id } },
        el("td", { className: "c-id" }, id),
        el("td", { className: "c-role" }, String(a.role || "-")),
        el("td", { className: "c-version" }, String(a.version || "")),
        el("td", { className: "c-status status-" + st }, st),
        el("td", { className: "c-breaker breaker-" + bstate }, bstate + (b && Number(b.failures) ? " (" + b.failures + " failures)" : "")),
        el("td", { className: "c-lease" }, expires > now ? secs(expires - now) + " left" : "expired"),
        el("td", { className: "c-heartbeat" }, secs(Math.max(0, now - last)) + " ago"),
        el("td", { className: "c-capabilities" }, caps || "-")));
    }
    fill(document.querySelector("#agents-table tbody"), rows);
    $("agent-count").textContent = rows.length + " of " + state.agents.size + " agents";
    const select = $("f-role");
    const have = new Set(Array.from(select.options).map((o) => o.value));
    for (const r of Array.from(roles).sort()) if (!have.has(r)) select.appendChild(el("option", { value: r }, r));
  }

  function tick() { if (state.view === "agents") scheduleRender(); }

  async function loadDetail(id) {
    state.detail = id;
    let d;
    try { d = await api("/ui/api/agents/" + encodeURIComponent(id)); } catch (e) {
      if (e instanceof AuthError) { showLogin(e.message); return; }
      d = null;
    }
    if (state.detail !== id) return;
    $("agent-detail").hidden = false;
    $("detail-id").textContent = id;
    if (!d) { $("detail-registration").textContent = "not found"; return; }
    $("detail-registration").textContent = JSON.stringify(d.registration || { registered: false, declared: d.declared }, null, 2);
    $("detail-breaker").textContent = d.breaker ? JSON.stringify(d.breaker, null, 2) : "no breaker state (never probed)";
    fill(document.querySelector("#detail-transitions tbody"), (d.breaker_transitions || []).map((t) =>
      el("tr", null, el("td", null, String(t.id)), el("td", null, String(t.type)),
        el("td", null, String(t.data && t.data.failures)), el("td", null, String(t.data && t.data.cooldown_ms) + " ms"))));
    const topicRows = [];
    const rights = d.rights || (d.registration && d.registration.topics) || {};
    for (const t of rights.publish || []) topicRows.push(el("tr", null, el("td", null, String(t)), el("td", null, "publish")));
    for (const t of rights.subscribe || []) topicRows.push(el("tr", null, el("td", null, String(t)), el("td", null, "subscribe")));
    fill(document.querySelector("#detail-topics tbody"), topicRows);
    $("detail-inbox").textContent = d.inbox ? "inbox: " + d.inbox.waiting + " waiting, " + d.inbox.dead_letters + " dead letters" : "";
  }

  // -- topics -------------------------------------------------------------------------------

  async function loadTopics() {
    const doc = await api("/ui/api/topics");
    $("topics-note").textContent = doc.installed ? "" : String(doc.detail || "the bus is not installed");
    const inbox = new Map((doc.inboxes || []).map((i) => [i.agent, i]));
    fill(document.querySelector("#topics-table tbody"), (doc.topics || []).map((t) => {
      const subs = (t.subscribers || []).map((s) => {
        const i = inbox.get(s);
        return i ? s + " (" + i.waiting + "/" + i.pending + "/" + (i.lag === null ? "-" : i.lag) + "/" + i.dead_letters + ")" : s;
      });
      const button = el("button", { type: "button", className: "show-messages" }, "messages");
      button.addEventListener("click", () => { state.topic = t.topic; loadMessages(); });
      return el("tr", { dataset: { topic: String(t.topic) } },
        el("td", { className: "c-topic" }, String(t.topic)),
        el("td", { className: "c-length" }, String(t.length)),
        el("td", { className: "c-dead" }, String(t.dead_letters)),
        el("td", null, (t.publishers || []).join(", ") || "-"),
        el("td", null, subs.join(", ") || "-"),
        el("td", null, button));
    }));
    if (state.topic) await loadMessages();
  }

  async function loadMessages() {
    const topic = state.topic;
    const doc = await api("/ui/api/topics/" + encodeURIComponent(topic) + "/messages?count=20");
    $("messages").hidden = false;
    $("messages-topic").textContent = topic;
    fill(document.querySelector("#messages-table tbody"), doc.messages.map((m) =>
      el("tr", null, el("td", null, String(m.id)), el("td", null, String(m.message_id)), el("td", null, String(m.sender)),
        el("td", null, String(m.size)), el("td", { className: "payload" }, String(m.payload) + (m.truncated ? " …" : "")))));
  }

  // -- ACLs -----------------------------------------------------------------------------------

  async function loadAcl() {
    const doc = await api("/ui/api/acl");
    $("acl-note").textContent = doc.installed
      ? "Each cell: publish / subscribe; hover for the deciding rule. Deny beats allow; default deny."
      : String(doc.detail || "no ACL table");
    const head = document.querySelector("#acl-matrix thead");
    clear(head);
    head.appendChild(el("tr", null, el("th", null, "role \\ topic"), ...doc.topics.map((t) => el("th", null, String(t)))));
    const cells = new Map(doc.matrix.map((r) => [r.role + "\u0000" + r.topic, r]));
    const roles = Object.keys(doc.roles).sort();
    fill(document.querySelector("#acl-matrix tbody"), roles.map((role) => el("tr", null,
      el("th", null, role),
      ...doc.topics.map((topic) => {
        const r = cells.get(role + "\u0000" + topic);
        const td = el("td", { className: "cell" });
        for (const action of ["publish", "subscribe"]) {
          const d = r[action];
          td.appendChild(el("span", {
            className: "decision " + (d.allow ? "allow" : "deny"), title: action + ": " + d.rule,
            dataset: { role: role, topic: topic, action: action, allow: String(d.allow), rule: d.rule },
          }, (action === "publish" ? "P" : "S") + (d.allow ? " \u2713" : " \u2717")));
        }
        return td;
      }))));
    fill(document.querySelector("#acl-agents tbody"), Object.entries(doc.agents).map(([id, a]) =>
      el("tr", { dataset: { agentId: id } }, el("td", null, id), el("td", null, String(a.role)),
        el("td", null, a.publish.join(", ") || "-"), el("td", null, a.subscribe.join(", ") || "-"))));
  }

  // -- sync -------------------------------------------------------------------------------------

  function revisionLabel(r) {
    if (!r) return "-";
    if (!r.commit) return "working tree (not a git repository)";
    const short = r.commit.slice(0, 10);
    if (r.source === "git") return (r.ref || "commit") + " @ " + short;
    return short + (r.dirty ? " + uncommitted changes" : "");
  }

  function digest(d) { return d ? String(d).split(":").pop().slice(0, 12) : "-"; }

  function list(id, items) {
    fill($(id), (items && items.length ? items : ["none"]).map((s) => el("li", null, String(s))));
  }

  async function loadSync() {
    const doc = await api("/ui/api/sync");
    const s = doc.status || {};
    const dl = $("sync-summary");
    clear(dl);
    const add = (k, v) => { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", { dataset: { key: k } }, String(v))); };
    const la = s.last_applied, at = s.last_attempted;
    add("state", s.state ? s.state + (s.message ? " — " + s.message : "") : "no reconcile status yet");
    add("applied", la ? revisionLabel(la.revision) + ", digest " + digest(la.digest) + " at " + la.at + " (" + la.trigger + ")" : "never");
    add("last attempted", at ? revisionLabel(at.revision) + ", digest " + digest(at.digest) + " at " + at.at + " (" + at.trigger + ")" : "-");
    add("passes", s.passes === undefined ? "-" : s.passes);
    if (s.waiting_for) add("waiting for", s.waiting_for);
    add("reconcile lease", doc.lease ? doc.lease.description + " (" + Math.max(0, Math.round(doc.lease.ttl_ms / 1000)) + " s left)" : "nobody holds it");
    const standby = Object.keys(doc.standby || {});
    add("standing by", standby.length ? standby.join(", ") : "none");
    if (s.fetch) add("fetch", s.fetch.ref + (s.fetch.commit ? " @ " + s.fetch.commit.slice(0, 10) : " (not fetched yet)") + (s.fetch.error ? "; error: " + s.fetch.error : ""));
    if (doc.pinned) add("rolled back to", String(doc.pinned.commit).slice(0, 10));
    const pending = s.pending;
    add("next pass", pending === undefined || pending === null ? "not known (the last pass could not plan): run `swarm plan`"
      : pending.length ? pending.length + " action(s) planned, not yet applied (listed below)" : "nothing to do (in sync; held-back changes below)");
    const e = s.last_error;
    $("sync-error").hidden = !e;
    if (e) {
      $("sync-error-message").textContent = "(" + e.kind + ") at " + e.at + ": " + e.message;
      list("sync-issues", (e.issues || []).map((i) => i.file + ":" + i.line + ":" + i.column + ": " + (i.path ? i.path + ": " : "") + i.message));
    }
    list("sync-drift", (s.drift || []).map((d) => d + (s.drift_at ? " (healed at " + s.drift_at + ")" : "")));
    list("sync-held", s.held_back);
    list("sync-pending", pending || []);
    list("sync-actions", la ? la.actions.map((a) => a.description) : []);
    fill(document.querySelector("#sync-history tbody"), (doc.history || []).map((h) =>
      el("tr", null, el("td", null, String(h.at)), el("td", null, String(h.result)), el("td", null, revisionLabel(h.revision)),
        el("td", null, digest(h.digest)), el("td", null, String(h.trigger)),
        el("td", null, h.error ? "error: " + h.error : (h.actions.length ? h.actions.join("; ") : "no changes")))));
  }

  // -- views --------------------------------------------------------------------------------------

  const loaders = { topics: loadTopics, acl: loadAcl, sync: loadSync };

  async function refreshView() {
    const load = loaders[state.view];
    if (!load || $("main").hidden) return;
    try { await load(); } catch (e) { if (e instanceof AuthError) showLogin(e.message); }
  }

  function route() {
    const view = (location.hash || "#agents").slice(1);
    state.view = ["agents", "topics", "acl", "sync"].includes(view) ? view : "agents";
    for (const v of ["agents", "topics", "acl", "sync"]) $("view-" + v).hidden = v !== state.view;
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === state.view);
    refreshView();
  }

  document.addEventListener("DOMContentLoaded", () => {
    window.addEventListener("hashchange", route);
    for (const id of ["f-text", "f-role", "f-status"]) $(id).addEventListener("input", scheduleRender);
    document.querySelector("#agents-table tbody").addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr");
      if (tr && tr.dataset.agentId) loadDetail(tr.dataset.agentId);
    });
    $("detail-close").addEventListener("click", () => { state.detail = null; $("agent-detail").hidden = true; });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.token = $("token").value.trim();
      (($("remember").checked) ? localStorage : sessionStorage).setItem(TOKEN_KEY, state.token);
      start();
    });
    state.token = loadToken();
    if (state.token) start(); else showLogin("");
  });
})();
