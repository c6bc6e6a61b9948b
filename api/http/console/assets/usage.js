// My usage: where I stand on my budget and limits, my calls by day as a chart (calls, tokens,
// cost or carbon), and the calls themselves.

import { h, replace, when, money, carbon } from "./dom.js";
import { barChart } from "./chart.js";

const MEASURES = {
  calls: { label: "Calls", of: () => 1 },
  tokens: { label: "Tokens", of: (r) => r.usage.total_tokens },
  cost: { label: "Cost", of: (r) => r.usage.cost },
  carbon: { label: "Carbon (gCO2eq, upper bound)", of: (r) => (r.usage.carbon.kgCO2eq ? r.usage.carbon.kgCO2eq.max * 1000 : 0) },
};

export async function usageView(app) {
  const since = Math.floor(Date.now() / 1000) - 30 * 86400;
  const records = [];
  for (let offset = 0; offset < 1000; offset += 100) { // the last 30 days, up to 1,000 calls
    const page = await app.api.get(`/v1/me/usage?limit=100&offset=${offset}&start_time=${since}`);
    records.push(...page.data);
    if (page.data.length < 100) break;
  }
  const info = app.user;
  const chart = h("div");
  const measure = h("select", { id: "measure", "aria-label": "Measure",
    onchange: () => draw() }, Object.entries(MEASURES).map(([value, m]) => h("option", { value, text: m.label })));

  function draw() {
    const of = MEASURES[measure.value].of;
    const days = new Map();
    for (const record of records) {
      const day = new Date(record.created * 1000).toISOString().slice(0, 10);
      days.set(day, (days.get(day) || 0) + of(record));
    }
    replace(chart, barChart([...days.entries()].sort(), MEASURES[measure.value].label));
  }
  draw();

  const left = info.budget_remaining ?? info.budget;
  const budget = left === null || left === undefined ? "unlimited" : money(left);
  return h("div", {},
    h("h1", { text: "My usage" }),
    h("div", { class: "card" },
      h("p", {}, h("strong", { text: "Budget left: " }), budget),
      info.limits_usage && info.limits_usage.length ? h("ul", {}, info.limits_usage.map((l) =>
        h("li", { text: `${l.type} on router ${l.router}: ${l.used} of ${l.limit} (resets in ${l.reset_in}s)` }))) : null),
    h("div", { class: "row" }, h("h2", { text: "By day, last 30 days" }), measure),
    chart,
    h("h2", { text: "By model, last 30 days" }),
    byModel(records),
    h("h2", { text: "Calls" }),
    records.length ? h("table", { id: "calls" },
      h("thead", {}, h("tr", {}, ["When", "Model", "Endpoint", "Status", "Tokens", "Cost", "Carbon"].map((t) => h("th", { text: t })))),
      h("tbody", {}, records.slice(0, 200).map((r) => h("tr", {},
        h("td", { text: when(r.created) }), h("td", { text: r.model || "—" }), h("td", { text: r.endpoint }),
        h("td", { text: r.status }), h("td", { text: r.usage.total_tokens }), h("td", { text: money(r.usage.cost) }),
        h("td", { text: carbon(r.usage.carbon.kgCO2eq) }))))) : h("p", { class: "muted", text: "No calls yet." }));
}


function byModel(records) {
  const models = new Map();
  for (const r of records) {
    const total = models.get(r.model || "—") || { calls: 0, tokens: 0, cost: 0, carbon: 0 };
    total.calls += 1;
    total.tokens += r.usage.total_tokens;
    total.cost += r.usage.cost;
    total.carbon += r.usage.carbon.kgCO2eq ? r.usage.carbon.kgCO2eq.max : 0;
    models.set(r.model || "—", total);
  }
  return h("table", { id: "by-model" },
    h("thead", {}, h("tr", {}, ["Model", "Calls", "Tokens", "Cost", "Carbon (max)"].map((t) => h("th", { text: t })))),
    h("tbody", {}, [...models.entries()].map(([model, t]) => h("tr", {},
      h("td", { text: model }), h("td", { text: t.calls }), h("td", { text: t.tokens }), h("td", { text: money(t.cost) }),
      h("td", { text: carbon({ min: t.carbon, max: t.carbon }) })))));
}
