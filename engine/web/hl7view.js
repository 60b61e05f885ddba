// HL7 v2 shown segment by segment, each field and component named on hover.
// Names come from hl7-fields.json (generated from hl7apy by tools/hl7-field-names.py).

import { h } from "./dom.js";

let names = null;

/** The table of field names, fetched once (an empty table if it cannot be had). */
export function fieldNames() {
  if (!names) {
    names = fetch("/static/hl7-fields.json", { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : {}))
      .catch(() => ({}));
  }
  return names;
}

/** The delimiters a message declares in MSH (or BHS/FHS), with the defaults otherwise. */
export function delimiters(segments) {
  const header = segments.find((s) => /^(MSH|BHS|FHS)/.test(s) && s.length > 3);
  if (!header) return { field: "|", component: "^", repetition: "~" };
  const field = header[3];
  const encoding = header.slice(4).split(field)[0] || "";
  return { field, component: encoding[0] || "^", repetition: encoding[1] || "~" };
}

function describe(segmentId, number, spec, component) {
  let text = `${segmentId}-${number}`;
  if (component) text += `.${component}`;
  if (spec) {
    text += ` ${spec.name}`;
    if (component && spec.components && spec.components[component - 1]) {
      text += ` › ${spec.components[component - 1]}`;
    }
    if (!component && spec.type) text += ` (${spec.type})`;
  }
  return text;
}

function fieldSpan(segmentId, number, value, spec, delims, splittable) {
  const span = h("span", { class: "field", title: describe(segmentId, number, spec),
    dataset: { path: `${segmentId}-${number}`, describe: describe(segmentId, number, spec) } });
  if (!splittable || !value.includes(delims.component)) {
    span.textContent = value;
    return span;
  }
  value.split(delims.repetition).forEach((repetition, r) => {
    if (r > 0) span.append(h("span", { class: "delim" }, delims.repetition));
    repetition.split(delims.component).forEach((component, c) => {
      if (c > 0) span.append(h("span", { class: "delim" }, delims.component));
      const label = describe(segmentId, number, spec, c + 1);
      span.append(h("span", { class: "component", title: label,
        dataset: { path: `${segmentId}-${number}.${c + 1}`, describe: label } }, component));
    });
  });
  return span;
}

function segmentLine(segment, delims, table) {
  const parts = segment.split(delims.field);
  const segmentId = parts[0];
  const specs = table[segmentId] || [];
  const line = h("div", { class: "segment", dataset: { segment: segmentId } },
    h("span", { class: "segment-id", title: segmentId }, segmentId));
  const header = /^(MSH|BHS|FHS)$/.test(segmentId);
  let number = 1;
  if (header) {
    // MSH-1 is the field separator itself and MSH-2 the encoding characters.
    line.append(fieldSpan(segmentId, 1, delims.field, specs[0], delims, false));
    number = 2;
  }
  parts.slice(1).forEach((value, i) => {
    if (!header || i > 0) line.append(h("span", { class: "delim" }, delims.field));
    const n = number + i;
    line.append(fieldSpan(segmentId, n, value, specs[n - 1], delims, !(header && n === 2)));
  });
  return line;
}

/** A block showing one HL7 v2 message; the line under it names the field under the pointer. */
export function hl7Block(text, table, attrs = {}) {
  const segments = String(text).split(/\r\n|\r|\n/).filter((s) => s.length);
  const delims = delimiters(segments);
  const info = h("div", { class: "field-info muted" }, "Point at a field to see its name.");
  const body = h("div", { class: "hl7", ...attrs },
    segments.map((segment) => segmentLine(segment, delims, table)));
  body.addEventListener("mouseover", (event) => {
    const target = event.target.closest("[data-describe]");
    if (target) info.textContent = target.dataset.describe;
  });
  return h("div", { class: "hl7-view" }, body, info);
}
