// NLU studio, part 1: the API helper, sign-in, tabs, intents and examples, synonyms/regexes/lookups, validation.
// Plain JS on purpose: no build step, no CDN. Every file edit sends the version it was based on (409 = stale).
"use strict";

const API = "/studio/api";
const state = { token: sessionStorage.getItem("yt-studio-token"), versions: {}, intents: [], intent: null };
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
};

async function api(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: { "Authorization": "Bearer " + state.token, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) { signOut(); }
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || response.statusText);
    error.status = response.status;
    error.code = data && data.error && data.error.code;
    throw error;
  }
  return data;
}

function flash(text, kind = "ok") {
  const box = $("#flash");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
}

function remember(versions) { Object.assign(state.versions, versions || {}); }

// ---- sign-in ------------------------------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const response = await fetch("/agents/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: $("#username").value, password: $("#password").value }),
  });
  const data = await response.json();
  if (!response.ok) return flash(data.error.message, "error");
  state.token = data.token;
  sessionStorage.setItem("yt-studio-token", data.token);
  sessionStorage.setItem("yt-studio-user", data.agent.username);
  await start();
}

function signOut() {
  sessionStorage.removeItem("yt-studio-token");
  state.token = null;
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login-form").hidden = false;
  document.body.dataset.status = "signed-out";
}

async function start() {
  try {
    await loadIntents();
  } catch (error) {
    if (error.status === 403) flash("此账号没有 nlu_editor 权限", "error");
    return signOut();
  }
  $("#login-form").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  $("#whoami").textContent = sessionStorage.getItem("yt-studio-user") || "";
  document.body.dataset.status = "ready";
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("intent")) openIntent(hash.get("intent"));
  window.studioShip.resume();
}

function showTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== "tab-" + name;
  if (name === "resources") loadResources();
  if (name === "versions") window.studioShip.loadVersions();
  if (name === "inbox") window.studioShip.loadInbox();
}

// ---- intents and examples -------------------------------------------------------------------------------------
async function loadIntents() {
  const data = await api("GET", "/intents");
  state.intents = data.intents;
  remember(data.versions);
  renderIntentList();
}

function renderIntentList() {
  const filter = $("#intent-filter").value.trim();
  const list = $("#intent-list");
  list.replaceChildren();
  for (const intent of state.intents.filter((i) => !filter || i.name.includes(filter))) {
    const when = intent.last_change ? new Date(intent.last_change).toLocaleString() : "";
    const item = el("li", { className: "intent" + (intent.name === state.intent ? " selected" : "") },
      intent.name, el("span", { className: "count", textContent: intent.examples }),
      el("span", { className: "meta", textContent: [when, intent.last_changed_by].filter(Boolean).join(" · ") }));
    item.dataset.intent = intent.name;
    item.addEventListener("click", () => openIntent(intent.name));
    list.append(item);
  }
}

async function openIntent(name) {
  state.intent = name;
  location.hash = "intent=" + encodeURIComponent(name);
  showTab("intents");
  $("#intent-name").textContent = name;
  $("#add-example-form").hidden = false;
  $("#delete-intent").hidden = false;
  renderIntentList();
  const body = $("#examples tbody");
  body.replaceChildren();
  let data;
  try {
    data = await api("GET", "/intents/" + encodeURIComponent(name));
  } catch (error) {
    if (error.status === 404) return;  // a new intent: no examples yet
    throw error;
  }
  remember(data.versions);
  for (const example of data.examples) body.append(exampleRow(example));
}

// An intent created by a typo: remove it with all its examples (the server refuses the bot's own intents).
async function deleteIntent() {
  const name = state.intent;
  if (!name || !confirm(`删除意图 ${name} 及其全部例句？`)) return;
  try {
    await api("DELETE", "/intents/" + encodeURIComponent(name));
  } catch (error) {
    flash(error.message || String(error), "error");
    return;
  }
  state.intent = null;
  $("#intent-name").textContent = "选择左侧的意图";
  $("#delete-intent").hidden = true;
  $("#add-example-form").hidden = true;
  $("#examples tbody").replaceChildren();
  flash("已删除意图 " + name);
  await loadIntents();
}

function exampleRow(example) {
  const row = el("tr", { className: "example" });
  row.dataset.text = example.text;
  row.dataset.file = example.file;
  const text = el("td", { className: "text", textContent: example.text });
  const move = el("select", { className: "move-to" }, el("option", { value: "", textContent: "移到…" }));
  for (const intent of state.intents) if (intent.name !== state.intent) move.append(el("option", { value: intent.name, textContent: intent.name }));
  move.addEventListener("change", () => move.value && change(row, "move", { to_intent: move.value }));
  const edit = el("button", { className: "edit", textContent: "编辑", type: "button" });
  edit.addEventListener("click", () => startEdit(row, text));
  const remove = el("button", { className: "delete", textContent: "删除", type: "button" });
  remove.addEventListener("click", () => change(row, "delete"));
  row.append(text, el("td", { className: "file", textContent: example.file }), el("td", {}, edit, remove, move));
  return row;
}

