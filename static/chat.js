// The customer's chat: one websocket, reconnecting with backoff. The customer's own text is set as
// text; bot and agent replies are markdown, rendered by markdown-it (no raw HTML, safe links only)
// and checked again against an allow-list of elements before they reach the page (docs/chat.md).
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const list = $("messages"), input = $("input"), sendButton = $("send"), stopButton = $("stop");
  const badge = $("connection"), notice = $("notice"), talkStatus = $("talk-status"), csat = $("csat");
  const announcer = $("announcer"), typingLine = $("typing"), suggestionsBox = $("suggestions");
  const prechat = $("prechat"), confirmNew = $("confirm-new");
  const REASONS = JSON.parse($("feedback-reasons").textContent);
  const DEFAULTS = { title: "Support", greeting: "", brand_colour: "#2563eb", position: "right", prechat: false, suggestions: [], widget: false };
  const config = { ...DEFAULTS, ...readJson("chat-config") };
  // Set by the widget's frame script (static/widget-frame.js) before this one; absent on the standalone page.
  const host = window.chatHost || null;
  const OUTBOX_KEY = "chat.outbox";
  const PRECHAT_KEY = "chat.prechat-done";
  const LIMITED_RETRY_MS = 30000;
  const TYPING_SEND_MS = 2000; // the customer's typing: one frame every 2 s at most, while typing
  const TYPING_SHOW_MS = 5000; // the agent's typing line goes after 5 s without another frame
  const LIMITED = {
    4409: "This chat is open in too many tabs or windows: close one of them, then reload the page.",
    4429: "Too many connections from your network. Please wait a minute, then reload the page.",
  };
  const ROLE_NAMES = { customer: "You", bot: "Assistant", agent: "Agent", system: "" };
  const RICH_ROLES = new Set(["bot", "agent"]);

  let socket = null, retryDelay = 500, conversation = null, customerProfile = { name: "", email: "" };
  let sentOnSocket = new Set(), lastSent = null; // outbox client ids sent on the current socket
  let lastTypingSent = 0, typingTimer = null, profilePending = null;
  const ratings = new Map(); // message id -> {positive, reason, comment}: the customer's own feedback
  const thanked = new Set(); // message ids whose feedback the server confirmed on this page
  const bubbles = new Map(); // message id or "c:" + client_id -> {li, data, shown}
  // sessionStorage, or memory where the browser denies it (a third-party frame: the widget).
  const store = (() => {
    try { const s = window.sessionStorage; s.getItem(OUTBOX_KEY); return s; } catch {
      const kept = new Map();
      return { getItem: (k) => (kept.has(k) ? kept.get(k) : null), setItem: (k, v) => kept.set(k, String(v)), removeItem: (k) => kept.delete(k) };
    }
  })();
  // What the customer typed that the server has not confirmed yet: kept across reloads.
  let outbox = JSON.parse(store.getItem(OUTBOX_KEY) || "[]");

  const saveOutbox = () => store.setItem(OUTBOX_KEY, JSON.stringify(outbox));
  const newClientId = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());

  function readJson(id) {
    const node = $(id);
    try { return node ? JSON.parse(node.textContent) || {} : {}; } catch { return {}; }
  }

  // Markdown: no raw HTML, links only to http(s) and mailto, each opening in a new tab.
  const SAFE_URL = /^(https?:|mailto:)/i;
  const md = window.markdownit ? window.markdownit({ html: false, linkify: true, breaks: true }) : null;
  if (md) {
    const validate = md.validateLink.bind(md);
    md.validateLink = (url) => validate(url) && SAFE_URL.test(url.trim());
    const linkOpen = md.renderer.rules.link_open || ((tokens, i, options, env, self) => self.renderToken(tokens, i, options));
    md.renderer.rules.link_open = (tokens, i, options, env, self) => {
      tokens[i].attrSet("target", "_blank");
      tokens[i].attrSet("rel", "noopener noreferrer");
      return linkOpen(tokens, i, options, env, self);
    };
  }
  // The second lock: whatever the parser gave, only these elements and attributes stay.
  const ALLOWED = new Set(["P", "BR", "STRONG", "EM", "CODE", "PRE", "UL", "OL", "LI", "A", "BLOCKQUOTE",
    "H1", "H2", "H3", "H4", "H5", "H6", "HR", "S", "DEL", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD"]);

  function renderRich(target, text) {
    if (!md) { target.textContent = text; return; }
    const template = document.createElement("template"); // inert: nothing in it loads or runs
    template.innerHTML = md.render(text).trim();
    clean(template.content);
    target.replaceChildren(template.content);
  }

  function clean(root) {
    for (const element of [...root.querySelectorAll("*")]) {
      if (!element.isConnected && !root.contains(element)) continue;
      if (!ALLOWED.has(element.tagName)) { element.replaceWith(document.createTextNode(element.textContent)); continue; }
      const href = element.tagName === "A" ? element.getAttribute("href") || "" : "";
      const start = element.tagName === "OL" ? element.start : 1;
      for (const name of element.getAttributeNames()) element.removeAttribute(name);
      if (element.tagName === "A") {
        if (SAFE_URL.test(href.trim())) {
          element.setAttribute("href", href);
          element.setAttribute("target", "_blank");
          element.setAttribute("rel", "noopener noreferrer");
        }
      }
      if (start !== 1) element.setAttribute("start", String(start));
    }
  }

  // The brand colour as the accent, with white or near-black text on it, whichever reads better.
  function applyBrand(colour) {
    if (!/^#[0-9a-f]{6}$/i.test(colour || "")) return;
    const root = document.documentElement.style;
    root.setProperty("--accent", colour);
    root.setProperty("--on-accent", contrast(colour, "#ffffff") >= contrast(colour, "#111111") ? "#ffffff" : "#111111");
  }
  function luminance(hex) {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255)
      .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function contrast(a, b) {
    const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  }

  async function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // A reconnect returns to the conversation on screen, even if it was closed meanwhile (the
    // customer then sees the closure and the rating question); a reload takes the latest open one.
    const query = new URLSearchParams();
    if (host) {
      try {
        const ready = await host.ready();
        query.set("token", ready.token);
        if (ready.page) query.set("page", ready.page);
      } catch (error) {
        // The widget could not get an identity (e.g. 429: too many new chats from one network): say why.
        setBadge("Offline", "offline");
        setNotice((error && error.message) || "The chat could not start. Trying again…");
        setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 10000);
        return;
      }
    }
    if (conversation) query.set("conversation", conversation.id);
    const search = query.toString();
    socket = new WebSocket(`${scheme}://${location.host}/ws/chat/${search ? "?" + search : ""}`);
    sentOnSocket = new Set();
    socket.onopen = () => { retryDelay = 500; setBadge("Connected", "online"); updateControls(); };
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = (event) => {
      setBadge("Reconnecting…", "offline");
      updateControls();
      if (event.code === 4401) {
        if (host) { Promise.resolve(host.renew()).then(connect, () => setTimeout(connect, retryDelay)); return; }
        setNotice("Your session has expired: reload the page.");
        return;
      }
      if (event.code === 4404) { conversation = null; setTimeout(connect, 0); return; } // gone: the latest open one
      // Refused by a limit: say why (the server's reason; uvicorn passes it on, daphne drops it, and
      // then the code's own words stand in), and try again only after the limit's window has had time to pass.
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
      if (frame.customer) customerProfile = { name: frame.customer.name || "", email: frame.customer.email || "" };
      list.replaceChildren();
      bubbles.clear();
      ratings.clear();
      Object.entries(frame.feedback || {}).forEach(([id, f]) => ratings.set(Number(id), f));
      showStatus();
      if (config.greeting) list.append(greetingLine());
      frame.messages.forEach((message) => render(message));
      // Sent before the socket dropped, but the echo was lost with it: already stored, not resent.
      const stored = new Set(frame.messages.map((m) => m.client_id).filter(Boolean));
      outbox = outbox.filter((item) => !stored.has(item.client_id));
      saveOutbox();
      outbox.forEach(showUnsent);
      setNotice(workerNotice(frame));
      showTyping("");
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
      if (!shown && (message.role === "agent" || message.role === "system")) {
        if (message.role === "agent") showTyping("");
        finished(message);
      }
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
      paint(bubble, { later: true });
      updateControls();
    },
    done(frame) {
      const bubble = bubbles.get(frame.message_id);
      if (!bubble) return;
      Object.assign(bubble.data, { text: frame.text, status: frame.status, error: frame.error || "", sources: frame.sources || [] });
      paint(bubble);
      if (frame.status === "complete") finished(bubble.data);
      else announce(frame.status === "failed" ? "The assistant could not answer." : "The answer was stopped.");
      updateControls();
      flushOutbox();
    },
    error(frame) {
      if (profilePending && /email|name|profile|unknown_type/.test(frame.code || "")) {
        const refused = profilePending;
        profilePending = null;
        if (frame.code === "unknown_type") return; // a server without profiles: the chat goes on
        showPrechat(refused, frame.detail);
        return;
      }
      setNotice(frame.detail);
      if (frame.code === "rate_limited" || frame.code === "reply_in_progress") restoreUnsent();
    },
    notice(frame) { setNotice(frame.detail); },
    status(frame) {
      if (conversation && frame.conversation.id !== conversation.id) return;
      conversation = frame.conversation;
      showStatus();
      if (conversation.status !== "agent") showTyping("");
      updateControls();
      flushOutbox();
    },
    feedback(frame) {
      if (frame.feedback) { ratings.set(frame.message_id, frame.feedback); thanked.add(frame.message_id); }
      else { ratings.delete(frame.message_id); thanked.delete(frame.message_id); }
      const bubble = bubbles.get(frame.message_id);
      if (bubble) paint(bubble);
      if (frame.feedback) announce("Thanks for your feedback.");
    },
    satisfaction(frame) {
      conversation.satisfaction = frame.score;
      showStatus();
    },
    typing(frame) {
      if (frame.who === "agent") showTyping(`${frame.name || "The agent"} is typing…`);
    },
  };

  // A bot or agent message that finished live: said once by the live region, and told to the host
  // page (the widget's loader counts unread messages). History does not come here.
  function finished(message) {
    const who = message.role === "agent" ? message.author || "Agent" : message.role === "bot" ? "Assistant" : "";
    announce(who ? `${who}: ${message.text}` : message.text);
    if (host && message.role !== "system") host.notify({ type: "message", role: message.role, text: message.text });
  }

  function announce(text) {
    // Emptied first: the same words twice in a row are read twice.
    announcer.textContent = "";
    setTimeout(() => { announcer.textContent = text; }, 50);
  }

  function showTyping(text) {
    clearTimeout(typingTimer);
    typingLine.textContent = text;
    typingLine.hidden = !text;
    if (text) typingTimer = setTimeout(() => showTyping(""), TYPING_SHOW_MS);
  }

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

  function greetingLine() {
    const li = document.createElement("li");
    li.className = "greeting";
    li.append(span("who", ROLE_NAMES.bot), span("body"));
    renderRich(li.querySelector(".body"), config.greeting);
    return li;
  }

  function render(message) {
    let bubble = bubbles.get(message.id);
    if (!bubble) {
      const li = document.createElement("li");
      li.dataset.id = message.id;
      const stamp = document.createElement("time");
      stamp.className = "stamp";
      li.append(span("who"), stamp, span("body"), span("source"), span("meta"));
      // In id order, stored before unsent: the worker may announce its reply before this socket
      // hears the echo of the customer message it answers. The greeting stays first.
      const later = [...list.children].find((other) => other.classList.contains("msg") && (!other.dataset.id || Number(other.dataset.id) > message.id));
      list.insertBefore(li, later || null);
      bubble = { li, data: message, shown: null };
      bubbles.set(message.id, bubble);
    }
    bubble.data = message;
    paint(bubble);
  }

  // Streaming replies re-render at most once a frame: a delta marks its bubble, the frame paints it.
  const dirty = new Set();
  let frameRequested = false;
  function paintLater(bubble) {
    dirty.add(bubble);
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      const due = [...dirty];
      dirty.clear();
      due.forEach(paintBody);
    });
  }

  function paintBody(bubble) {
    const { li, data } = bubble;
    if (bubble.shown === data.text) return;
    bubble.shown = data.text;
    const body = li.querySelector(".body");
    if (RICH_ROLES.has(data.role)) renderRich(body, data.text); else body.textContent = data.text;
    li.scrollIntoView({ block: "end" });
  }

  function paint(bubble, { later = false } = {}) {
    const { li, data } = bubble;
    li.className = `msg ${data.role} ${data.status}`;
    li.querySelector(".who").textContent = ROLE_NAMES[data.role] ?? data.role;
    if (data.role === "agent" && data.author) li.querySelector(".who").textContent = `${data.author} (agent)`;
    stamp(li.querySelector("time"), data.created_at);
    if (later) paintLater(bubble); else { dirty.delete(bubble); paintBody(bubble); }
    // What the reply rests on, when the admin shows it (KNOWLEDGE_SHOW_SOURCES): the entries' questions.
    const source = li.querySelector(".source");
    const sources = data.role === "bot" && data.status === "complete" ? data.sources || [] : [];
    if (source) { source.textContent = sources.length ? `Source: ${sources.join("; ")}` : ""; source.hidden = !sources.length; }
    const meta = li.querySelector(".meta");
    meta.replaceChildren();
    if (data.role === "bot" && data.status === "pending") meta.textContent = "Waiting for the assistant…";
    if (data.status === "cancelled") meta.textContent = "Stopped.";
    if (data.status === "failed") meta.textContent = data.error || "Could not answer.";
    if (data.role === "bot" && (data.status === "complete" || data.status === "cancelled")) meta.append(ratingControls(data.id));
    placeRetry();
  }

  // Each message's time: the full date and time in the reader's locale on hover, the hour shown small.
  function stamp(time, iso) {
    if (!iso || time.dateTime === iso) return;
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return;
    time.dateTime = iso;
    time.title = when.toLocaleString([], { dateStyle: "full", timeStyle: "short" });
    time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // Retry (after a failure) or Regenerate (after Stop): only on the last reply, while the bot
  // holds the conversation (the server's reply_retry rule).
  function placeRetry() {
    list.querySelectorAll("button.retry").forEach((b) => b.remove());
    if (!conversation || conversation.status !== "bot") return;
    const last = [...bubbles.values()].filter(({ data }) => data.id && data.role !== "system").sort((a, b) => a.data.id - b.data.id).pop();
    if (!last || last.data.role !== "bot" || !["failed", "cancelled"].includes(last.data.status)) return;
    const retry = button(last.data.status === "failed" ? "Retry" : "Regenerate", () => { retry.disabled = true; send({ type: "retry" }); });
    retry.classList.add("retry");
    const meta = last.li.querySelector(".meta");
    meta.insertBefore(retry, meta.querySelector(".rating"));
  }

  const ICONS = {
    up: "M7 10v11H3V10h4zm2 11h8.2a2 2 0 0 0 2-1.6l1.3-6.6A2 2 0 0 0 18.5 10H14l.8-4.2A2 2 0 0 0 12.9 3.4L9 10v11z",
    down: "M7 14V3H3v11h4zm2-11h8.2a2 2 0 0 1 2 1.6l1.3 6.6A2 2 0 0 1 18.5 14H14l.8 4.2a2 2 0 0 1-1.9 2.4L9 14V3z",
  };
  function iconButton(label, icon, onClick) {
    const b = button("", onClick);
    b.classList.add("icon-button");
    b.setAttribute("aria-label", label);
    b.title = label;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", ICONS[icon]);
    path.setAttribute("fill", "currentColor");
    svg.append(path);
    b.append(svg, span("visually-hidden", label));
    return b;
  }

  // Thumbs up or down on a bot reply; a second click on the same thumb takes the rating back.
  function ratingControls(messageId) {
    const rating = ratings.get(messageId);
    const box = document.createElement("span");
    box.className = "rating";
    const rate = (positive, reason = "", comment = "") => send({ type: "feedback", message_id: messageId, positive, reason, comment });
    const up = iconButton("Helpful", "up", () => rate(rating && rating.positive ? null : true));
    const down = iconButton("Not helpful", "down", () => rate(rating && !rating.positive ? null : false));
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
      comment.setAttribute("aria-label", "Tell us more (optional)");
      comment.maxLength = 1000;
      comment.value = rating.comment || "";
      const save = button("Send", () => rate(false, reason.value, comment.value));
      save.setAttribute("aria-label", "Send feedback");
      box.append(reason, comment, save);
    }
    if (thanked.has(messageId)) box.append(span("thanks", "Thanks for your feedback"));
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
  const empty = () => bubbles.size === 0;

  function updateControls() {
    const busy = botAnswering();
    const closed = !!conversation && conversation.status === "closed";
    stopButton.hidden = !busy;
    sendButton.hidden = busy;
    sendButton.disabled = input.disabled = closed;
    const asking = wantsPrechat();
    prechat.hidden = !asking;
    $("composer").hidden = asking;
    suggestionsBox.hidden = asking || closed || !empty() || !config.suggestions.length;
    placeRetry();
  }

  // The pre-chat form: when the site asks for it, before the first message, unless the customer
  // already gave a name or e-mail (history's "customer") or answered it in this tab.
  function wantsPrechat() {
    if (!config.prechat || !conversation || !empty()) return false;
    if (customerProfile.name || customerProfile.email) return false;
    return store.getItem(PRECHAT_KEY) !== "1";
  }
  const prechatRequired = () => config.prechat === "required";

  function showPrechat(values, error) {
    store.removeItem(PRECHAT_KEY);
    $("prechat-name").value = values.name;
    $("prechat-email").value = values.email;
    const line = $("prechat-error");
    line.textContent = error || "";
    line.hidden = !error;
    updateControls();
    $("prechat-email").focus();
  }

  function submitPrechat(event) {
    event.preventDefault();
    const name = $("prechat-name").value.trim(), email = $("prechat-email").value.trim();
    const emailField = $("prechat-email");
    let error = "";
    if (prechatRequired() && (!name || !email)) error = "Please give your name and e-mail.";
    else if (email && !emailField.checkValidity()) error = "That e-mail address does not look right.";
    else if (name.length > 120) error = "A name can be at most 120 characters.";
    if (error) { showPrechat({ name, email }, error); return; }
    store.setItem(PRECHAT_KEY, "1");
    if (name || email) {
      profilePending = { name, email };
      customerProfile = { name, email };
      send({ type: "profile", name, email });
      setTimeout(() => { profilePending = null; }, 5000);
    }
    updateControls();
    input.focus();
  }

  function drawSuggestions() {
    suggestionsBox.replaceChildren(...config.suggestions.filter((q) => typeof q === "string" && q.trim()).map((question) =>
      button(question, () => { input.value = question; submit(); })));
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
    updateControls();
  }

  // The customer's typing, for the agent: only while a person holds or is asked for the conversation.
  function typed() {
    if (!conversation || !["waiting", "agent"].includes(conversation.status) || !input.value) return;
    const now = Date.now();
    if (now - lastTypingSent < TYPING_SEND_MS) return;
    if (send({ type: "typing" })) lastTypingSent = now;
  }

  // "New conversation" closes this one: while a person is involved, ask first.
  function askNewConversation() {
    if (!conversation || !["waiting", "agent"].includes(conversation.status)) { send({ type: "new_conversation" }); return; }
    if (confirmNew.open) return;
    $("confirm-new-text").textContent = conversation.status === "agent"
      ? `You are talking to ${conversation.agent || "an agent"}. A new conversation ends this one: they will not see your new messages.`
      : "You asked for a person. A new conversation ends this one, and you will lose your place in the queue.";
    confirmNew.showModal();
  }

  function layoutToViewport() {
    // The on-screen keyboard: the visual viewport shrinks; the chat follows it so the composer stays visible.
    if (window.visualViewport) document.documentElement.style.setProperty("--app-height", `${Math.round(window.visualViewport.height)}px`);
  }

  $("chat-title").textContent = config.title || DEFAULTS.title;
  document.title = config.title || DEFAULTS.title;
  applyBrand(config.brand_colour);
  drawSuggestions();
  if (window.visualViewport) { window.visualViewport.addEventListener("resize", layoutToViewport); layoutToViewport(); }

  $("composer").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
  });
  input.addEventListener("input", typed);
  stopButton.addEventListener("click", () => send({ type: "stop" }));
  $("new-conversation").addEventListener("click", askNewConversation);
  $("handoff").addEventListener("click", () => send({ type: "handoff" }));
  $("confirm-new-cancel").addEventListener("click", () => confirmNew.close("cancel"));
  $("confirm-new-ok").addEventListener("click", () => { confirmNew.close("ok"); send({ type: "new_conversation" }); });
  confirmNew.addEventListener("close", () => { if (confirmNew.returnValue !== "ok") $("new-conversation").focus(); });
  prechat.addEventListener("submit", submitPrechat);
  $("prechat-skip").addEventListener("click", () => { store.setItem(PRECHAT_KEY, "1"); updateControls(); input.focus(); });
  const closeWidget = $("close-widget");
  if (closeWidget) closeWidget.addEventListener("click", () => host && host.notify({ type: "close" }));
  csat.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => send({ type: "satisfaction", score: Number(b.dataset.score) })));
  document.addEventListener("keydown", (event) => {
    if (confirmNew.open) return; // Esc closes the dialog (its own cancel), and nothing else
    if (event.key === "Escape" && replyInFlight()) send({ type: "stop" });
    if (event.altKey && event.key.toLowerCase() === "n") { event.preventDefault(); askNewConversation(); }
  });

  connect();
})();
