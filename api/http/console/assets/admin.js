// The administration, for holders of the `admin` permission: users (with their budgets and
// the ledger of changes), roles and the models they may use, organisations, every key,
// routers and providers with their health, usage reports, data policies. The API refuses
// anyone else (403): this page only says so.

import { h, replace, when, money, notice } from "./dom.js";
import { barChart } from "./chart.js";

const MODEL_TYPES = ["text-generation", "text-embeddings-inference", "automatic-speech-recognition", "text-classification",
  "image-text-to-text", "image-to-text"];
const PROVIDER_TYPES = ["vllm", "openai", "mistral", "albert", "tei", "anthropic", "bedrock", "azure"];

const SECTIONS = [
  ["users", "Users"], ["roles", "Roles and models"], ["organizations", "Organisations"], ["keys", "Keys"],
  ["models", "Models and providers"], ["reports", "Usage reports"], ["policies", "Data policies"],
];

export async function adminView(app) {
  if (!app.user.permissions.includes("admin")) {
    return h("div", {}, h("h1", { text: "403 — Forbidden" }),
      h("p", { class: "error", role: "alert", text: "The administration needs the admin permission, which your role does not have." }));
  }
  const [roles, routers] = await Promise.all([app.api.get("/v1/admin/roles?limit=100"), app.api.get("/v1/admin/routers?limit=100")]);
  const ctx = { app, roles: roles.data, routers: routers.data };
  ctx.roleName = (id) => (ctx.roles.find((r) => r.id === id) || { name: `#${id}` }).name;
  ctx.routerName = (id) => (ctx.routers.find((r) => r.id === id) || { name: `#${id}` }).name;
  const body = h("div", { role: "tabpanel" });
  const tabs = h("div", { role: "tablist", class: "tabs", "aria-label": "Administration" });
  const show = async (id) => {
    for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab.dataset.section === id));
    replace(body, h("p", { class: "muted", text: "Loading…" }));
    try { replace(body, await PAGES[id](ctx)); } catch (error) { replace(body, h("p", { class: "error", text: error.message })); }
  };
  for (const [id, label] of SECTIONS) {
    tabs.append(h("button", { type: "button", role: "tab", class: "secondary", "data-section": id, text: label, onclick: () => show(id) }));
  }
  await show("users");
  return h("div", {}, h("h1", { text: "Administration" }), tabs, body);
}

function table(id, headings, rows) {
  return h("table", { id }, h("thead", {}, h("tr", {}, headings.map((t) => h("th", { text: t })))), h("tbody", {}, rows));
}

function field(id, label, input) {
  input.id = id;
  return h("div", {}, h("label", { for: id, text: label }), input);
}

function form(label, fields, submit, onsubmit) {
  const error = h("p", { class: "error", role: "alert" });
  return h("form", { class: "card", "aria-label": label, async onsubmit(event) {
    event.preventDefault();
    error.textContent = "";
    try { await onsubmit(); } catch (failure) { error.textContent = failure.message; }
  } }, h("h2", { text: label }), h("div", { class: "row" }, fields, h("button", { type: "submit", text: submit })), error);
}

// "chat (rpm 60, tpm 10000), embeddings": each router the role may use, with its limits.
function limitsText(ctx, role) {
  const byRouter = new Map();
  for (const l of role.limits) {
    if (!byRouter.has(l.router)) byRouter.set(l.router, []);
    byRouter.get(l.router).push(l);
  }
  const usable = [...byRouter.entries()].filter(([, rows]) => !rows.some((l) => l.value === 0));
  return usable.map(([router, rows]) => {
    const set = rows.filter((l) => l.value !== null).map((l) => `${l.type} ${l.value}`);
    return ctx.routerName(router) + (set.length ? ` (${set.join(", ")})` : "");
  }).join(", ") || "none";
}

