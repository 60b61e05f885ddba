// The channels page: states, counters, rates between polls and the queue of each destination.

import { api } from "./api.js";
import { formatSeconds, h, notice, table } from "./dom.js";
import { can } from "./session.js";

export const REFRESH_MS = 3000;
const COUNTERS = ["received", "filtered", "sent", "errored", "duplicates"];

/** Rates per second from the change of each counter since the previous poll. */
class Rates {
  constructor() {
    this.previous = new Map();
  }

  /** The rate of one counter (null on its first sighting or after a restart). */
  rate(key, value, now) {
    if (typeof value !== "number") return null;
    const before = this.previous.get(key);
    this.previous.set(key, { value, now });
    if (!before || now <= before.now || value < before.value) return null;
    return (value - before.value) / ((now - before.now) / 1000);
  }
}

function formatRate(rate) {
  if (rate === null || rate === undefined) return "–";
  return rate >= 10 ? `${rate.toFixed(0)}/s` : `${rate.toFixed(1)}/s`;
}

function count(value) {
  return typeof value === "number" ? value.toLocaleString("en") : "–";
}

/** A destination's counters under the names of the agreed API, from older names if need be. */
function destinationCounters(dest) {
  return {
    queued: dest.queued,
    oldest: dest.oldest_queued_age_seconds,
    sent: dest.sent,
    errored: dest.errored ?? dest.dead_lettered,
  };
}

export function mount(view) {
  const rates = new Rates();
  const body = h("div", { id: "channels" }, h("p", { class: "muted" }, "Loading channels…"));
  const updated = h("span", { class: "muted", id: "channels-updated" });
  view.replaceChildren(h("section", {},
    h("div", { class: "heading" }, h("h1", {}, "Channels"), updated), body));
  let timer = null;
  let stopped = false;

  async function act(name, operation) {
    try {
      await api("POST", `channels/${encodeURIComponent(name)}/${operation}`);
      notice(`${name}: ${operation} done`);
    } catch (error) {
      notice(`${name}: ${operation} failed: ${error.message}`, "error");
    }
    refresh();
  }

  function channelRow(channel, now) {
    const counters = channel.counters || {};
    const key = `c:${channel.name}`;
    const cells = COUNTERS.map((name) => h("td", {
      class: "num", dataset: { counter: name } }, count(counters[name])));
    const received = rates.rate(`${key}:received`, counters.received, now);
    const sent = rates.rate(`${key}:sent`, counters.sent, now);
    const actions = h("td", { class: "actions" });
    if (can("admin")) {
      if (channel.state === "paused") {
        actions.append(h("button", { type: "button", dataset: { action: "resume" },
          onclick: () => act(channel.name, "resume") }, "Resume"));
      } else if (channel.state === "deployed") {
        actions.append(h("button", { type: "button", dataset: { action: "pause" },
          onclick: () => act(channel.name, "pause") }, "Pause"));
      }
    }
    const source = channel.source
      ? `${channel.source}${channel.port ? `:${channel.port}` : ""}` : "–";
    return h("tr", { class: "channel", dataset: { channel: channel.name } },
      h("th", { scope: "row" }, channel.name),
      h("td", {}, h("span", { class: `state state-${channel.state}`, dataset: { field: "state" } },
        channel.state)),
      h("td", {}, source),
      cells,
      h("td", { class: "num", dataset: { rate: "received" } }, formatRate(received)),
      h("td", { class: "num", dataset: { rate: "sent" } }, formatRate(sent)),
      actions);
  }

  function destinationRow(channel, dest, now) {
    const c = destinationCounters(dest);
    const key = `d:${channel.name}:${dest.name}`;
    const rate = rates.rate(`${key}:sent`, c.sent, now);
    const old = typeof c.oldest === "number" && c.oldest > 300;
    return h("tr", { class: "destination",
      dataset: { channel: channel.name, destination: dest.name } },
      h("th", { scope: "row" }, "↳ ", dest.name, dest.paused ? " (paused)" : ""),
      h("td", { class: "num", dataset: { counter: "queued" } }, count(c.queued)),
      h("td", { class: old ? "num warn" : "num", dataset: { counter: "oldest" } },
        c.queued ? formatSeconds(c.oldest) : "–"),
      h("td", { class: "num", dataset: { counter: "sent" } }, count(c.sent)),
      h("td", { class: "num", dataset: { counter: "errored" } }, count(c.errored)),
      h("td", { class: "num", dataset: { rate: "sent" } }, formatRate(rate)));
  }

  function render(answer) {
    const now = performance.now();
    const list = (answer && answer.channels) || [];
    if (!list.length) {
      body.replaceChildren(h("p", { class: "empty" }, "No channel is deployed."));
      return;
    }
    const channelTable = table(
      ["Channel", "State", "Source", ...COUNTERS.map((c) => c[0].toUpperCase() + c.slice(1)),
        "In/s", "Sent/s", ""],
      list.map((channel) => channelRow(channel, now)), { id: "channels-table" });
    const destinations = list.flatMap((channel) =>
      (channel.destinations || []).map((dest) => destinationRow(channel, dest, now)));
    const queueTable = table(["Destination", "Queued", "Oldest", "Sent", "Errored", "Sent/s"],
      destinations, { id: "queues-table" });
    body.replaceChildren(channelTable, h("h2", {}, "Destination queues"),
      destinations.length ? queueTable : h("p", { class: "empty" }, "No destinations."));
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      render(await api("GET", "channels"));
      updated.textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
      updated.classList.remove("error");
    } catch (error) {
      updated.textContent = `not updated: ${error.message}`;
      updated.classList.add("error");
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
