// The devices page: every device with its last reading, expected interval, completeness
// and whether it has gone silent (GET /api/v1/devices, from device tracking).

import { api } from "./api.js";
import { formatSeconds, formatTime, h, table } from "./dom.js";

export const REFRESH_MS = 10000;

function pick(item, ...names) {
  for (const name of names) {
    if (item[name] !== undefined && item[name] !== null) return item[name];
  }
  return undefined;
}

function percent(value) {
  if (typeof value !== "number") return "–";
  return `${(value <= 1 ? value * 100 : value).toFixed(0)} %`;
}

function deviceRow(device) {
  const silent = Boolean(pick(device, "silent", "silence_alert", "alerting"));
  return h("tr", { class: silent ? "device silent" : "device" },
    h("th", { scope: "row" }, String(pick(device, "device_id", "id", "name") ?? "–")),
    h("td", {}, String(pick(device, "channel", "unit", "location") ?? "–")),
    h("td", {}, formatTime(pick(device, "last_reading_at", "last_seen", "last_reading"))),
    h("td", { class: "num" },
      formatSeconds(pick(device, "expected_interval_seconds", "expected_interval"))),
    h("td", { class: "num" }, percent(pick(device, "completeness"))),
    h("td", {}, silent ? h("span", { class: "state state-error" }, "silent") : "reporting"));
}

export function mount(view) {
  const body = h("div", { id: "devices" }, h("p", { class: "muted" }, "Loading devices…"));
  view.replaceChildren(h("section", {}, h("h1", {}, "Devices"), body));
  let timer = null;
  let stopped = false;

  async function refresh() {
    try {
      const answer = await api("GET", "devices");
      const list = Array.isArray(answer) ? answer : (answer && answer.devices) || [];
      body.replaceChildren(list.length
        ? table(["Device", "Unit / channel", "Last reading", "Expected every", "Completeness",
          "Silence"], list.map(deviceRow), { id: "devices-table" })
        : h("p", { class: "empty" }, "No device has reported yet."));
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
