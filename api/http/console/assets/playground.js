// Chat with a model the role may use: the answer streams in as it is generated (Stop ends
// it), rendered as Markdown made of text nodes, with its tokens, cost and carbon. The
// conversation stays in this browser (localStorage) until cleared.

import { h, replace, money, carbon } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { tryouts } from "./tryouts.js";

const CHAT_TYPES = ["text-generation", "image-text-to-text"];

export async function playgroundView(app) {
  const allModels = (await app.api.get("/v1/models")).data;
  const models = allModels.filter((m) => CHAT_TYPES.includes(m.type));
  // Chat with search needs documents, which a gateway may not serve (no vector store model).
  const collections = await app.api.get("/v1/collections?limit=100").then((r) => r.data, () => []);
  const store = `tollgate.chat.${app.user.id}`;
  const saved = JSON.parse(localStorage.getItem(store) || "{}");
  const state = { messages: saved.messages || [], settings: { system: "", temperature: "", max_tokens: "", ...(saved.settings || {}) } };
  const save = () => localStorage.setItem(store, JSON.stringify(state));

  const model = h("select", { id: "model", name: "model" },
    models.map((m) => h("option", { value: m.id, text: m.id, selected: m.id === state.settings.model })));
  const system = h("textarea", { id: "system", rows: 4, placeholder: "You are a helpful assistant.", value: state.settings.system });
  const temperature = h("input", { id: "temperature", type: "number", min: 0, max: 2, step: 0.1, placeholder: "default", value: state.settings.temperature });
  const maxTokens = h("input", { id: "max-tokens", type: "number", min: 1, step: 1, placeholder: "default", value: state.settings.max_tokens });
  const searchIn = h("select", { id: "search-in" }, h("option", { value: "", text: "no search" }),
    collections.map((c) => h("option", { value: c.id, text: c.name, selected: String(c.id) === state.settings.search_in })));
  const thread = h("section", { class: "thread", id: "thread", "aria-live": "polite", "aria-label": "Conversation" });
  const prompt = h("textarea", { id: "prompt", rows: 3, placeholder: "Ask something (Enter sends, Shift+Enter for a new line)" });
  const send = h("button", { type: "submit", id: "send", text: "Send" });
  const stop = h("button", { type: "button", id: "stop", class: "danger", text: "Stop", hidden: true });
  let controller = null;

  for (const input of [model, system, temperature, maxTokens, searchIn]) {
    input.addEventListener("change", () => {
      Object.assign(state.settings, { model: model.value, system: system.value, temperature: temperature.value,
        max_tokens: maxTokens.value, search_in: searchIn.value });
      save();
    });
  }

  function bubble(message) {
    if (message.role === "user") return h("div", { class: "message user", text: message.content });
    const body = h("div", { class: "answer" }, renderMarkdown(message.content));
    const meta = h("div", { class: message.error ? "meta error" : "meta", text: message.meta || "" });
    return h("div", { class: "message assistant" }, body, sources(message.sources), meta);
  }
  const redraw = () => replace(thread, state.messages.length ? state.messages.map(bubble) : h("p", { class: "muted", text: "No messages yet." }));
  redraw();

  async function ask() {
    const text = prompt.value.trim();
    if (!text || controller || !model.value) return;
    prompt.value = "";
    state.messages.push({ role: "user", content: text });
    const answer = { role: "assistant", content: "", meta: "Generating…" };
    state.messages.push(answer);
    redraw();
    const node = thread.lastElementChild;
    const [body, meta] = node.children;
    const payload = {
      model: model.value,
      messages: [...(system.value.trim() ? [{ role: "system", content: system.value }] : []),
        ...state.messages.slice(0, -1).filter((m) => !m.error).map(({ role, content }) => ({ role, content }))],
    };
    if (temperature.value !== "") payload.temperature = Number(temperature.value);
    if (maxTokens.value !== "") payload.max_tokens = Number(maxTokens.value);
    if (searchIn.value) payload.tools = [{ type: "search", collection_ids: [Number(searchIn.value)], method: "hybrid", limit: 5 }];
    controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    let pending = false;
    const paint = () => { pending = false; replace(body, renderMarkdown(answer.content)); };
    try {
      for await (const event of app.api.streamChat(payload, controller.signal)) {
        const delta = event.choices && event.choices[0] && event.choices[0].delta;
        if (delta && delta.content) {
          answer.content += delta.content;
          if (!pending) { pending = true; requestAnimationFrame(paint); }
        }
        if (event.usage) answer.meta = describe(event.usage);
        if (event.search_results) {
          answer.sources = event.search_results.map((r) => ({ document: r.chunk.document_id, page: r.chunk.metadata.page, text: r.chunk.content.slice(0, 160) }));
          node.insertBefore(sources(answer.sources), meta);
        }
      }
      if (answer.meta === "Generating…") answer.meta = "";
    } catch (error) {
      answer.meta = error.name === "AbortError" ? "Stopped." : `Error: ${error.message}`;
      if (error.name !== "AbortError" && !answer.content) answer.error = true;
    } finally {
      controller = null;
      send.disabled = false;
      stop.hidden = true;
      paint();
      meta.textContent = answer.meta;
      meta.classList.toggle("error", Boolean(answer.error));
      save();
      prompt.focus();
    }
  }

  stop.addEventListener("click", () => controller && controller.abort());
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); ask(); }
  });
  const clear = h("button", { type: "button", class: "secondary", text: "Clear the conversation",
    onclick() { state.messages = []; save(); redraw(); } });

  return h("div", {},
    h("h1", { text: "Playground" }),
    models.length ? null : h("p", { class: "error", text: "Your role may use no chat model: ask an administrator." }),
    h("div", { class: "playground" },
      h("aside", { class: "card", "aria-label": "Settings" },
        h("label", { for: "model", text: "Model" }), model,
        h("label", { for: "system", text: "System prompt" }), system,
        h("label", { for: "temperature", text: "Temperature" }), temperature,
        h("label", { for: "max-tokens", text: "Max tokens" }), maxTokens,
        collections.length ? [h("label", { for: "search-in", text: "Search my documents" }), searchIn] : null,
        h("p", {}, clear)),
      h("div", {}, thread,
        h("form", { class: "composer", onsubmit(event) { event.preventDefault(); ask(); } },
          h("label", { for: "prompt", class: "muted", hidden: true, text: "Message" }), prompt, send, stop))),
    tryouts(app, allModels));
}

// The chunks a chat with search put in the prompt: which document (and page) each came from.
function sources(list) {
  if (!list || !list.length) return null;
  return h("details", { class: "sources" }, h("summary", { text: `Sources (${list.length})` }),
    h("ol", {}, list.map((s) => h("li", { text: `document ${s.document}${s.page ? `, page ${s.page}` : ""}: ${s.text}` }))));
}

function describe(usage) {
  const parts = [`${usage.prompt_tokens} + ${usage.completion_tokens} tokens`];
  if (usage.cost !== undefined) parts.push(`cost ${money(usage.cost)}`);
  if (usage.carbon && usage.carbon.kgCO2eq) parts.push(carbon(usage.carbon.kgCO2eq));
  return parts.join(" · ");
}
