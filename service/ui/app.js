// The try-it page (service/try_page.py): each section calls one route of this service's API.
// No library, no build step. With API keys set, the page asks for one and keeps it in this
// tab's sessionStorage only (gone when the tab closes; never in localStorage or a cookie).
"use strict";

const KEY_STORE = "dlserve-api-key";
const STATUS_EVERY_MS = 5000;
const TYPICAL = {
  amount: 42, hour: 12, distance_from_home_km: 3, txn_count_1h: 1, txn_count_24h: 3,
  avg_amount_30d: 50, account_age_days: 700, card_present: true, new_device: false,
  foreign_merchant: false,
};
const SUSPICIOUS = {
  amount: 912.4, merchant_category: "electronics", hour: 3, distance_from_home_km: 4200,
  txn_count_1h: 4, txn_count_24h: 9, avg_amount_30d: 61, account_age_days: 1400,
  card_present: false, new_device: true, foreign_merchant: true,
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {}

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

// fetch() on this origin with the tab's key; a 401 asks for a key and throws.
async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    askForKey(key ? "The service refused this key: give another." : "The service needs an API key.");
    throw new ApiError("an API key is needed (above)");
  }
  return response;
}

// The JSON answer of a POST, or an ApiError with the service's message (dlserve's or OpenAI's shape).
async function postJson(path, body) {
  const response = await api(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  return readAnswer(response);
}

async function readAnswer(response) {
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: the status says it */ }
  if (!response.ok) throw new ApiError(errorMessage(response.status, body));
  return body;
}

function errorMessage(status, body) {
  const error = body && body.error;
  if (error && typeof error === "object") return `${status}: ${error.message}`;
  const detail = body && Array.isArray(body.detail) && body.detail[0];
  if (detail && detail.msg) return `${status}: ${(detail.loc || []).join(".")}: ${detail.msg}`;
  return `${status}: ${error || "the request failed"}`;
}

// Runs ``work`` for a form: its error paragraph cleared first, then filled with the failure.
async function guarded(errorId, work) {
  $(errorId).textContent = "";
  try {
    await work();
  } catch (error) {
    $(errorId).textContent = error instanceof ApiError ? error.message : `Failed: ${error.message}`;
  }
}

// ---- API key ----
function askForKey(message) {
  $("key-message").textContent = message;
  const panel = $("key-panel");
  if (panel.hidden) {
    panel.hidden = false;
    $("key-input").focus();
  }
}

function setUpKey() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-input").value = "";
    $("key-panel").hidden = true;
    $("forget-key").hidden = false;
    refreshStatus();
  });
  $("forget-key").hidden = !apiKey();
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("forget-key").hidden = true;
    refreshStatus();
  });
}

// ---- model status ----
let models = {};
let statusTimer = null;

async function refreshStatus() {
  clearTimeout(statusTimer);
  try {
    const body = await readAnswer(await api("/v1/models"));
    models = Object.fromEntries(body.models.map((model) => [model.name, model]));
    showStatus(body.models);
    fillChoices();
    $("status-error").textContent = "";
  } catch (error) {
    $("status-error").textContent = error.message;
  }
  statusTimer = setTimeout(refreshStatus, STATUS_EVERY_MS);
}

function showStatus(list) {
  const rows = list.map((model) => {
    const row = document.createElement("tr");
    row.dataset.model = model.name;
    const badge = document.createElement("span");
    badge.className = `badge ${model.status}`;
    badge.textContent = model.status;
    const detail = model.reason || (model.under_trained ? "under-trained (cut short)" : model.task || "");
    row.append(
      cell("th", model.name, { scope: "row" }),
      cell("td", badge, { className: "state" }),
      cell("td", model.version || "–", { className: "version" }),
      cell("td", model.provider || "–", { className: "provider" }),
      cell("td", detail, { className: "detail" }),
    );
    return row;
  });
  $("status-table").tBodies[0].replaceChildren(...rows);
  for (const section of document.querySelectorAll("section[data-models]")) {
    const notReady = section.dataset.models.split(" ").map((name) => {
      const model = models[name];
      if (!model) return `${name} is not enabled on this service`;
      return model.status === "ready" ? null : `${name} is ${model.status}`;
    }).filter(Boolean);
    section.querySelector(".availability").textContent = notReady.join("; ");
  }
}

