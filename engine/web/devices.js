// The devices page: every device with its last reading, expected interval, completeness
// and silence, and completeness per unit (GET /api/v1/devices, from device tracking).

import { api } from "./api.js";
import { formatSeconds, formatTime, h, table } from "./dom.js";

export const REFRESH_MS = 10000;

function percent(value) {
  if (typeof value !== "number") return "–";
  return `${(value * 100).toFixed(value >= 0.995 || value === 0 ? 0 : 1)} %`;
}

function stateBadge(state) {
  const kind = state === "silent" ? "error" : state === "learning" ? "paused" : "deployed";
  return h("span", { class: `state state-${kind}`, dataset: { field: "state" } }, state ?? "–");
}

function deviceRow(device) {
  const silent = device.state === "silent";
  const interval = device.expected_interval_seconds;
  return h("tr", { class: silent ? "device silent" : "device",
    dataset: { device: device.device, state: device.state } },
    h("th", { scope: "row" }, device.device ?? "–"),
    h("td", {}, device.unit || "–"),
    h("td", {}, device.channel ?? "–"),
    h("td", {}, stateBadge(device.state),
      silent && device.silent_since ? ` since ${formatTime(device.silent_since)}` : ""),
    h("td", { dataset: { field: "last_seen" } }, formatTime(device.last_seen)),
    h("td", { class: "num" }, `${formatSeconds(device.seconds_since_last)} ago`),
    h("td", { class: "num", title: device.interval_source || "", dataset: { field: "interval" } },
      typeof interval === "number" ? formatSeconds(interval) : "learning"),
    h("td", { class: "num", dataset: { field: "completeness" } }, percent(device.completeness)),
    h("td", { class: "num" }, `${device.received ?? "–"} / ${device.expected ?? "–"}`));
}

function unitRow(unit) {
  return h("tr", { class: unit.silent ? "unit silent" : "unit", dataset: { unit: unit.unit } },
    h("th", { scope: "row" }, unit.unit || "(no unit)"),
    h("td", { class: "num" }, String(unit.devices ?? "–")),
    h("td", { class: unit.silent ? "num warn" : "num" }, String(unit.silent ?? "–")),
    h("td", { class: "num" }, percent(unit.completeness)),
    h("td", { class: "num" }, `${unit.received ?? "–"} / ${unit.expected ?? "–"}`));
}

export function mount(view) {
  const body = h("div", { id: "devices" }, h("p", { class: "muted" }, "Loading devices…"));
  view.replaceChildren(h("section", {}, h("h1", {}, "Devices"), body));
  let timer = null;
  let stopped = false;

  async function refresh() {
    try {
      const answer = await api("GET", "devices");
      const devices = Array.isArray(answer) ? answer : (answer && answer.devices) || [];
      const units = (answer && answer.units) || [];
      if (!devices.length) {
        body.replaceChildren(h("p", { class: "empty" }, "No device has reported yet."));
      } else {
        const silent = devices.filter((d) => d.state === "silent").length;
        body.replaceChildren(
          h("p", { class: silent ? "error" : "muted", id: "devices-summary" },
            `${devices.length} device${devices.length === 1 ? "" : "s"}, ${silent} silent`),
          table(["Device", "Unit", "Channel", "State", "Last reading", "Since", "Expected every",
            "Completeness", "Readings"], devices.map(deviceRow), { id: "devices-table" }),
          h("h2", {}, "Units"),
          table(["Unit", "Devices", "Silent", "Completeness", "Readings"], units.map(unitRow),
            { id: "units-table" }));
      }
    } catch (error) {
      body.replaceChildren(h("p", { class: "empty" }, error.status === 404
        ? "Device tracking is not available on this engine."
        : `Devices cannot be shown: ${error.message}`));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
