// previewer's page: uploads dropped or chosen files to /v2/previews/ and shows the results.
// No framework, and no string is ever parsed as HTML: everything from a response goes in
// through textContent or an attribute, so a file name or an error message is never markup.
"use strict";

(() => {
  const API = "/v2/previews/";
  const WAIT = 30; // seconds the server may hold an upload's answer until it is done
  const PARALLEL = 2; // uploads at a time
  const POLL_WAIT = 25; // seconds each poll may be held by the server until the preview is done
  const POLL_DELAYS = [250, 500, 1000, 2000]; // between polls, then 2 s each
  const POLL_LIMIT_MS = 15 * 60 * 1000;
  const RETRIES = 3; // answers 429 retried after Retry-After
  const STORE = { key: "previewer.key", secret: "previewer.secret" };

  const byId = (id) => document.getElementById(id);
  const form = byId("upload");
  const input = byId("files");
  const drop = byId("drop");
  const results = byId("results");
  const status = byId("status");
  const fields = {
    sizes: byId("sizes"),
    pages: byId("pages"),
    key: byId("key"),
    secret: byId("secret"),
  };

  // ------------------------------------------------------------------ small DOM helpers

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function announce(message) {
    status.textContent = message;
  }

  function formatBytes(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return "";
    const units = ["bytes", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
  }

  function dimensions(size) {
    if (!size || typeof size !== "object") return "";
    const { width, height } = size;
    return Number.isFinite(width) && Number.isFinite(height) ? `${width}×${height}` : "";
  }

  // Only http(s), blob: and data:image URLs become an <img> source.
  function safeImageUrl(raw) {
    if (typeof raw !== "string" || raw === "") return null;
    let url;
    try {
      url = new URL(raw, window.location.href);
    } catch {
      return null;
    }
    if (url.protocol === "http:" || url.protocol === "https:" || url.protocol === "blob:") {
      return url.href;
    }
    if (url.protocol === "data:" && /^data:image\//i.test(raw)) return url.href;
    return null;
  }

  // ------------------------------------------------------------------ credentials

  function restoreCredentials() {
    try {
      fields.key.value = sessionStorage.getItem(STORE.key) || "";
      fields.secret.value = sessionStorage.getItem(STORE.secret) || "";
    } catch {
      // Storage can be disabled; the fields still work for this page view.
    }
    if (fields.key.value) byId("credentials").open = true;
  }

  function storeCredentials() {
    try {
      sessionStorage.setItem(STORE.key, fields.key.value);
      sessionStorage.setItem(STORE.secret, fields.secret.value);
    } catch {
      // As above: nothing to keep when storage is unavailable.
    }
  }

  function authorization() {
    const key = fields.key.value;
    if (!key) return {};
    // btoa takes Latin-1 only: encode the UTF-8 bytes first.
    const bytes = new TextEncoder().encode(`${key}:${fields.secret.value}`);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return { Authorization: `Basic ${btoa(binary)}` };
  }

  // ------------------------------------------------------------------ talking to the API

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // One request; answers {status, body, retryAfter}. A body that is not JSON becomes an error
  // object carrying the start of the text, so every failure has a message to show.
  async function call(method, url, body) {
    let response;
    try {
      response = await fetch(url, {
        method,
        body,
        headers: { Accept: "application/json", ...authorization() },
        // The Authorization header above is sent either way; "omit" keeps the browser from
        // answering a 401 (WWW-Authenticate: Basic) with its own login dialog.
        credentials: "omit",
        cache: "no-store",
      });
    } catch (err) {
      return {
        status: 0,
        body: { error: { code: "network", message: `The server did not answer (${err.message}).` } },
      };
    }
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (!parsed || typeof parsed !== "object") {
      parsed = {
        error: {
          code: `http_${response.status}`,
          message: text.trim().slice(0, 300) || `${response.status} ${response.statusText}`,
        },
      };
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    return { status: response.status, body: parsed, retryAfter };
  }

  async function callWithRetry(method, url, makeBody, onWait) {
    for (let attempt = 0; ; attempt += 1) {
      const answer = await call(method, url, makeBody());
      if (answer.status !== 429 || attempt >= RETRIES) return answer;
      const seconds = Number.isFinite(answer.retryAfter) ? Math.min(answer.retryAfter, 60) : 2;
      onWait(seconds);
      await sleep(Math.max(seconds, 1) * 1000);
    }
  }

  function uploadBody(file, options) {
    const data = new FormData();
    data.append("file", file, file.name);
    data.append("sizes", options.sizes);
    data.append("pages", options.pages);
    return data;
  }

  async function preview(file, options, card) {
    card.progress("Uploading and converting…");
    let answer = await callWithRetry(
      "POST",
      `${API}?wait=${WAIT}`,
      () => uploadBody(file, options),
      (s) => card.progress(`Server busy; trying again in ${s} s…`),
    );
    if (answer.status === 401) byId("credentials").open = true;
    const started = Date.now();
    let polls = 0;
    while (isPending(answer)) {
      card.show(answer.body, "Converting…");
      if (Date.now() - started > POLL_LIMIT_MS) {
        card.show(answer.body, "Still converting; gave up waiting. Reload the result later.");
        return;
      }
      await sleep(POLL_DELAYS[Math.min(polls, POLL_DELAYS.length - 1)]);
      polls += 1;
      const id = encodeURIComponent(String(answer.body.id));
      answer = await callWithRetry("GET", `${API}${id}/?wait=${POLL_WAIT}`, () => undefined, () => {});
    }
    card.show(answer.body);
  }

  function isPending(answer) {
    const body = answer.body;
    return (
      answer.status >= 200 &&
      answer.status < 300 &&
      body &&
      body.status === "pending" &&
      (typeof body.id === "string" || typeof body.id === "number")
    );
  }

  // ------------------------------------------------------------------ one file's card

  function makeCard(file) {
    const title = el("h3", { className: "name", text: file.name || "(no name)" });
    const badge = el("span", { className: "badge", text: "waiting" });
    const note = el("p", { className: "note" });
    const body = el("div", { className: "body" });
    const li = el(
      "li",
      { className: "result", "data-status": "waiting", "aria-busy": "true" },
      el("div", { className: "head" }, title, badge),
      note,
      body,
    );
    results.append(li);

    function setState(state, label) {
      li.dataset.status = state;
      badge.textContent = label;
      li.setAttribute("aria-busy", state === "pending" || state === "waiting" ? "true" : "false");
    }

    return {
      progress(message) {
        setState("pending", "working");
        note.textContent = message;
      },
      show(result, message) {
        const outcome = classify(result);
        setState(outcome, outcome === "pending" ? "working" : outcome);
        note.textContent = message || "";
        body.replaceChildren(...renderResult(result, outcome, file));
        if (outcome !== "pending") {
          announce(`${file.name}: ${outcome === "success" ? "done" : "failed"}.`);
        }
      },
    };
  }

  function classify(result) {
    if (!result || typeof result !== "object") return "failure";
    if (result.status === "pending") return "pending";
    if (result.status === "success") return "success";
    return "failure";
  }

  function renderResult(result, outcome, file) {
    const nodes = [];
    const original = (result && result.original_file) || {};
    const thumbs = Array.isArray(result && result.thumbnails) ? result.thumbnails : [];
    const error = result && result.error;

    if (outcome === "failure" || (error && typeof error === "object")) {
      const message =
        (error && typeof error === "object" && error.message) ||
        (typeof error === "string" ? error : "The conversion failed.");
      const code = error && typeof error === "object" && error.code ? ` (${error.code})` : "";
      nodes.push(el("p", { className: "error", role: "alert", text: `${message}${code}` }));
      const fieldErrors = error && typeof error === "object" ? error.fields : null;
      if (fieldErrors && typeof fieldErrors === "object") {
        const list = el("ul", { className: "field-errors" });
        for (const [field, problem] of Object.entries(fieldErrors)) {
          list.append(el("li", {}, el("code", { text: field }), `: ${describe(problem)}`));
        }
        nodes.push(list);
      }
    }

    const facts = el("dl", { className: "facts" });
    const fact = (label, field, value) => {
      if (value === undefined || value === null || value === "") return;
      facts.append(el("div", {}, el("dt", { text: label }), el("dd", { "data-field": field, text: value })));
    };
    const total = original.total_pages;
    fact("Pages", "pages", Number.isFinite(total) ? `${total} ${total === 1 ? "page" : "pages"}` : "");
    fact("Type", "mimetype", original.mimetype);
    fact("Converter", "converter", converterOf(result, original));
    fact("File size", "filesize", formatBytes(original.size));
    fact("Encoding", "encoding", original.encoding);
    if (facts.childElementCount) nodes.push(facts);

    if (thumbs.length) {
      const gallery = el("div", { className: "thumbs" });
      for (const thumb of thumbs) gallery.append(renderThumb(thumb, file));
      nodes.push(gallery);
    }

    nodes.push(renderJson(result, file));
    return nodes;
  }

  function describe(problem) {
    if (Array.isArray(problem)) return problem.map(describe).join("; ");
    if (problem && typeof problem === "object") return problem.message || JSON.stringify(problem);
    return String(problem);
  }

  function converterOf(result, original) {
    const meta = original.metadata && typeof original.metadata === "object" ? original.metadata : {};
    const value = meta.converter || original.converter || (result && result.converter);
    return typeof value === "string" ? value : "";
  }

  function renderThumb(thumb, file) {
    const size = dimensions(thumb && thumb.size);
    const page = thumb && Number.isFinite(thumb.page) ? thumb.page : null;
    const caption = [page !== null ? `Page ${page}` : "", size ? `${size} px` : ""]
      .filter(Boolean)
      .join(" · ");
    const src = safeImageUrl(thumb && thumb.url);
    const figure = el("figure", { className: "thumb" });
    if (src) {
      const img = el("img", {
        src,
        alt: `Preview of ${file.name}${page !== null ? `, page ${page}` : ""}`,
        width: thumb.size && thumb.size.width,
        height: thumb.size && thumb.size.height,
        decoding: "async",
        referrerpolicy: "no-referrer",
      });
      img.addEventListener("error", () => figure.classList.add("broken"));
      figure.append(el("a", { href: src, target: "_blank", rel: "noopener noreferrer" }, img));
    }
    figure.append(el("figcaption", { text: caption }));
    return figure;
  }

  function renderJson(result, file) {
    const json = JSON.stringify(result, null, 2);
    const button = el("button", { type: "button", className: "copy", text: "Copy JSON" });
    button.addEventListener("click", async () => {
      const ok = await copyText(json);
      button.textContent = ok ? "Copied" : "Copy failed";
      announce(ok ? `JSON of ${file.name} copied.` : "Copying was refused by the browser.");
      setTimeout(() => {
        button.textContent = "Copy JSON";
      }, 2000);
    });
    return el(
      "div",
      { className: "json" },
      button,
      el("details", {}, el("summary", { text: "JSON" }), el("pre", { text: json })),
    );
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch {
        // Fall through to the selection-based copy (permission refused).
      }
    }
    const area = el("textarea", { readonly: "", className: "visually-hidden" });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }

  // ------------------------------------------------------------------ queueing the files

  const queue = [];
  let running = 0;

  function options() {
    const sizes = fields.sizes.value.trim() || "256";
    const pages = fields.pages.value.trim() || "1";
    return { sizes, pages };
  }

  function add(files) {
    const list = Array.from(files || []);
    if (!list.length) return;
    const opts = options();
    for (const file of list) queue.push({ file, opts, card: makeCard(file) });
    announce(`${list.length} ${list.length === 1 ? "file" : "files"} added.`);
    pump();
  }

  function pump() {
    while (running < PARALLEL && queue.length) {
      const { file, opts, card } = queue.shift();
      running += 1;
      preview(file, opts, card)
        .catch((err) => {
          card.show({ status: "failure", error: { code: "page", message: String(err) } });
        })
        .finally(() => {
          running -= 1;
          pump();
        });
    }
  }

  // ------------------------------------------------------------------ wiring

  byId("choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    add(input.files);
    input.value = "";
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  fields.key.addEventListener("input", storeCredentials);
  fields.secret.addEventListener("input", storeCredentials);

  // Dropping anywhere on the page uploads; the drop zone only shows where.
  const hasFiles = (event) =>
    event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) drop.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    drop.classList.remove("over");
    add(event.dataTransfer.files);
  });

  restoreCredentials();
})();
