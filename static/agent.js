// The agent workspace: one websocket for the live inbox and the open transcript; every text set as text.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const page = $("transcript-page"), inboxPage = $("inbox"), badge = $("agent-connection"), alertBox = $("alert");
  const conversationId = page ? page.dataset.conversation : null;
  const me = page ? page.dataset.me : null;
  const STATUS_LABELS = { bot: "With the bot", waiting: "Waiting for an agent", agent: "With an agent", closed: "Closed" };
  let socket = null, retryDelay = 500, status = page ? page.dataset.status : null, holder = page ? page.dataset.holder : "";

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/agent/`);
    socket.onopen = () => {
      retryDelay = 500;
      if (conversationId) send({ type: "watch", conversation_id: conversationId });
    };
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = (event) => {
      setBadge("Reconnecting…", "offline");
      if (event.code === 4401 || event.code === 4403) { showAlert("Your session has ended: sign in again."); return; }
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(frame)); return true; }
    showAlert("Not connected; try again in a moment.");
    return false;
  }

  // The knowledge page says live that entries changed (a colleague approved one, a new suggestion
  // came in); it does not redraw under the reader's hands: "Show the latest" reloads the view.
  const changedEntries = new Set();
  function noteKnowledgeChange(entry) {
    const notice = $("knowledge-changed");
    if (!notice || !entry) return;
    changedEntries.add(entry.id);
    const n = changedEntries.size;
    notice.querySelector("span").textContent =
      `${n} ${n === 1 ? "entry has" : "entries have"} changed since this page was drawn (latest: “${entry.question}”, ${entry.status}${entry.conflict ? ", in conflict" : ""}).`;
    notice.querySelector("a").href = location.pathname + location.search;
    notice.hidden = false;
  }

  const forThisConversation = (frame) => conversationId && frame.conversation_id === conversationId;

  const handlers = {
    hello() { setBadge("Live", "online"); },
    knowledge(frame) { noteKnowledgeChange(frame.entry); },
    inbox(frame) {
      if (inboxPage) upsertRow(frame.conversation);
      if (frame.alert && frame.conversation.status === "waiting") alertWaiting(frame.conversation);
    },
    history(frame) {
      if (!forThisConversation(frame)) return;
      frame.messages.forEach(renderMessage);
      setStatus(frame.conversation);
      page.dataset.watching = "1"; // live from here on
    },
    message(frame) {
      if (!forThisConversation(frame)) return;
      renderMessage(frame.message);
      if (frame.message.role === "customer") showCustomerTyping(false);
    },
    // The customer types (their page sends one frame every 2 s while typing): shown for 5 s.
    typing(frame) {
      if (forThisConversation(frame) && frame.who === "customer") showCustomerTyping(true, frame.name);
    },
    delta(frame) {
      if (!forThisConversation(frame)) return;
      const li = messageItem(frame.message_id);
      if (!li) return;
      const body = li.querySelector(".body");
      if (frame.offset <= body.textContent.length) body.textContent = body.textContent.slice(0, frame.offset) + frame.text;
      setClass(li, "streaming");
    },
    done(frame) {
      if (!forThisConversation(frame)) return;
      const li = messageItem(frame.message_id);
      if (!li) return;
      li.querySelector(".body").textContent = frame.text;
      drawMeta(li, frame.status + (frame.error ? ": " + frame.error : ""));
      setClass(li, frame.status);
    },
    status(frame) { if (forThisConversation(frame)) setStatus(frame.conversation); },
    review(frame) {
      if (inboxPage) reviewRow(frame);
      if (forThisConversation(frame)) applyReview(frame);
    },
    notice() {},
    error(frame) { showAlert(frame.detail); },
  };

  // Other workspace scripts (loaded after this one) hear the same frames and send on the same
  // socket: window.agentWorkspace.on("note", fn), .send(frame). Frames they handle alone (note,
  // activity) need no handler here.
  const listeners = {};
  window.agentWorkspace = {
    conversationId,
    me,
    on(type, fn) { (listeners[type] = listeners[type] || []).push(fn); },
    send: (frame) => send(frame),
    post: (url, data) => post(url, data),
    showAlert: (text) => showAlert(text),
  };

  function handle(frame) {
    (handlers[frame.type] || (() => {}))(frame);
    (listeners[frame.type] || []).forEach((fn) => fn(frame));
  }

  // The inbox.

  const inboxRow = (id) => $("rows").querySelector(`tr[data-id="${CSS.escape(String(id))}"]`);

  function upsertRow(item) {
    const rows = $("rows");
    let row = inboxRow(item.id);
    if (!row) {
      // New rows only join the first, unfiltered page: anywhere else they might not belong.
      if (inboxPage.dataset.page !== "1" || location.search.replace(/[?&]page=1\b/, "").length > 1) return;
      row = $("row-template").content.firstElementChild.cloneNode(true);
      row.dataset.id = item.id;
      row.querySelector("input").value = item.id;
      const link = row.querySelector("a.customer");
      link.href = `/agent/conversations/${encodeURIComponent(item.id)}/`;
      link.textContent = item.customer;
      const time = row.querySelector("time");
      time.dateTime = item.created_at;
      time.textContent = item.created_at.slice(0, 16).replace("T", " ");
      const empty = rows.querySelector("tr.empty");
      if (empty) empty.remove();
      rows.prepend(row);
    }
    row.className = `status-${item.status} fresh`;
    row.dataset.status = item.status;
    row.querySelector(".status").textContent = item.status_label;
    row.querySelector(".last").textContent = item.last_text;
    row.querySelector(".agent").textContent = item.agent;
    const count = row.querySelector(".count");
    if (count) count.textContent = "";
    if ("reviewed" in item) setFlag(row, "reviewed", item.reviewed);
    if ("has_negative" in item) setFlag(row, "negative", item.has_negative);
    checkFilters(row);
  }

  // A rating or a review saved elsewhere: the row's flags follow. A thumbs down sets the negative
  // flag; a thumbs up cannot clear it (another reply may still have one) unless the frame says so.
  function reviewRow(frame) {
    const row = inboxRow(frame.conversation_id);
    if (!row) return;
    if ("reviewed" in frame) setFlag(row, "reviewed", frame.reviewed);
    const negative = ["agent_feedback", "customer_feedback"].some((key) => frame[key] && frame[key].positive === false);
    if ("has_negative" in frame) setFlag(row, "negative", frame.has_negative);
    else if (negative) setFlag(row, "negative", true);
    checkFilters(row);
  }

  const FLAGS = {
    negative: { className: "flag bad negative", title: "Has negative feedback", text: "👎" },
    reviewed: { className: "flag reviewed", title: "Reviewed", text: "✔" },
  };
  const hasFlag = (row, name) => !!row.querySelector(`.flags .flag.${name}`);

  function setFlag(row, name, on) {
    const cell = row.querySelector(".flags"), shown = cell.querySelector(`.flag.${name}`);
    if (!on) { if (shown) shown.remove(); return; }
    if (shown) return;
    const flag = document.createElement("span");
    flag.className = FLAGS[name].className;
    flag.title = FLAGS[name].title;
    flag.textContent = FLAGS[name].text;
    if (name === "negative") cell.prepend(flag); else cell.append(flag);
  }

  // On a filtered inbox a row that changed may no longer belong: say so rather than keep it silently.
  // Only what can change after a conversation starts is checked: status, review, negative feedback.
  function checkFilters(row) {
    const params = new URLSearchParams(location.search);
    const wanted = params.get("status"), reviewed = params.get("reviewed");
    const misfits = [];
    if (wanted in STATUS_LABELS && row.dataset.status && row.dataset.status !== wanted) misfits.push("status");
    if ((reviewed === "yes" || reviewed === "no") && hasFlag(row, "reviewed") !== (reviewed === "yes")) misfits.push("reviewed");
    if (["1", "on", "true"].includes(params.get("negative")) && !hasFlag(row, "negative")) misfits.push("negative feedback");
    const stale = misfits.length > 0, status = row.querySelector(".status");
    let note = status.querySelector(".stale-note");
    row.classList.toggle("stale", stale);
    if (!stale) { if (note) note.remove(); return; }
    if (!note) {
      note = document.createElement("small");
      note.className = "stale-note";
      const why = document.createElement("span"), reload = document.createElement("a");
      why.className = "why";
      reload.href = location.pathname + location.search;
      reload.textContent = "reload";
      note.append(document.createElement("br"), why, reload);
      status.append(note);
    }
    note.querySelector(".why").textContent = `No longer matches the filters (${misfits.join(", ")}): `;
  }

  function alertWaiting(item) {
    alertBox.replaceChildren();
    const text = document.createElement("span");
    text.textContent = `${item.customer} is waiting for an agent. `;
    const link = document.createElement("a");
    link.href = `/agent/conversations/${encodeURIComponent(item.id)}/`;
    link.textContent = "Open the conversation";
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.textContent = "Dismiss";
    dismiss.onclick = () => { alertBox.hidden = true; };
    alertBox.append(text, link, dismiss);
    alertBox.hidden = false;
    alertBox.classList.add("waiting");
    if (soundOn()) beep();
  }

  // Browsers only let a page play sound after a click on it: the audio context is made on one.
  const sound = $("sound");
  const soundOn = () => localStorage.getItem("agent.sound") === "1";
  let audio = null;
  const unlockAudio = () => {
    if (audio || !soundOn()) return;
    try { audio = new (window.AudioContext || window.webkitAudioContext)(); } catch (error) { audio = null; }
  };
  document.addEventListener("click", unlockAudio);
  document.addEventListener("keydown", unlockAudio);
  if (sound) {
    sound.checked = soundOn();
    sound.addEventListener("change", () => {
      localStorage.setItem("agent.sound", sound.checked ? "1" : "0");
      unlockAudio();
      if (sound.checked) beep();
    });
  }

  function beep() {
    if (!audio) return; // no click on the page yet: the visible alert has to do
    audio.resume();
    const tone = audio.createOscillator();
    tone.frequency.value = 880;
    tone.connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.2);
  }

  // The transcript.

  const list = $("transcript");
  const messageItem = (id) => (list ? list.querySelector(`li[data-id="${CSS.escape(String(id))}"]`) : null);

  // "Customer is typing…", under the transcript; gone 5 s after the last typing frame.
  let typingTimer = null;
  function showCustomerTyping(on, name) {
    const composer = $("agent-composer");
    if (!composer) return;
    let line = $("customer-typing");
    if (!line) {
      line = document.createElement("p");
      line.id = "customer-typing";
      line.className = "typing";
      composer.before(line);
    }
    clearTimeout(typingTimer);
    line.textContent = on ? `${name || "Customer"} is typing…` : "";
    line.hidden = !on;
    if (on) typingTimer = setTimeout(() => showCustomerTyping(false), 5000);
  }

  // The holder's typing, for the customer ("Dana is typing…"): one frame every 2 s at most.
  let typingSentAt = 0;
  function agentTyped() {
    if (status !== "agent" || holder !== me || !socket || socket.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (now - typingSentAt < 2000) return;
    typingSentAt = now;
    socket.send(JSON.stringify({ type: "typing", conversation_id: conversationId }));
  }

  function renderMessage(message) {
    if (!list) return;
    let li = messageItem(message.id);
    if (!li) {
      li = $("message-template").content.firstElementChild.cloneNode(true);
      li.dataset.id = message.id;
      li.dataset.role = message.role;
      li.querySelector(".who").textContent = message.role === "agent" ? `Agent ${message.author}` : capitalize(message.role);
      const time = li.querySelector("time");
      time.dateTime = message.created_at;
      time.textContent = new Date(message.created_at).toTimeString().slice(0, 8);
      li.querySelector("form.rate").action = `/agent/messages/${message.id}/feedback`;
      li.querySelector("form.correct").action = `/agent/messages/${message.id}/correction`;
      li.querySelector(".rating-row").hidden = message.role !== "bot";
      wireMessage(li);
      list.append(li);
    }
    li.querySelector(".body").textContent = message.text;
    drawGrounding(li, message.grounding || []);
    drawMeta(li, message.status + (message.error ? ": " + message.error : ""), message);
    setClass(li, message.status);
    li.classList.add(message.role);
    li.scrollIntoView({ block: "nearest" });
  }

  // The knowledge entries a live reply was grounded on. A frame carries their ids and scores only:
  // the server-drawn line (with the entries' questions) is kept when there is one.
  function drawGrounding(li, grounding) {
    const line = li.querySelector(".grounding");
    if (!line || !grounding.length || line.childElementCount) return;
    line.replaceChildren("Grounded on: ");
    grounding.forEach((g, i) => {
      const link = document.createElement("a");
      link.href = `/agent/knowledge/?show=${encodeURIComponent(g.entry)}`;
      link.textContent = `entry ${g.entry}`;
      line.append(...(i ? ["; "] : []), link, ` (${Number(g.score).toFixed(2)})`);
    });
    line.hidden = false;
  }

  // A bot reply's info line: status · first token · total · model version · model name. The parts
  // live on the line's data attributes, drawn by the server; a frame fills in those it carries
  // (a message frame has the timestamps, not the version's name) and never drops the others.
  function drawMeta(li, statusText, message) {
    if (li.dataset.role !== "bot") return;
    const meta = li.querySelector(".meta"), parts = meta.dataset;
    if (message) {
      if (message.status === "pending") parts.firstToken = ""; // queued again: timings start over
      if (message.status === "pending" || message.status === "streaming") parts.total = "";
      if (!parts.firstToken) parts.firstToken = seconds(message.created_at, message.first_token_at);
      if (!parts.total) parts.total = seconds(message.created_at, message.finished_at);
      if (message.model_version) parts.version = message.model_version;
      if (message.model) parts.model = message.model;
    }
    meta.textContent = [
      statusText,
      parts.firstToken && `first token ${parts.firstToken} s`,
      parts.total && `total ${parts.total} s`,
      parts.version,
      parts.model,
    ].filter(Boolean).join(" · ");
  }

  // Seconds between two ISO times, written as the server writes them (0.4, 1.0, 12.35).
  function seconds(from, to) {
    if (!from || !to) return "";
    const value = Math.round((Date.parse(to) - Date.parse(from)) / 10) / 100;
    return Number.isFinite(value) ? (Number.isInteger(value) ? value.toFixed(1) : String(value)) : "";
  }

  function setClass(li, messageStatus) {
    li.classList.remove("pending", "streaming", "complete", "cancelled", "failed");
    li.classList.add(messageStatus);
  }

  const capitalize = (word) => word.charAt(0).toUpperCase() + word.slice(1);

  function setStatus(conversation) {
    status = conversation.status;
    holder = conversation.status === "agent" ? conversation.agent : "";
    $("status").textContent = STATUS_LABELS[status] + (holder ? ` · ${holder}` : "");
    $("status").dataset.status = status;
    if (conversation.satisfaction) $("satisfaction").textContent = conversation.satisfaction;
    updateControls();
  }

  function updateControls() {
    if (!page) return;
    const open = status !== "closed", mine = status === "agent" && holder === me;
    $("takeover").disabled = !open || status === "agent";
    $("hand-back").disabled = !(status === "waiting" || (status === "agent" && holder === me));
    $("close").disabled = !open;
    $("agent-input").disabled = !mine;
    $("agent-input").placeholder = mine ? "Reply to the customer (Enter sends)" : "Take over to reply to the customer";
    $("agent-send").disabled = !mine;
  }

  function applyReview(frame) {
    if ("note" in frame) $("note").value = frame.note;
    if ("tags" in frame) $("tags").value = frame.tags.join(", ");
    if ("reviewed" in frame) $("reviewed").checked = frame.reviewed;
    if ("exclude_from_training" in frame) $("exclude").checked = frame.exclude_from_training;
    if ("satisfaction" in frame && frame.satisfaction) $("satisfaction").textContent = frame.satisfaction;
    const li = frame.message_id ? messageItem(frame.message_id) : null;
    if (!li) return;
    if ("agent_feedback" in frame) markRating(li, frame.agent_feedback);
    if ("correction" in frame) li.querySelector("form.correct textarea").value = frame.correction;
    if ("customer_feedback" in frame) {
      const f = frame.customer_feedback, shown = li.querySelector(".customer-feedback");
      const verdict = f && (f.positive ? "👍 helpful" : `👎 not helpful${f.reason ? ` (${f.reason})` : ""}`);
      shown.textContent = f ? `Customer: ${verdict}${f.comment ? ` “${f.comment}”` : ""}` : "";
      shown.classList.toggle("positive", !!f && f.positive);
    }
  }

  function markRating(li, feedback) {
    li.querySelector("button.good").classList.toggle("chosen", !!feedback && feedback.positive);
    li.querySelector("button.bad").classList.toggle("chosen", !!feedback && !feedback.positive);
    if (feedback) li.querySelector("select[name=reason]").value = feedback.reason;
  }

  async function post(url, data) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      body: data,
      credentials: "same-origin",
    });
    const answer = await response.json().catch(() => ({ ok: false, detail: `Error ${response.status}` }));
    if (!answer.ok) showAlert(answer.detail || "That did not work.");
    return answer;
  }

  function rate(li, positive) {
    const form = li.querySelector("form.rate");
    const data = new FormData(form);
    data.set("positive", positive ? "1" : "0");
    if (positive) data.set("reason", "");
    return post(form.action, data).then((answer) => { if (answer.ok) markRating(li, answer.agent_feedback); });
  }

  function wireMessage(li) {
    const rateForm = li.querySelector("form.rate");
    rateForm.addEventListener("submit", (event) => {
      event.preventDefault();
      rate(li, event.submitter ? event.submitter.value === "1" : true);
    });
    rateForm.querySelector("select").addEventListener("change", () => {
      if (li.querySelector("button.bad").classList.contains("chosen")) rate(li, false);
    });
    const correctForm = li.querySelector("form.correct");
    correctForm.addEventListener("submit", (event) => {
      event.preventDefault();
      post(correctForm.action, new FormData(correctForm)).then((answer) => {
        if (answer.ok) correctForm.querySelector(".saved").textContent = answer.correction ? "Saved." : "Removed.";
      });
    });
  }

  function saveReview() {
    const form = $("review-form");
    return post(form.action, new FormData(form)).then((answer) => {
      if (answer.ok) $("review-saved").textContent = "Saved.";
    });
  }

  // Keyboard: j/k move between bot replies, g/b rate, c edits the correction, r toggles reviewed.
  let current = -1;
  const replies = () => [...list.querySelectorAll("li[data-role=bot]")];

  function move(step) {
    const all = replies();
    if (!all.length) return;
    current = Math.max(0, Math.min(all.length - 1, current + step));
    all.forEach((li, i) => li.classList.toggle("current", i === current));
    all[current].focus();
    all[current].scrollIntoView({ block: "nearest" });
  }

  function onKey(event) {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
    if (typing) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const li = replies()[current];
    const actions = {
      j: () => move(1),
      k: () => move(-1),
      g: () => li && rate(li, true),
      b: () => li && (rate(li, false), li.querySelector("select[name=reason]").focus()),
      c: () => li && li.querySelector("form.correct textarea").focus(),
      r: () => { $("reviewed").checked = !$("reviewed").checked; saveReview(); },
    };
    const action = actions[event.key];
    if (action) { event.preventDefault(); action(); }
  }

  if (page) {
    list.querySelectorAll("li.msg").forEach(wireMessage);
    $("review-form").addEventListener("submit", (event) => { event.preventDefault(); saveReview(); });
    $("reviewed").addEventListener("change", saveReview);
    $("exclude").addEventListener("change", saveReview);
    $("takeover").addEventListener("click", () => send({ type: "takeover", conversation_id: conversationId }));
    $("hand-back").addEventListener("click", () => send({ type: "hand_back", conversation_id: conversationId }));
    $("close").addEventListener("click", () => send({ type: "close", conversation_id: conversationId }));
    const input = $("agent-input");
    const submit = () => {
      const text = input.value.trim();
      if (!text) return;
      const clientId = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
      if (send({ type: "message", conversation_id: conversationId, text, client_id: clientId })) input.value = "";
    };
    $("agent-composer").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
    });
    input.addEventListener("input", agentTyped);
    document.addEventListener("keydown", onKey);
    updateControls();
  }

  function setBadge(text, cls) { if (badge) { badge.textContent = text; badge.className = `badge ${cls}`; } }
  function showAlert(text) {
    alertBox.classList.remove("waiting");
    alertBox.textContent = text;
    alertBox.hidden = !text;
  }

  connect();
})();
