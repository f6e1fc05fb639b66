// Live run progress and metric charts. Polls the JSON API; draws SVG with DOM calls (no innerHTML).
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var LIVE = { queued: true, running: true };

  function setProgress(container, fraction) {
    var bar = container.querySelector(".progress");
    if (!bar) return;
    var pct = Math.round(fraction * 100);
    bar.setAttribute("aria-valuenow", String(pct));
    var span = bar.querySelector("span");
    span.className = "w-" + String(Math.round(fraction * 20) * 5);
  }

  function el(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }

  function chart(name, points) {
    var figure = document.createElement("figure");
    figure.className = "chart card";
    var caption = document.createElement("figcaption");
    var last = points[points.length - 1];
    caption.textContent = name + " — last " + last[1].toPrecision(4) + " at step " + last[0];
    var w = 320, h = 160, pad = 28;
    var svg = el("svg", { viewBox: "0 0 " + w + " " + h, role: "img", "aria-label": name });
    var xs = points.map(function (p) { return p[0]; }), ys = points.map(function (p) { return p[1]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 === x0) x1 = x0 + 1; if (y1 === y0) { y1 = y0 + 1; y0 = y0 - 1; }
    var d = points.map(function (p, i) {
      var x = pad + (p[0] - x0) / (x1 - x0) * (w - 2 * pad);
      var y = h - pad - (p[1] - y0) / (y1 - y0) * (h - 2 * pad);
      return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    }).join(" ");
    svg.appendChild(el("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, "class": "axis" }));
    svg.appendChild(el("line", { x1: pad, y1: pad, x2: pad, y2: h - pad, "class": "axis" }));
    svg.appendChild(el("path", { d: d, "class": "line" }));
    var top = el("text", { x: 2, y: pad }); top.textContent = y1.toPrecision(3); svg.appendChild(top);
    var bottom = el("text", { x: 2, y: h - pad }); bottom.textContent = y0.toPrecision(3); svg.appendChild(bottom);
    figure.appendChild(caption);
    figure.appendChild(svg);
    return figure;
  }

  // What the server would render after a reload: the output model's link once the run registered
  // it, and no Cancel button or "no worker" notice once the run has left the queue.
  function showOutcome(box, run) {
    if (!LIVE[run.status]) {
      var cancel = document.getElementById("cancel-run");
      if (cancel) cancel.remove();
    }
    if (run.status !== "queued") {
      var notice = document.getElementById("worker-notice");
      if (notice) notice.remove();
    }
    if (run.output_model_id == null || document.getElementById("output-model")) return;
    var line = document.createElement("p");
    var link = document.createElement("a");
    link.id = "output-model";
    link.href = "/models/" + String(run.output_model_id);
    link.textContent = run.output_model;
    line.append("Output model: ", link);
    var pending = document.getElementById("output-pending");
    if (pending) pending.replaceWith(line);
    else {
      var section = document.getElementById("run-inputs");
      var table = section && section.querySelector("table");
      if (table) table.after(line);
    }
  }

  function refreshDetail(box) {
    var id = box.getAttribute("data-run-id");
    fetch("/api/runs/" + id, { headers: { Accept: "application/json" } }).then(function (r) { return r.json(); }).then(function (run) {
      box.querySelector(".run-status").textContent = run.status;
      box.setAttribute("data-status", run.status);
      setProgress(box, run.progress);
      showOutcome(box, run);
      var log = document.getElementById("run-message");
      if (log) log.textContent = run.message;
      return fetch("/api/runs/" + id + "/metrics", { headers: { Accept: "application/json" } });
    }).then(function (r) { return r.json(); }).then(function (m) {
      var charts = document.getElementById("charts");
      var names = Object.keys(m.series).filter(function (n) { return n !== "progress" && m.series[n].length; }).sort();
      if (!names.length) return;
      charts.replaceChildren.apply(charts, names.map(function (n) { return chart(n, m.series[n]); }));
    }).finally(function () {
      if (LIVE[box.getAttribute("data-status")]) setTimeout(function () { refreshDetail(box); }, 3000);
    });
  }

  function refreshList(table) {
    var rows = table.querySelectorAll("tr[data-run-id]");
    var live = Array.prototype.filter.call(rows, function (row) { return LIVE[row.getAttribute("data-status")]; });
    if (!live.length) return;
    fetch("/api/runs", { headers: { Accept: "application/json" } }).then(function (r) { return r.json(); }).then(function (runs) {
      var byId = {};
      runs.forEach(function (run) { byId[run.id] = run; });
      live.forEach(function (row) {
        var run = byId[row.getAttribute("data-run-id")];
        if (!run) return;
        row.setAttribute("data-status", run.status);
        row.querySelector(".run-status").textContent = run.status;
        setProgress(row, run.progress);
      });
    }).finally(function () { setTimeout(function () { refreshList(table); }, 3000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("run-detail");
    if (box) refreshDetail(box);
    var table = document.getElementById("runs-table");
    if (table) refreshList(table);
  });
})();
