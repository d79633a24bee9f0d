// Swagger UI over this API's live OpenAPI document. The document is fetched here (with the API
// key when one was given, as the console keeps it in sessionStorage) and its servers are
// replaced by this page's own base URL, so "Try it out" calls the API that served the page
// (under its stage path) and sends x-api-key.
"use strict";

const KEY_STORAGE = "model-api-key";
const BASE = new URL(".", window.location.href);

function apiKey() { return window.sessionStorage.getItem(KEY_STORAGE) || ""; }

async function fetchDocument() {
  const headers = apiKey() ? { "x-api-key": apiKey() } : {};
  let response = await fetch(new URL("openapi.json", BASE), { headers });
  if (response.status === 403) {
    const key = window.prompt("This API needs its key (x-api-key), kept for this tab only:");
    if (key) {
      window.sessionStorage.setItem(KEY_STORAGE, key.trim());
      response = await fetch(new URL("openapi.json", BASE), { headers: { "x-api-key": key.trim() } });
    }
  }
  if (!response.ok) {
    const text = await response.text();
    let message = text;
    try { message = JSON.parse(text).error || text; } catch (_) { /* not JSON */ }
    throw new Error(`GET openapi.json: HTTP ${response.status}: ${message}`);
  }
  return response.json();
}

async function start() {
  document.getElementById("key-button").addEventListener("click", () => {
    const key = window.prompt("API key (x-api-key), kept for this tab only; empty to forget:", apiKey());
    if (key === null) return;
    if (key.trim()) window.sessionStorage.setItem(KEY_STORAGE, key.trim());
    else window.sessionStorage.removeItem(KEY_STORAGE);
    window.location.reload();
  });
  try {
    const spec = await fetchDocument();
    spec.servers = [{ url: BASE.href.replace(/\/$/, ""), description: "this API" }];
    window.SwaggerUIBundle({
      spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      docExpansion: "list",
      defaultModelsExpandDepth: 0,
      requestInterceptor: (request) => {
        if (apiKey()) request.headers["x-api-key"] = apiKey();
        return request;
      },
    });
  } catch (error) {
    const box = document.getElementById("docs-error");
    box.hidden = false;
    box.textContent = String(error.message || error);
  }
}

window.addEventListener("DOMContentLoaded", start);
