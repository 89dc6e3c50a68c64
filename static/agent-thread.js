// The transcript's thread: private notes and activity lines live from the agents' socket, the note
// form, and the reply box's "/" snippets (canned replies and approved knowledge). Loaded with defer
// after agent.js, whose window.agentWorkspace it listens on. Every text is set as text.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  const clock = (iso) => new Date(iso).toTimeString().slice(0, 5);

  // Activity lines, worded as conversations/workspace/thread.py activity_text words them.
  const SHOWN = new Set(["handoff_requested", "assigned", "unassigned"]);
  function activityText(event) {
    const { kind, actor, assignee } = event;
    if (kind === "handoff_requested") return "Customer asked for a person";
    if (kind === "assigned") {
      if (actor && actor === assignee) return `${actor} took this`;
      if (actor) return `${actor} assigned this to ${assignee || "nobody"}`;
      return assignee ? `Assigned to ${assignee}` : "Assigned";
    }
    if (actor && assignee && actor !== assignee) return `${actor} unassigned ${assignee}`;
    return actor ? `${actor} unassigned this` : "Unassigned";
  }

  function start() {
    const workspace = window.agentWorkspace, list = $("transcript");
    if (!workspace || !workspace.conversationId || !list) return;
    const forThis = (frame) => frame.conversation_id === workspace.conversationId;

    // In time order: after the last line of the thread at or before it (live, that is the end;
    // after a reconnect, what was missed meanwhile goes back where it happened).
    function place(li, iso) {
      const at = Date.parse(iso);
      const lines = [...list.children];
      const before = lines.reverse().find((other) => {
        const time = other.querySelector("time[datetime]");
        return time && time.dateTime && Date.parse(time.dateTime) <= at;
      });
      if (before) before.after(li); else list.prepend(li);
      li.scrollIntoView({ block: "nearest" });
    }

    function renderNote(note) {
      if (list.querySelector(`li.note[data-note-id="${CSS.escape(String(note.id))}"]`)) return;
      const li = $("note-template").content.firstElementChild.cloneNode(true);
      li.dataset.noteId = note.id;
      li.id = `note-${note.id}`;
      li.querySelector(".author").textContent = note.author;
      const time = li.querySelector("time");
      time.dateTime = note.created_at;
      time.textContent = clock(note.created_at);
      li.querySelector(".body").textContent = note.text;
      place(li, note.created_at);
    }

    function renderActivity(event) {
      if (!SHOWN.has(event.kind)) return; // the others have their own system message line
      if (list.querySelector(`li.activity[data-event-id="${CSS.escape(String(event.id))}"]`)) return;
      const li = $("activity-template").content.firstElementChild.cloneNode(true);
      li.dataset.eventId = event.id;
      li.dataset.kind = event.kind;
      li.querySelector(".text").textContent = activityText(event);
      const time = li.querySelector("time");
      time.dateTime = event.created_at;
      time.textContent = clock(event.created_at);
      place(li, event.created_at);
    }

    workspace.on("note", (frame) => { if (forThis(frame)) renderNote(frame.note); });
    workspace.on("activity", (frame) => { if (forThis(frame)) renderActivity(frame.event); });
    // Each (re)connection's history: what was written while the socket was down is read once.
    workspace.on("history", async (frame) => {
      if (!forThis(frame)) return;
      try {
        const response = await fetch($("thread-note-form").action, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        const answer = await response.json();
        if (!answer.ok) return;
        answer.notes.forEach(renderNote);
        answer.activity.forEach(renderActivity);
      } catch (failure) { /* the live frames still come; the next reconnection tries again */ }
    });

    wireNoteForm(renderNote);
    wireSnippets();
  }

  // The note form: posted as JSON; a refusal is said beside the field.
  function wireNoteForm(renderNote) {
    const form = $("thread-note-form"), input = $("thread-note-input"), error = $("thread-note-error");
    if (!form) return;
    const say = (text) => {
      error.textContent = text;
      error.hidden = !text;
      input.setAttribute("aria-invalid", text ? "true" : "false");
    };
    async function add() {
      if (!input.value.trim()) { say("Write the note first."); input.focus(); return; }
      const button = $("thread-note-add");
      button.disabled = true;
      try {
        const response = await fetch(form.action, {
          method: "POST",
          headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
          body: new FormData(form),
          credentials: "same-origin",
        });
        const answer = await response.json().catch(() => ({ ok: false, detail: `The note was not saved (error ${response.status}).` }));
        if (!answer.ok) { say(answer.detail || "The note was not saved."); return; }
        say("");
        input.value = "";
        renderNote(answer.note);
      } catch (failure) {
        say("The note was not saved: the server cannot be reached. Try again in a moment.");
      } finally {
        button.disabled = false;
      }
    }
    form.addEventListener("submit", (event) => { event.preventDefault(); add(); });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); add(); }
    });
    input.addEventListener("input", () => { if (!error.hidden && input.value.trim()) say(""); });
  }

  // "/" at the start of a word in the reply box opens the suggestions for what follows it.
  function wireSnippets() {
    const input = $("agent-input"), listbox = $("snippet-list"), status = $("snippet-status");
    const composer = $("agent-composer");
    if (!input || !listbox) return;
    let items = [], active = -1, asked = 0, range = null, timer = null;

    input.setAttribute("aria-controls", "snippet-list");
    input.setAttribute("aria-autocomplete", "list");

    // The "/word" just before the caret: where it starts and what follows the slash.
    function slashWord() {
      if (input.selectionStart !== input.selectionEnd) return null;
      const before = input.value.slice(0, input.selectionStart);
      const match = before.match(/(^|\s)\/([\w-]*)$/);
      if (!match) return null;
      return { start: before.length - match[2].length - 1, end: before.length, query: match[2] };
    }

    function close() {
      listbox.hidden = true;
      listbox.replaceChildren();
      items = [];
      active = -1;
      range = null;
      input.removeAttribute("aria-activedescendant");
    }

    const isOpen = () => !listbox.hidden && items.length > 0;

    function draw(found) {
      listbox.replaceChildren();
      items = found;
      active = -1;
      input.removeAttribute("aria-activedescendant");
      if (!found.length) {
        listbox.hidden = true;
        status.textContent = "No canned reply matches.";
        return;
      }
      found.forEach((item, i) => {
        const option = document.createElement("li");
        option.id = `snippet-${i}`;
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", "false");
        option.dataset.kind = item.kind;
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = item.kind === "knowledge" ? `Knowledge: ${item.label}` : item.label;
        const text = document.createElement("span");
        text.className = "text";
        text.textContent = item.text;
        option.append(label, text);
        // mousedown, not click: the reply box keeps its focus and caret.
        option.addEventListener("mousedown", (event) => { event.preventDefault(); insert(i); });
        listbox.append(option);
      });
      listbox.hidden = false;
      status.textContent = `${found.length} suggestion${found.length === 1 ? "" : "s"}: arrow keys to choose, Enter or Tab to insert, Esc to close.`;
    }

    function choose(index) {
      const options = [...listbox.children];
      active = (index + options.length) % options.length;
      options.forEach((option, i) => option.setAttribute("aria-selected", i === active ? "true" : "false"));
      input.setAttribute("aria-activedescendant", options[active].id);
      options[active].scrollIntoView({ block: "nearest" });
    }

    function insert(index) {
      const item = items[index];
      const where = slashWord() || range;
      if (!item || !where) { close(); return; }
      input.value = input.value.slice(0, where.start) + item.text + input.value.slice(where.end);
      const caret = where.start + item.text.length;
      input.setSelectionRange(caret, caret);
      close();
      input.focus();
      status.textContent = `Inserted ${item.label}.`;
      input.dispatchEvent(new Event("input", { bubbles: true })); // the customer sees the agent typing
    }

    async function suggest() {
      const word = slashWord();
      if (!word) { close(); return; }
      range = word;
      const ask = ++asked;
      try {
        const response = await fetch(`/agent/snippets.json?q=${encodeURIComponent(word.query)}`, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        const answer = await response.json();
        if (ask !== asked || !slashWord()) return; // typed on since: a later answer will come
        draw(answer.ok ? answer.snippets : []);
      } catch (failure) {
        if (ask === asked) close();
      }
    }

    input.addEventListener("input", () => {
      clearTimeout(timer);
      if (!slashWord()) { close(); return; }
      timer = setTimeout(suggest, 120);
    });
    input.addEventListener("blur", () => setTimeout(close, 150));

    // Captured on the form, before agent.js's own keydown on the box (Enter sends, Esc blurs).
    composer.addEventListener("keydown", (event) => {
      if (event.target !== input || !isOpen()) return;
      const keys = {
        ArrowDown: () => choose(active + 1),
        ArrowUp: () => choose(active < 0 ? items.length - 1 : active - 1),
        Enter: () => insert(Math.max(active, 0)),
        Tab: () => insert(Math.max(active, 0)),
        Escape: () => { close(); status.textContent = "Suggestions closed."; },
      };
      const action = event.shiftKey || event.ctrlKey || event.altKey || event.metaKey ? null : keys[event.key];
      if (!action) return;
      event.preventDefault();
      event.stopPropagation();
      action();
    }, true);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
