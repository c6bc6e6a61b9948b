// The other model types, tried from the playground: embeddings, rerank, transcription (a file,
// or a recording from the microphone).

import { h, replace, money } from "./dom.js";

const KINDS = [
  { id: "embeddings", label: "Embeddings", type: "text-embeddings-inference" },
  { id: "rerank", label: "Rerank", type: "text-classification" },
  { id: "transcription", label: "Transcription", type: "automatic-speech-recognition" },
];

export function tryouts(app, models) {
  const kinds = KINDS.filter((kind) => models.some((m) => m.type === kind.type));
  if (!kinds.length) return null;
  const body = h("div");
  const tabs = h("div", { role: "tablist", class: "tabs" });
  const show = (kind) => {
    for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab.dataset.kind === kind.id));
    replace(body, FORMS[kind.id](app, models.filter((m) => m.type === kind.type)));
  };
  for (const kind of kinds) {
    tabs.append(h("button", { type: "button", role: "tab", class: "secondary", "data-kind": kind.id, text: kind.label, onclick: () => show(kind) }));
  }
  show(kinds[0]);
  return h("section", { class: "card", "aria-label": "Other models" }, h("h2", { text: "Other models" }), tabs, body);
}

function modelSelect(id, models) {
  return h("select", { id }, models.map((m) => h("option", { value: m.id, text: m.id })));
}

function usageLine(usage) {
  return usage ? `${usage.prompt_tokens ?? usage.total_tokens ?? 0} tokens · cost ${money(usage.cost)}` : "";
}

const FORMS = {
  embeddings(app, models) {
    const model = modelSelect("embed-model", models);
    const input = h("textarea", { id: "embed-input", rows: 3, required: true, placeholder: "A text to embed" });
    const out = h("div", { id: "embed-result", "aria-live": "polite" });
    return h("form", { async onsubmit(event) {
      event.preventDefault();
      try {
        const answer = await app.api.post("/v1/embeddings", { model: model.value, input: input.value });
        const vector = answer.data[0].embedding;
        replace(out, h("p", { text: `${vector.length} dimensions: [${vector.slice(0, 6).map((x) => x.toFixed(4)).join(", ")}, …]` }),
          h("p", { class: "muted", text: usageLine(answer.usage) }));
      } catch (error) { replace(out, h("p", { class: "error", text: error.message })); }
    } }, h("label", { for: "embed-model", text: "Model" }), model, h("label", { for: "embed-input", text: "Text" }), input,
    h("p", {}, h("button", { type: "submit", text: "Embed" })), out);
  },

  rerank(app, models) {
    const model = modelSelect("rerank-model", models);
    const query = h("input", { id: "rerank-query", required: true, placeholder: "A question" });
    const documents = h("textarea", { id: "rerank-documents", rows: 4, required: true, placeholder: "One document per line" });
    const out = h("div", { id: "rerank-result", "aria-live": "polite" });
    return h("form", { async onsubmit(event) {
      event.preventDefault();
      const docs = documents.value.split("\n").map((d) => d.trim()).filter(Boolean);
      try {
        const answer = await app.api.post("/v1/rerank", { model: model.value, query: query.value, documents: docs });
        const ranked = [...(answer.results || answer.data || [])].sort((a, b) => (b.relevance_score ?? b.score) - (a.relevance_score ?? a.score));
        replace(out, h("ol", {}, ranked.map((r) => h("li", { text: `${(r.relevance_score ?? r.score).toFixed(3)} — ${docs[r.index]}` }))),
          h("p", { class: "muted", text: usageLine(answer.usage) }));
      } catch (error) { replace(out, h("p", { class: "error", text: error.message })); }
    } }, h("label", { for: "rerank-model", text: "Model" }), model, h("label", { for: "rerank-query", text: "Query" }), query,
    h("label", { for: "rerank-documents", text: "Documents" }), documents, h("p", {}, h("button", { type: "submit", text: "Rerank" })), out);
  },

  transcription(app, models) {
    const model = modelSelect("audio-model", models);
    const file = h("input", { id: "audio-file", type: "file", accept: "audio/*" });
    const out = h("div", { id: "audio-result", "aria-live": "polite" });
    let recorded = null;
    let recorder = null;
    const record = h("button", { type: "button", class: "secondary", text: "Record", async onclick() {
      if (recorder) { recorder.stop(); return; }
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        const parts = [];
        recorder = new MediaRecorder(stream);
        recorder.ondataavailable = (event) => parts.push(event.data);
        recorder.onstop = () => {
          stream.getTracks().forEach((track) => track.stop());
          recorded = new Blob(parts, { type: recorder.mimeType });
          recorder = null;
          record.textContent = "Record";
          replace(out, h("audio", { controls: true, src: URL.createObjectURL(recorded) }), h("p", { class: "muted", text: "Recorded: press Transcribe." }));
        };
        recorder.start();
        record.textContent = "Stop recording";
      } catch (error) { replace(out, h("p", { class: "error", text: `The microphone is not available: ${error.message}` })); }
    } });
    return h("form", { async onsubmit(event) {
      event.preventDefault();
      const audio = file.files[0] || (recorded && new File([recorded], "recording.webm", { type: recorded.type }));
      if (!audio) { replace(out, h("p", { class: "error", text: "Choose a file or record first." })); return; }
      const form = new FormData();
      form.append("file", audio);
      form.append("model", model.value);
      try {
        const answer = await app.api.upload("/v1/audio/transcriptions", form);
        replace(out, h("p", { text: answer.text }), h("p", { class: "muted", text: usageLine(answer.usage) }));
      } catch (error) { replace(out, h("p", { class: "error", text: error.message })); }
    } }, h("label", { for: "audio-model", text: "Model" }), model, h("label", { for: "audio-file", text: "Audio file" }), file,
    h("p", { class: "row" }, record, h("button", { type: "submit", text: "Transcribe" })), out);
  },
};