const PAGES = {
  async users(ctx) {
    const { app } = ctx;
    const list = h("div");
    const ledger = h("div", { id: "ledger" });
    const refresh = async () => {
      const users = (await app.api.get("/v1/admin/users?limit=100&order_by=id&order_direction=desc")).data;
      replace(list, table("users", ["Email", "Role", "Organisation", "Budget", "Created", ""], users.map((u) => h("tr", {},
        h("td", { text: u.email }), h("td", { text: ctx.roleName(u.role) }), h("td", { text: u.organization ?? "—" }),
        h("td", { text: u.budget === null ? "unlimited" : money(u.budget_remaining ?? u.budget) }), h("td", { text: when(u.created) }),
        h("td", {}, h("button", { type: "button", class: "secondary", text: "Budget", "aria-label": `Budget of ${u.email}`,
          onclick: () => showLedger(u) }))))));
    };
    const showLedger = async (user) => {
      const amount = h("input", { type: "number", step: "any", required: true });
      const reason = h("input", { maxlength: 1000 });
      const history = (await app.api.get(`/v1/admin/users/${user.id}/budget?limit=50`)).data;
      replace(ledger, h("div", { class: "card" }, h("h2", { text: `Budget of ${user.email}` }),
        form("Top up", [field("topup-amount", "Amount (negative to take back)", amount), field("topup-reason", "Reason", reason)], "Top up", async () => {
          await app.api.post(`/v1/admin/users/${user.id}/budget`, { amount: Number(amount.value), reason: reason.value || null });
          notice("Budget changed.");
          await refresh();
          await showLedger({ ...user });
        }),
        table("ledger-entries", ["When", "Change", "Amount", "Budget after", "Reason"], history.map((c) => h("tr", {},
          h("td", { text: when(c.created) }), h("td", { text: c.kind }), h("td", { text: money(c.amount) }),
          h("td", { text: c.budget === null ? "unlimited" : money(c.budget) }), h("td", { text: c.reason || "—" }))))));
    };
    const email = h("input", { type: "email", required: true });
    const password = h("input", { type: "password", required: true, minlength: 8, autocomplete: "new-password" });
    const role = h("select", {}, ctx.roles.map((r) => h("option", { value: r.id, text: r.name })));
    const budget = h("input", { type: "number", step: "any", min: 0, placeholder: "unlimited" });
    const create = form("Create a user", [field("new-email", "Email", email), field("new-password", "Password", password),
      field("new-role", "Role", role), field("new-budget", "Budget", budget)], "Create", async () => {
        await app.api.post("/v1/admin/users", { email: email.value, password: password.value, role: Number(role.value),
          budget: budget.value === "" ? null : Number(budget.value) });
        notice(`User ${email.value} created.`);
        email.value = password.value = budget.value = "";
        await refresh();
      });
    await refresh();
    return h("div", {}, create, list, ledger);
  },

  async roles(ctx) {
    const { app } = ctx;
    const box = h("div");
    const draw = () => replace(box, table("roles", ["Role", "Permissions", "Models"], ctx.roles.map((r) => h("tr", {},
      h("td", { text: r.name }), h("td", { text: r.permissions.join(", ") || "—" }),
      h("td", { text: limitsText(ctx, r) })))));
    const role = h("select", {}, ctx.roles.map((r) => h("option", { value: r.id, text: r.name })));
    const router = h("select", {}, ctx.routers.map((r) => h("option", { value: r.id, text: r.name })));
    const grant = form("Give a role a model", [field("grant-role", "Role", role), field("grant-router", "Model", router)], "Give", async () => {
      const target = ctx.roles.find((r) => r.id === Number(role.value));
      const id = Number(router.value);
      // A role may use a router it has a limit row for, unless a limit there is 0 (forbidden):
      // those go, and a row without a value (no limit) is added if none is left.
      const limits = target.limits.filter((l) => l.router !== id || l.value !== 0);
      if (!limits.some((l) => l.router === id)) limits.push({ router: id, type: "rpm", value: null });
      await app.api.patch(`/v1/admin/roles/${target.id}`, { limits });
      target.limits = limits;
      notice(`Role ${target.name} may use ${ctx.routerName(id)}.`);
      draw();
    });
    const newName = h("input", { required: true, maxlength: 255 });
    const permissions = ["admin", "create_public_collection", "read_metric", "provide_models"].map((name) =>
      h("label", { class: "check" }, h("input", { type: "checkbox", value: name, name: "permission" }), ` ${name}`));
    const createRole = form("Create a role", [field("role-name", "Name", newName), h("div", {}, h("label", { text: "Permissions" }), permissions)],
      "Create", async () => {
        const chosen = permissions.map((l) => l.firstChild).filter((box) => box.checked).map((box) => box.value);
        const created = await app.api.post("/v1/admin/roles", { name: newName.value, permissions: chosen });
        ctx.roles.push(await app.api.get(`/v1/admin/roles/${created.id}`));
        for (const select of [role, limitRole]) select.append(h("option", { value: created.id, text: newName.value }));
        notice(`Role ${newName.value} created.`);
        newName.value = "";
        draw();
      });
    const limitRole = h("select", {}, ctx.roles.map((r) => h("option", { value: r.id, text: r.name })));
    const limitRouter = h("select", {}, ctx.routers.map((r) => h("option", { value: r.id, text: r.name })));
    const limitType = h("select", {}, ["rpm", "rpd", "tpm", "tpd"].map((t) => h("option", { value: t, text: t })));
    const limitValue = h("input", { type: "number", min: 0, step: 1, placeholder: "no limit" });
    const setLimit = form("Set a limit", [field("limit-role", "Role", limitRole), field("limit-router", "Model", limitRouter),
      field("limit-type", "Limit", limitType), field("limit-value", "Value (0 forbids the model)", limitValue)], "Set", async () => {
      const target = ctx.roles.find((r) => r.id === Number(limitRole.value));
      const router = Number(limitRouter.value);
      const value = limitValue.value === "" ? null : Number(limitValue.value);
      const limits = [...target.limits.filter((l) => !(l.router === router && l.type === limitType.value)), { router, type: limitType.value, value }];
      await app.api.patch(`/v1/admin/roles/${target.id}`, { limits });
      target.limits = limits;
      notice(`Role ${target.name}: ${limitType.value} on ${ctx.routerName(router)} set.`);
      draw();
    });
    draw();
    return h("div", {}, createRole, grant, setLimit, box);
  },

  async organizations(ctx) {
    const { app } = ctx;
    const list = h("div");
    const refresh = async () => {
      const orgs = (await app.api.get("/v1/admin/organizations?limit=100")).data;
      replace(list, table("organizations", ["Organisation", "Budget", "Created"], orgs.map((o) => h("tr", {},
        h("td", { text: o.name }), h("td", { text: o.budget === null ? "unlimited" : money(o.budget_remaining ?? o.budget) }),
        h("td", { text: when(o.created) })))));
    };
    const name = h("input", { required: true, maxlength: 255 });
    const budget = h("input", { type: "number", step: "any", min: 0, placeholder: "unlimited" });
    const create = form("Create an organisation", [field("org-name", "Name", name), field("org-budget", "Budget", budget)], "Create", async () => {
      await app.api.post("/v1/admin/organizations", { name: name.value, budget: budget.value === "" ? null : Number(budget.value) });
      name.value = budget.value = "";
      await refresh();
    });
    await refresh();
    return h("div", {}, create, list);
  },

  async keys(ctx) {
    const { app } = ctx;
    const list = h("div");
    const refresh = async () => {
      const keys = (await app.api.get("/v1/admin/tokens?limit=100&order_by=id&order_direction=desc")).data;
      replace(list, table("all-keys", ["Key", "User", "Hint", "Created", "Expires", "State", ""], keys.map((k) => h("tr", {},
        h("td", { text: k.name }), h("td", { text: k.user }), h("td", {}, h("code", { text: k.token })), h("td", { text: when(k.created) }),
        h("td", { text: when(k.expires) }), h("td", { text: k.revoked ? `revoked ${when(k.revoked)}` : "active" }),
        h("td", {}, k.revoked ? null : h("button", { type: "button", class: "danger", text: "Revoke", "aria-label": `Revoke key ${k.name} of user ${k.user}`,
          async onclick() { await app.api.post(`/v1/admin/tokens/${k.id}/revoke`, {}); await refresh(); } }))))));
    };
    await refresh();
    return list;
  },

  async models(ctx) {
    const { app } = ctx;
    const [providers, health] = await Promise.all([
      app.api.get("/v1/admin/providers?limit=100"),
      app.api.get("/health/models").catch(() => ({ data: [] })), // needs read_metric
    ]);
    const state = new Map(health.data.flatMap((m) => m.providers.map((p) => [p.id, p])));
    const verdict = (id) => {
      const p = state.get(id);
      if (!p) return "—";
      if (p.cooling) return "cooling down";
      return p.healthy === null ? "not checked yet" : p.healthy ? `healthy${p.latency_ms !== null ? ` (${p.latency_ms} ms)` : ""}` : `failing: ${p.error || ""}`;
    };
    const routerName = h("input", { required: true, maxlength: 255 });
    const routerType = h("select", {}, MODEL_TYPES.map((t) => h("option", { value: t, text: t })));
    const addRouter = form("Add a model", [field("router-name", "Name", routerName), field("router-type", "Type", routerType)], "Add", async () => {
      const created = await app.api.post("/v1/admin/routers", { name: routerName.value, type: routerType.value });
      ctx.routers.push(await app.api.get(`/v1/admin/routers/${created.id}`));
      notice(`Model ${routerName.value} added: give it a provider.`);
      replace(document.querySelector("#view [role=tabpanel]"), await PAGES.models(ctx));
    });
    const providerRouter = h("select", {}, ctx.routers.map((r) => h("option", { value: r.id, text: r.name })));
    const providerType = h("select", {}, PROVIDER_TYPES.map((t) => h("option", { value: t, text: t })));
    const providerUrl = h("input", { type: "url", required: true, placeholder: "http://vllm:8000" });
    const providerModel = h("input", { required: true, maxlength: 255, placeholder: "the model's name at the provider" });
    const providerKey = h("input", { type: "password", autocomplete: "off", placeholder: "none" });
    const addProvider = form("Add a provider", [field("provider-router", "Model", providerRouter), field("provider-type", "Type", providerType),
      field("provider-url", "URL", providerUrl), field("provider-model", "Model name", providerModel), field("provider-key", "Key", providerKey)],
    "Add", async () => {
      // Tollgate checks the provider (a call its model must serve) before it keeps it.
      await app.api.post("/v1/admin/providers", { router: Number(providerRouter.value), type: providerType.value, url: providerUrl.value,
        model_name: providerModel.value, ...(providerKey.value ? { key: providerKey.value } : {}) });
      providerKey.value = "";
      notice("Provider added.");
      replace(document.querySelector("#view [role=tabpanel]"), await PAGES.models(ctx));
    });
    return h("div", {}, addRouter, addProvider, ctx.routers.map((r) => h("section", { class: "card", "data-router": r.id },
      h("h2", { text: `${r.name} (${r.type})` }),
      table(`providers-${r.id}`, ["Provider", "Type", "URL", "Model", "Health"], providers.data.filter((p) => p.router === r.id).map((p) => h("tr", {},
        h("td", { text: `#${p.id}` }), h("td", { text: p.type }), h("td", { text: p.url }), h("td", { text: p.model_name }),
        h("td", { text: verdict(p.id) })))))));
  },

  async reports(ctx) {
    const { app } = ctx;
    const groupBy = h("select", { id: "report-group" }, ["organization", "user", "key", "router"].map((g) => h("option", { value: g, text: g })));
    const measure = h("select", { id: "report-measure" }, ["requests", "total_tokens", "cost"].map((m) => h("option", { value: m, text: m })));
    const out = h("div");
    const draw = async () => {
      const rows = (await app.api.get(`/v1/admin/usage?group_by=${groupBy.value}`)).data;
      const days = new Map();
      for (const row of rows) days.set(row.day, (days.get(row.day) || 0) + row[measure.value]);
      replace(out, barChart([...days.entries()].sort(), measure.value, "report-chart"),
        table("report", ["Day", groupBy.value, "Requests", "Errors", "Tokens", "Cost", "gCO2eq (max)"], rows.map((r) => h("tr", {},
          h("td", { text: r.day }), h("td", { text: r.id ?? "—" }), h("td", { text: r.requests }), h("td", { text: r.errors }),
          h("td", { text: r.total_tokens }), h("td", { text: money(r.cost) }), h("td", { text: (r.kgCO2eq.max * 1000).toPrecision(2) })))));
    };
    groupBy.addEventListener("change", draw);
    measure.addEventListener("change", draw);
    await draw();
    return h("div", {}, h("div", { class: "row card" }, field("report-group", "Group by", groupBy), field("report-measure", "Chart", measure)), out);
  },

  async policies(ctx) {
    const policies = (await ctx.app.api.get("/v1/admin/policies?limit=100")).data;
    return policies.length ? table("policies", ["Policy", "Rules", "Applies to"], policies.map((p) => h("tr", {},
      h("td", { text: p.name }), h("td", { text: p.rules.map((r) => `${r.detector === "regex" ? r.name : r.detector}: ${r.action}`).join(", ") }),
      h("td", { text: [p.organizations.length && `organisations ${p.organizations.join(", ")}`, p.roles.length && `roles ${p.roles.map(ctx.roleName).join(", ")}`,
        p.keys.length && `keys ${p.keys.join(", ")}`].filter(Boolean).join("; ") || "nobody" }))))
      : h("p", { class: "muted", text: "No data policy yet (POST /v1/admin/policies: docs/responses.md)." });
  },
};
