// The training pages' confirmations (templates/finetuning/_layout.html): a form with data-confirm
// (promote, forced promote, rollback) opens the dialog naming what will happen; only its confirm
// button sends the form. The form is held from the click that opened the dialog, never reset by a
// "close" event: a late close from an earlier Cancel cannot drop the next confirmation.
(() => {
  const dialog = document.getElementById("confirm");
  const ok = document.getElementById("confirm-ok");
  let pending = null;
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    event.preventDefault();
    pending = form;
    document.getElementById("confirm-title").textContent = form.dataset.confirmTitle || "Are you sure?";
    document.getElementById("confirm-text").textContent = form.dataset.confirm;
    ok.textContent = form.dataset.confirmButton || "Confirm";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();  // the safe choice first: Enter cancels
  });
  ok.addEventListener("click", () => {
    const form = pending;
    pending = null;
    dialog.close("ok");
    if (!form) return;
    form.querySelectorAll("button[type=submit]").forEach((button) => { button.disabled = true; });
    form.submit();  // fires no submit event; its fields were validated before the dialog opened
  });
})();
