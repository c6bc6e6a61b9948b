// Documents: collections (private, or public where the role may), uploads with a progress bar
// and the ingestion's progress until ready, a document's chunks, and a search tester running
// the three methods side by side.

import { h, replace, when, notice } from "./dom.js";

const METHODS = ["semantic", "lexical", "hybrid"];

export async function documentsView(app) {
  const collections = (await app.api.get("/v1/collections?limit=100")).data;
  const mayPublish = app.user.permissions.includes("create_public_collection") || app.user.permissions.includes("admin");
  const chosen = h("select", { id: "collection", "aria-label": "Collection", onchange: () => showCollection() },
    collections.map((c) => h("option", { value: c.id, text: `${c.name} (${c.visibility})` })));
  const documentsBox = h("div", { id: "documents" });
  const chunksBox = h("div", { id: "chunks" });
  const results = h("div", { id: "results", class: "row" });
  const polls = new Set();

  const name = h("input", { id: "collection-name", required: true, maxlength: 255 });
  const visibility = h("select", { id: "collection-visibility" },
    h("option", { value: "private", text: "private" }), mayPublish ? h("option", { value: "public", text: "public" }) : null);
  const createCollection = h("form", {
    class: "card", "aria-label": "Create a collection",
    async onsubmit(event) {
      event.preventDefault();
      try {
        const created = await app.api.post("/v1/collections", { name: name.value, visibility: visibility.value });
        const option = h("option", { value: created.id, text: `${name.value} (${visibility.value})` });
        chosen.append(option);
        chosen.value = String(created.id);
        name.value = "";
        await showCollection();
      } catch (error) { notice(error.message); }
    },
  }, h("div", { class: "row" },
    h("div", {}, h("label", { for: "collection-name", text: "New collection" }), name),
    h("div", {}, h("label", { for: "collection-visibility", text: "Visibility" }), visibility),
    h("button", { type: "submit", text: "Create" })));

  const file = h("input", { id: "file", type: "file", accept: ".pdf,.txt,.md,.html,.json,.csv" });
  const uploadBar = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const uploadForm = h("form", {
    class: "card", "aria-label": "Upload a document",
    async onsubmit(event) {
      event.preventDefault();
      if (!file.files.length || !chosen.value) return;
      const form = new FormData();
      form.append("file", file.files[0]);
      form.append("collection_id", chosen.value);
      uploadBar.hidden = false;
      try {
        const created = await upload(app, form, (share) => { uploadBar.value = share * 100; });
        file.value = "";
        await showCollection();
        watch(created.id);
      } catch (error) { notice(error.message); } finally { uploadBar.hidden = true; }
    },
  }, h("div", { class: "row" }, h("div", {}, h("label", { for: "file", text: "Upload a document" }), file),
    h("button", { type: "submit", text: "Upload" })), uploadBar);

  function row(doc) {
    const state = doc.status === "processing" ? `processing ${Math.round(doc.progress * 100)}%` : doc.status;
    return h("tr", { "data-document": doc.id },
      h("td", { text: doc.name }), h("td", { text: doc.pages ?? "—" }), h("td", { text: doc.chunks }),
      h("td", { class: doc.status === "failed" ? "error" : doc.status === "ready" ? "ok" : "", "data-status": doc.status },
        doc.status === "processing" ? h("progress", { max: 1, value: doc.progress, "aria-label": "Ingestion" }) : null, " ", state,
        doc.error ? ` (${doc.error})` : ""),
      h("td", { text: when(doc.created) }),
      h("td", {}, h("button", { type: "button", class: "secondary", text: "Chunks", onclick: () => showChunks(doc) })));
  }

  async function showCollection() {
    replace(chunksBox);
    if (!chosen.value) {
      replace(documentsBox, h("p", { class: "muted", text: "Create a collection to upload documents into." }));
      return;
    }
    const docs = (await app.api.get(`/v1/documents?collection_id=${chosen.value}&limit=100`)).data;
    replace(documentsBox, docs.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Document", "Pages", "Chunks", "Status", "Added", ""].map((t) => h("th", { text: t })))),
      h("tbody", {}, docs.map(row))) : h("p", { class: "muted", text: "No documents in this collection yet." }));
    docs.filter((d) => d.status === "processing").forEach((d) => watch(d.id));
  }

  // The ingestion's progress, every half second until the document is ready or failed.
  function watch(id) {
    if (polls.has(id)) return;
    polls.add(id);
    const tick = async () => {
      if (!document.body.contains(documentsBox)) { polls.delete(id); return; }
      try {
        const doc = await app.api.get(`/v1/documents/${id}`);
        const current = documentsBox.querySelector(`tr[data-document="${id}"]`);
        if (current) current.replaceWith(row(doc));
        if (doc.status === "processing") { setTimeout(tick, 500); return; }
      } catch { /* the next page load shows it */ }
      polls.delete(id);
    };
    setTimeout(tick, 300);
  }

  async function showChunks(doc) {
    const chunks = (await app.api.get(`/v1/documents/${doc.id}/chunks?limit=100`)).data;
    replace(chunksBox, h("h2", { text: `Chunks of ${doc.name}` }),
      chunks.map((c) => h("div", { class: "card chunk" },
        h("div", { class: "muted", text: `#${c.id}${c.metadata.page ? ` · page ${c.metadata.page}` : ""}` }),
        h("p", { text: c.content }))));
  }

  const query = h("input", { id: "query", required: true, maxlength: 20000, placeholder: "What are you looking for?" });
  const searchForm = h("form", {
    class: "card", "aria-label": "Search tester",
    async onsubmit(event) {
      event.preventDefault();
      if (!chosen.value) return;
      const body = { query: query.value, collection_ids: [Number(chosen.value)], limit: 5 };
      const answers = await Promise.all(METHODS.map((method) => app.api.post("/v1/search", { ...body, method })
        .then((r) => r.data, (error) => error)));
      replace(results, METHODS.map((method, i) => h("section", { class: "card", "data-method": method },
        h("h2", { text: method }),
        answers[i] instanceof Error ? h("p", { class: "error", text: answers[i].message })
          : answers[i].length ? h("ol", {}, answers[i].map((r) => h("li", { class: "result" },
            h("div", { class: "muted", text: `score ${r.score.toFixed(3)}${r.chunk.metadata.page ? ` · page ${r.chunk.metadata.page}` : ""}` }),
            h("p", { text: r.chunk.content.slice(0, 400) }))))
            : h("p", { class: "muted", text: "Nothing found." }))));
    },
  }, h("div", { class: "row" }, h("div", {}, h("label", { for: "query", text: "Search this collection" }), query),
    h("button", { type: "submit", text: "Search" })));

  await showCollection();
  return h("div", {}, h("h1", { text: "Documents" }),
    createCollection,
    h("div", { class: "card" }, h("label", { for: "collection", text: "Collection" }), chosen),
    uploadForm, documentsBox, chunksBox, searchForm, results);
}

// fetch() reports no upload progress: XMLHttpRequest does.
function upload(app, form, progress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/documents");
    request.setRequestHeader("Authorization", `Bearer ${app.session.key}`);
    request.upload.onprogress = (event) => { if (event.lengthComputable) progress(event.loaded / event.total); };
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status === 201) resolve(body);
      else reject(new Error((body && typeof body.detail === "string" && body.detail) || `Upload failed (HTTP ${request.status})`));
    };
    request.onerror = () => reject(new Error("The upload failed: Tollgate could not be reached"));
    request.send(form);
  });
}
