// The chat widget's loader, served at /widget.js (docs/widget.md). Plain ES2017, no build step.
//
// <script src="https://SUPPORT-HOST/widget.js" data-site="KEY" async></script>
// adds one <chatbot-widget> element whose shadow root holds a launcher button and a panel with an
// iframe of the support host (/widget/KEY/frame). Nothing else on the host page is touched: every
// style lives in the shadow root, and the only global is window.chatbotWidget (open/close/toggle).
// The frame is third-party here, so it has no cookies: its customer token is kept in this page's
// localStorage (first-party), handed to the frame and back by postMessage, with exact origins.
(() => {
  "use strict";
  const NAMESPACE = "chatbotWidget";
  const MESSAGE_SOURCE = "chatbot-widget";
  if (window[NAMESPACE]) return; // the snippet twice on one page: one widget

  const script = document.currentScript || document.querySelector('script[data-site][src*="/widget.js"]');
  if (!script) return;
  const supportOrigin = new URL(script.src, location.href).origin;
  const site = script.dataset.site || "";
  if (!/^[A-Za-z0-9_-]+$/.test(site)) {
    console.error("Chat widget: the snippet needs data-site, the site key shown in /agent/widget/.");
    return;
  }
  const user = {
    id: script.dataset.userId || "",
    hash: script.dataset.userHash || "",
    name: script.dataset.userName || "",
    email: script.dataset.userEmail || "",
  };
  const base = `${supportOrigin}/widget/${encodeURIComponent(site)}`;
  const storageKey = `chatbot-widget:${site}:${user.id ? `user:${user.id}` : "anonymous"}`;

  const stored = {
    get() {
      try { return window.localStorage.getItem(storageKey) || ""; } catch (error) { return ""; }
    },
    set(token) {
      try { window.localStorage.setItem(storageKey, token); } catch (error) { /* private mode: per page view */ }
    },
  };

  const CSS = `
    :host { all: initial; }
    .widget { --brand: #2563eb; font: 16px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
    .launcher {
      position: fixed; bottom: 20px; right: 20px; z-index: 2147483000;
      width: 56px; height: 56px; min-width: 44px; min-height: 44px; padding: 0; margin: 0;
      border: 0; border-radius: 50%; background: var(--brand); color: #fff; cursor: pointer;
      display: flex; align-items: center; justify-content: center;
      box-shadow: 0 4px 14px rgba(0, 0, 0, .28);
    }
    .left .launcher { right: auto; left: 20px; }
    .launcher:focus-visible { outline: 3px solid #111; outline-offset: 3px; box-shadow: 0 0 0 6px #fff; }
    .launcher svg { width: 28px; height: 28px; fill: currentColor; }
    .launcher .icon-close { display: none; }
    .open .launcher .icon-open { display: none; }
    .open .launcher .icon-close { display: block; }
    .badge {
      position: absolute; top: -4px; right: -4px; min-width: 22px; height: 22px; padding: 0 6px;
      box-sizing: border-box; border-radius: 11px; background: #b91c1c; color: #fff;
      font: 700 12px/22px system-ui, sans-serif; text-align: center;
    }
    .badge[hidden] { display: none; }
    .panel {
      position: fixed; bottom: 88px; right: 20px; z-index: 2147483000;
      width: 380px; height: 600px; max-width: calc(100vw - 40px); max-height: calc(100vh - 108px);
      border-radius: 12px; overflow: hidden; background: #fff; box-shadow: 0 8px 30px rgba(0, 0, 0, .3);
    }
    .left .panel { right: auto; left: 20px; }
    .panel[hidden] { display: none; }
    .panel iframe { display: block; width: 100%; height: 100%; border: 0; }
    .visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
    @media (max-width: 479.98px) {
      .panel { top: 0; right: 0; bottom: 0; left: 0; width: 100%; height: 100%; max-width: none; max-height: none; border-radius: 0; }
      .left .panel { left: 0; }
      .open .launcher { display: none; }
    }
  `;
  const ICONS = `
    <svg class="icon-open" viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg>
    <svg class="icon-close" viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M18.3 5.7 12 12l6.3 6.3-1.4 1.4L10.6 13.4 4.3 19.7l-1.4-1.4L9.2 12 2.9 5.7l1.4-1.4 6.3 6.3 6.3-6.3z"/></svg>`;

  function styleInto(root) {
    // A constructed stylesheet is not inline markup: a host page whose CSP forbids inline styles
    // still shows the widget. Older browsers get a <style> element.
    if ("adoptedStyleSheets" in Document.prototype && "replaceSync" in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
    } else {
      const style = document.createElement("style");
      style.textContent = CSS;
      root.appendChild(style);
    }
  }

  const hostElement = document.createElement("chatbot-widget");
  const root = hostElement.attachShadow({ mode: "open" });
  styleInto(root);
  const widget = document.createElement("div");
  widget.className = "widget";
  const panel = document.createElement("div");
  panel.className = "panel";
  panel.id = "chatbot-widget-panel";
  panel.hidden = true;
  const launcher = document.createElement("button");
  launcher.type = "button";
  launcher.className = "launcher";
  launcher.setAttribute("aria-label", "Open chat");
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", panel.id);
  launcher.innerHTML = ICONS;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.id = "chatbot-widget-unread";
  badge.hidden = true;
  launcher.appendChild(badge);
  launcher.setAttribute("aria-describedby", badge.id);
  widget.append(panel, launcher);
  root.appendChild(widget);

  let frame = null;
  let loaded = false; // the frame holds our page (before that, its window is about:blank)
  let isOpen = false;
  let unread = 0;
  let title = "Support";

  function post(message) {
    if (frame && loaded && frame.contentWindow) {
      frame.contentWindow.postMessage(Object.assign({ source: MESSAGE_SOURCE }, message), supportOrigin);
    }
  }

  function ensureFrame() {
    if (frame) return;
    frame = document.createElement("iframe");
    frame.title = `${title} chat`;
    frame.setAttribute("allow", "clipboard-write");
    frame.setAttribute("referrerpolicy", "origin");
    // Every load (the first, a reload inside the frame) gets the token and the page anew.
    frame.addEventListener("load", () => {
      loaded = true;
      post({ type: "init", token: stored.get(), page: location.href, user });
      if (isOpen) post({ type: "focus" });
    });
    frame.src = `${base}/frame`;
    panel.appendChild(frame);
  }

  function showUnread() {
    badge.hidden = unread === 0;
    badge.textContent = unread > 9 ? "9+" : String(unread);
    const words = `${unread} unread message${unread === 1 ? "" : "s"}`;
    badge.setAttribute("aria-label", words);
    badge.title = words;
  }

  function open() {
    if (isOpen) return;
    ensureFrame();
    isOpen = true;
    widget.classList.add("open");
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Close chat");
    unread = 0;
    showUnread();
    frame.focus();
    post({ type: "focus" });
  }

  function close() {
    if (!isOpen) return;
    isOpen = false;
    widget.classList.remove("open");
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open chat");
    launcher.focus();
  }

  launcher.addEventListener("click", () => (isOpen ? close() : open()));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && isOpen) close();
  });

  window.addEventListener("message", (event) => {
    // Only our own origin, and only the frame this loader made (not another frame of that origin).
    if (event.origin !== supportOrigin || !frame || event.source !== frame.contentWindow) return;
    const data = event.data;
    if (!data || data.source !== MESSAGE_SOURCE || typeof data.type !== "string") return;
    if (data.type === "token" && typeof data.token === "string") stored.set(data.token);
    else if (data.type === "close") close();
    else if (data.type === "message" && !isOpen) {
      unread += 1;
      showUnread();
    }
  });

  function start(settings) {
    title = settings.title || title;
    if (/^#[0-9a-fA-F]{6}$/.test(settings.brand_colour || "")) widget.style.setProperty("--brand", settings.brand_colour);
    if (settings.position === "left") widget.classList.add("left");
    panel.setAttribute("role", "region");
    panel.setAttribute("aria-label", `${title} chat`);
    (document.body || document.documentElement).appendChild(hostElement);
    // A returning customer's frame loads at once, so replies that come while it is closed count as unread.
    if (stored.get()) ensureFrame();
  }

  fetch(`${base}/config`, { credentials: "omit" })
    .then((response) => {
      if (response.status === 403) throw new Error(`${location.origin} is not allowed to embed this chat (add it in /agent/widget/).`);
      if (!response.ok) throw new Error(`no widget site "${site}" (HTTP ${response.status}).`);
      return response.json();
    })
    .then(start)
    .catch((error) => console.error(`Chat widget: ${error.message}`));

  window[NAMESPACE] = { open, close, toggle: () => (isOpen ? close() : open()) };
})();
