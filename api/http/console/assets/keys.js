// My keys: create one (shown once, with a copy button), list them, revoke them.

import { h, replace, when, notice } from "./dom.js";

export async function keysView(app) {
  const list = h("div");
  const created = h("div", { "aria-live": "polite" });
  const name = h("input", { id: "key-name", name: "name", required: true, maxlength: 255, placeholder: "my laptop" });

  async function refresh() {
    const keys = (await app.api.get("/v1/me/keys?limit=100&order_by=id&order_direction=desc")).data;
    replace(list, h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Key", "Created", "Expires", "State", ""].map((t) => h("th", { text: t })))),
      h("tbody", {}, keys.map((key) => h("tr", {},
        h("td", { text: key.name }), h("td", {}, h("code", { text: key.token })), h("td", { text: when(key.created) }),
        h("td", { text: when(key.expires) }),
        h("td", { text: key.revoked ? `revoked ${when(key.revoked)}` : key.id === app.session.keyId ? "this session" : "active" }),
        h("td", {}, key.revoked || key.id === app.session.keyId ? null : h("button", {
          type: "button", class: "danger", text: "Revoke", "aria-label": `Revoke ${key.name}`,
          async onclick() {
            await app.api.post(`/v1/me/keys/${key.id}/revoke`);
            notice(`Key ${key.name} revoked.`);
            await refresh();
          },
        })))))));
  }

  const form = h("form", {
    class: "card", "aria-label": "Create a key",
    async onsubmit(event) {
      event.preventDefault();
      try {
        const key = await app.api.post("/v1/me/keys", { name: name.value });
        const secret = h("p", { class: "secret", id: "new-key", text: key.token });
        replace(created, h("div", { class: "card" },
          h("p", { class: "ok", text: "Your new key. Copy it now: it will not be shown again." }), secret,
          h("button", { type: "button", text: "Copy", async onclick() {
            try { await navigator.clipboard.writeText(key.token); notice("Copied."); } catch {
              getSelection().selectAllChildren(secret); notice("Press Ctrl+C to copy.");
            }
          } })));
        name.value = "";
        await refresh();
      } catch (error) {
        replace(created, h("p", { class: "error", role: "alert", text: error.message }));
      }
    },
  }, h("div", { class: "row" }, h("div", {}, h("label", { for: "key-name", text: "Name of a new key" }), name),
    h("button", { type: "submit", text: "Create a key" })));

  await refresh();
  return h("div", {}, h("h1", { text: "My keys" }), form, created, list);
}
