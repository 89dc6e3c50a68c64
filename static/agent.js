// The agent workspace: one websocket for the live inbox and the open transcript; every text set as text.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const page = $("transcript-page"), inboxPage = $("inbox"), badge = $("agent-connection"), alertBox = $("alert");
  const bar = $("agent-bar"), head = $("transcript-head");
  const myId = bar && bar.dataset.meId ? Number(bar.dataset.meId) : null;
  const staff = !!(head && head.dataset.staff);
  const conversationId = page ? page.dataset.conversation : null;
  const me = page ? page.dataset.me : null;
  const STATUS_LABELS = { bot: "With the bot", waiting: "Waiting for an agent", agent: "With an agent", closed: "Closed" };
  let presenceTimer = null;
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
    clearInterval(presenceTimer); // "still here", for auto-assignment among the agents online
    presenceTimer = setInterval(() => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "presence" }));
    }, 30000);
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
    hello() { setBadge("Live", "online"); loadCounts(); },
    knowledge(frame) { noteKnowledgeChange(frame.entry); },
    inbox(frame) {
      if (inboxPage) upsertRow(frame.conversation);
      if (page && frame.conversation.id === conversationId) {
        head.dataset.assigneeId = frame.conversation.assignee_id ? String(frame.conversation.assignee_id) : "";
        drawAssignee($("assignee"), $("take"), frame.conversation.assignee_id);
      }
      notifyFor(frame);
      if (frame.alert && frame.conversation.status === "waiting") alertWaiting(frame.conversation);
      refreshCounts();
    },
    // I read a conversation (here or in another tab): its unread count clears.
    read(frame) {
      const row = inboxPage ? inboxRow(frame.conversation_id) : null;
      if (row) setUnread(row, 0);
      refreshCounts();
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
      if (frame.message.role === "customer") {
        showCustomerTyping(false);
        markRead();
      }
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
  const transcriptUrl = (id) => `/agent/conversations/${encodeURIComponent(id)}/`;

  // Which view a conversation belongs to, as the server decides it (workspace/selectors.py).
  function belongsToView(item) {
    const view = inboxPage.dataset.view;
    if (view === "mine") return item.assignee_id === myId;
    if (view === "unassigned") return !item.assignee_id && item.status !== "closed";
    if (view === "waiting") return item.status === "waiting";
    return true;
  }

  // New rows only join the first page of a view without filters: anywhere else they might not belong.
  function joinsThisPage() {
    const params = new URLSearchParams(location.search);
    params.delete("view");
    params.delete("page");
    return inboxPage.dataset.page === "1" && [...params.values()].every((value) => value === "");
  }

  function upsertRow(item) {
    const rows = $("rows");
    let row = inboxRow(item.id);
    if (!belongsToView(item)) { // assigned away, closed, taken: it leaves this view
      if (row) { row.remove(); selectionChanged(); }
      return;
    }
    if (!row) {
      if (!joinsThisPage()) return;
      row = $("row-template").content.firstElementChild.cloneNode(true);
      row.dataset.id = item.id;
      row.dataset.customerCount = "0";
      const box = row.querySelector("input[name=id]");
      box.value = item.id;
      box.setAttribute("aria-label", `Select ${item.customer}`);
      const link = row.querySelector("a.customer");
      link.href = transcriptUrl(item.id);
      link.textContent = item.customer;
      const empty = rows.querySelector("tr.empty");
      if (empty) empty.remove();
      wireRow(row);
      rows.prepend(row);
    }
    const before = Number(row.dataset.customerCount || 0);
    if (item.customer_message_count > before) setUnread(row, unreadOf(row) + item.customer_message_count - before);
    row.dataset.customerCount = String(item.customer_message_count);
    row.className = `status-${item.status} fresh`;
    row.dataset.status = item.status;
    row.dataset.lastActivity = item.last_activity_at || "";
    row.dataset.waitingSince = item.status === "waiting" ? item.waiting_since || "" : "";
    row.dataset.assigneeId = item.assignee_id ? String(item.assignee_id) : "";
    row.querySelector(".status-label").textContent = item.status_label;
    drawWait(row);
    const time = row.querySelector("time.activity");
    time.dateTime = item.last_activity_at || "";
    time.textContent = (item.last_activity_at || "").slice(0, 16).replace("T", " ");
    row.querySelector(".last").textContent = item.last_text;
    row.querySelector(".count").textContent = String(item.message_count);
    row.querySelector(".agent").textContent = item.status === "agent" && item.agent ? `held by ${item.agent}` : "";
    drawAssignee(row.querySelector("select.assign"), row.querySelector("button.take"), item.assignee_id);
    if ("reviewed" in item) setFlag(row, "reviewed", item.reviewed);
    if ("has_negative" in item) setFlag(row, "negative", item.has_negative);
    placeRow(row);
    checkFilters(row);
  }

  // The inbox's order: waiting conversations first, longest wait first; then last activity, newest first.
  function sortsBefore(a, b) {
    const wa = a.dataset.waitingSince, wb = b.dataset.waitingSince;
    if (!!wa !== !!wb) return !!wa;
    if (wa) return Date.parse(wa) < Date.parse(wb);
    return Date.parse(a.dataset.lastActivity || 0) > Date.parse(b.dataset.lastActivity || 0);
  }

  function placeRow(row) {
    const rows = $("rows");
    const next = [...rows.children].find((other) => other !== row && other.dataset.id && sortsBefore(row, other));
    if (next) { if (row.nextElementSibling !== next) rows.insertBefore(row, next); } else if (rows.lastElementChild !== row) rows.append(row);
  }

  const unreadOf = (row) => Number(row.querySelector(".unread-badge").textContent || 0);
  function setUnread(row, n) {
    const badgeEl = row.querySelector(".unread-badge");
    badgeEl.textContent = n ? String(n) : "";
    badgeEl.hidden = !n;
    badgeEl.title = `${n} unread`;
    row.classList.toggle("unread", n > 0);
  }

  // "waiting 4 min" on waiting rows, kept current.
  function drawWait(row) {
    const cell = row.querySelector(".status");
    let wait = cell.querySelector(".wait");
    const since = row.dataset.waitingSince;
    if (!since) { if (wait) wait.remove(); return; }
    if (!wait) {
      wait = document.createElement("small");
      wait.className = "wait";
      cell.querySelector(".status-label").after(" ", wait);
    }
    wait.textContent = `waiting ${waited(since)}`;
  }

  function waited(since) {
    const minutes = Math.max(0, Math.floor((Date.now() - Date.parse(since)) / 60000));
    if (minutes < 1) return "under a minute";
    if (minutes < 120) return `${minutes} min`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  // Assignment: the select names who has it; "Take" assigns it to me.
  function drawAssignee(select, take, assigneeId) {
    if (select && document.activeElement !== select) select.value = assigneeId ? String(assigneeId) : "";
    if (select) select.dataset.current = assigneeId ? String(assigneeId) : "";
    if (take) take.hidden = assigneeId === myId;
  }

  function assign(id, assignee, select) {
    const data = new FormData();
    data.set("assignee", assignee);
    return post(`/agent/conversations/${encodeURIComponent(id)}/assign`, data).then((answer) => {
      if (!answer.ok && select) select.value = select.dataset.current || "";
      return answer;
    });
  }

  function wireRow(row) {
    const select = row.querySelector("select.assign"), take = row.querySelector("button.take");
    select.dataset.current = row.dataset.assigneeId || "";
    select.addEventListener("change", () => assign(row.dataset.id, select.value, select));
    take.addEventListener("click", () => assign(row.dataset.id, "me", select));
    row.querySelector("input[name=id]").addEventListener("change", selectionChanged);
  }

  // The selection: bulk writes need one; an empty one exports what the view and its filters show.
  const selected = () => [...document.querySelectorAll("#rows input[name=id]:checked")].map((box) => box.value);
  function selectionChanged() {
    if (!inboxPage) return;
    const ids = selected(), total = Number(inboxPage.dataset.total || 0);
    $("selection").textContent = ids.length
      ? `${ids.length} selected: the actions and exports apply to ${ids.length === 1 ? "it" : "them"}`
      : `Nothing selected: exports the ${total} conversation${total === 1 ? "" : "s"} this view shows`;
    document.querySelectorAll(".bulk-write").forEach((button) => { button.disabled = !ids.length; });
  }

  function bulk(action, extra = {}) {
    const data = new FormData();
    selected().forEach((id) => data.append("id", id));
    data.set("action", action);
    Object.entries(extra).forEach(([key, value]) => data.set(key, value));
    return post("/agent/bulk", data).then((answer) => {
      if (!answer.ok) return;
      const result = $("bulk-result"), done = answer.done.length;
      const parts = [`${BULK_DONE[action]} ${done} conversation${done === 1 ? "" : "s"}.`];
      if (answer.skipped.length) parts.push(`Skipped ${answer.skipped.length}: ${answer.skipped.map((s) => `${s.customer} (${s.reason})`).join("; ")}`);
      result.textContent = parts.join(" ");
      result.hidden = false;
    });
  }
  const BULK_DONE = { close: "Closed", tag: "Tagged", reviewed: "Marked reviewed", exclude: "Excluded from training", assign: "Assigned" };

  function wireInbox() {
    document.querySelectorAll("#rows tr[data-id]").forEach(wireRow);
    document.querySelectorAll("#rows tr[data-id]").forEach(drawWait);
    setInterval(() => document.querySelectorAll("#rows tr[data-id]").forEach(drawWait), 30000);
    $("select-all").addEventListener("change", (event) => {
      document.querySelectorAll("#rows input[name=id]").forEach((box) => { box.checked = event.target.checked; });
      selectionChanged();
    });
    const dialog = $("close-dialog");
    $("bulk-close").addEventListener("click", () => {
      const n = selected().length;
      dialog.querySelector(".what").textContent = `Close ${n} conversation${n === 1 ? "" : "s"}?`;
      dialog.returnValue = "";
      dialog.showModal();
    });
    dialog.addEventListener("close", () => { if (dialog.returnValue === "confirm") bulk("close"); });
    $("bulk-tag").addEventListener("click", () => {
      const tag = $("bulk-tag-name").value.trim();
      if (!tag) { showAlert("Type the tag to add first."); $("bulk-tag-name").focus(); return; }
      bulk("tag", { tag });
    });
    $("bulk-reviewed").addEventListener("click", () => bulk("reviewed"));
    $("bulk-exclude").addEventListener("click", () => bulk("exclude"));
    $("bulk-assign").addEventListener("click", () => bulk("assign", { assignee: $("bulk-assignee").value }));
    selectionChanged();
  }

  // Counts: the tabs, the waiting box, the page's total and the title badge, read afresh after
  // the changes the socket tells of: 250 ms after a quiet spell, and at most once every 2 s per tab
  // on a busy inbox (on 100,000 conversations a read is ~0.15 s of database: every agent's tab
  // reading on every message would be the database's whole day; docs/agent-workspace.md).
  const baseTitle = document.title.replace(/^\(\d+\) /, "");
  const COUNTS_EVERY_MS = 2000;
  let countsTimer = null, countsReadAt = 0;
  function refreshCounts() {
    if (countsTimer) return; // a read is already due: it reads everything changed until then
    const wait = Math.max(250, COUNTS_EVERY_MS - (Date.now() - countsReadAt));
    countsTimer = setTimeout(() => { countsTimer = null; countsReadAt = Date.now(); loadCounts(); }, wait);
  }

  async function loadCounts() {
    if (!bar) return;
    let url = bar.dataset.countsUrl;
    if (inboxPage) {
      const params = new URLSearchParams(location.search);
      params.set("view", inboxPage.dataset.view);
      url += `?${params}`;
    }
    const response = await fetch(url, {
      credentials: "same-origin", headers: { Accept: "application/json" },
    }).catch(() => null);
    if (!response || !response.ok) return;
    const data = await response.json();
    document.title = data.title_count ? `(${data.title_count}) ${baseTitle}` : baseTitle;
    if (!inboxPage) return;
    Object.entries(data.views).forEach(([view, n]) => {
      const tab = $(`tab-${view}`);
      if (!tab) return;
      tab.querySelector(".count").textContent = String(n.count);
      const unread = tab.querySelector(".unread");
      unread.textContent = `${n.unread} unread`;
      unread.hidden = !n.unread;
    });
    const waiting = data.views.waiting.count, box = $("waiting-count");
    box.querySelector("a").textContent = `${waiting} conversation${waiting === 1 ? "" : "s"} waiting for an agent`;
    box.hidden = !waiting;
    if ("shown" in data) {
      inboxPage.dataset.total = String(data.shown.count);
      const pages = $("page-count");
      if (pages) pages.textContent = `Page ${inboxPage.dataset.page} of ${data.shown.pages} · ${data.shown.count} conversations`;
      selectionChanged();
    }
  }

  // Desktop notifications (with the agent's permission): a new handoff request, and a new
  // customer message in a conversation assigned to me, unless I am looking at it already.
  const notifyButton = $("notify-enable"), notifyState = $("notify-state");
  const notifications = () => "Notification" in window;
  function drawNotify() {
    if (!notifyButton) return;
    if (!notifications()) { notifyState.textContent = "No desktop notifications in this browser"; notifyState.hidden = false; return; }
    const permission = Notification.permission;
    notifyButton.hidden = permission !== "default";
    notifyState.hidden = permission === "default";
    notifyState.textContent = permission === "granted" ? "Desktop notifications on" : "Desktop notifications blocked in the browser's settings";
  }
  if (notifyButton) {
    notifyButton.addEventListener("click", () => {
      if (notifications()) Promise.resolve(Notification.requestPermission()).then(drawNotify, drawNotify);
    });
    drawNotify();
  }

  function notify(title, body, id) {
    if (!notifications() || Notification.permission !== "granted") return;
    if (!document.hidden && conversationId === id) return; // on screen already
    const note = new Notification(title, { body, tag: `conversation-${id}` });
    note.onclick = () => { window.focus(); location.href = transcriptUrl(id); if (note.close) note.close(); };
  }

  const loadedAt = Date.now(), lastCustomerSeen = {};
  function notifyFor(frame) {
    const item = frame.conversation;
    if (frame.alert && item.status === "waiting") { notify(`${item.customer} asks for a person`, item.last_text, item.id); return; }
    const at = item.last_customer_at;
    if (!at || item.assignee_id !== myId || lastCustomerSeen[item.id] === at) return;
    lastCustomerSeen[item.id] = at;
    if (Date.parse(at) > loadedAt - 2000) notify(`New message from ${item.customer}`, item.last_text, item.id);
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

  // Another agent holds it: what only the holder (or staff) may do is disabled, and the page says why.
  function updateControls() {
    if (!page) return;
    const open = status !== "closed", mine = status === "agent" && holder === me;
    const heldByOther = status === "agent" && !!holder && holder !== me;
    $("takeover").disabled = !open || status === "agent";
    $("hand-back").disabled = !(status === "waiting" || mine || (heldByOther && staff));
    $("close").disabled = !open || (heldByOther && !staff);
    $("assignee").disabled = !open || (heldByOther && !staff);
    $("take").disabled = !open || (heldByOther && !staff);
    const reason = $("held-reason");
    reason.textContent = heldByOther ? `${holder} holds this conversation${staff ? " (as staff you may still close it or hand it back)" : ""}.` : (open ? "" : "This conversation is closed.");
    reason.hidden = !reason.textContent;
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
    const closeDialog = $("close-dialog");
    $("close").addEventListener("click", () => { closeDialog.returnValue = ""; closeDialog.showModal(); });
    closeDialog.addEventListener("close", () => {
      if (closeDialog.returnValue === "confirm") send({ type: "close", conversation_id: conversationId });
    });
    const assignee = $("assignee");
    assignee.dataset.current = head.dataset.assigneeId || "";
    assignee.addEventListener("change", () => assign(conversationId, assignee.value, assignee));
    $("take").addEventListener("click", () => assign(conversationId, "me", assignee));
    document.addEventListener("visibilitychange", markRead);
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

  // The open conversation's new customer messages, shown to the agent: read.
  function markRead() {
    if (!page || document.visibilityState !== "visible" || page.dataset.watching !== "1") return;
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "read", conversation_id: conversationId }));
  }

  if (inboxPage) wireInbox();
  connect();
})();
