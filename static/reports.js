// Draws the charts of /reports/ with Chart.js (static/vendor/chartjs, window.Chart) from the data
// the page passes with json_script. Each chart's numbers are also the table under it.
(function () {
  "use strict";
  const source = document.getElementById("report-charts");
  if (!source || !window.Chart) return;
  const charts = JSON.parse(source.textContent);
  // Mid-tone colours, told apart by shape too (dashes, points), readable on light and dark.
  const COLOURS = ["#2563eb", "#d97706", "#059669", "#db2777"];
  const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
  const ink = getComputedStyle(document.body).color || "#1d2330";

  function withUnit(value, unit) {
    if (value === null || value === undefined) return "no data";
    if (unit === "%") return value.toFixed(1) + "%";
    if (unit === "s") return value + " s";
    return String(value);
  }

  function dataset(series, index, kind) {
    const colour = COLOURS[index % COLOURS.length];
    return {
      label: series.label,
      data: series.data,
      unit: series.unit,
      yAxisID: series.axis,
      backgroundColor: kind === "bar" ? colour : colour + "33",
      borderColor: colour,
      borderDash: kind === "line" ? DASHES[index % DASHES.length] : undefined,
      borderWidth: 2,
      pointRadius: kind === "line" ? 3 : undefined,
      spanGaps: false, // a day without conversations is a gap, not a slope
    };
  }

  function axis(title, max, position, stacked) {
    const scale = {
      type: "linear",
      position: position,
      beginAtZero: true,
      stacked: stacked,
      title: { display: true, text: title, color: ink },
      ticks: { color: ink },
    };
    if (max !== null && max !== undefined) scale.max = max;
    return scale;
  }

  function draw(chart) {
    const canvas = document.getElementById("chart-" + chart.id);
    if (!canvas) return;
    const scales = {
      x: {
        stacked: chart.stacked,
        title: { display: true, text: chart.id === "versions" ? "Model version" : "Period starting", color: ink },
        ticks: { color: ink },
      },
      y: axis(chart.y_title, chart.y_max, "left", chart.stacked),
    };
    if (chart.y2_title) {
      const y2Max = chart.series.some((s) => s.axis === "y2" && s.unit === "%") ? 100 : undefined;
      scales.y2 = axis(chart.y2_title, y2Max, "right", false);
      scales.y2.grid = { drawOnChartArea: false };
    }
    new window.Chart(canvas, {
      type: chart.kind,
      data: { labels: chart.labels, datasets: chart.series.map((s, i) => dataset(s, i, chart.kind)) },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: scales,
        plugins: {
          legend: { labels: { color: ink } },
          tooltip: {
            callbacks: {
              label: (item) => item.dataset.label + ": " + withUnit(item.raw, item.dataset.unit),
            },
          },
        },
      },
    });
  }

  charts.forEach(draw);
})();
