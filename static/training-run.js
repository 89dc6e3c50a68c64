// The training run page (templates/finetuning/run.html): live progress, socket first, polling when
// it is down; the loss curve is one Chart.js chart whose data each push replaces.
(() => {
  const $ = (id) => document.getElementById(id);
  const url = $("run-page").dataset.statusUrl;
  const versionUrl = $("run-page").dataset.versionUrl;
  const LATEST_ROWS = 5;
  const stepsTitle = (total) => (total ? `Step (of ${total})` : "Step");

  const chart = new Chart($("curve"), {
    type: "line",
    data: { datasets: [{ label: "Training loss", data: [], borderColor: "#3d7be0", backgroundColor: "#3d7be0",
      borderWidth: 2, pointRadius: 2, pointHoverRadius: 5, tension: 0 }] },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      scales: {
        x: { type: "linear", min: 0, title: { display: true, text: "Step" }, ticks: { precision: 0 } },
        y: { type: "linear", title: { display: true, text: "Loss" } },
      },
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: {
          title: (items) => `Step ${items[0].parsed.x}` + (chart.options.scales.x.max ? ` of ${chart.options.scales.x.max}` : ""),
          label: (item) => `Loss ${item.parsed.y.toFixed(3)}`,
        } },
      },
    },
  });

  function drawCurve(run) {
    const points = run.loss_history.map(([step, loss]) => ({ x: step, y: loss }));
    const total = Math.max(run.total_steps, points.length ? points[points.length - 1].x : 0);
    chart.data.datasets[0].data = points;
    chart.options.scales.x.max = total || undefined;
    chart.options.scales.x.title.text = stepsTitle(total);
    chart.update("none");
    const last = points[points.length - 1];
    const summary = last ? `Latest: step ${last.x} of ${total}, loss ${last.y.toFixed(3)}.` : "No loss values yet.";
    $("loss-latest").textContent = summary;
    $("curve").setAttribute("aria-label", `Training loss by step. ${summary}`);
    const rows = points.slice(-LATEST_ROWS).reverse().map((p) => {
      const row = document.createElement("tr");
      const step = document.createElement("td"), loss = document.createElement("td");
      step.textContent = String(p.x); loss.textContent = p.y.toFixed(3);
      row.append(step, loss);
      return row;
    });
    $("loss-table").tBodies[0].replaceChildren(...rows);
  }

  function draw(run) {
    $("status").textContent = run.status;
    $("status").className = "badge " + run.status;
    $("phase").textContent = run.phase_text;
    $("bar").style.width = (100 * run.progress).toFixed(1) + "%";
    const loss = run.loss_history.length ? run.loss_history[run.loss_history.length - 1][1].toFixed(3) : "–";
    const eta = run.eta_s == null ? "–" : Math.round(run.eta_s) + " s";
    const rate = run.tokens_per_s == null ? "–" : Math.round(run.tokens_per_s);
    // Before its first step a run has no steps to count: the phase above says what it does.
    $("numbers").textContent = !run.total_steps ? "" :
      `step ${run.step} of ${run.total_steps} · loss ${loss} · ${rate} tokens/s · ETA ${eta}` +
      (run.resumed_from_step ? ` · resumed from step ${run.resumed_from_step}` : "");
    drawCurve(run);
    $("error").textContent = run.error || "";
    $("cancel").hidden = run.finished;
    if (run.version) {
      const link = document.createElement("a");
      link.href = versionUrl.replace("VERSION", run.version); link.textContent = run.version;
      $("version").replaceChildren("Version: ", link);
    }
  }
  // Live: the training worker pushes every change over the run's socket. When the socket is down
  // (no channel layer, a proxy without websockets), the page polls the JSON view instead.
  let polling = null, finished = false, retry = 1000;
  async function poll() {
    try {
      const run = await (await fetch(url, { headers: { Accept: "application/json" } })).json();
      draw(run); finished = run.finished;
    } catch (e) { /* next round */ }
    polling = finished || document.body.dataset.live === "socket" ? null : setTimeout(poll, 2000);
  }
  function listen() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/training/runs/${runId}/`);
    socket.onopen = () => { retry = 1000; clearTimeout(polling); polling = null; document.body.dataset.live = "socket"; };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type !== "run") return;
      document.body.dataset.pushes = String(Number(document.body.dataset.pushes || 0) + 1);
      draw(frame.run); finished = frame.run.finished;
      if (finished) socket.close();
    };
    socket.onclose = () => {
      document.body.dataset.live = "polling";
      if (finished) return;
      if (!polling) polling = setTimeout(poll, 2000);
      setTimeout(listen, retry); retry = Math.min(retry * 2, 30000);
    };
  }
  const first = JSON.parse($("run-data").textContent);
  const runId = first.id;
  draw(first); finished = first.finished;
  if (!finished) listen();
})();
