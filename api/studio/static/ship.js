// NLU studio, part 2: training with live progress, versions side by side, activate / roll back, the inbox.
"use strict";

(() => {
  const { api, flash, el, $, state } = window.studio;
  let polling = null;

  async function startTraining() {
    try {
      const job = await api("POST", "/jobs/train");
      flash(`训练任务 #${job.id} 已开始`);
      follow(job.id);
    } catch (error) { flash(error.message, "error"); }
  }

  // Poll the job once a second while it runs; the bar, the stage and the log follow it live.
  function follow(jobId) {
    clearInterval(polling);
    const tick = async () => {
      const job = await api("GET", "/jobs/" + jobId);
      showJob(job);
      if (job.status === "succeeded" || job.status === "failed") {
        clearInterval(polling);
        polling = null;
        loadVersions();
      }
    };
    polling = setInterval(tick, 1000);
    tick();
  }

  function showJob(job) {
    const box = $("#job");
    box.hidden = false;
    box.dataset.status = job.status;
    box.dataset.kind = job.kind;
    box.dataset.id = job.id;
    $("#job-title").textContent = `${job.kind === "train" ? "训练" : "发布"} #${job.id}：${job.status}`;
    $("#job-stage").textContent = job.stage;
    $("#job-progress").value = job.progress;
    $("#job-percent").textContent = Math.round(job.progress * 100) + "%";
    let log = job.log_tail;
    if (job.error) log += "\n错误：" + job.error;
    for (const issue of (job.result && job.result.issues) || []) log += `\n[${issue.severity}] ${issue.message}`;
    $("#job-log").textContent = log;
  }

  async function resume() {
    const jobs = await api("GET", "/jobs");
    const live = jobs.find((j) => j.status === "queued" || j.status === "running");
    if (live) { showJob(live); follow(live.id); }
    loadInboxCount();
  }

  async function loadVersions() {
    const [versions, active] = await Promise.all([api("GET", "/versions"), api("GET", "/nlu")]);
    $("#active-nlu").textContent = `${active.model_file || "?"}（${active.url}）`;
    const body = $("#versions tbody");
    body.replaceChildren();
    for (const v of versions) {
      const row = el("tr", { className: "version" });
      row.dataset.id = v.id;
      row.dataset.active = v.active;
      const details = el("button", { className: "details", textContent: "对比", type: "button" });
      details.addEventListener("click", () => showVersion(v));
      const activate = el("button", { className: "activate", textContent: v.active ? "线上" : "发布 / 回滚到此版本", type: "button", disabled: v.active });
      activate.addEventListener("click", () => activateVersion(v, false));
      row.append(
        el("td", { textContent: v.id }), el("td", { textContent: v.model_file }), el("td", { textContent: v.created_by || v.source }),
        el("td", { textContent: new Date(v.created_at).toLocaleString() }), el("td", { textContent: v.duration_s ? v.duration_s + " s" : "" }),
        el("td", { className: "f1", textContent: v.macro_f1 == null ? "—" : v.macro_f1.toFixed(3) }),
        el("td", {}, v.active ? el("span", { className: "badge", textContent: "active" }) : v.status),
        el("td", {}, details, activate),
      );
      body.append(row);
    }
  }

  const fmt = (m) => (m ? `${m.precision.toFixed(2)} / ${m.recall.toFixed(2)} / ${m.f1.toFixed(2)}` : "—");

  async function showVersion(v) {
    const [detail, comparison] = await Promise.all([api("GET", "/versions/" + v.id), api("GET", `/versions/${v.id}/compare`)]);
    $("#version-detail").hidden = false;
    $("#version-detail").dataset.id = v.id;
    $("#version-title").textContent = `版本 #${v.id}（macro-F1 ${v.macro_f1 == null ? "未评估" : v.macro_f1.toFixed(3)}）对比线上版本` +
      (comparison.against_id ? ` #${comparison.against_id}` : "");
    const body = $("#comparison tbody");
    body.replaceChildren();
    for (const row of comparison.intents) {
      const delta = row.f1_delta == null ? "" : (row.f1_delta > 0 ? "+" : "") + row.f1_delta.toFixed(2);
      const cls = row.f1_delta < 0 ? "delta-neg" : row.f1_delta > 0 ? "delta-pos" : "";
      body.append(el("tr", { className: "comparison-row" }, el("td", { textContent: row.intent }), el("td", { textContent: fmt(row.version) }),
        el("td", { textContent: fmt(row.against) }), el("td", { className: cls, textContent: delta })));
    }
    const confusions = $("#confusions");
    confusions.replaceChildren();
    for (const c of ((detail.evaluation || {}).confusions || []).slice(0, 10)) {
      confusions.append(el("li", { textContent: `${c.intent} → ${c.predicted}：${c.count}（如「${c.examples.join("」「")}」）` }));
    }
    const image = $("#confusion");
    image.hidden = !v.has_confusion_image;
    if (v.has_confusion_image) {
      // Fetched with the bearer header (a token in an <img> URL would end up in access logs).
      const response = await fetch(`/studio/api/versions/${v.id}/confusion.svg`, { headers: { Authorization: "Bearer " + state.token } });
      if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
      image.src = URL.createObjectURL(await response.blob());
    }
  }

  async function activateVersion(v, override) {
    try {
      const job = await api("POST", `/versions/${v.id}/activate`, { override });
      flash(`正在发布版本 #${v.id}：新的 Rasa 载入模型后切换，期间不中断服务`);
      follow(job.id);
    } catch (error) {
      if (error.code === "worse_model" && confirm(error.message + "\n\n仍要发布吗？")) return activateVersion(v, true);
      flash(error.message, "error");
    }
  }

  // ---- inbox ----------------------------------------------------------------------------------------------------
  async function loadInboxCount() {
    const data = await api("GET", "/inbox");
    $("#inbox-count").textContent = data.total ? `(${data.total})` : "";
    return data;
  }

  async function loadInbox() {
    const data = await loadInboxCount();
    const box = $("#inbox");
    box.replaceChildren();
    if (!data.total) box.append(el("p", { textContent: "没有待处理的消息。" }));
    for (const group of data.groups) {
      const section = el("div", { className: "inbox-group" }, el("h3", { textContent: `${group.predicted_intent}（${group.items.length}）` }));
      for (const item of group.items) section.append(inboxItem(item));
      box.append(section);
    }
  }

  function inboxItem(item) {
    const choose = el("select", { className: "accept-intent" });
    for (const intent of state.intents) choose.append(el("option", { value: intent.name, textContent: intent.name }));
    choose.value = item.suggested_intent || (state.intents.some((i) => i.name === item.predicted_intent) ? item.predicted_intent : "");
    const accept = el("button", { className: "accept", textContent: "加入训练数据", type: "button" });
    accept.addEventListener("click", async () => {
      try {
        await api("POST", `/inbox/${item.id}/accept`, { intent: choose.value });
        flash("已加入 " + choose.value);
      } catch (error) { flash(error.message, "error"); }
      loadInbox();
    });
    const dismiss = el("button", { className: "dismiss", textContent: "忽略", type: "button" });
    dismiss.addEventListener("click", async () => { await api("POST", `/inbox/${item.id}/dismiss`); loadInbox(); });
    const confidence = item.confidence == null ? "" : ` ${(item.confidence * 100).toFixed(0)}%`;
    const row = el("div", { className: "inbox-item" }, el("span", { className: "text", textContent: item.text }),
      el("span", { className: "hint", textContent: ` ${item.reason}${confidence} ` }), choose, accept, dismiss);
    row.dataset.id = item.id;
    return row;
  }

  document.addEventListener("DOMContentLoaded", () => $("#start-training").addEventListener("click", startTraining));
  window.studioShip = { resume, loadVersions, loadInbox };
})();