function cell(tag, content, attributes = {}) {
  const element = document.createElement(tag);
  Object.assign(element, attributes);
  if (attributes.scope) element.setAttribute("scope", attributes.scope);
  element.append(content);
  return element;
}

// The choices that come from the served models: merchant categories and generator classes.
function fillChoices() {
  const fraud = models["fraud-scorer"];
  const categories = fraud && fraud.request_schema && schemaEnum(fraud.request_schema, "merchant_category");
  fillSelect($("fraud-merchant_category"), categories || []);
  const generator = models["image-generator"];
  fillSelect($("generation-class"), (generator && generator.labels) || []);
}

function schemaEnum(schema, property) {
  for (const definition of Object.values(schema.$defs || {})) {
    const found = definition.properties && definition.properties[property];
    if (found && Array.isArray(found.enum)) return found.enum;
  }
  return null;
}

function fillSelect(select, values) {
  if (!values.length || select.options.length === values.length) return;
  const chosen = select.dataset.wanted || select.value;
  select.replaceChildren(...values.map((value) => new Option(value, value)));
  if (values.includes(chosen)) select.value = chosen;
}

// ---- image classification ----
function setUpImage() {
  const input = $("image-file");
  const zone = $("drop-zone");
  input.addEventListener("change", () => { if (input.files.length) classifyImage(); });
  $("image-form").addEventListener("submit", (event) => { event.preventDefault(); classifyImage(); });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      classifyImage();
    }
  });
}

function classifyImage() {
  return guarded("image-error", async () => {
    const file = $("image-file").files[0];
    if (!file) throw new ApiError("Choose an image first.");
    const preview = $("image-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.alt = `The image sent: ${file.name}`;
    preview.hidden = false;
    const form = new FormData();
    form.append("image", file, file.name);
    const k = encodeURIComponent($("image-k").value);
    const body = await readAnswer(await api(`/v1/images/classify?k=${k}`, { method: "POST", body: form }));
    $("image-results").replaceChildren(...body.top_k.map((entry) => barRow(entry.label, entry.probability)));
  });
}

function barRow(label, probability) {
  const row = document.createElement("li");
  const name = document.createElement("span");
  name.className = "bar-label";
  name.textContent = label;
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.setAttribute("aria-hidden", "true");
  const fill = document.createElement("span");
  fill.className = "bar-fill";
  fill.style.width = `${(probability * 100).toFixed(1)}%`;
  bar.append(fill);
  const value = document.createElement("span");
  value.className = "bar-value";
  value.textContent = percent(probability);
  row.append(name, bar, value);
  return row;
}

function percent(probability) {
  return `${(probability * 100).toFixed(1)}%`;
}

// ---- sentiment: both models on the same reviews ----
const SENTIMENT_MODELS = ["rnn", "transformer"];

function setUpSentiment() {
  $("sentiment-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded("sentiment-error", async () => {
      const texts = $("reviews").value.split("\n").map((line) => line.trim()).filter(Boolean);
      if (!texts.length) throw new ApiError("Type at least one review.");
      const answers = await Promise.all(SENTIMENT_MODELS.map((model) => (
        postJson("/v1/sentiment", { texts, model }).catch((error) => error)
      )));
      const rows = texts.map((text, index) => {
        const row = document.createElement("tr");
        row.append(cell("td", text, { className: "review" }));
        answers.forEach((answer, column) => {
          const kind = SENTIMENT_MODELS[column];
          if (answer instanceof Error) {
            row.append(cell("td", answer.message, { className: `${kind} error` }));
            return;
          }
          const result = answer.results[index];
          const label = document.createElement("span");
          label.className = result.label;
          label.textContent = `${result.label} ${percent(result.probability)}`;
          row.append(cell("td", label, { className: kind }));
        });
        return row;
      });
      $("sentiment-results").tBodies[0].replaceChildren(...rows);
    });
  });
}

// ---- fraud ----
const FRAUD_NUMBERS = [
  "amount", "hour", "distance_from_home_km", "txn_count_1h", "txn_count_24h", "avg_amount_30d",
  "account_age_days",
];
const FRAUD_FLAGS = ["card_present", "new_device", "foreign_merchant"];