function startEdit(row, cell) {
  const input = el("input", { className: "edit-input", value: row.dataset.text });
  const save = el("button", { className: "save", textContent: "保存", type: "button" });
  save.addEventListener("click", () => change(row, "edit", { new_text: input.value }));
  input.addEventListener("keydown", (event) => event.key === "Enter" && save.click());
  cell.replaceChildren(input, save);
  input.focus();
}

async function change(row, action, extra = {}) {
  const base = { file: row.dataset.file, base_version: state.versions[row.dataset.file], text: row.dataset.text };
  const path = "/intents/" + encodeURIComponent(state.intent) + "/examples";
  try {
    let result;
    if (action === "edit") result = await api("PUT", path, { ...base, ...extra });
    if (action === "move") result = await api("POST", path + "/move", { ...base, ...extra });
    if (action === "delete") result = await api("DELETE", path + "?" + new URLSearchParams(base));
    remember(result.versions);
    flash({ edit: "已保存", move: "已移动到 " + extra.to_intent, delete: "已删除" }[action]);
  } catch (error) {
    flash(error.code === "stale_version" ? "文件已被他人修改，已重新加载，请再改一次" : error.message, "error");
  }
  await loadIntents();
  await openIntent(state.intent);
}

async function addExample(event) {
  event.preventDefault();
  const text = $("#new-example").value.trim();
  if (!text) return;
  try {
    const result = await api("POST", "/intents/" + encodeURIComponent(state.intent) + "/examples", { text });
    remember(result.versions);
    $("#new-example").value = "";
    flash("已添加");
  } catch (error) {
    flash(error.message, "error");
  }
  await loadIntents();
  await openIntent(state.intent);
}

// ---- synonyms, regexes, lookups -------------------------------------------------------------------------------
async function loadResources() {
  const data = await api("GET", "/resources");
  remember(data.versions);
  $("#entities").textContent = data.entities.join(", ") + `（声明于 ${data.entities_declared_in}）`;
  const box = $("#resources");
  box.replaceChildren();
  for (const resource of [...data.synonyms, ...data.regexes, ...data.lookups]) box.append(resourceBox(resource));
}

function resourceBox(resource) {
  const area = el("textarea", { value: resource.examples.join("\n") });
  const save = el("button", { className: "save-resource", textContent: "保存", type: "button" });
  const remove = el("button", { className: "delete-resource", textContent: "删除", type: "button" });
  const path = `/resources/${resource.kind}/${encodeURIComponent(resource.name)}`;
  const handle = (promise, done) => promise.then((r) => { remember(r.versions); flash(done); })
    .catch((error) => flash(error.message, "error")).finally(loadResources);
  save.addEventListener("click", () => handle(api("PUT", path, {
    file: resource.file, base_version: state.versions[resource.file],
    examples: area.value.split("\n").map((s) => s.trim()).filter(Boolean),
  }), "已保存"));
  remove.addEventListener("click", () => handle(api("DELETE", path + "?" + new URLSearchParams({
    file: resource.file, base_version: state.versions[resource.file] })), "已删除"));
  const box = el("div", { className: "resource" }, el("strong", { textContent: `${resource.kind}: ${resource.name}` }),
    el("span", { className: "hint", textContent: "  " + resource.file }), area, save, remove);
  box.dataset.kind = resource.kind;
  box.dataset.name = resource.name;
  return box;
}

async function newResource(event) {
  event.preventDefault();
  const kind = $("#new-resource-kind").value;
  const name = $("#new-resource-name").value.trim();
  $("#resources").prepend(resourceBox({ kind, name, examples: [], file: "nlu/entities.yml" }));
}

async function declareEntity() {
  try {
    remember((await api("POST", "/entities", { name: $("#new-entity").value.trim() })).versions);
    flash("已声明");
  } catch (error) { flash(error.message, "error"); }
  loadResources();
}

// ---- validation ---------------------------------------------------------------------------------------------------
async function runValidation() {
  $("#validation-summary").textContent = "校验中…（rasa data validate 需要几秒）";
  const report = await api("POST", "/validate");
  $("#validation-summary").textContent = report.ok ? `通过：${report.warnings} 条提醒` : `${report.errors} 个错误，${report.warnings} 条提醒`;
  $("#validation-summary").dataset.ok = report.ok;
  const list = $("#issues");
  list.replaceChildren();
  for (const issue of report.issues) {
    const item = el("li", { className: "issue", textContent: `[${issue.code}] ${issue.message} ` });
    item.dataset.severity = issue.severity;
    if (issue.intent) {
      const link = el("a", { href: "#intent=" + encodeURIComponent(issue.intent), textContent: "→ " + issue.intent });
      link.addEventListener("click", (event) => { event.preventDefault(); openIntent(issue.intent); });
      item.append(link);
    }
    list.append(item);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", signOut);
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  $("#intent-filter").addEventListener("input", renderIntentList);
  $("#add-example-form").addEventListener("submit", addExample);
  $("#delete-intent").addEventListener("click", deleteIntent);
  $("#new-intent-form").addEventListener("submit", (event) => { event.preventDefault(); openIntent($("#new-intent").value.trim()); });
  $("#new-resource-form").addEventListener("submit", newResource);
  $("#declare-entity").addEventListener("click", declareEntity);
  $("#run-validate").addEventListener("click", runValidation);
  if (state.token) start(); else signOut();
});

window.studio = { api, flash, el, $, state, openIntent, loadIntents };
