// webhook-hub customer portal: one page, no dependencies. It reads its session token from the
// URL fragment (never sent to a server), keeps it for this tab only, and calls the hub's API
// under `api/` with it. Everything shown is written as text, never as HTML.
"use strict";

const STORE_KEY = "webhook-hub.portal.session";
const HOUR = 3600 * 1000;
const state = { token: null, session: null, catalog: [] };

// ---------- small DOM helpers ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);

// A table cell: its label (shown beside the value on a phone) and one block of content.
function cell(label, ...children) {
  return h("td", { "data-label": label }, h("div", {}, ...children));
}

function show(...nodes) {
  const view = $("view");
  view.replaceChildren(...nodes);
  const heading = view.querySelector("h2");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

function notify(text, isError) {
  const notice = $("notice");
  notice.className = isError ? "notice error" : "notice";
  notice.setAttribute("role", isError ? "alert" : "status");
  notice.textContent = text;
}

function fatal(title, text) {
  document.body.replaceChildren(
    h("main", { id: "main", class: "fatal" },
      h("div", { class: "card", role: "alert" }, h("h1", {}, title), h("p", {}, text))));
}

function when(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// ---------- the API ----------
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(`api${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, "network", "The webhook service could not be reached. Try again.");
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!res.ok) {
    const err = new ApiError(res.status, data && data.code, (data && data.message) || `HTTP ${res.status}`);
    if (err.code === "session_expired" || err.code === "invalid_session") {
      sessionStorage.removeItem(STORE_KEY);
      fatal(err.code === "session_expired" ? "Your session has expired" : "This link is not valid",
        `${err.message}. Go back to the page that sent you here for a new link.`);
    }
    throw err;
  }
  return data;
}

async function attempt(action, success) {
  try {
    const result = await action();
    if (success) notify(typeof success === "function" ? success(result) : success);
    return result;
  } catch (err) {
    if (err.code !== "session_expired" && err.code !== "invalid_session") notify(err.message, true);
    return undefined;
  }
}

// ---------- views ----------
function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

async function allSubscriptions() {
  const all = [];
  let cursor = null;
  do {
    const query = cursor ? `?limit=100&cursor=${encodeURIComponent(cursor)}` : "?limit=100";
    const page = await call("GET", `/v1/subscriptions${query}`);
    all.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return all;
}

const canWrite = () => state.session.access === "write";

async function listView() {
  const subs = await attempt(allSubscriptions);
  if (!subs) return;
  const rows = subs.map((sub) =>
    h("tr", { "data-id": sub.id },
      cell("Endpoint",
        h("a", { href: `#${sub.id}`, onclick: (e) => { e.preventDefault(); detailView(sub.id); } },
          sub.name || sub.callback_url),
        sub.name ? h("div", { class: "muted" }, sub.callback_url) : null),
      cell("Topics", sub.topics.join(", ")),
      cell("Status", badge(sub.status)),
      cell("Lease ends", when(sub.expires_at),
        canWrite() ? h("div", {}, h("button", {
          type: "button", "aria-label": `Refresh the lease of ${sub.name || sub.callback_url}`,
          onclick: () => refreshLease(sub.id, listView),
        }, "Refresh")) : null)));
  show(
    h("div", { class: "row spread" },
      h("h2", {}, "Your webhook endpoints"),
      h("div", { class: "row" },
        state.catalog.length ? h("button", { type: "button", id: "catalog-link", onclick: () => catalogView() }, "Event types") : null,
        canWrite() ? h("button", { type: "button", class: "primary", onclick: () => formView(null) }, "Add endpoint") : null)),
    subs.length === 0
      ? h("div", { class: "card" }, h("p", {}, "No endpoints yet."),
          canWrite() ? h("p", { class: "muted" }, "Add one to start receiving events.") : null)
      : h("table", { class: "stack", id: "subscriptions" },
          h("caption", {}, `${subs.length} endpoint${subs.length === 1 ? "" : "s"}`),
          h("thead", {}, h("tr", {}, ["Endpoint", "Topics", "Status", "Lease ends"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows)));
}

// ---------- the event-type catalog ----------
// The platform's declared event types this session may subscribe to (read once at start).
async function loadCatalog() {
  try {
    state.catalog = (await call("GET", "/v1/event-types")).data;
  } catch (_) {
    state.catalog = [];
  }
}

function deprecatedMark(type) {
  return type.deprecated ? h("span", { class: "badge deprecated" }, "deprecated") : null;
}

function examplePayload(type) {
  if (!type.examples.length) return h("p", { class: "muted" }, "No example given.");
  return h("pre", { class: "body example", tabindex: "0", "aria-label": `Example payload of ${type.topic}` },
    JSON.stringify(type.examples[0], null, 2));
}

function catalogView() {
  const items = state.catalog.map((type) =>
    h("section", { class: "card event-type", "data-topic": type.topic },
      h("div", { class: "row spread" },
        h("h3", {}, type.topic, " ", deprecatedMark(type)),
        canWrite() ? h("button", { type: "button", "aria-label": `Subscribe to ${type.topic}`,
          onclick: () => formView(null, type.topic) }, "Subscribe") : null),
      h("p", {}, type.description || "No description."),
      type.deprecated ? h("p", { class: "muted" }, "This event type is being phased out; prefer another where one is offered.") : null,
      examplePayload(type)));
  show(
    h("div", { class: "row spread" },
      h("h2", {}, "Event types"),
      h("button", { type: "button", onclick: () => listView() }, "Back to endpoints")),
    h("p", { class: "muted" }, "What your endpoints can receive: each event is delivered as the envelope with this payload in data."),
    ...(items.length ? items : [h("div", { class: "card" }, h("p", {}, "No event types are declared."))]));
}

async function refreshLease(id, then) {
  const sub = await attempt(() => call("PATCH", `/v1/subscriptions/${id}`, { expires: 604800 }),
    (s) => `Lease refreshed: it now ends ${when(s.expires_at)}.`);
  if (sub) await then(id);
}

// Which form field an API error belongs to.
const FIELD_OF = {
  invalid_callback_url: "callback_url", WebhookUnsupportedProtocol: "callback_url",
  forbidden_target: "callback_url", duplicate_callback_url: "callback_url",
  invalid_topic: "topics", invalid_topics: "topics", missing_topics: "topics",
  insufficient_scope: "topics", invalid_name: "name", invalid_labels: "labels",
  invalid_secrecy_level: "secrecy_level", invalid_signature_scheme: "signature_scheme",
};

function parseLabels(text) {
  const labels = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new ApiError(400, "invalid_labels", `"${line}" is not key=value`);
    const key = line.slice(0, at).trim();
    (labels[key] = labels[key] || []).push(line.slice(at + 1).trim());
  }
  return labels;
}

