// The training run page (templates/finetuning/run.html): live progress, socket first, polling when it is down.
(() => {
  const $ = (id) => document.getElementById(id);
  const url = $("run-page").dataset.statusUrl;
  const versionUrl = $("run-page").dataset.versionUrl;
  function draw(run) {
    $("status").textContent = run.status + (run.phase ? " · " + run.phase : "");
    $("status").className = "badge " + run.status;
    $("bar").style.width = (100 * run.progress).toFixed(1) + "%";
    const loss = run.loss_history.length ? run.loss_history[run.loss_history.length - 1][1].toFixed(3) : "–";
    const eta = run.eta_s == null ? "–" : Math.round(run.eta_s) + " s";
    const rate = run.tokens_per_s == null ? "–" : Math.round(run.tokens_per_s);
    $("numbers").textContent = `step ${run.step} of ${run.total_steps} · loss ${loss} · ${rate} tokens/s · ETA ${eta}` +
      (run.resumed_from_step ? ` · resumed from step ${run.resumed_from_step}` : "");
    const points = run.loss_history, n = Math.max(run.total_steps, points.length, 1);
    if (points.length) {
      const values = points.map((p) => p[1]), hi = Math.max(...values), lo = Math.min(...values), span = hi - lo || 1;
      $("loss").setAttribute("points", points.map(([s, v]) => `${(600 * s / n).toFixed(1)},${(190 - 180 * (v - lo) / span).toFixed(1)}`).join(" "));
      $("loss-max").textContent = hi.toFixed(3); $("loss-min").textContent = lo.toFixed(3);
    }
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
