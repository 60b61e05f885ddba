// The message browser: a search form, the results, and one message in detail (its HL7
// segment by segment, the ACKs, its deliveries and the event timeline), with reprocess.

import { api, query } from "./api.js";
import { formatTime, h, notice, table } from "./dom.js";
import { fieldNames, hl7Block } from "./hl7view.js";
import { can } from "./session.js";

const STATUSES = ["", "RECEIVED", "QUEUED", "SENT", "FILTERED", "ERROR"];
const FILTERS = ["channel", "status", "since", "until", "control_id", "patient_id",
  "message_type", "text"];
const PAGE_SIZE = 50;
const REFRESH_MS = 2000;
const FOLLOW_POLLS = 30;
const UNSETTLED = new Set(["RECEIVED", "QUEUED"]);

export function mount(view, { rest, params }) {
  if (!can("operator")) {
    view.replaceChildren(h("section", {}, h("h1", {}, "Messages"),
      h("p", { class: "empty" },
        "Your role shows counters and states only: message content needs the operator role.")));
    return () => {};
  }
  if (rest.length) return mountDetail(view, rest[0]);
  return mountSearch(view, params);
}

// -- search -----------------------------------------------------------------------------

/** A datetime-local value (local time) as ISO 8601 UTC, or "" when empty. */
function isoFromLocal(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

function localFromIso(value) {
  const date = value ? new Date(value) : null;
  if (!date || Number.isNaN(date.getTime())) return "";
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
}

function input(name, label, attrs = {}) {
  return h("label", {}, label, h("input", { name, id: `search-${name}`, ...attrs }));
}

function searchForm(params, onSearch) {
  const status = h("select", { name: "status", id: "search-status" },
    STATUSES.map((s) => h("option", { value: s }, s || "any")));
  status.value = params.get("status") || "";
  const channels = h("datalist", { id: "search-channels" });
  api("GET", "channels").then((answer) => channels.replaceChildren(
    ...((answer && answer.channels) || []).map((c) => h("option", { value: c.name }))))
    .catch(() => {});
  const form = h("form", { class: "search", id: "search-form" }, channels,
    input("channel", "Channel", { value: params.get("channel") || "",
      list: "search-channels" }),
    h("label", {}, "Status", status),
    input("since", "Since", { type: "datetime-local",
      value: localFromIso(params.get("since")) }),
    input("until", "Until", { type: "datetime-local",
      value: localFromIso(params.get("until")) }),
    input("control_id", "Control id (MSH-10)", { value: params.get("control_id") || "" }),
    input("patient_id", "Patient id", { value: params.get("patient_id") || "" }),
    input("message_type", "Type", { value: params.get("message_type") || "",
      placeholder: "ORU^R01" }),
    input("text", "Text in content", { value: params.get("text") || "" }),
    h("button", { type: "submit", id: "search-submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const filters = {};
    for (const name of FILTERS) {
      const value = String(data.get(name) || "").trim();
      filters[name] = name === "since" || name === "until" ? isoFromLocal(value) : value;
    }
    onSearch(filters);
  });
  return form;
}

function resultRow(message, selected) {
  const id = message.id;
  const box = h("input", { type: "checkbox", "aria-label": `select message ${id}`,
    dataset: { id } });
  box.checked = selected.has(id);
  box.addEventListener("change", () => (box.checked ? selected.add(id) : selected.delete(id)));
  return h("tr", { class: "message", dataset: { id, status: message.status } },
    h("td", {}, box),
    h("td", { class: "num" }, h("a", { href: `#/messages/${encodeURIComponent(id)}` },
      String(id))),
    h("td", {}, formatTime(message.received_at)),
    h("td", {}, message.channel ?? ""),
    h("td", {}, message.message_type ?? ""),
    h("td", {}, message.control_id ?? ""),
    h("td", {}, message.patient_id ?? ""),
    h("td", {}, h("span", { class: `state state-${String(message.status).toLowerCase()}` },
      message.status ?? ""), message.duplicate_of ? " (duplicate)" : ""),
    h("td", {}, message.ack_code ?? ""));
}

function mountSearch(view, params) {
  const selected = new Set();
  const results = h("div", { id: "results" });
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
  const form = searchForm(params, (chosen) => {
    window.location.hash = `#/messages${query(chosen)}`;
  });
  view.replaceChildren(h("section", {}, h("h1", {}, "Messages"), form, results));

  async function reprocessSelected() {
    if (!selected.size) return notice("Select messages to reprocess first.");
    try {
      const answer = await api("POST", "messages/reprocess", { ids: [...selected] });
      notice(reprocessSummary(answer));
      selected.clear();
      search();
    } catch (error) {
      notice(`Reprocess failed: ${error.message}`, "error");
    }
  }

  async function search(beforeId) {
    const body = beforeId ? results.querySelector("tbody") : null;
    if (!beforeId) results.replaceChildren(h("p", { class: "muted" }, "Searching…"));
    let answer;
    try {
      answer = await api("GET", `messages${query({ ...filters, limit: PAGE_SIZE,
        before_id: beforeId })}`);
    } catch (error) {
      results.replaceChildren(h("p", { class: "error" }, `Search failed: ${error.message}`));
      return;
    }
    const list = (answer && answer.messages) || [];
    const rows = list.map((message) => resultRow(message, selected));
    const more = answer && answer.next_before_id
      ? h("button", { type: "button", id: "search-more",
        onclick: (event) => { event.target.remove(); search(answer.next_before_id); } },
        "Older messages")
      : null;
    if (body) {
      body.append(...rows);
      if (more) results.append(more);
      return;
    }
    if (!rows.length) {
      results.replaceChildren(h("p", { class: "empty" }, "No message matches."));
      return;
    }
    const scanned = typeof answer.scanned === "number"
      ? h("p", { class: "muted" }, `Text looked for inside ${answer.scanned} messages.`) : null;
    results.replaceChildren(scanned ?? "",
      table(["", "Id", "Received", "Channel", "Type", "Control id", "Patient id", "Status",
        "ACK"], rows, { id: "results-table" }),
      h("div", { class: "toolbar" },
        h("button", { type: "button", id: "reprocess-selected", onclick: reprocessSelected },
          "Reprocess selected"),
        more));
  }

  search();
  return () => {};
}

// -- detail -----------------------------------------------------------------------------

function reprocessSummary(answer) {
  if (!answer || typeof answer !== "object") return "Reprocess done.";
  const parts = Object.entries(answer)
    .filter(([, ids]) => Array.isArray(ids) && ids.length)
    .map(([what, ids]) => `${what.replaceAll("_", " ")}: ${ids.join(", ")}`);
  return parts.length ? `Reprocess: ${parts.join("; ")}` : "Reprocess done.";
}

/** Text of a payload the API answered (plain text, or {text|data} objects). */
function payloadText(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return value;
  return value.text ?? value.data ?? value.content ?? null;
}

/** Every stored payload as {kind, destination, text}, whatever shape the API gives it. */
function payloads(detail) {
  const out = [];
  const contents = detail.contents;
  if (Array.isArray(contents)) {
    for (const item of contents) {
      out.push({ kind: item.kind, destination: item.destination || "",
        text: payloadText(item) });
    }
  } else if (contents && typeof contents === "object") {
    for (const [kind, value] of Object.entries(contents)) {
      if (Array.isArray(value)) {
        value.forEach((item) => out.push({ kind, destination: item.destination || "",
          text: payloadText(item) }));
      } else {
        out.push({ kind, destination: "", text: payloadText(value) });
      }
    }
  }
  for (const [name, place] of Object.entries(detail.destinations || {})) {
    for (const [kind, items] of Object.entries((place && place.contents) || {})) {
      for (const item of Array.isArray(items) ? items : [items]) {
        out.push({ kind, destination: name, text: payloadText(item) });
      }
    }
  }
  if (detail.raw !== undefined && !out.some((p) => p.kind === "raw")) {
    out.unshift({ kind: "raw", destination: "", text: payloadText(detail.raw) });
  }
  return out.filter((p) => p.text !== null);
}

function deliveryTable(deliveries) {
  if (!deliveries.length) return h("p", { class: "empty" }, "No deliveries.");
  return table(["Destination", "Status", "Attempts", "First attempt", "Updated", "Last error"],
    deliveries.map((d) => h("tr", { dataset: { destination: d.destination } },
      h("td", {}, d.destination ?? ""),
      h("td", {}, h("span", { class: `state state-${String(d.status).toLowerCase()}` },
        d.status ?? "")),
      h("td", { class: "num" }, String(d.attempts ?? "")),
      h("td", {}, formatTime(d.first_attempt_at)),
      h("td", {}, formatTime(d.updated_at)),
      h("td", { class: "error-text" }, d.last_error ?? ""))), { id: "deliveries-table" });
}

function detailText(detail) {
  if (detail === undefined || detail === null || detail === "") return "";
  if (typeof detail === "string") {
    try {
      return detailText(JSON.parse(detail));
    } catch (error) {
      return detail;
    }
  }
  if (typeof detail !== "object") return String(detail);
  return Object.entries(detail)
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

function timeline(events) {
  if (!events.length) return h("p", { class: "empty" }, "No events.");
  return h("ol", { class: "timeline", id: "timeline" }, events.map((event) =>
    h("li", { dataset: { action: event.action } },
      h("time", {}, formatTime(event.at)), " ",
      h("strong", {}, event.action ?? ""), " ",
      h("span", { class: "muted" }, `by ${event.actor ?? "?"}`),
      event.destination ? ` → ${event.destination}` : "",
      detailText(event.detail) ? h("div", { class: "muted" }, detailText(event.detail)) : "")));
}

function metadata(message) {
  const rows = [
    ["Channel", message.channel], ["Received", formatTime(message.received_at)],
    ["From", message.peer], ["Type", message.message_type], ["Version", message.version],
    ["Control id", message.control_id],
    ["Sender", [message.sending_application, message.sending_facility]
      .filter(Boolean).join(" / ")],
    ["Patient id", message.patient_id], ["ACK", message.ack_code],
    ["Duplicate of", message.duplicate_of], ["Parent", message.parent_id],
    ["Error", message.error],
  ].filter(([, value]) => value !== undefined && value !== null && value !== "");
  return h("dl", { class: "meta" }, rows.map(([k, v]) => [h("dt", {}, k),
    h("dd", { dataset: { field: k.toLowerCase().replaceAll(" ", "_") } }, String(v))]));
}

const KIND_TITLES = {
  raw: "Received", ack: "ACK sent to the sender", transformed: "Transformed",
  encoded: "Encoded", sent: "Sent", response: "Response from the destination",
};

function payloadSection(payload, table) {
  const title = `${KIND_TITLES[payload.kind] || payload.kind}` +
    (payload.destination ? ` · ${payload.destination}` : "");
  const looksHl7 = /^(MSH|FHS|BHS)/.test(payload.text.trimStart());
  return h("section", { class: "payload", dataset: { kind: payload.kind,
    destination: payload.destination } },
    h("h3", {}, title),
    looksHl7 ? hl7Block(payload.text, table) : h("pre", { class: "raw" }, payload.text));
}

function mountDetail(view, id) {
  const body = h("div", { id: "message-detail" }, h("p", { class: "muted" }, "Loading…"));
  view.replaceChildren(h("section", {},
    h("p", {}, h("a", { href: "#/messages", id: "back-to-search" }, "← Search")), body));
  let stopped = false;
  let timer = null;
  // Each look at a message is an audited view, so the page follows a message only for a
  // while after the operator reprocessed it, not for as long as it stays open.
  let follow = 0;

  async function reprocess(button) {
    button.disabled = true;
    follow = FOLLOW_POLLS;
    try {
      const answer = await api("POST", "messages/reprocess", { ids: [Number(id)] });
      notice(reprocessSummary(answer));
    } catch (error) {
      notice(`Reprocess failed: ${error.message}`, "error");
    }
    load();
  }

  async function load() {
    clearTimeout(timer);
    let detail;
    let names;
    try {
      [detail, names] = await Promise.all([
        api("GET", `messages/${encodeURIComponent(id)}`), fieldNames()]);
    } catch (error) {
      body.replaceChildren(h("p", { class: "error" }, error.status === 404
        ? `Message ${id} does not exist.` : `Message ${id} cannot be shown: ${error.message}`));
      return;
    }
    if (stopped) return;
    const message = detail.message || detail;
    const all = payloads(detail);
    const acks = all.filter((p) => p.kind === "ack" || p.kind === "response");
    const others = all.filter((p) => p.kind !== "ack" && p.kind !== "response");
    const deliveries = detail.deliveries || Object.entries(detail.destinations || {})
      .filter(([, d]) => d && d.status)
      .map(([name, d]) => ({ destination: name, ...d }));
    const events = detail.timeline || detail.audit || detail.events || [];
    const status = String(message.status ?? "");
    body.replaceChildren(
      h("div", { class: "heading" },
        h("h1", {}, `Message ${message.id ?? id}`),
        h("span", { class: `state state-${status.toLowerCase()}`, id: "message-status" },
          status),
        h("button", { type: "button", id: "reprocess",
          onclick: (event) => reprocess(event.target) }, "Reprocess"),
        h("button", { type: "button", id: "refresh", class: "secondary", onclick: load },
          "Refresh")),
      metadata(message),
      h("h2", {}, "Content"),
      h("div", { id: "contents" }, others.length ? others.map((p) => payloadSection(p, names))
        : h("p", { class: "empty" }, detail.contents_pruned
          ? "The content of this message has been pruned." : "No content is stored.")),
      h("h2", {}, "ACKs and responses"),
      h("div", { id: "acks" },
        h("p", {}, "Answered to the sender: ",
          h("span", { class: "ack-code", id: "ack-code" }, message.ack_code || "none")),
        acks.length ? acks.map((p) => payloadSection(p, names))
          : h("p", { class: "empty" }, "No response from a destination is stored.")),
      h("h2", {}, "Deliveries"),
      deliveryTable(deliveries),
      h("h2", {}, "Timeline"),
      timeline(events));
    // A reprocessed message still on its way is shown as it moves on.
    if (UNSETTLED.has(status) && follow > 0) {
      follow -= 1;
      timer = setTimeout(load, REFRESH_MS);
    }
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
