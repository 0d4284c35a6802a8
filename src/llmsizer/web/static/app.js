// The llmsizer page: forms built from /api/schema (the CLI's own flags), results from
// /api/view/<command> (the CLI's JSON plus chart specs), the URL holding every input.
"use strict";
(function () {
  const VIEWS = [["params", "Parameters"], ["train", "Training"], ["finetune", "Fine-tuning"], ["infer", "Inference"],
    ["plan", "Plan"], ["simulate", "Simulate"]];
  // Flags shown up front; the rest go under "More options".
  const PRIMARY = ["model", "gpu", "gpus", "tp", "pp", "ep", "zero", "precision", "seq",
    "global-batch", "micro-batch", "recompute", "tokens", "batch", "prompt", "output",
    "weights", "kv-dtype", "sweep", "method", "lora-rank", "base-weights", "qps", "concurrency", "requests", "engine", "explain"];
  const HIDDEN = ["lang", "json", "export"];
  // Views' defaults where the CLI requires a value (a page opens with a computed example).
  const STARTERS = {
    params: { model: "llama-2-7b" },
    train: { model: "llama-2-7b", gpu: "a100", gpus: "8", zero: "1", "global-batch": "64" },
    finetune: { model: "llama-2-7b", gpu: "a100", method: "lora" },
    infer: { model: "llama-2-7b", gpu: "a100", batch: "8", sweep: "1" },
    plan: { model: "llama-2-7b", gpu: "a100", gpus: "16", seq: "4096", "global-batch": "256" },
    simulate: { model: "llama-2-7b", gpu: "a100", requests: "200", qps: "5" },
  };
  // key numbers per view: [label, path in the JSON, format]
  const SUMMARY = {
    params: [["Total parameters", "total", "count"], ["Active parameters", "active", "count"]],
    train: [["Memory total per device", "memory_per_device.total", "bytes"],
      ["Fits in memory", "fits", "bool"], ["Step time", "step_time_s", "seconds"],
      ["Tokens per second", "tokens_per_s", "rate"], ["MFU", "mfu", "percent"],
      ["Time to train", "time_to_train_s", "seconds"]],
    finetune: [["Memory total per device", "memory_per_device.total", "bytes"],
      ["Fits in memory", "fits", "bool"], ["Trainable parameters", "trainable_params", "count"],
      ["Step time", "step_time_s", "seconds"], ["Tokens per second", "tokens_per_s", "rate"],
      ["Time to train", "time_to_train_s", "seconds"]],
    infer: [["Weights per device", "weights_bytes_per_device", "bytes"],
      ["KV cache per token", "kv_cache_bytes_per_token", "bytes"],
      ["Max concurrency", "max_concurrency", "int"], ["TTFT", "ttft_s", "seconds"],
      ["TPOT", "tpot_s", "seconds"], ["End-to-end latency", "e2e_latency_s", "seconds"],
      ["Throughput (output tokens/s)", "throughput_tokens_per_s", "rate"]],
    plan: [["Layouts evaluated", "evaluated", "int"], ["Layouts that fit", "fitting", "int"],
      ["Best step time", "plans.0.step_time_s", "seconds"]],
    simulate: [["TTFT p50", "ttft_s.p50", "seconds"], ["TTFT p99", "ttft_s.p99", "seconds"],
      ["TPOT p50", "tpot_s.p50", "seconds"], ["E2E p50", "e2e_latency_s.p50", "seconds"],
      ["E2E p99", "e2e_latency_s.p99", "seconds"],
      ["Throughput (output tokens/s)", "throughput_tokens_per_s", "rate"],
      ["Requests per second", "requests_per_s", "rate"]],
  };

  let schema = null, messages = {}, view = "train", lang = "en", gpus = [];
  const $ = id => document.getElementById(id);
  const t = s => messages[s] || s;

  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    for (const c of children) if (c) e.appendChild(c);
    return e;
  }

  async function getJSON(url, options) {
    const r = await fetch(url, options);
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }

  // -- formatting ---------------------------------------------------------------------------
  function get(obj, path) {
    return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
  }
  function fmt(v, kind) {
    if (v === null || v === undefined) return "–";
    if (kind === "bool") return t(v ? "yes" : "no");
    if (kind === "bytes") {
      const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
      let i = 0, x = v;
      while (Math.abs(x) >= 1024 && i < units.length - 1) { x /= 1024; i++; }
      return (i ? x.toFixed(2) : String(x)) + " " + units[i];
    }
    if (kind === "seconds") {
      if (v >= 86400) return (v / 86400).toFixed(1) + " d";
      if (v >= 3600) return (v / 3600).toFixed(1) + " h";
      if (v >= 1) return v.toFixed(2) + " s";
      if (v >= 1e-3) return (v * 1e3).toFixed(1) + " ms";
      return (v * 1e6).toFixed(1) + " µs";
    }
    if (kind === "percent") return (v * 100).toFixed(1) + "%";
    if (kind === "count") {
      for (const [d, s] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]])
        if (Math.abs(v) >= d) return (v / d).toFixed(2) + s;
      return String(v);
    }
    if (kind === "int") return Math.round(v).toLocaleString("en-US");
    if (kind === "rate") return v.toLocaleString("en-US", { maximumFractionDigits: 1 });
    return String(v);
  }

  // -- the form -----------------------------------------------------------------------------
  function flagsOf(command) { return schema.commands[command].flags.filter(f => f.web); }

  function input(flag, value) {
    const label = h("label", { title: flag.help, "data-flag": flag.name });
    const name = flag.name;
    let control;
    if (flag.type === "bool") {
      control = h("input", { type: "checkbox", name: name, id: "f-" + name });
      control.checked = ["1", "true", "on", "yes", ""].includes(value === undefined ? "0" : value);
      label.className = "bool";
      label.append(control, h("span", { text: name }));
      return label;
    }
    if (name === "gpu") {
      control = h("select", { name: name, id: "f-" + name });
      for (const g of gpus) control.appendChild(h("option", { value: g.name, text: g.name }));
      if (value && !gpus.some(g => g.name === value))
        control.appendChild(h("option", { value: value, text: value }));
      control.value = value || "";
    } else if (flag.choices) {
      control = h("select", { name: name, id: "f-" + name });
      control.appendChild(h("option", { value: "", text: "" }));
      for (const c of flag.choices) control.appendChild(h("option", { value: c, text: c }));
      control.value = value || "";
    } else {
      control = h("input", { type: "text", name: name, id: "f-" + name,
        placeholder: flag.default === null ? "" : String(flag.default) });
      if (name === "model") {
        control.setAttribute("list", "model-list");
        control.setAttribute("placeholder", t("Search a catalog model"));
      }
      control.value = value || "";
    }
    label.append(h("span", { text: name + (flag.required ? " *" : "") }), control);
    return label;
  }

  function buildForm(values) {
    $("fields").replaceChildren(); $("more-fields").replaceChildren();
    for (const f of flagsOf(view)) {
      if (HIDDEN.includes(f.name)) continue;
      const box = PRIMARY.includes(f.name) ? $("fields") : $("more-fields");
      box.appendChild(input(f, values[f.name]));
    }
    const cmp = $("compare");
    cmp.replaceChildren(h("option", { value: "", text: "–" }));
    for (const g of gpus) cmp.appendChild(h("option", { value: g.name, text: g.name }));
    if (values.compare && !gpus.some(g => g.name === values.compare))
      cmp.appendChild(h("option", { value: values.compare, text: values.compare }));
    cmp.value = values.compare || "";
    $("compare").parentElement.hidden = !flagsOf(view).some(f => f.name === "gpu");
  }

  function formValues() {
    const out = [];
    for (const f of flagsOf(view)) {
      const e = $("f-" + f.name);
      if (!e) continue;
      if (f.type === "bool") { if (e.checked) out.push([f.name, "1"]); }
      else if (e.value.trim() !== "") out.push([f.name, e.value.trim()]);
    }
    if (lang !== "en") out.push(["lang", lang]);
    return out;
  }

  // -- results ------------------------------------------------------------------------------
  function summaryTable(results) {
    const head = h("tr", {}, h("th", { text: "" }));
    for (const r of results) head.appendChild(h("th", { text: r.label }));
    const table = h("table", { id: "summary" }, head);
    for (const [label, path, kind] of SUMMARY[view]) {
      const row = h("tr", {}, h("th", { text: t(label) }));
      for (const r of results) {
        const v = get(r.body.result, path);
        row.appendChild(h("td", { class: "num", "data-key": path,
          "data-value": v === undefined ? "" : JSON.stringify(v), text: fmt(v, kind) }));
      }
      table.appendChild(row);
    }
    return table;
  }

  function plansTable(data) {
    const table = h("table", { id: "plans" }, h("tr", {},
      ...["layout", "peak memory", "Step time", "Tokens per second"].map(s => h("th", { text: t(s) }))));
    for (const p of data.plans || []) {
      table.appendChild(h("tr", {}, h("td", { text: p.summary }),
        h("td", { class: "num", text: fmt(p.peak_memory_bytes, "bytes") }),
        h("td", { class: "num", text: fmt(p.step_time_s, "seconds") }),
        h("td", { class: "num", text: fmt(p.tokens_per_s, "rate") })));
    }
    return table;
  }

  function render(results) {
    const box = $("results");
    box.replaceChildren(h("h2", { text: t("Results") }), summaryTable(results));
    const first = results[0].body;
    if (view === "plan") box.appendChild(plansTable(first.result));
    const notes = results.flatMap(r => r.body.notes);
    if (notes.length) box.appendChild(h("p", { class: "notes", text: t("Notes") + ": " + notes.join(" · ") }));
    box.appendChild(h("h2", { text: t("Charts") }));
    const cols = h("div", { class: "columns" });
    for (const r of results) {
      const charts = h("div", { class: "charts", "data-for": r.label });
      for (const spec of r.body.charts) {
        if (results.length > 1) spec.title = r.label + " · " + spec.title;
        charts.appendChild(LlmsizerChart.render(spec));
      }
      cols.appendChild(charts);
    }
    box.appendChild(cols);
    const explain = first.result.explain;
    if (explain) {
      box.appendChild(h("h2", { text: t("Formulas") }));
      box.appendChild(h("pre", { id: "explain", text: Array.isArray(explain) &&
        explain.every(x => typeof x === "string") ? explain.join("\n") : JSON.stringify(explain, null, 2) }));
    }
  }

  function showError(message) {
    $("error").hidden = !message;
    $("error").textContent = message || "";
  }

  async function compute() {
    const pairs = formValues();
    const compare = $("compare").value;
    const url = new URLSearchParams([["view", view], ...pairs]);
    if (compare) url.append("compare", compare);
    const link = "/?" + url.toString();
    history.replaceState(null, "", link);
    $("permalink").href = link;
    const runs = [{ label: (get(Object.fromEntries(pairs), "gpu") || ""), pairs: pairs }];
    if (compare) runs.push({ label: compare, pairs: pairs.map(([k, v]) => [k, k === "gpu" ? compare : v]) });
    try {
      const bodies = await Promise.all(runs.map(r =>
        getJSON(`/api/view/${view}?` + new URLSearchParams(r.pairs).toString())));
      bodies.forEach((b, i) => { runs[i].body = b; });
      showError("");
      render(runs);
      document.body.dataset.ready = "1";
    } catch (e) {
      showError(e.message);
      $("results").replaceChildren();
      document.body.dataset.ready = "1";
    }
  }

  function translatePage() {
    document.documentElement.lang = lang;
    for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
    for (const b of $("views").children) b.textContent = t(b.dataset.label);
  }

  async function setLang(next) {
    lang = next;
    messages = lang === "en" ? {} : (await getJSON("/api/i18n?lang=" + lang)).messages;
    translatePage();
  }

  function switchView(next, values) {
    view = next;
    for (const b of $("views").children)
      b.setAttribute("aria-current", b.dataset.view === view ? "page" : "false");
    buildForm(values);
  }

  async function loadModels() {  // the search list; not needed before the first answer
    try {
      const models = await getJSON("/api/models");
      $("model-list").replaceChildren(...models.map(m =>
        h("option", { value: m.name, text: m.display_name || m.name })));
    } catch (e) { /* the field still takes any name */ }
  }

  async function main() {
    const params = new URLSearchParams(location.search);
    const requested = params.get("view");
    view = VIEWS.some(v => v[0] === requested) ? requested : "train";
    const [s, g] = await Promise.all([getJSON("/api/schema"), getJSON("/api/gpus")]);
    schema = s; gpus = g;
    await setLang(params.get("lang") === "zh" ? "zh" : "en");
    $("lang").value = lang;
    for (const [name, label] of VIEWS) {
      const b = h("button", { type: "button", "data-view": name, "data-label": label, text: t(label) });
      b.addEventListener("click", () => { switchView(name, STARTERS[name]); compute(); });
      $("views").appendChild(b);
    }
    const values = {};
    for (const [k, v] of params) values[k] = v;
    const given = Object.keys(values).some(k => k !== "view" && k !== "lang");
    switchView(view, given ? values : STARTERS[view]);
    $("form").addEventListener("submit", ev => { ev.preventDefault(); compute(); });
    $("lang").addEventListener("change", async () => { await setLang($("lang").value); compute(); });
    $("config-use").addEventListener("click", async () => {
      try {
        const r = await getJSON("/api/config", { method: "POST",
          headers: { "Content-Type": "application/json" }, body: $("config-text").value });
        $("f-model").value = r.model;
        compute();
      } catch (e) { showError(e.message); }
    });
    document.body.dataset.interactive = String(Math.round(performance.now()));
    await compute();
    loadModels();
  }

  document.addEventListener("DOMContentLoaded", () => {
    main().catch(e => showError(String(e.message || e)));
  });
})();
