import { h } from "./dom.js";

export function loginView(app, ended) {
  const error = h("p", { class: "error", role: "alert", text: ended && ended.error ? ended.text : "" });
  const info = h("p", { class: "muted", text: ended && !ended.error ? ended.text : "" });
  const email = h("input", { id: "email", type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", name: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", text: "Log in" });
  const form = h("form", {
    class: "card login", "aria-label": "Log in",
    async onsubmit(event) {
      event.preventDefault();
      submit.disabled = true;
      error.textContent = "";
      try {
        const result = await app.api.post("/v1/auth/login", { email: email.value, password: password.value });
        await app.start(result.key, result.id);
      } catch (failure) {
        error.textContent = failure.status === 401 ? "Wrong email or password." : failure.message;
        password.select();
      } finally {
        submit.disabled = false;
      }
    },
  },
  h("h1", { text: "Log in to Tollgate" }), info,
  h("label", { for: "email", text: "Email" }), email,
  h("label", { for: "password", text: "Password" }), password,
  h("p", {}, submit), error);
  setTimeout(() => email.focus());
  return form;
}
