// The training overview (templates/finetuning/overview.html): the runs under way and a dataset
// build, each followed by polling its small JSON view; a ready build is linked without a reload.
(() => {
  // The runs still under way: their status and phase follow the run's JSON view until they end.
  document.querySelectorAll("tr[data-status-url]").forEach((row) => {
    async function follow() {
      let run = null;
      try {
        const response = await fetch(row.dataset.statusUrl, { headers: { Accept: "application/json" } });
        if (response.ok) run = await response.json();
      } catch (e) { /* the next round asks again */ }
      if (run) {
        const badge = row.querySelector(".badge");
        badge.textContent = run.status; badge.className = "badge " + run.status;
        row.querySelector(".phase").textContent = run.phase_text;
      }
      if (!run || !run.finished) setTimeout(follow, 2000);
    }
    setTimeout(follow, 2000);
  });
})();

(() => {
  const $ = (id) => document.getElementById(id);
  const first = JSON.parse($("build-data").textContent);
  if (!first) return;

  function addDatasetRow(snapshot) {
    const body = $("datasets").tBodies[0];
    if (body.querySelector(`tr[data-snapshot="${snapshot.id}"]`)) return;
    body.querySelector("tr.none")?.remove();
    const row = body.insertRow(0);
    row.dataset.snapshot = String(snapshot.id);
    const link = document.createElement("a");
    link.href = snapshot.url; link.textContent = snapshot.name;
    row.insertCell().append(link);
    row.insertCell().textContent = String(snapshot.examples);
    row.insertCell().textContent = "";
    row.insertCell().textContent = "just now";
  }

  function draw(build) {
    $("build").hidden = false;
    $("build").className = "build " + build.status;
    $("build-status").textContent = build.status;
    $("build-status").className = "badge " + build.status;
    $("build-phase").textContent = build.phase_text;
    $("build-progress").max = build.phases_total;
    $("build-progress").value = build.phases_done;
    $("build-progress").textContent = `${build.phases_done} of ${build.phases_total}`;
    $("build-progress").hidden = build.finished;
    $("build-error").textContent = build.error || "";
    const start = $("build-start");
    start.disabled = !build.finished;
    if (build.finished) start.removeAttribute("aria-describedby");
    if (build.snapshot) {
      const link = document.createElement("a");
      link.href = build.snapshot.url; link.textContent = build.snapshot.name;
      $("build-result").replaceChildren("Dataset ", link, ` is ready: ${build.snapshot.examples} examples.`);
      addDatasetRow(build.snapshot);
    }
    document.body.dataset.buildPolls = String(Number(document.body.dataset.buildPolls || 0) + 1);
  }

  async function poll() {
    let build = null;
    try {
      const response = await fetch(first.status_url, { headers: { Accept: "application/json" } });
      if (response.ok) build = await response.json();
    } catch (e) { /* the next round asks again */ }
    if (build) draw(build);
    if (!build || !build.finished) setTimeout(poll, 1000);
  }
  if (!first.finished) setTimeout(poll, 1000);
})();
