// Bar charts drawn in SVG from numbers only (no chart library, nothing parsed as markup).

// One bar per day.
export function barChart(points, label, id = "usage-chart") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("id", id);
  svg.setAttribute("viewBox", "0 0 600 200");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label} by day`);
  const max = Math.max(...points.map(([, v]) => v), 0) || 1;
  const width = Math.min(560 / Math.max(points.length, 1), 48);
  points.forEach(([day, value], i) => {
    const height = (value / max) * 160;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", String(30 + i * width + width * 0.1));
    bar.setAttribute("y", String(175 - height));
    bar.setAttribute("width", String(width * 0.8));
    bar.setAttribute("height", String(height));
    bar.setAttribute("data-day", day);
    bar.setAttribute("data-value", String(value));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${day}: ${value}`;
    bar.append(title);
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", String(30 + i * width + width / 2));
    text.setAttribute("y", "192");
    text.setAttribute("text-anchor", "middle");
    text.textContent = day.slice(5);
    svg.append(bar, text);
  });
  if (!points.length) {
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", "300"); text.setAttribute("y", "100"); text.setAttribute("text-anchor", "middle");
    text.textContent = "No calls in the last 30 days";
    svg.append(text);
  }
  return svg;
}
