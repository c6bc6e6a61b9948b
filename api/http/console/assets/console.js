// The console's entry: the session (its key lives in this tab's sessionStorage, never in a
// URL), the navigation, and one view per page of the hash route (#/playground, #/keys...).

import { Api } from "./api.js";
import { h, replace } from "./dom.js";
import { loginView } from "./login.js";
import { playgroundView } from "./playground.js";
import { keysView } from "./keys.js";
import { usageView } from "./usage.js";
import { adminView } from "./admin.js";
import { documentsView } from "./documents.js";

const STORE = "tollgate.session";
const session = JSON.parse(sessionStorage.getItem(STORE) || "{}");
const view = document.getElementById("view");
let ended = null; // why the last session ended, shown on the login page: {text, error}

const api = new Api(session, (reason) => endSession({ text: `Your session has ended (${reason}). Please log in again.`, error: true }));
const app = {
  api, session, user: null,
  async start(key, keyId) {
    Object.assign(session, { key, keyId });
    sessionStorage.setItem(STORE, JSON.stringify(session));
    ended = null;
    await loadUser();
    location.hash = "#/playground";
    await route();
  },
};

function endSession(why) {
  for (const name of Object.keys(session)) delete session[name];
  sessionStorage.removeItem(STORE);
  app.user = null;
  ended = why;
  showNav(false);
  if (location.hash !== "#/login") location.hash = "#/login";
  else route();
}

async function loadUser() {
  app.user = await api.get("/v1/me/info");
  showNav(true);
}

function showNav(visible) {
  document.getElementById("nav").hidden = !visible;
  document.getElementById("nav-admin").hidden = !(visible && app.user && app.user.permissions.includes("admin"));
  document.getElementById("who").textContent = visible && app.user ? app.user.email : "";
}

const VIEWS = { playground: playgroundView, documents: documentsView, keys: keysView, usage: usageView, admin: adminView };

async function route() {
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || "playground";
  for (const link of document.querySelectorAll("nav a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${name}`);
    if (link.hasAttribute("aria-current")) link.setAttribute("aria-current", "page");
  }
  if (!session.key) {
    replace(view, loginView(app, ended));
    return;
  }
  if (!app.user) {
    try { await loadUser(); } catch { return; } // a 401 has ended the session
  }
  const render = VIEWS[name];
  if (!render) {
    replace(view, h("h1", { text: "Not found" }), h("p", { text: "There is no such page." }));
    return;
  }
  replace(view, h("p", { class: "muted", text: "Loading…" }));
  try {
    replace(view, await render(app));
  } catch (error) {
    if (!session.key) return;
    replace(view, h("h1", { text: "Something went wrong" }), h("p", { class: "error", text: error.message }));
  }
  view.focus();
}

document.getElementById("logout").addEventListener("click", async () => {
  const keyId = session.keyId;
  // Revoked, the key is of no use to anyone who copied it from this tab.
  try { await api.post(`/v1/me/keys/${keyId}/revoke`); } catch { /* already revoked or expired */ }
  endSession({ text: "You are logged out.", error: false });
});
window.addEventListener("hashchange", route);
route();
