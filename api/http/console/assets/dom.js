// Building the page from data without ever parsing it as HTML: text goes in text nodes, so a
// model's answer or a document's text can hold any markup and still only be shown.

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "text") element.textContent = value;
    else if (name === "class") element.className = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

export function append(parent, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

export function notice(message) {
  const box = document.getElementById("notice");
  box.textContent = message;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { box.textContent = ""; }, 4000);
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

export function money(value) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(6).replace(/0+$/, "").replace(/\.$/, ".0");
}

// Carbon as Tollgate reports it (kgCO2eq, a range) in grams, the unit a call is measured in.
export function carbon(range) {
  if (!range || range.max === undefined) return "—";
  const grams = (kg) => (kg * 1000).toPrecision(2);
  return range.min === range.max ? `${grams(range.max)} gCO2eq` : `${grams(range.min)}–${grams(range.max)} gCO2eq`;
}