function formView(sub, preselected) {
  const editing = Boolean(sub);
  const chosen = new Set(editing ? sub.topics : preselected ? [preselected] : []);
  const allowed = state.session.topics;
  const declared = state.catalog.map((t) => t.topic).filter((t) => !allowed.includes(t));
  const field = (name, label, input, hint) => h("div", {},
    h("label", { for: name }, label, hint ? h("span", { class: "hint", id: `${name}-hint` }, hint) : null),
    input, h("p", { class: "field-error", id: `${name}-error`, "aria-live": "polite" }));
  const described = (name, hint) => [`${name}-error`, hint ? `${name}-hint` : null].filter(Boolean).join(" ");
  const labelsText = editing
    ? Object.entries(sub.labels || {}).flatMap(([k, vs]) => vs.map((v) => `${k}=${v}`)).join("\n") : "";
  const extra = editing ? sub.topics.filter((t) => !allowed.includes(t) && !declared.includes(t)).join(", ") : "";
  const form = h("form", { class: "card", id: "subscription-form", novalidate: true },
    field("callback_url", "Endpoint URL",
      h("input", { id: "callback_url", name: "callback_url", type: "url", required: true, value: editing ? sub.callback_url : "",
        autocomplete: "url", "aria-describedby": described("callback_url", true) }),
      "Where events are POSTed. It gets a confirmation message first."),
    field("name", "Name", h("input", { id: "name", name: "name", type: "text", maxlength: 70,
      value: editing && sub.name ? sub.name : "", "aria-describedby": described("name") })),
    h("fieldset", { "aria-describedby": "topics-error" },
      h("legend", {}, "Topics"),
      allowed.map((topic, i) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "topic", value: topic, id: `topic-${i}`, checked: chosen.has(topic) }), topic)),
      state.catalog.filter((t) => declared.includes(t.topic)).map((type, i) => h("div", { class: "catalog-choice", "data-topic": type.topic },
        h("label", { class: "check" },
          h("input", { type: "checkbox", name: "topic", value: type.topic, id: `type-${i}`, checked: chosen.has(type.topic),
            "aria-describedby": `type-${i}-about` }),
          type.topic, " ", deprecatedMark(type)),
        h("p", { class: "hint", id: `type-${i}-about` }, type.description),
        type.examples.length ? h("details", {}, h("summary", {}, "Example payload"), examplePayload(type)) : null)),
      h("label", { for: "more_topics" }, "More specific topics",
        h("span", { class: "hint", id: "more_topics-hint" }, "Comma-separated, within the topics above, e.g. door.opened")),
      h("input", { id: "more_topics", type: "text", value: extra, "aria-describedby": "more_topics-hint" }),
      h("p", { class: "field-error", id: "topics-error", "aria-live": "polite" })),
    field("labels", "Label filter",
      h("textarea", { id: "labels", rows: 3, "aria-describedby": described("labels", true) }, labelsText),
      "Optional. One key=value per line; only events carrying these labels are sent."),
    field("secrecy_level", "Sensitive fields",
      h("select", { id: "secrecy_level", "aria-describedby": described("secrecy_level") },
        // Only the levels the session allows: the platform sets a floor (default: the strictest).
        [[0, "Send all fields"], [1, "Remove the most sensitive fields"], [2, "Remove every sensitive field"]]
          .filter(([v]) => v >= (state.session.secrecy_floor ?? 0))
          .map(([v, t]) => h("option", { value: v,
            selected: (editing ? sub.secrecy_level : Math.max(1, state.session.secrecy_floor ?? 0)) === v }, t)))),
    field("signature_scheme", "Extra signature header",
      h("select", { id: "signature_scheme", "aria-describedby": described("signature_scheme") },
        [["standard", "None (Standard Webhooks only)"], ["logi", "X-Logi-Verify (HMAC-SHA256, base64)"], ["pdk", "X-PDK-SIGNATURE (HMAC-SHA1, hex)"]].map(([v, t]) =>
          h("option", { value: v, selected: (editing ? sub.signature_scheme : "standard") === v }, t)))),
    editing ? null : field("signing_algorithm", "Signing",
      h("select", { id: "signing_algorithm", "aria-describedby": described("signing_algorithm") },
        h("option", { value: "hmac_sha256", selected: true }, "Shared secret (HMAC-SHA256)"),
        h("option", { value: "ed25519" }, "Public key (Ed25519)"))),
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary" }, editing ? "Save changes" : "Add endpoint"),
      h("button", { type: "button", onclick: () => (editing ? detailView(sub.id) : listView()) }, "Cancel")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    form.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    const topics = [...form.querySelectorAll("input[name=topic]:checked")].map((c) => c.value)
      .concat($("more_topics").value.split(",").map((t) => t.trim()).filter(Boolean));
    let body;
    try {
      body = {
        callback_url: $("callback_url").value.trim(),
        topics,
        name: $("name").value.trim() || null,
        labels: $("labels").value.trim() ? parseLabels($("labels").value) : null,
        secrecy_level: Number($("secrecy_level").value),
        signature_scheme: $("signature_scheme").value,
      };
      if (!editing) {
        body.signing_algorithm = $("signing_algorithm").value;
        if (body.name === null) delete body.name;
        if (body.labels === null) delete body.labels;
      }
      const saved = editing
        ? await call("PATCH", `/v1/subscriptions/${sub.id}`, body)
        : await call("POST", "/v1/subscriptions", body);
      if (editing) {
        notify(saved.status === "pending" ? "Saved. The new endpoint gets a confirmation message." : "Saved.");
        await detailView(saved.id);
      } else {
        notify("Endpoint added. It gets a confirmation message; events flow once it is confirmed.");
        await detailView(saved.id, saved.secret);
      }
    } catch (err) {
      const name = FIELD_OF[err.code];
      if (name && $(`${name}-error`)) {
        $(`${name}-error`).textContent = err.message;
        const input = $(name) || form.querySelector("input[name=topic]");
        if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
      } else if (err.code !== "session_expired" && err.code !== "invalid_session") {
        notify(err.message, true);
      }
    }
  });
  show(h("h2", {}, editing ? `Edit ${sub.name || sub.callback_url}` : "Add an endpoint"), form);
}

