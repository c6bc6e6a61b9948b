// Tollgate's public API, as the console calls it: the key of the session in the
// Authorization header (never in a URL), errors turned into readable messages.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function messageOf(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  if (body && body.error && body.error.message) return body.error.message;
  return `The request failed (HTTP ${status})`;
}

export class Api {
  constructor(session, onSessionEnded) {
    this.session = session;
    this.onSessionEnded = onSessionEnded;
  }

  headers(json = true) {
    const headers = {};
    if (json) headers["Content-Type"] = "application/json";
    if (this.session.key) headers.Authorization = `Bearer ${this.session.key}`;
    return headers;
  }

  async fail(response) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    const error = new ApiError(response.status, messageOf(response.status, body));
    if (response.status === 401 && this.session.key) this.onSessionEnded(error.message);
    throw error;
  }

  async request(method, path, body) {
    const response = await fetch(path, {
      method, headers: this.headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store",
    });
    if (!response.ok) await this.fail(response);
    return response.status === 204 ? null : response.json();
  }

  get(path) { return this.request("GET", path); }
  post(path, body = {}) { return this.request("POST", path, body); }
  patch(path, body) { return this.request("PATCH", path, body); }

  async upload(path, form) {
    const response = await fetch(path, { method: "POST", headers: this.headers(false), body: form, credentials: "omit" });
    if (!response.ok) await this.fail(response);
    return response.json();
  }

  // A streamed chat completion: yields each event's JSON as it arrives; `signal` stops it.
  async *streamChat(body, signal) {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: this.headers(), signal, credentials: "omit",
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    });
    if (!response.ok) await this.fail(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") return;
          const parsed = JSON.parse(data);
          if (parsed.error) throw new ApiError(parsed.error.code || 502, parsed.error.message || "The stream failed");
          yield parsed;
        }
      }
    }
  }
}
