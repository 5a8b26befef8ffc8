(function () {
  "use strict";
  const esc = (v) => window.escapeHtml(v === null || v === undefined ? "" : String(v));
  function table(el, cols, rows) {
    el.innerHTML = "<thead><tr>" + cols.map((c) => '<th scope="col">' + esc(c[0]) + "</th>").join("") + "</tr></thead><tbody>" +
      (rows.length ? rows.map((r) => "<tr>" + cols.map((c) => '<td class="' + (c[2] || "") + '">' + esc(c[1](r)) + "</td>").join("") + "</tr>").join("")
        : '<tr><td colspan="' + cols.length + '">nothing yet</td></tr>') + "</tbody>";
  }
  async function load() {
    const r = await fetch("/api/admin/stats?hours=" + document.getElementById("hours").value);
    const d = await r.json();
    if (!r.ok) { document.getElementById("error").textContent = d.error ? d.error.message : r.statusText; return; }
    document.getElementById("error").textContent = "";
    const l = d.live;
    document.getElementById("live").textContent = "Batching: " + l.batching + " · running now: " + l.running + " · largest batch: " + (l.max_batch_seen ?? "–") + " · up " + l.uptime_s + " s · comparisons " + d.counts.comparisons + " · edits " + d.counts.edits;
    const models = Object.entries(d.per_model).map(([k, v]) => Object.assign({ model: k }, v));
    table(document.getElementById("models"), [
      ["Checkpoint", (r) => r.model], ["Requests", (r) => r.requests, "num"], ["Errors", (r) => r.errors, "num"], ["Cancelled", (r) => r.cancelled, "num"],
      ["Latency p50/p95 ms", (r) => (r.latency_ms_p50 ?? "–") + " / " + (r.latency_ms_p95 ?? "–"), "num"],
      ["TTFT p50/p95 ms", (r) => (r.ttft_ms_p50 ?? "–") + " / " + (r.ttft_ms_p95 ?? "–"), "num"],
      ["Tokens in/out", (r) => r.prompt_tokens + " / " + r.completion_tokens, "num"],
      ["Up / down", (r) => r.thumbs_up + " / " + r.thumbs_down, "num"], ["Up ratio", (r) => r.thumbs_up_ratio ?? "–", "num"]], models);
    table(document.getElementById("flags"), [["When", (r) => r.created_at], ["Stage", (r) => r.stage], ["Rule", (r) => r.rule], ["Action", (r) => r.action], ["Text", (r) => r.text], ["Model", (r) => r.model]], d.flags);
    table(document.getElementById("feedback"), [["When", (r) => r.created_at], ["Rating", (r) => r.rating], ["Reason", (r) => r.reason], ["Answer", (r) => r.answer], ["Model", (r) => r.model]], d.recent_feedback);
  }
  document.getElementById("refresh").onclick = load;
  document.getElementById("hours").onchange = load;
  load(); setInterval(load, 10000);
})();