// Delivered and failed attempts per hour, over the lease so far.
function chart(sub, attempts) {
  const end = Date.now();
  const leaseStart = new Date(sub.created_at).getTime();
  // The lease so far (at most 7 days), and never less than a day, so the bars stay thin.
  const start = Math.min(end - 24 * HOUR, Math.max(leaseStart, end - 7 * 24 * HOUR));
  const hours = Math.max(1, Math.ceil((end - start) / HOUR));
  const ok = new Array(hours).fill(0);
  const bad = new Array(hours).fill(0);
  for (const a of attempts) {
    const i = Math.floor((new Date(a.timestamp).getTime() - start) / HOUR);
    if (i >= 0 && i < hours) (a.delivered ? ok : bad)[i] += 1;
  }
  const top = Math.max(1, ...ok.map((n, i) => n + bad[i]));
  const width = Math.max(hours * 6, 60);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const delivered = ok.reduce((a, b) => a + b, 0);
  const failed = bad.reduce((a, b) => a + b, 0);
  svg.setAttribute("viewBox", `0 0 ${width} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Delivered ${delivered} and failed ${failed} attempts over the last ${hours} hour${hours === 1 ? "" : "s"}`);
  const rect = (x, y, hgt, cls) => {
    const r = document.createElementNS(ns, "rect");
    Object.entries({ x, y, width: 4, height: hgt, class: cls }).forEach(([k, v]) => r.setAttribute(k, v));
    svg.append(r);
  };
  for (let i = 0; i < hours; i++) {
    const x = width - (hours - i) * 6 + 1;
    const okH = (ok[i] / top) * 96;
    const badH = (bad[i] / top) * 96;
    if (okH) rect(x, 100 - okH, okH, "ok");
    if (badH) rect(x, 100 - okH - badH, badH, "bad");
  }
  return h("section", { class: "card", "aria-labelledby": "chart-title" },
    h("h3", { id: "chart-title" }, "Deliveries per hour"),
    svg,
    h("p", { class: "axis-labels muted", "aria-hidden": "true" }, h("span", {}, when(new Date(start).toISOString())), h("span", {}, "now")),
    h("p", { class: "legend" },
      h("span", {}, h("span", { class: "swatch ok", "aria-hidden": "true" }), `Delivered: ${delivered}`),
      h("span", {}, h("span", { class: "swatch bad", "aria-hidden": "true" }), `Failed: ${failed}`)));
}