function fillFraud(values) {
  for (const name of FRAUD_NUMBERS) $(`fraud-${name}`).value = values[name];
  for (const name of FRAUD_FLAGS) $(`fraud-${name}`).checked = values[name];
  const select = $("fraud-merchant_category");
  select.dataset.wanted = values.merchant_category || "";
  if (values.merchant_category) select.value = values.merchant_category;
}

function setUpFraud() {
  fillFraud(TYPICAL);
  $("fraud-typical").addEventListener("click", () => fillFraud(TYPICAL));
  $("fraud-suspicious").addEventListener("click", () => fillFraud(SUSPICIOUS));
  $("fraud-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded("fraud-error", async () => {
      const transaction = { merchant_category: $("fraud-merchant_category").value };
      for (const name of FRAUD_NUMBERS) transaction[name] = Number($(`fraud-${name}`).value);
      for (const name of FRAUD_FLAGS) transaction[name] = $(`fraud-${name}`).checked;
      const body = await postJson("/v1/fraud/score", { transactions: [transaction] });
      const result = body.results[0];
      $("fraud-probability").textContent = result.fraud_probability.toFixed(4);
      $("fraud-threshold").textContent = body.decision_threshold.toFixed(4);
      $("fraud-decision").textContent = result.is_fraud ? "fraud" : "not fraud";
      $("fraud-decision").className = result.is_fraud ? "negative" : "positive";
      $("fraud-anomaly").textContent = result.anomaly_score.toFixed(4);
      $("fraud-result").hidden = false;
    });
  });
}

// ---- text completion, streamed (OpenAI's server-sent events) ----
let streaming = null;

function setUpCompletion() {
  $("completion-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!streaming) complete();
  });
  $("completion-stop").addEventListener("click", () => streaming && streaming.abort());
}

function complete() {
  const output = $("completion-output");
  const text = $("completion-text");
  const state = $("completion-state");
  streaming = new AbortController();
  $("completion-start").disabled = true;
  $("completion-stop").disabled = false;
  $("completion-prompt").textContent = $("prompt").value;
  text.textContent = "";
  state.textContent = "Generating…";
  state.dataset.state = "streaming";
  output.setAttribute("aria-busy", "true");
  const request = {
    prompt: $("prompt").value,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
    stream: true,
  };
  if ($("completion-seed").value !== "") request.seed = Number($("completion-seed").value);
  let finish = null;
  return guarded("completion-error", async () => {
    try {
      const response = await api("/v1/completions", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request), signal: streaming.signal,
      });
      if (!response.ok) await readAnswer(response);
      finish = await readEvents(response.body, (piece) => text.append(piece));
      state.textContent = `Finished: ${finish || "stopped"}.`;
    } catch (error) {
      state.textContent = error.name === "AbortError" ? "Stopped." : "Failed.";
      if (error.name !== "AbortError") throw error;
    } finally {
      state.dataset.state = "done";
      output.setAttribute("aria-busy", "false");
      $("completion-start").disabled = false;
      $("completion-stop").disabled = true;
      streaming = null;
    }
  });
}

// Reads ``data: <json>`` events until ``data: [DONE]``; each chunk's text goes to ``onText`` as
// it arrives. Returns the last finish_reason.
async function readEvents(stream, onText) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return finish;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return finish;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(`The stream failed: ${chunk.error.message}`);
        for (const choice of chunk.choices) {
          if (choice.text) onText(choice.text);
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
  }
}

// ---- image generation ----
function setUpGeneration() {
  $("generation-random").addEventListener("click", () => {
    $("generation-seed").value = Math.floor(Math.random() * 1_000_000);
  });
  $("generation-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded("generation-error", async () => {
      const label = $("generation-class").value;
      const seed = Number($("generation-seed").value);
      const body = await postJson("/v1/images/generate", {
        label, seed, n: Number($("generation-count").value), format: "png",
      });
      const images = body.images.map((png, index) => {
        const image = new Image(56, 56);
        image.src = `data:image/png;base64,${png}`;
        image.alt = `Generated ${body.label}, seed ${body.seed}, image ${index + 1}`;
        image.setAttribute("role", "listitem");
        return image;
      });
      $("generation-grid").replaceChildren(...images);
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpKey();
  setUpImage();
  setUpSentiment();
  setUpFraud();
  setUpCompletion();
  setUpGeneration();
  refreshStatus();
});
