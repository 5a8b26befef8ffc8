// The chat UI: plain JS, no build step. Talks to /api/* with the session cookie; replies stream over SSE (fetch).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = { conv: null, messages: [], abort: null, busy: false };

  async function api(method, path, body) {
    const opts = { method: method, headers: {} };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const r = await fetch(path, opts);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { const e = new Error((data.error && data.error.message) || r.statusText); e.status = r.status; throw e; }
    return data;
  }
  function status(text) { $("status").textContent = text || ""; }

  // ---- streaming ------------------------------------------------------------------------------------------------
  async function stream(path, body, onEvent) {
    state.abort = new AbortController();
    setBusy(true);
    try {
      const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body || {}), signal: state.abort.signal });
      if (!r.ok) { const d = await r.json().catch(() => ({})); throw new Error((d.error && d.error.message) || r.statusText); }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let k;
        while ((k = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, k); buf = buf.slice(k + 2);
          if (chunk.startsWith("data: ")) onEvent(JSON.parse(chunk.slice(6)));
        }
      }
    } catch (e) {
      if (e.name === "AbortError") status("Stopped."); else status("Error: " + e.message);
    } finally { state.abort = null; setBusy(false); }
  }
  function setBusy(b) {
    state.busy = b; $("send").hidden = b; $("stop").hidden = !b;
    document.querySelectorAll(".msg-actions button").forEach((x) => { x.disabled = b; });
  }

  // ---- rendering ------------------------------------------------------------------------------------------------
  function visibleMessages() {
    // Active messages, plus inactive alternatives that are still waiting for an A/B choice.
    return state.messages.filter((m) => m.active);
  }
  function msgNode(m) {
    const el = document.createElement("article");
    el.className = "msg " + m.role; el.dataset.id = m.id; el.dataset.testid = "message-" + m.role;
    el.setAttribute("aria-label", m.role === "user" ? "Your message" : "Assistant reply");
    const body = document.createElement("div"); body.className = "msg-body";
    body.innerHTML = m.role === "assistant" ? window.renderMarkdown(m.content) : "<p>" + window.escapeHtml(m.content).replace(/\n/g, "<br>") + "</p>";
    el.appendChild(body);
    if (m.role === "assistant" && m.id) el.appendChild(actions(m));
    return el;
  }
  function actions(m) {
    const bar = document.createElement("div"); bar.className = "msg-actions";
    const fb = m.feedback ? (m.feedback.rating > 0 ? "up" : "down") : null;
    const btn = (label, text, cls, fn) => { const b = document.createElement("button"); b.type = "button"; b.className = cls || ""; b.textContent = text; b.setAttribute("aria-label", label); b.onclick = fn; bar.appendChild(b); return b; };
    btn("Copy reply", "Copy", "copy", () => navigator.clipboard && navigator.clipboard.writeText(m.content).then(() => status("Copied.")));
    btn("Regenerate reply", "Regenerate", "regenerate", () => regenerate(m));
    btn("Edit reply", "Edit", "edit", () => editMessage(m, bar.parentNode));
    const up = btn("Good reply", "▲ Good", "thumb-up", () => thumbs(m, "up", null));
    const down = btn("Bad reply", "▼ Bad", "thumb-down", () => askReason(m, bar));
    up.setAttribute("aria-pressed", String(fb === "up")); down.setAttribute("aria-pressed", String(fb === "down"));
    return bar;
  }
  function render() {
    const box = $("messages"); box.innerHTML = "";
    visibleMessages().forEach((m) => box.appendChild(msgNode(m)));
    box.scrollTop = box.scrollHeight;
    $("chat-title").textContent = state.conv ? state.conv.title : "New chat";
    $("system-prompt").value = state.conv && state.conv.system_prompt || "";
  }

  // ---- conversations --------------------------------------------------------------------------------------------
  async function loadList() {
    const data = await api("GET", "/api/conversations");
    const ul = $("conversation-list"); ul.innerHTML = "";
    data.conversations.forEach((c) => {
      const li = document.createElement("li");
      const b = document.createElement("button"); b.type = "button"; b.className = "conv" + (state.conv && state.conv.id === c.id ? " current" : "");
      b.textContent = c.title; b.dataset.id = c.id;
      if (state.conv && state.conv.id === c.id) b.setAttribute("aria-current", "true");
      b.onclick = () => { openConv(c.id); document.body.classList.remove("show-sidebar"); };
      li.appendChild(b); ul.appendChild(li);
    });
  }
  async function openConv(id) {
    const c = await api("GET", "/api/conversations/" + id);
    state.conv = c; state.messages = c.messages; render(); loadList();
  }
  async function newConv() {
    state.conv = null; state.messages = []; render(); loadList(); $("input").focus();
  }
  async function ensureConv() {
    if (!state.conv) {
      const sys = $("system-prompt").value.trim();
      state.conv = await api("POST", "/api/conversations", sys ? { system_prompt: sys } : {});
      state.messages = [];
    }
    return state.conv;
  }

  async function send(text) {
    const conv = await ensureConv();
    const box = $("messages");
    const user = { role: "user", content: text, active: true };
    const pending = { role: "assistant", content: "", active: true };
    state.messages.push(user, pending);
    box.appendChild(msgNode(user));
    const node = msgNode(pending); node.classList.add("streaming"); box.appendChild(node);
    const body = node.querySelector(".msg-body");
    await stream("/api/conversations/" + conv.id + "/messages", { content: text }, (ev) => {
      if (ev.type === "start") Object.assign(user, ev.user_message);
      else if (ev.type === "delta") { pending.content += ev.text; body.innerHTML = window.renderMarkdown(pending.content); box.scrollTop = box.scrollHeight; }
      else if (ev.type === "done") { Object.assign(pending, ev.message); status(""); }
      else if (ev.type === "error") status("Error: " + ev.message);
    });
    await openConv(conv.id);
  }

  async function regenerate(m) {
    const alt = { role: "assistant", content: "" };
    const panel = document.createElement("section"); panel.className = "ab"; panel.setAttribute("aria-label", "Compare two answers");
    panel.innerHTML = '<h3>Which answer is better?</h3><div class="ab-grid"><div class="ab-col"><h4>Answer A</h4><div class="msg-body a"></div></div>' +
      '<div class="ab-col"><h4>Answer B</h4><div class="msg-body b"></div></div></div>' +
      '<div class="ab-choices"><button type="button" class="choose-a" disabled>A is better</button><button type="button" class="choose-b" disabled>B is better</button><button type="button" class="choose-tie" disabled>About the same</button></div>';
    panel.querySelector(".a").innerHTML = window.renderMarkdown(m.content);
    const bBody = panel.querySelector(".b");
    const node = document.querySelector('.msg[data-id="' + m.id + '"]');
    node.replaceWith(panel);
    await stream("/api/messages/" + m.id + "/regenerate", {}, (ev) => {
      if (ev.type === "delta") { alt.content += ev.text; bBody.innerHTML = window.renderMarkdown(alt.content); }
      else if (ev.type === "done") Object.assign(alt, ev.message);
      else if (ev.type === "error") status("Error: " + ev.message);
    });
    if (!alt.id) { await openConv(state.conv.id); return; }
    const choose = async (choice) => {
      await api("POST", "/api/comparisons", { message_a: m.id, message_b: alt.id, choice: choice });
      await openConv(state.conv.id); status("Thanks: your choice was recorded.");
    };
    panel.querySelectorAll(".ab-choices button").forEach((b) => { b.disabled = false; });
    panel.querySelector(".choose-a").onclick = () => choose("a");
    panel.querySelector(".choose-b").onclick = () => choose("b");
    panel.querySelector(".choose-tie").onclick = () => choose("tie");
  }

  function editMessage(m, node) {
    const form = document.createElement("form"); form.className = "edit-form";
    form.innerHTML = '<label>Corrected answer<textarea class="edit-text" rows="6"></textarea></label><div><button type="submit" class="save-edit">Save edit</button> <button type="button" class="cancel-edit">Cancel</button></div>';
    form.querySelector("textarea").value = m.content;
    form.querySelector(".cancel-edit").onclick = () => render();
    form.onsubmit = async (e) => {
      e.preventDefault();
      try { await api("POST", "/api/messages/" + m.id + "/edit", { content: form.querySelector("textarea").value }); await openConv(state.conv.id); status("Edit saved."); }
      catch (err) { status("Error: " + err.message); }
    };
    node.replaceWith(form); form.querySelector("textarea").focus();
  }

  function askReason(m, bar) {
    if (bar.parentNode.querySelector(".reason-form")) return;
    const form = document.createElement("form"); form.className = "reason-form";
    form.innerHTML = '<label>What was wrong? (optional)<input class="reason-input" maxlength="2000"></label> <button type="submit" class="send-reason">Send feedback</button>';
    form.onsubmit = async (e) => { e.preventDefault(); await thumbs(m, "down", form.querySelector("input").value); };
    bar.after(form); form.querySelector("input").focus();
  }
  async function thumbs(m, rating, reason) {
    try { await api("POST", "/api/messages/" + m.id + "/feedback", { rating: rating, reason: reason || null }); await openConv(state.conv.id); status("Feedback recorded."); }
    catch (err) { status("Error: " + err.message); }
  }

  // ---- wiring ---------------------------------------------------------------------------------------------------
  async function boot() {
    try {
      const me = await api("GET", "/api/me");
      $("login-view").hidden = true; $("app-view").hidden = false;
      $("whoami").textContent = me.user + " · " + me.model; $("admin-link").hidden = !me.is_admin;
      await loadList(); render();
    } catch (e) {
      $("app-view").hidden = true; $("login-view").hidden = false; $("login-user").focus();
    }
  }
  $("login-form").onsubmit = async (e) => {
    e.preventDefault();
    try { await api("POST", "/auth/login", { username: $("login-user").value, password: $("login-pass").value }); $("login-error").textContent = ""; boot(); }
    catch (err) { $("login-error").textContent = err.message; }
  };
  $("logout").onclick = async () => { await api("POST", "/auth/logout"); location.reload(); };
  $("composer").onsubmit = (e) => {
    e.preventDefault();
    const text = $("input").value;
    if (!text.trim() || state.busy) return;
    $("input").value = ""; send(text);
  };
  $("input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); } });
  $("stop").onclick = () => { if (state.abort) state.abort.abort(); };
  $("new-chat").onclick = newConv;
  $("rename-chat").onclick = async () => {
    if (!state.conv) return;
    const t = prompt("Rename conversation", state.conv.title);
    if (t && t.trim()) { state.conv = Object.assign(state.conv, await api("PATCH", "/api/conversations/" + state.conv.id, { title: t })); render(); loadList(); }
  };
  $("delete-chat").onclick = async () => {
    if (!state.conv || !confirm("Delete this conversation?")) return;
    await api("DELETE", "/api/conversations/" + state.conv.id); newConv();
  };
  $("toggle-system").onclick = () => { const p = $("system-panel"); p.hidden = !p.hidden; $("toggle-system").setAttribute("aria-expanded", String(!p.hidden)); };
  $("save-system").onclick = async () => {
    if (state.conv) { await api("PATCH", "/api/conversations/" + state.conv.id, { system_prompt: $("system-prompt").value }); status("System prompt saved."); }
    else status("The system prompt applies to the next new chat.");
  };
  $("open-sidebar").onclick = () => document.body.classList.add("show-sidebar");
  $("close-sidebar").onclick = () => document.body.classList.remove("show-sidebar");
  $("messages").addEventListener("click", (e) => {
    if (e.target.classList.contains("copy-code")) navigator.clipboard && navigator.clipboard.writeText(e.target.parentNode.querySelector("code").textContent).then(() => status("Code copied."));
  });
  boot();
})();
