// The widget's staff pages: copy buttons for the snippet and the identity secret.
"use strict";
(() => {
  const status = document.getElementById("copy-status");
  const say = (text) => { if (status) status.textContent = text; };
  const select = (element) => {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  };
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent);
        say("Copied.");
      } catch (error) {
        select(source); // no clipboard permission (plain http): selected, for Ctrl+C
        say("Selected: press Ctrl+C (⌘C) to copy.");
      }
    });
  }
})();
