// el builds an element from text only: attributes are set with
// setAttribute and children that are strings become text nodes, so event
// data can never be parsed as HTML. Nothing in this page parses markup
// from a string.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

// idTime is the time an event id (a ULID) holds, in ISO 8601, UTC.
export function idTime(id) {
  let ms = 0;
  for (const c of id.slice(0, 10)) ms = ms * 32 + CROCKFORD.indexOf(c);
  return new Date(ms).toISOString();
}

export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}
