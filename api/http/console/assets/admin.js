// The administration, for holders of the `admin` permission: users, and which models (routers)
// each role may use. The API refuses anyone else (403): this page only says so.

import { h, replace, when, notice } from "./dom.js";

export async function adminView(app) {
  if (!app.user.permissions.includes("admin")) {
    return h("div", {}, h("h1", { text: "403 — Forbidden" }),
      h("p", { class: "error", role: "alert", text: "The administration needs the admin permission, which your role does not have." }));
  }
  const [roles, routers] = await Promise.all([app.api.get("/v1/admin/roles?limit=100"), app.api.get("/v1/admin/routers?limit=100")]);
  const users = h("div");
  const rolesBox = h("div");
  const roleName = (id) => (roles.data.find((r) => r.id === id) || { name: `#${id}` }).name;
  const routerName = (id) => (routers.data.find((r) => r.id === id) || { name: `#${id}` }).name;

  async function refreshUsers() {
    const page = await app.api.get("/v1/admin/users?limit=100&order_by=id&order_direction=desc");
    replace(users, h("table", { id: "users" },
      h("thead", {}, h("tr", {}, ["Email", "Role", "Organisation", "Budget", "Created"].map((t) => h("th", { text: t })))),
      h("tbody", {}, page.data.map((u) => h("tr", {},
        h("td", { text: u.email }), h("td", { text: roleName(u.role) }), h("td", { text: u.organization ?? "—" }),
        h("td", { text: u.budget ?? "unlimited" }), h("td", { text: when(u.created) }))))));
  }

  function drawRoles() {
    replace(rolesBox, h("table", { id: "roles" },
      h("thead", {}, h("tr", {}, ["Role", "Permissions", "Models"].map((t) => h("th", { text: t })))),
      h("tbody", {}, roles.data.map((r) => h("tr", {},
        h("td", { text: r.name }), h("td", { text: r.permissions.join(", ") || "—" }),
        h("td", { text: [...new Set(r.limits.filter((l) => l.value !== 0).map((l) => routerName(l.router)))].join(", ") || "none" }))))));
  }

  const email = h("input", { id: "new-email", type: "email", required: true });
  const password = h("input", { id: "new-password", type: "password", required: true, minlength: 8, autocomplete: "new-password" });
  const role = h("select", { id: "new-role" }, roles.data.map((r) => h("option", { value: r.id, text: r.name })));
  const userError = h("p", { class: "error", role: "alert" });
  const createUser = h("form", {
    class: "card", "aria-label": "Create a user",
    async onsubmit(event) {
      event.preventDefault();
      userError.textContent = "";
      try {
        await app.api.post("/v1/admin/users", { email: email.value, password: password.value, role: Number(role.value) });
        notice(`User ${email.value} created.`);
        email.value = password.value = "";
        await refreshUsers();
      } catch (error) { userError.textContent = error.message; }
    },
  }, h("h2", { text: "Create a user" }),
  h("div", { class: "row" },
    h("div", {}, h("label", { for: "new-email", text: "Email" }), email),
    h("div", {}, h("label", { for: "new-password", text: "Password" }), password),
    h("div", {}, h("label", { for: "new-role", text: "Role" }), role),
    h("button", { type: "submit", text: "Create" })), userError);

  const grantRole = h("select", { id: "grant-role" }, roles.data.map((r) => h("option", { value: r.id, text: r.name })));
  const grantRouter = h("select", { id: "grant-router" }, routers.data.map((r) => h("option", { value: r.id, text: r.name })));
  const grantError = h("p", { class: "error", role: "alert" });
  const grant = h("form", {
    class: "card", "aria-label": "Give a role a model",
    async onsubmit(event) {
      event.preventDefault();
      grantError.textContent = "";
      const target = roles.data.find((r) => r.id === Number(grantRole.value));
      const router = Number(grantRouter.value);
      // A role may use a router it has a limit row for, unless a limit there is 0 (forbidden):
      // those go, and a row without a value (no limit) is added if none is left.
      const limits = target.limits.filter((l) => l.router !== router || l.value !== 0);
      if (!limits.some((l) => l.router === router)) limits.push({ router, type: "rpm", value: null });
      try {
        await app.api.patch(`/v1/admin/roles/${target.id}`, { limits });
        target.limits = limits;
        notice(`Role ${target.name} may use ${routerName(router)}.`);
        drawRoles();
      } catch (error) { grantError.textContent = error.message; }
    },
  }, h("h2", { text: "Give a role a model" }),
  h("div", { class: "row" },
    h("div", {}, h("label", { for: "grant-role", text: "Role" }), grantRole),
    h("div", {}, h("label", { for: "grant-router", text: "Model" }), grantRouter),
    h("button", { type: "submit", text: "Give" })), grantError);

  await refreshUsers();
  drawRoles();
  return h("div", {}, h("h1", { text: "Administration" }), createUser, users, grant, rolesBox);
}