function attemptsTable(sub, attempts) {
  // The latest attempt of each event decides whether it can be resent.
  const latest = new Map();
  for (const a of attempts) {
    const seen = latest.get(a.message_id);
    if (!seen || new Date(a.timestamp) > new Date(seen.timestamp)) latest.set(a.message_id, a);
  }
  const rows = attempts.map((a) => {
    const failed = !a.delivered;
    const resendable = canWrite() && failed && latest.get(a.message_id) === a && a.message_id.startsWith("evt_");
    return h("tr", { class: failed ? "failed" : null },
      cell("Time", when(a.timestamp)),
      cell("Event", h("code", {}, a.message_id)),
      cell("Attempt", a.attempt),
      cell("Result", badge(a.delivered ? "delivered" : "failed")),
      cell("Status", a.status_code === null ? "—" : a.status_code),
      cell("Latency", `${a.latency_ms} ms`),
      cell("Error", a.error || (a.next_attempt_at ? `retry ${when(a.next_attempt_at)}` : "—")),
      cell("", resendable ? h("button", {
        type: "button", "aria-label": `Resend ${a.message_id}`,
        onclick: () => attempt(() => call("POST", `/v1/subscriptions/${sub.id}/deliveries/${a.message_id}/resend`),
          `Delivery ${a.message_id} queued again.`),
      }, "Resend") : ""));
  });
  return h("section", { class: "card", "aria-labelledby": "deliveries-title" },
    h("div", { class: "row spread" },
      h("h3", { id: "deliveries-title" }, "Recent deliveries"),
      h("button", { type: "button", onclick: () => detailView(sub.id) }, "Reload")),
    attempts.length === 0 ? h("p", { class: "muted" }, "Nothing delivered yet.") :
      h("table", { class: "stack", id: "deliveries" },
        h("thead", {}, h("tr", {}, ["Time", "Event", "Attempt", "Result", "Status", "Latency", "Error", "Action"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows)));
}

// The message log: every event the hub sent this endpoint within its retention, newest first,
// with the body as the endpoint received it (sensitive fields removed), its attempts, a search
// by event id or topic, and resend on any row.
function messageLog(sub) {
  const results = h("div", { id: "messages-results" }, h("p", { class: "muted" }, "Loading…"));
  const search = h("input", { id: "message-search", type: "search", autocomplete: "off", placeholder: "evt_… or door.*" });
  const form = h("form", { class: "row", role: "search", "aria-label": "Search the message log" },
    h("label", { for: "message-search" }, "Event id or topic"), search,
    h("button", { type: "submit" }, "Search"));
  const expand = async (event, row, toggle) => {
    const next = row.nextElementSibling;
    if (next && next.classList.contains("message-detail")) {
      next.remove();
      toggle.setAttribute("aria-expanded", "false");
      toggle.setAttribute("aria-label", `Show ${event.id}`);
      toggle.textContent = "Show";
      return;
    }
    const read = await attempt(() => call("GET", `/v1/events/${encodeURIComponent(event.id)}?subscription_id=${encodeURIComponent(sub.id)}`));
    if (!read) return;
    const delivery = read.deliveries[0];
    const detail = h("tr", { class: "message-detail" }, h("td", { colspan: "5" }, h("div", {},
      h("h4", {}, "Body as delivered"),
      h("pre", { class: "body", tabindex: "0", "aria-label": `Body of ${event.id}` },
        delivery ? JSON.stringify(delivery.body, null, 2) : "Not delivered to this endpoint."),
      h("h4", {}, "Attempts"),
      delivery && delivery.attempts.length
        ? h("ul", { class: "attempts" }, delivery.attempts.map((a) => h("li", {},
          `#${a.attempt} ${when(a.timestamp)}: ${a.delivered ? "delivered" : "failed"}`,
          a.status_code === null ? "" : ` (${a.status_code})`, a.error ? ` ${a.error}` : "", ` in ${a.latency_ms} ms`)))
        : h("p", { class: "muted" }, "No attempt logged yet."))));
    row.after(detail);
    toggle.setAttribute("aria-expanded", "true");
    toggle.setAttribute("aria-label", `Hide ${event.id}`);
    toggle.textContent = "Hide";
  };
  const render = (events, cursor, older) => {
    const rows = events.map((event) => {
      const toggle = h("button", { type: "button", "aria-expanded": "false", "aria-label": `Show ${event.id}` }, "Show");
      const row = h("tr", { "data-event": event.id },
        cell("Time", when(event.timestamp)),
        cell("Event", h("code", {}, event.id)),
        cell("Topic", event.topic),
        cell("Details", toggle),
        cell("", canWrite() ? h("button", {
          type: "button", "aria-label": `Resend message ${event.id}`,
          onclick: () => attempt(() => call("POST", `/v1/subscriptions/${sub.id}/deliveries/${event.id}/resend`),
            `Message ${event.id} queued again.`),
        }, "Resend") : ""));
      toggle.addEventListener("click", () => expand(event, row, toggle));
      return row;
    });
    results.replaceChildren(...[
      events.length === 0 ? h("p", { class: "muted" }, older ? "No older messages." : "No messages yet.") :
        h("table", { class: "stack", id: "messages" },
          h("thead", {}, h("tr", {}, ["Time", "Event", "Topic", "Details", "Action"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows)),
      cursor ? h("button", { type: "button", onclick: () => load(cursor) }, "Older messages") : null,
    ].filter(Boolean));
  };
  const load = async (cursor) => {
    const text = search.value.trim();
    try {
      if (text.startsWith("evt_")) {
        const one = await call("GET", `/v1/events/${encodeURIComponent(text)}?subscription_id=${encodeURIComponent(sub.id)}`);
        render(one.deliveries.length ? [one] : [], null, false);
        return;
      }
      // A page can be short, even empty, where this endpoint's events are sparse among the
      // account's (each call reads a bounded stretch): follow the cursor a few times.
      const found = [];
      let next = cursor;
      for (let calls = 0; calls < 10 && found.length < 20; calls++) {
        const params = new URLSearchParams({ subscription_id: sub.id, limit: String(20 - found.length) });
        if (text) params.set("topic", text);
        if (next) params.set("cursor", next);
        const page = await call("GET", `/v1/events?${params}`);
        found.push(...page.data);
        next = page.next_cursor;
        if (!next) break;
      }
      render(found, next, Boolean(cursor));
    } catch (err) {
      if (err.code === "session_expired" || err.code === "invalid_session") return;
      const text = err.code === "history_off" ? "This service does not keep a message log."
        : err.status === 404 ? "No such message for this endpoint." : err.message;
      results.replaceChildren(h("p", { class: "muted" }, text));
    }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(null); });
  load(null);
  return h("section", { class: "card", "aria-labelledby": "messages-title" },
    h("div", { class: "row spread" },
      h("h3", { id: "messages-title" }, "Message log"),
      h("button", { type: "button", onclick: () => load(null) }, "Refresh log")),
    h("p", { class: "muted" }, "Every event sent to this endpoint recently, as it received it. Resend any of them."),
    form, results);
}

function localInput(ms) {
  const d = new Date(ms - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function recoverForm(sub) {
  const form = h("form", { class: "card", id: "recover-form", "aria-labelledby": "recover-title" },
    h("h3", { id: "recover-title" }, "Recover failed deliveries"),
    h("p", { class: "muted" }, "Sends again every delivery that ran out of retries since the time below."),
    h("label", { for: "recover-since" }, "Since"),
    h("input", { id: "recover-since", type: "datetime-local", required: true, value: localInput(Date.now() - 24 * HOUR) }),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Recover")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const since = new Date($("recover-since").value);
    if (Number.isNaN(since.getTime())) { notify("Pick a date and time to recover from.", true); return; }
    attempt(() => call("POST", `/v1/subscriptions/${sub.id}/recover`, { since: since.toISOString() }),
      (r) => `Recovered: ${r.requeued} deliver${r.requeued === 1 ? "y" : "ies"} queued again${r.more ? " (more remain: recover again)" : ""}.`);
  });
  return form;
}

function secretCard(sub, fresh) {
  const value = h("p", { class: "secret", id: "secret-value" }, fresh || "••••••••••••••••");
  const label = sub.signing_algorithm === "ed25519" ? "Public key" : "Signing secret";
  let shown = Boolean(fresh);
  const reveal = h("button", {
    type: "button", "aria-controls": "secret-value", "aria-expanded": String(shown),
    onclick: async () => {
      if (shown) { value.textContent = "••••••••••••••••"; shown = false; }
      else {
        const s = await attempt(() => call("GET", `/v1/subscriptions/${sub.id}/secret`));
        if (!s) return;
        value.textContent = s.secret; shown = true;
      }
      reveal.textContent = shown ? "Hide" : "Reveal";
      reveal.setAttribute("aria-expanded", String(shown));
    },
  }, shown ? "Hide" : "Reveal");
  const rotate = canWrite() ? h("button", {
    type: "button", class: "danger",
    onclick: async () => {
      if (!window.confirm("Rotate the signing secret? The old one keeps signing beside the new one for 24 hours.")) return;
      const s = await attempt(() => call("POST", `/v1/subscriptions/${sub.id}/secret/rotate`),
        "Rotated. Deliveries carry both signatures for 24 hours.");
      if (!s) return;
      value.textContent = s.secret; shown = true;
      reveal.textContent = "Hide";
      reveal.setAttribute("aria-expanded", "true");
    },
  }, "Rotate") : null;
  return h("section", { class: "card", "aria-labelledby": "secret-title" },
    h("h3", { id: "secret-title" }, label),
    fresh ? h("p", {}, "Copy it now into your receiver to verify signatures.") : null,
    value, h("div", { class: "row" }, reveal, rotate));
}

async function detailView(id, freshSecret) {
  const loaded = await attempt(() => Promise.all([
    call("GET", `/v1/subscriptions/${id}`),
    call("GET", `/v1/subscriptions/${id}/deliveries?limit=100`),
  ]));
  if (!loaded) return;
  const [sub, deliveries] = loaded;
  const attempts = deliveries.data;
  const paused = sub.status === "paused" || sub.status === "disabled";
  const actions = canWrite() ? h("div", { class: "row" },
    h("button", { type: "button", onclick: () => formView(sub) }, "Edit"),
    h("button", {
      type: "button",
      onclick: async () => {
        const done = await attempt(() => call("PATCH", `/v1/subscriptions/${id}`, { active: paused }),
          paused ? "Resumed. Deliveries held while paused go out now." : "Paused. Matching events are held until you resume.");
        if (done) detailView(id);
      },
    }, paused ? "Resume" : "Pause"),
    h("button", {
      type: "button", disabled: sub.status !== "active",
      title: sub.status === "active" ? null : "Only an active endpoint takes a test event",
      onclick: () => attempt(() => call("POST", `/v1/subscriptions/${id}/test`),
        (r) => `Test event ${r.event_id} sent.`),
    }, "Send test event"),
    h("button", {
      type: "button", class: "danger",
      onclick: async () => {
        if (!window.confirm("Delete this endpoint? It stops receiving events at once.")) return;
        const done = await attempt(async () => { await call("DELETE", `/v1/subscriptions/${id}`); return true; }, "Endpoint deleted.");
        if (done) listView();
      },
    }, "Delete")) : null;
  show(
    h("p", {}, h("a", { href: "#main", onclick: (e) => { e.preventDefault(); listView(); } }, "← All endpoints")),
    h("div", { class: "row spread" }, h("h2", {}, sub.name || sub.callback_url), badge(sub.status)),
    h("section", { class: "card", "aria-label": "Endpoint" },
      h("dl", { class: "facts" },
        h("dt", {}, "URL"), h("dd", {}, sub.callback_url),
        h("dt", {}, "Topics"), h("dd", {}, sub.topics.join(", ")),
        h("dt", {}, "Lease ends"), h("dd", {}, when(sub.expires_at), " ",
          canWrite() ? h("button", { type: "button", onclick: () => refreshLease(id, detailView) }, "Refresh lease") : null),
        h("dt", {}, "Delivered"), h("dd", {}, `${sub.odometer} event${sub.odometer === 1 ? "" : "s"}`),
        h("dt", {}, "Last delivery"), h("dd", {}, when(sub.last_delivered_at)),
        h("dt", {}, "Timeout"), h("dd", {}, sub.timeout ? `${sub.timeout} s` : "the service's (5 s)"),
        h("dt", {}, "Retries after"), h("dd", {}, sub.retry_schedule ? sub.retry_schedule.map((s) => `${s} s`).join(", ") : "the service's schedule"),
        h("dt", {}, "Rate limit"), h("dd", {}, sub.max_per_second ? `${sub.max_per_second} a second` : "none"),
        h("dt", {}, "Order"), h("dd", {}, sub.ordering === "fifo" ? "one at a time, in publish order" : "any order"),
        h("dt", {}, "Pace"), h("dd", { class: sub.pace.backing_off ? "warn" : null },
          sub.pace.backing_off
            ? `slowed to ${sub.pace.per_second} a second: your endpoint answered 429 or 503 (last ${when(sub.pace.pushed_back_at)})`
            : sub.pace.per_second ? `${sub.pace.per_second} a second` : "as fast as your endpoint answers"),
        sub.status === "pending" ? [h("dt", {}, "Waiting for"), h("dd", {}, "the confirmation sent to this URL")] : null),
      actions),
    chart(sub, attempts),
    attemptsTable(sub, attempts),
    messageLog(sub),
    canWrite() ? recoverForm(sub) : null,
    secretCard(sub, freshSecret));
}

// ---------- start ----------
async function start() {
  const params = new URLSearchParams(location.search);
  if (params.get("theme") === "dark") document.documentElement.dataset.theme = "dark";
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromLink = fragment.get("session");
  if (fromLink) {
    sessionStorage.setItem(STORE_KEY, fromLink);
    // Out of the address bar and the history: the link works once per tab.
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = fromLink || sessionStorage.getItem(STORE_KEY);
  if (!state.token) {
    fatal("No portal session", "Open this page from the link your provider gave you.");
    return;
  }
  try {
    state.session = await call("GET", "/session");
  } catch (err) {
    if (err.code !== "session_expired" && err.code !== "invalid_session") fatal("The portal could not start", err.message);
    return;
  }
  for (const [name, value] of Object.entries(state.session.theme || {})) {
    document.documentElement.style.setProperty(`--${name}`, value);
  }
  await loadCatalog();
  $("who").textContent = `${state.session.owner} · ${state.session.access === "write" ? "can change" : "read only"} · until ${when(state.session.expires_at)}`;
  $("home").addEventListener("click", (e) => { e.preventDefault(); listView(); });
  $("skip").addEventListener("click", (e) => { e.preventDefault(); $("main").focus(); });
  await listView();
}

start();
