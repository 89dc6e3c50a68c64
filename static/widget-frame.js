// Inside the widget's iframe (/widget/KEY/frame), loaded before chat.js: window.chatHost, the
// host hook chat.js uses when it runs in the widget (docs/widget.md, "How the frame gets its
// customer"). The frame is third-party on the host page and gets no cookies, so the customer is
// a signed token the loader keeps in the host page's localStorage and hands over by postMessage.
(() => {
  "use strict";
  const MESSAGE_SOURCE = "chatbot-widget";
  const key = location.pathname.split("/")[2] || "";
  const base = `/widget/${encodeURIComponent(key)}`;
  const embedded = window.parent !== window;

  // The origins this frame talks to: the site's allowed origins, the deployment's, and our own
  // (the preview). A message from anywhere else is ignored.
  const trusted = fetch(`${base}/config`, { credentials: "omit" })
    .then((response) => (response.ok ? response.json() : { origins: [] }))
    .then((config) => config.origins || [])
    .catch(() => []);

  let parentOrigin = null;
  let initialise;
  const initialised = new Promise((resolve) => { initialise = resolve; });
  if (!embedded) initialise({ token: "", page: "", user: {} }); // opened on its own: no host to ask
  const outbox = [];

  function post(message) {
    const framed = Object.assign({ source: MESSAGE_SOURCE }, message);
    if (parentOrigin) window.parent.postMessage(framed, parentOrigin);
    else if (embedded) outbox.push(framed);
  }

  window.addEventListener("message", async (event) => {
    if (!embedded || event.source !== window.parent) return;
    const data = event.data;
    if (!data || data.source !== MESSAGE_SOURCE) return;
    const origins = await trusted;
    if (!origins.includes(event.origin)) return;
    if (data.type === "init") {
      parentOrigin = event.origin;
      initialise({
        token: typeof data.token === "string" ? data.token : "",
        page: typeof data.page === "string" ? data.page : "",
        user: data.user && typeof data.user === "object" ? data.user : {},
      });
      while (outbox.length) window.parent.postMessage(outbox.shift(), parentOrigin);
    } else if (data.type === "focus" && event.origin === parentOrigin) {
      const input = document.getElementById("input");
      if (input) input.focus();
    }
  });

  async function askSession(user) {
    const body = user && user.id ? { user_id: user.id, user_hash: user.hash || "", name: user.name || "", email: user.email || "" } : {};
    const response = await fetch(`${base}/session`, {
      method: "POST",
      credentials: "omit",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok && answer.token) return answer.token;
    if (response.status === 403 && answer.error === "identity_invalid" && body.user_id) {
      // The host's signature is wrong: say so to its developers, and chat anonymously meanwhile.
      console.error(`Chat widget: ${answer.detail}`);
      return askSession(null);
    }
    throw new Error(answer.detail || `The chat could not start (HTTP ${response.status}).`);
  }

  let token = "";
  async function fresh(context) {
    token = await askSession(context.user);
    post({ type: "token", token });
    return { token, page: context.page };
  }

  window.chatHost = {
    async ready() {
      const context = await initialised;
      if (!token) token = context.token;
      if (!token) return fresh(context);
      return { token, page: context.page };
    },
    async renew() {
      return fresh(await initialised);
    },
    notify(event) {
      if (event && (event.type === "message" || event.type === "close")) {
        post({ type: event.type, role: event.role || "", text: typeof event.text === "string" ? event.text.slice(0, 200) : "" });
      }
    },
  };

  // Esc closes the widget, unless it is stopping an answer (chat.js's Stop) at that moment.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    const stop = document.getElementById("stop");
    if (stop && !stop.hidden) return;
    post({ type: "close" });
  });
})();
