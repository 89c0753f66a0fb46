// DOM helpers for the inspector. Agent data (names, outputs, errors, event data) is untrusted:
// it only ever reaches the page as text nodes and attribute values, never as markup. There is
// no innerHTML anywhere in the inspector.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'on') for (const [type, fn] of Object.entries(v)) el.addEventListener(type, fn);
      else if (k === 'style') for (const [p, val] of Object.entries(v)) el.style.setProperty(p, String(val));
      else if (k === 'value' && 'value' in el) el.value = String(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: `h('div', { class: 'x', on: { click } }, 'text', child)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same arguments as `h`. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/**
 * `340 ms`, `1.25 s`, `12.5 s`, `3 m 20 s`, `2 h 5 m`. Rounded to the unit shown before it
 * is split, so 119.9 s is `2 m 0 s`, never `1 m 60 s`.
 */
export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '';
  if (ms < 999.5) return `${Math.round(ms)} ms`;
  if (ms < 9_995) return `${(ms / 1000).toFixed(2)} s`;
  if (ms < 59_950) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`;
  const m = Math.round(ms / 60_000);
  return `${Math.floor(m / 60)} h ${m % 60} m`;
}

export function time(ms) {
  if (ms === null || ms === undefined) return '';
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** A status as a coloured badge; unknown values show as they are (the schema may add some). */
export function badge(status) {
  return h('span', { class: `badge st-${String(status).replace(/[^A-Za-z]/g, '')}`, 'data-status': status, text: status });
}

export function errorMessage(e) {
  if (e === null || e === undefined) return '';
  if (typeof e === 'object' && typeof e.message === 'string') return e.message;
  return typeof e === 'string' ? e : JSON.stringify(e);
}
