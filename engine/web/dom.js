// Building DOM safely: every piece of data becomes a text node, never markup.

/** An element with attributes, listeners (`onclick`) and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "value") {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children: nodes as they are, anything else as text. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A table with a header row and one row per item. */
export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows));
}

/** Microseconds since the epoch (the store's unit), ISO text or seconds → local time text. */
export function formatTime(value) {
  const date = toDate(value);
  if (!date) return "–";
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function toDate(value) {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value === "number") {
    // The store counts microseconds; an API may answer seconds or milliseconds.
    const ms = value > 1e14 ? value / 1000 : value > 1e11 ? value : value * 1000;
    return new Date(ms);
  }
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Seconds as a short duration: 42 s, 3 min, 2.5 h. */
export function formatSeconds(seconds) {
  if (seconds === undefined || seconds === null || Number.isNaN(Number(seconds))) return "–";
  const s = Number(seconds);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

/** Show a short message at the bottom of the page for a few seconds. */
let noticeTimer = null;
export function notice(text, kind = "info") {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 6000);
}
