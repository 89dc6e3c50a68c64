// The customer's chat: one websocket, reconnecting with backoff; every text rendered as text.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const list = $("messages"), input = $("input"), sendButton = $("send"), stopButton = $("stop");
  const badge = $("connection"), notice = $("notice"), talkStatus = $("talk-status"), csat = $("csat");
  const REASONS = JSON.parse($("feedback-reasons").textContent);
  const OUTBOX_KEY = "chat.outbox";
  const LIMITED_RETRY_MS = 30000;
  const LIMITED = {
    4409: "This chat is open in too many tabs or windows: close one of them, then reload the page.",
    4429: "Too many connections from your network. Please wait a minute, then reload the page.",
  };
  const ROLE_NAMES = { customer: "You", bot: "Assistant", agent: "Agent", system: "" };

  let socket = null, retryDelay = 500, conversation = null;
  let sentOnSocket = new Set(), lastSent = null; // outbox client ids sent on the current socket
  const ratings = new Map(); // message id -> {positive, reason, comment}: the customer's own feedback
  const bubbles = new Map(); // message id or "c:" + client_id -> {li, data}
  // What the customer typed that the server has not confirmed yet: kept across reloads.
  let outbox = JSON.parse(sessionStorage.getItem(OUTBOX_KEY) || "[]");

  const saveOutbox = () => sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(outbox));
  const newClientId = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // A reconnect returns to the conversation on screen, even if it was closed meanwhile (the
    // customer then sees the closure and the rating question); a reload takes the latest open one.
    const query = conversation ? `?conversation=${encodeURIComponent(conversation.id)}` : "";
    socket = new WebSocket(`${scheme}://${location.host}/ws/chat/${query}`);
    sentOnSocket = new Set();
    socket.onopen = () => { retryDelay = 500; setBadge("Connected", "online"); updateControls(); };
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = (event) => {
      setBadge("Reconnecting…", "offline");
      updateControls();
      if (event.code === 4401) { setNotice("Your session has expired: reload the page."); return; }
      if (event.code === 4404) { conversation = null; setTimeout(connect, 0); return; } // gone: the latest open one
      // Refused by a limit: say why (daphne drops the close reason, so the code's own words stand
      // in), and try again only after the limit's window has had time to pass.
      if (LIMITED[event.code]) {
        setNotice(event.reason || LIMITED[event.code]);
        setTimeout(connect, LIMITED_RETRY_MS);
        return;
      }
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }

  const online = () => !!socket && socket.readyState === WebSocket.OPEN;

  function send(frame) {
    if (online()) { socket.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function sendQueued(item) {
    if (!send({ type: "message", text: item.text, client_id: item.client_id })) return;
    sentOnSocket.add(item.client_id);
    lastSent = item.client_id;
  }

  // Send what waits in the outbox (typed while offline), oldest first. While the bot holds the
  // conversation, one at a time and only between replies: the server refuses a message while the
  // bot is answering, so the next waits for the reply to the previous one (`done`).
  function flushOutbox() {
    if (!online() || !conversation) return;
    const withBot = conversation.status === "bot";
    for (const item of outbox) {
      if (!sentOnSocket.has(item.client_id)) {
        if (withBot && replyInFlight()) return;
        sendQueued(item);
      }
      if (withBot) return;
    }
  }

  const handlers = {
    history(frame) {
      conversation = frame.conversation;
      list.replaceChildren();
      bubbles.clear();
      ratings.clear();
      Object.entries(frame.feedback || {}).forEach(([id, f]) => ratings.set(Number(id), f));
      showStatus();
      frame.messages.forEach(render);
      // Sent before the socket dropped, but the echo was lost with it: already stored, not resent.
      const stored = new Set(frame.messages.map((m) => m.client_id).filter(Boolean));
      outbox = outbox.filter((item) => !stored.has(item.client_id));
      saveOutbox();
      outbox.forEach(showUnsent);
      setNotice(workerNotice(frame));
      updateControls();
      flushOutbox();
    },
    message(frame) {
      const message = frame.message;
      if (message.client_id) {
        outbox = outbox.filter((item) => item.client_id !== message.client_id);
        saveOutbox();
        const local = bubbles.get("c:" + message.client_id);
        if (local) { local.li.remove(); bubbles.delete("c:" + message.client_id); }
      }
      // The web process announces a pending reply while the worker may already have claimed it:
      // a late "pending" must not wipe a reply that is streaming or done.
      const shown = bubbles.get(message.id);
      if (shown && message.status === "pending" && shown.data.status !== "pending") return;
      render(message);
      if (message.role === "bot" && message.status === "streaming") setNotice("");
      updateControls();
    },
    delta(frame) {
      const bubble = bubbles.get(frame.message_id);
      if (!bubble) return;
      const known = bubble.data.text.length;
      // Deltas carry their offset: overlap with what history already gave us is skipped.
      if (frame.offset > known) return;
      bubble.data.text += frame.text.slice(known - frame.offset);
      bubble.data.status = "streaming";
      paint(bubble);
      updateControls();
    },
    done(frame) {
      const bubble = bubbles.get(frame.message_id);
      if (!bubble) return;
      Object.assign(bubble.data, { text: frame.text, status: frame.status, error: frame.error || "", sources: frame.sources || [] });
      paint(bubble);
      updateControls();
      flushOutbox();
    },
    error(frame) {
      setNotice(frame.detail);
      if (frame.code === "rate_limited" || frame.code === "reply_in_progress") restoreUnsent();
    },
    notice(frame) { setNotice(frame.detail); },
    status(frame) {
      if (conversation && frame.conversation.id !== conversation.id) return;
      conversation = frame.conversation;
      showStatus();
      updateControls();
      flushOutbox();
    },
    feedback(frame) {
      if (frame.feedback) ratings.set(frame.message_id, frame.feedback); else ratings.delete(frame.message_id);
      const bubble = bubbles.get(frame.message_id);
      if (bubble) paint(bubble);
    },
    satisfaction(frame) {
      conversation.satisfaction = frame.score;
      showStatus();
    },
  };

  // Who the customer is talking to, in words; and the satisfaction question once it is closed.
  function showStatus() {
    const state = conversation.status;
    const words = {
      bot: "You are talking to our automated assistant.",
      waiting: "You asked for a person. Please wait: an agent will join shortly. The assistant will not answer meanwhile.",
      agent: `You are talking to ${conversation.agent || "an agent"} (a person).`,
      closed: "This conversation is closed.",
    };
    talkStatus.textContent = words[state] || "";
    talkStatus.className = `talk-status ${state}`;
    $("handoff").hidden = state !== "bot";
    csat.hidden = state !== "closed";
    csat.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.score) === conversation.satisfaction)));
    $("csat-thanks").textContent = conversation.satisfaction ? "Thank you!" : "";
  }

  function handle(frame) { (handlers[frame.type] || (() => {}))(frame); }

  function render(message) {
    let bubble = bubbles.get(message.id);
    if (!bubble) {
      const li = document.createElement("li");
      li.dataset.id = message.id;
      li.append(span("who"), span("body"), span("source"), span("meta"));
      // In id order, stored before unsent: the worker may announce its reply before this socket
      // hears the echo of the customer message it answers.
      const later = [...list.children].find((other) => !other.dataset.id || Number(other.dataset.id) > message.id);
      list.insertBefore(li, later || null);
      bubble = { li, data: message };
      bubbles.set(message.id, bubble);
    }
    bubble.data = message;
    paint(bubble);
  }

  function paint({ li, data }) {
    li.className = `msg ${data.role} ${data.status}`;
    li.querySelector(".who").textContent = ROLE_NAMES[data.role] || data.role;
    li.querySelector(".body").textContent = data.text;
    // What the reply rests on, when the admin shows it (KNOWLEDGE_SHOW_SOURCES): the entries' questions.
    const source = li.querySelector(".source");
    const sources = data.role === "bot" && data.status === "complete" ? data.sources || [] : [];
    if (source) { source.textContent = sources.length ? `Source: ${sources.join("; ")}` : ""; source.hidden = !sources.length; }
    const meta = li.querySelector(".meta");
    meta.replaceChildren();
    if (data.role === "bot" && data.status === "pending") meta.textContent = "Waiting for the assistant…";
    if (data.status === "cancelled") meta.textContent = "Stopped.";
    if (data.status === "failed") {
      meta.textContent = data.error || "Could not answer.";
      meta.append(button("Retry", () => send({ type: "retry" })));
    }
    if (data.role === "agent" && data.author) li.querySelector(".who").textContent = `${data.author} (agent)`;
    if (data.role === "bot" && (data.status === "complete" || data.status === "cancelled")) meta.append(ratingControls(data.id));
    li.scrollIntoView({ block: "end" });
  }

  // Thumbs up or down on a bot reply; a second click on the same thumb takes the rating back.
  function ratingControls(messageId) {
    const rating = ratings.get(messageId);
    const box = document.createElement("span");
    box.className = "rating";
    const rate = (positive, reason = "", comment = "") => send({ type: "feedback", message_id: messageId, positive, reason, comment });
    const up = button("👍", () => rate(rating && rating.positive ? null : true));
    const down = button("👎", () => rate(rating && !rating.positive ? null : false));
    up.setAttribute("aria-label", "Helpful");
    down.setAttribute("aria-label", "Not helpful");
    up.setAttribute("aria-pressed", String(!!rating && rating.positive));
    down.setAttribute("aria-pressed", String(!!rating && !rating.positive));
    box.append(up, down);
    if (rating && !rating.positive) {
      const reason = document.createElement("select");
      reason.setAttribute("aria-label", "What was wrong?");
      reason.append(new Option("Why? (optional)", ""), ...REASONS.map((r) => new Option(r, r)));
      reason.value = rating.reason || "";
      const comment = document.createElement("input");
      comment.placeholder = "Tell us more (optional)";
      comment.maxLength = 1000;
      comment.value = rating.comment || "";
      const save = button("Send", () => rate(false, reason.value, comment.value));
      box.append(reason, comment, save);
    }
    return box;
  }

  function showUnsent(item) {
    const li = document.createElement("li");
    li.className = "msg customer unsent";
    li.append(span("who", "You"), span("body", item.text), span("meta", "Sending…"));
    list.append(li);
    bubbles.set("c:" + item.client_id, { li, data: item });
  }

  function restoreUnsent() {
    // A refused message goes back into the box, so nothing typed is lost.
    const index = outbox.findIndex((queued) => queued.client_id === lastSent);
    const item = index >= 0 ? outbox.splice(index, 1)[0] : outbox.pop();
    if (!item) return;
    saveOutbox();
    const local = bubbles.get("c:" + item.client_id);
    if (local) { local.li.remove(); bubbles.delete("c:" + item.client_id); }
    if (!input.value) input.value = item.text;
  }

  function span(cls, text = "") { const s = document.createElement("span"); s.className = cls; s.textContent = text; return s; }
  function button(label, onClick) { const b = document.createElement("button"); b.type = "button"; b.textContent = label; b.onclick = onClick; return b; }
  function setBadge(text, cls) { badge.textContent = text; badge.className = `badge ${cls}`; }
  // serve is bringing a worker back that died (frame.worker), or none has started yet.
  function workerNotice(frame) {
    if (frame.worker === "restarting") return "The assistant is restarting; messages will be answered in a moment.";
    return frame.worker_online ? "" : "The assistant is starting up; messages will be answered as soon as it is ready.";
  }
  function setNotice(text) { notice.textContent = text; notice.hidden = !text; }

  function replyInFlight() {
    return [...bubbles.values()].some(({ data }) => data.role === "bot" && (data.status === "pending" || data.status === "streaming"));
  }

  // The bot is answering and the server can hear a Stop. Offline, Stop could not reach the server:
  // Send queues the message for the reconnect instead.
  const botAnswering = () => online() && replyInFlight() && (!conversation || conversation.status === "bot");

  function updateControls() {
    const busy = botAnswering();
    const closed = !!conversation && conversation.status === "closed";
    stopButton.hidden = !busy;
    sendButton.hidden = busy;
    sendButton.disabled = input.disabled = closed;
  }

  function submit() {
    const text = input.value.trim();
    if (!text || botAnswering()) return;
    const item = { client_id: newClientId(), text };
    outbox.push(item);
    saveOutbox();
    showUnsent(item);
    input.value = "";
    if (online()) {
      setNotice("");
      sendQueued(item);
    } else {
      setNotice("You are offline: your message will be sent as soon as the connection is back.");
    }
  }

  $("composer").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
  });
  stopButton.addEventListener("click", () => send({ type: "stop" }));
  $("new-conversation").addEventListener("click", () => send({ type: "new_conversation" }));
  $("handoff").addEventListener("click", () => send({ type: "handoff" }));
  csat.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => send({ type: "satisfaction", score: Number(b.dataset.score) })));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && replyInFlight()) send({ type: "stop" });
    if (event.altKey && event.key.toLowerCase() === "n") send({ type: "new_conversation" });
  });

  connect();
})();
