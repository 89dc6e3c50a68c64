// The knowledge page: retiring an entry asks first, in a <dialog>; everything else is plain forms.
(() => {
  "use strict";

  const dialog = document.getElementById("retire-dialog");
  const question = document.getElementById("retire-question");
  let pending = null;

  document.querySelectorAll("form.retire-form").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (form.elements.confirm.value === "yes") return;  // confirmed: let it post
      event.preventDefault();
      pending = form;
      question.textContent = form.dataset.question;  // as text: an entry's question is never markup
      dialog.returnValue = "";
      dialog.showModal();
    });
  });

  // "close" is a queued event: one from an earlier opening (Cancel) can arrive after the dialog
  // was opened again for another entry; it must not forget that entry.
  dialog.addEventListener("close", () => {
    if (dialog.open) return;
    if (pending && dialog.returnValue === "retire") {
      pending.elements.confirm.value = "yes";
      pending.submit();
    }
    pending = null;
  });
})();
