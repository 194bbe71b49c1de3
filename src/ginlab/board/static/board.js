// ginlab board: the page. Data comes from the board's server (/api/...), or, in an exported page, from the
// JSON embedded in it. The whole view lives in the URL's fragment (#q=...&sort=...), so a URL shares it.
// Tests and the benchmark read window.board: the state, the last rows, the curves' data and timings.
"use strict";

(function () {
  const embedded = document.getElementById("board-data");
  const STATIC = embedded ? JSON.parse(embedded.textContent) : null;
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const STATUSES = ["running", "stale", "finished", "failed", "interrupted", "diverged", "pruned", "unreadable"];
  const VIEW_KEYS = ["q", "expr", "status", "exp", "sort", "group"];
  const BLOCK = 200;

  const board = (window.board = {
    static: !!STATIC, state: null, meta: null, rows: [], total: null, curves: null, drawn: null,
    version: 0, rowsLoaded: 0, curvesDrawn: 0, errors: [], timings: {}, grid: null, runPage: null,
    experiments: null,
  });

  // -- the view in the URL -------------------------------------------------------------------------------
  function readState(text) {
    const p = new URLSearchParams(text);
    const list = (key) => (p.get(key) || "").split(",").filter(Boolean);
    let gsel = [];
    try { gsel = JSON.parse(p.get("gsel") || "[]"); } catch (e) { gsel = []; }
    return {
      tab: p.get("tab") || "runs", q: p.get("q") || "", expr: p.get("expr") || "", status: list("status"),
      exp: p.get("exp") || "", sort: list("sort"), group: list("group"), cols: list("cols"),
      sel: list("sel"), gsel: gsel, metric: p.get("metric") || "", x: p.get("x") || "epoch",
      smooth: parseFloat(p.get("smooth") || "0") || 0, logx: p.get("logx") === "1", logy: p.get("logy") === "1",
      run: p.get("run") || "", cmp: p.get("cmp") || "",
    };
  }
  function stateText(s) {
    const p = new URLSearchParams();
    const put = (key, value) => { if (value !== "" && value !== null && value !== undefined) p.set(key, value); };
    if (s.tab !== "runs") put("tab", s.tab);
    put("q", s.q); put("expr", s.expr); put("status", s.status.join(",")); put("exp", s.exp);
    put("sort", s.sort.join(",")); put("group", s.group.join(",")); put("cols", s.cols.join(","));
    put("sel", s.sel.join(",")); if (s.gsel.length) put("gsel", JSON.stringify(s.gsel));
    put("metric", s.metric); if (s.x !== "epoch") put("x", s.x); if (s.smooth) put("smooth", s.smooth);
    if (s.logx) put("logx", "1"); if (s.logy) put("logy", "1"); put("run", s.run); put("cmp", s.cmp);
    return p.toString();
  }
  function saveState() {
    if (!STATIC) history.replaceState(null, "", "#" + stateText(board.state));
  }
  function viewParams() {
    const s = board.state, p = new URLSearchParams();
    const all = { q: s.q, expr: s.expr, status: s.status.join(","), exp: s.exp, sort: s.sort.join(","),
      group: s.group.join(",") };
    for (const key of VIEW_KEYS) if (all[key]) p.set(key, all[key]);
    return p;
  }

  // -- talking to the server ----------------------------------------------------------------------------
  async function api(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }
  function showError(message) {
    document.getElementById("error").textContent = message || "";
    if (message) board.errors.push(message);
  }

  // -- small DOM helper (text only: values from run folders are never parsed as HTML) -------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function fill(node, ...children) {  // replaceChildren without the null of a missing part
    node.replaceChildren(...children.flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false));
  }
  function statusBadge(status) {
    const known = STATUSES.includes(status) ? status : "other";
    return h("span", { class: "status " + known }, status || "?");
  }

  // -- formatting ---------------------------------------------------------------------------------------
  function formatNumber(value) {
    if (value === null || value === undefined || value === "") return "";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
    return String(parseFloat(value.toPrecision(4)));
  }
  function formatAge(seconds) {
    if (seconds === null || seconds === undefined) return "";
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds >= size) return (seconds >= 10 * size ? Math.round(seconds / size) : (seconds / size).toFixed(1)) + unit;
    }
    return Math.max(0, Math.round(seconds)) + "s";
  }
  function formatTime(text) {
    if (!text) return "";
    const date = new Date(text);
    return isNaN(date) ? String(text) : date.toISOString().replace("T", " ").slice(0, 19);
  }

  // -- the table ----------------------------------------------------------------------------------------
  function columnDef(name) {
    const def = { field: name, colId: name, headerName: name, headerTooltip: name, sortable: true, width: 110 };
    if (name === "name") {
      Object.assign(def, { width: 230, pinned: "left", cellRenderer: (p) => p.data ? h("span", {
        class: "run-link", onclick: () => openRun(p.data.name) }, p.data.name) : "" });
    } else if (name === "status") {
      Object.assign(def, { width: 105, cellRenderer: (p) => (p.data ? statusBadge(p.data.status) : "") });
    } else if (name === "progress") {
      Object.assign(def, { width: 120, cellRenderer: (p) => {
        if (!p.data) return "";
        const total = p.data["training_loop.n_epochs"], epochs = p.data.epochs;
        const text = (epochs ?? "?") + "/" + (total ?? "?");
        const fraction = Math.max(0, Math.min(1, p.data.progress || 0));
        return h("span", {}, text, h("span", { class: "bar" }, h("i", { style: "width:" + (100 * fraction) + "%" })));
      } });
    } else if (name === "age" || name === "duration") {
      def.valueFormatter = (p) => formatAge(p.value);
      def.width = 80;
    } else if (["start", "end", "heartbeat"].includes(name)) {
      def.valueFormatter = (p) => formatTime(p.value);
      def.width = 150;
    } else if (name === "error") {
      def.width = 260;
    } else {
      def.valueFormatter = (p) => formatNumber(p.value);
    }
    return def;
  }
  function groupMetricDef(name) {
    return Object.assign(columnDef(name), {
      cellRenderer: undefined,
      valueFormatter: (p) => p.data && p.value !== null && p.value !== undefined
        ? formatNumber(p.value) + " ± " + formatNumber(p.data[name + " std"] ?? 0) : "",
      width: 150,
    });
  }
  function selectDef() {
    return { colId: "_select", headerName: "", width: 42, pinned: "left", sortable: false,
      cellRenderer: (p) => {
        if (!p.data) return "";
        const key = board.state.group.length ? p.data._key : p.data.name;
        const chosen = board.state.group.length ? board.state.gsel : board.state.sel;
        return h("input", { type: "checkbox", class: "select", "data-key": key, checked: chosen.includes(key),
          onclick: (event) => toggleSelection(key, event.target.checked) });
      } };
  }
  function shownColumns() {
    const s = board.state, meta = board.meta;
    const chosen = s.cols.length ? s.cols : meta.default_columns;
    if (!s.group.length) return chosen;
    const averaged = new Set(["epochs", "steps", "time", "duration", "progress"]);
    return chosen.filter((c) => (c.includes("/") || averaged.has(c)) && !s.group.includes(c) && meta.numeric.includes(c));
  }
  function columnDefs() {
    const s = board.state;
    if (!s.group.length) return [selectDef(), ...shownColumns().map(columnDef)];
    return [selectDef(), ...s.group.map((key) => Object.assign(columnDef(key), { pinned: "left", width: 120 })),
      Object.assign(columnDef("n"), { width: 70 }), Object.assign(columnDef("statuses"), { width: 200, sortable: false }),
      ...shownColumns().map(groupMetricDef)];
  }
  function sortModelState() {
    return board.state.sort.map((part, index) => {
      const cut = part.lastIndexOf(":");
      const [colId, sort] = cut > 0 ? [part.slice(0, cut), part.slice(cut + 1)] : [part, "asc"];
      return { colId, sort, sortIndex: index };
    });
  }
  function onSortChanged() {
    const model = board.grid.getColumnState().filter((c) => c.sort)
      .sort((a, b) => (a.sortIndex ?? 0) - (b.sortIndex ?? 0));
    board.state.sort = model.map((c) => c.colId + ":" + c.sort);
    board.timings.sortStart = performance.now();
    saveState();
  }
  // The first block is asked for while the page sets itself up (see start), not after.
  let early = null;
  const datasource = {
    getRows(params) {
      const query = viewParams();
      query.set("start", params.startRow);
      query.set("end", params.endRow);
      const started = performance.now();
      const text = query.toString();
      const answer = early && early.query === text ? early.answer : api("api/runs?" + text);
      early = null;
      board.timings.getRows = performance.now();
      answer.then((data) => {
        board.timings.answer = performance.now();
        showError("");
        board.total = data.total;
        params.successCallback(data.rows, data.total);
        if (params.startRow === 0) board.rows = data.rows;
        afterPaint(() => {
          board.rowsLoaded += 1;
          board.timings.rows = { started, done: performance.now() };
          if (board.timings.firstRows === undefined) board.timings.firstRows = performance.now();
        });
        updateCountsLine();
      }).catch((error) => {
        showError(error.message);
        board.total = 0;
        board.rows = [];
        params.successCallback([], 0);
        board.rowsLoaded += 1;
      });
    },
  };
  function afterPaint(callback) {
    requestAnimationFrame(() => setTimeout(callback, 0));
  }
  function createGrid() {
    if (agGrid.ModuleRegistry && agGrid.InfiniteRowModelModule) {
      // Only what the page uses (AllCommunityModule made the grid's creation ~50 ms slower, on every start):
      // blocks from the server, rows given at once (an exported page), column state, refreshCells, header tooltips.
      agGrid.ModuleRegistry.registerModules([agGrid.InfiniteRowModelModule, agGrid.ClientSideRowModelModule,
        agGrid.ColumnApiModule, agGrid.RenderApiModule, agGrid.TooltipModule]);
    }
    const options = {
      columnDefs: columnDefs(),
      defaultColDef: { resizable: true, sortable: true },
      suppressFieldDotNotation: true,
      getRowId: (p) => (p.data._key !== undefined ? p.data._key : p.data.name),
      onSortChanged: onSortChanged,
      rowHeight: 26, headerHeight: 30, rowBuffer: 4,
      theme: "legacy",  // the theme's CSS files (cached by the browser), not CSS generated at start
      animateRows: false,
    };
    if (STATIC) {
      options.rowData = STATIC.rows;
      options.onFirstDataRendered = () => { board.rowsLoaded += 1; board.timings.firstRows = performance.now(); };
      board.rows = STATIC.rows;
      board.total = STATIC.total;
    } else {
      Object.assign(options, { rowModelType: "infinite", cacheBlockSize: BLOCK, maxBlocksInCache: 100,
        infiniteInitialRowCount: 1, datasource: datasource });
    }
    board.grid = agGrid.createGrid(document.getElementById("grid"), options);
    board.grid.applyColumnState({ state: sortModelState(), defaultState: { sort: null } });
  }
  function reloadRows() {
    if (STATIC) return;
    board.grid.setGridOption("datasource", datasource);
  }
  function rebuildColumns() {
    board.grid.setGridOption("columnDefs", columnDefs());
    board.grid.applyColumnState({ state: sortModelState(), defaultState: { sort: null } });
    reloadRows();
  }

  // -- toolbar ------------------------------------------------------------------------------------------
  function updateCountsLine() {
    const counts = board.meta.counts || {};
    const line = document.getElementById("counts");
    line.replaceChildren();
    const chosen = board.state.status;
    for (const [status, count] of Object.entries(counts)) {
      const chip = statusBadge(status);
      chip.classList.add("chip");
      chip.dataset.status = status;
      if (chosen.length && !chosen.includes(status)) chip.classList.add("off");
      chip.textContent = status + " " + count;
      chip.title = "show only (or also) " + status + " runs";
      chip.addEventListener("click", () => toggleStatus(status));
      line.append(chip);
    }
    const shown = board.total === null ? "" : board.total + " shown";
    line.append(h("span", { id: "shown" }, shown));
  }
  function toggleStatus(status) {
    if (STATIC) return;
    const s = board.state;
    s.status = s.status.includes(status) ? s.status.filter((x) => x !== status) : [...s.status, status];
    saveState(); updateCountsLine(); reloadRows();
  }
  function buildPickers() {
    const meta = board.meta;
    const groupBox = document.querySelector("#group-picker .picker");
    groupBox.replaceChildren(...meta.columns.config.map((key) => h("label", {},
      h("input", { type: "checkbox", value: key, checked: board.state.group.includes(key), disabled: board.static,
        onchange: (event) => setGroup(key, event.target.checked) }), " " + key)));
    const columnBox = document.querySelector("#column-picker .picker");
    const shown = new Set(board.state.cols.length ? board.state.cols : meta.default_columns);
    const section = (title, names) => [h("h4", {}, title), ...names.map((name) => h("label", {},
      h("input", { type: "checkbox", value: name, checked: shown.has(name),
        onchange: (event) => setColumn(name, event.target.checked) }), " " + name))];
    columnBox.replaceChildren(...section("run", meta.columns.run), ...section("config", meta.columns.config),
      ...section("metrics", meta.columns.metrics));
  }
  function setGroup(key, on) {
    const s = board.state;
    s.group = on ? [...s.group, key] : s.group.filter((k) => k !== key);
    s.gsel = [];
    s.sort = s.sort.filter((part) => !part.startsWith("name:"));
    saveState(); rebuildColumns(); drawCurves();
  }
  function setColumn(name, on) {
    const s = board.state;
    const current = s.cols.length ? s.cols : [...board.meta.default_columns];
    s.cols = on ? [...current.filter((c) => c !== name), name] : current.filter((c) => c !== name);
    saveState(); rebuildColumns();
  }
  let typing = null;
  function onFilterInput() {
    clearTimeout(typing);
    typing = setTimeout(() => {
      board.state.q = document.getElementById("text").value.trim();
      board.state.expr = document.getElementById("expr").value.trim();
      board.timings.filterStart = performance.now();
      saveState(); reloadRows();
      if (board.state.group.length) drawCurves();
    }, 200);
  }
  function setupToolbar() {
    const s = board.state;
    const text = document.getElementById("text"), expr = document.getElementById("expr");
    text.value = s.q; expr.value = s.expr;
    text.addEventListener("input", onFilterInput);
    expr.addEventListener("input", onFilterInput);
    document.getElementById("export").addEventListener("click", () => {
      window.location.href = "api/export?" + stateText(board.state);
    });
    for (const button of document.querySelectorAll("#tabs button")) {
      button.addEventListener("click", () => showTab(button.dataset.tab));
    }
    if (STATIC) {
      for (const id of ["text", "expr", "export"]) document.getElementById(id).disabled = true;
      document.getElementById("live").replaceChildren(h("span", { class: "static-note" },
        "exported " + STATIC.exported + ": a static copy of one view"));
    }
    showExperimentFilter();
  }
  function showExperimentFilter() {
    const box = document.getElementById("experiment-filter");
    box.replaceChildren();
    if (board.state.exp) {
      box.append(h("span", {}, "experiment " + board.state.exp + " "), h("button", { onclick: () => {
        board.state.exp = ""; saveState(); showExperimentFilter(); reloadRows(); } }, "×"));
    }
  }

  // -- selection and curves -------------------------------------------------------------------------------
  function toggleSelection(key, on) {
    const s = board.state;
    const field = s.group.length ? "gsel" : "sel";
    s[field] = on ? [...s[field].filter((k) => k !== key), key] : s[field].filter((k) => k !== key);
    saveState(); drawCurves();
  }
  function setupCurveControls() {
    const s = board.state, meta = board.meta;
    const metric = document.getElementById("metric"), x = document.getElementById("x");
    const metrics = meta.history_metrics;
    if (!s.metric && metrics.length) s.metric = meta.monitor && metrics.includes(meta.monitor) ? meta.monitor : metrics[0];
    fillSelect(metric, metrics.length ? metrics : [s.metric], s.metric);
    fillSelect(x, meta.x_axes, s.x);
    document.getElementById("smooth").value = s.smooth;
    document.getElementById("logx").checked = s.logx;
    document.getElementById("logy").checked = s.logy;
    metric.addEventListener("change", () => { s.metric = metric.value; saveState(); drawCurves(); });
    x.addEventListener("change", () => { s.x = x.value; saveState(); drawCurves(); });
    for (const id of ["smooth", "logx", "logy"]) {
      document.getElementById(id).addEventListener("input", () => {
        s.smooth = parseFloat(document.getElementById("smooth").value) || 0;
        s.logx = document.getElementById("logx").checked;
        s.logy = document.getElementById("logy").checked;
        saveState(); renderChart();
      });
    }
    document.getElementById("clear").addEventListener("click", () => {
      s.sel = []; s.gsel = []; saveState(); drawCurves();
      board.grid.refreshCells({ columns: ["_select"], force: true });
    });
    if (STATIC) { metric.disabled = true; x.disabled = true; document.getElementById("clear").disabled = true; }
  }
  function fillSelect(select, values, chosen) {
    const all = values.includes(chosen) || !chosen ? values : [chosen, ...values];
    select.replaceChildren(...all.map((v) => h("option", { value: v, selected: v === chosen }, v)));
  }
  let curveRequest = 0;
  async function drawCurves() {
    const s = board.state;
    const request = ++curveRequest;
    const started = performance.now();
    board.timings.curvesStart = started;
    if (STATIC) { board.curves = STATIC.curves; renderChart(); return; }
    if (!s.sel.length && !s.gsel.length) {
      board.curves = { series: [], metric: s.metric, x: s.x };
      renderChart();
      board.timings.curves = { started, done: performance.now() };
      return;
    }
    try {
      const data = await api("api/curves", { view: Object.fromEntries(viewParams()), runs: s.sel,
        groups: s.group.length ? s.gsel : [], metric: s.metric, x: s.x });
      if (request !== curveRequest) return;
      board.timings.curvesAnswer = performance.now();
      board.curves = data;
      const select = document.getElementById("metric");
      const known = [...select.options].map((o) => o.value);
      if (data.metrics.some((m) => !known.includes(m))) {
        fillSelect(select, [...new Set([...known, ...data.metrics])], s.metric);
      }
      renderChart();
      board.timings.curvesDrawn = performance.now();
      afterPaint(() => { board.timings.curves = { started, done: performance.now() }; });
    } catch (error) {
      showError(error.message);
    }
  }
  function smooth(values, weight) {
    if (!weight) return values;
    let last = 0, count = 0;
    return values.map((v) => {
      if (v === null || v === undefined) return null;
      last = last * weight + (1 - weight) * v;
      count += 1;
      return last / (1 - Math.pow(weight, count));
    });
  }
  let chart = null;
  function renderChart() {
    const s = board.state, data = board.curves || { series: [] };
    const box = document.getElementById("chart");
    if (chart) { chart.destroy(); chart = null; }
    box.replaceChildren();
    const info = document.getElementById("curve-info");
    if (!data.series.length) {
      info.textContent = "select runs (or groups) with the boxes on the left to see their curves";
      board.drawn = { series: [] };
      board.curvesDrawn += 1;
      return;
    }
    const tables = [], series = [{ label: data.x || s.x }], bands = [], drawn = [];
    const positive = (v) => (s.logy && v !== null && v <= 0 ? null : v);
    data.series.forEach((item, index) => {
      const color = COLORS[index % COLORS.length];
      let xs = item.x, ys = smooth(item.y, s.smooth);
      if (item.kind === "group") {
        const std = smooth(item.std, s.smooth);
        let lo = ys.map((v, i) => (v === null ? null : v - std[i])), hi = ys.map((v, i) => (v === null ? null : v + std[i]));
        let keep = xs.map((v) => !(s.logx && v <= 0));
        const pick = (a) => a.filter((_, i) => keep[i]);
        xs = pick(xs); ys = pick(ys); lo = pick(lo); hi = pick(hi);
        tables.push([xs, ys.map(positive), lo.map(positive), hi.map(positive)]);
        const base = series.length;
        series.push({ label: item.label + " (n=" + item.runs + ")", stroke: color, width: 2, spanGaps: true },
          { label: "−std", stroke: color + "55", width: 0.5, spanGaps: true },
          { label: "+std", stroke: color + "55", width: 0.5, spanGaps: true });
        bands.push({ series: [base + 2, base + 1], fill: color + "33" });
        drawn.push({ name: item.name, label: item.label, x: xs, y: ys, lo, hi });
      } else {
        const keep = xs.map((v) => !(s.logx && v <= 0));
        xs = xs.filter((_, i) => keep[i]); ys = ys.filter((_, i) => keep[i]);
        tables.push([xs, ys.map(positive)]);
        series.push({ label: item.label, stroke: color, width: 1.5, spanGaps: true });
        drawn.push({ name: item.name, label: item.label, x: xs, y: ys });
      }
    });
    const joined = uPlot.join(tables);
    const width = Math.max(300, box.clientWidth - 20), height = Math.max(160, box.clientHeight - 64);
    chart = new uPlot({
      width, height, series, bands,
      scales: { x: { time: false, distr: s.logx ? 3 : 1 }, y: { distr: s.logy ? 3 : 1 } },
      axes: [{ label: data.x || s.x }, { label: data.metric || s.metric }],
      legend: { live: false },
      cursor: { points: { show: false } },
    }, joined, box);
    info.textContent = data.series.length + " curve(s) of " + (data.metric || s.metric);
    board.drawn = { metric: data.metric, x: data.x, series: drawn };
    board.curvesDrawn += 1;
  }

  // -- the run page ---------------------------------------------------------------------------------------
  let logTimer = null;
  async function openRun(name) {
    if (STATIC) return;
    board.state.run = name; saveState();
    const panel = document.getElementById("run-page");
    panel.hidden = false;
    clearInterval(logTimer);
    try {
      const query = new URLSearchParams({ name });
      if (board.state.cmp) query.set("compare", board.state.cmp);
      const page = await api("api/run?" + query.toString());
      board.runPage = page;
      renderRunPage(page);
      followLog(name);
    } catch (error) {
      panel.replaceChildren(closeButton(), h("p", { class: "problem" }, error.message));
    }
  }
  function closeButton() {
    return h("button", { class: "close", onclick: closeRun }, "close ×");
  }
  function closeRun() {
    clearInterval(logTimer);
    board.state.run = ""; board.state.cmp = ""; saveState();
    document.getElementById("run-page").hidden = true;
  }
  function keyValueTable(object, compare) {
    const keys = [...new Set([...Object.keys(object || {}), ...Object.keys(compare || {})])].sort();
    const text = (v) => (v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
    return h("table", {}, compare ? h("tr", {}, h("th", {}, "key"), h("th", {}, "this run"), h("th", {}, board.state.cmp)) : null,
      keys.map((key) => {
        const a = (object || {})[key], b = compare ? compare[key] : undefined;
        const differs = compare && JSON.stringify(a) !== JSON.stringify(b);
        return h("tr", { class: differs ? "differs" : "" }, h("td", {}, key), h("td", {}, text(a)),
          compare ? h("td", {}, text(b)) : null);
      }));
  }
  function renderRunPage(page) {
    const meta = page.meta || {}, row = page.row || {};
    const panel = document.getElementById("run-page");
    const git = meta.git || {};
    const compareInput = h("input", { type: "search", placeholder: "another run's name", value: board.state.cmp,
      size: 30, list: "run-names" });
    const names = h("datalist", { id: "run-names" }, board.rows.slice(0, 200).map((r) => h("option", { value: r.name })));
    fill(panel,
      closeButton(),
      h("h2", {}, page.name, " ", statusBadge(row.status || meta.status)),
      page.problems.length ? h("div", { class: "problems" }, page.problems.map((p) => h("p", { class: "problem" }, p))) : null,
      h("p", {}, "progress ", String(row.epochs ?? "?"), "/", String(row["training_loop.n_epochs"] ?? "?"),
        " epochs · host ", String(meta.host ?? "?"), " · started ", formatTime(meta.started),
        meta.ended ? " · ended " + formatTime(meta.ended) : "", " · reloads ", String((meta.reloads || []).length)),
      h("h3", {}, "commands"),
      page.commands.reload ? h("div", {}, h("div", {}, "reload (continue in place):"), h("pre", { class: "command" }, page.commands.reload),
        h("div", {}, "run again from scratch, into a new folder:"), h("pre", { class: "command" }, page.commands.rerun)) : h("p", {}, "no command in meta.json"),
      h("h3", {}, "config"),
      h("div", {}, "compare with ", compareInput, names, h("button", { onclick: () => {
        board.state.cmp = compareInput.value.trim(); saveState(); openRun(page.name); } }, "compare")),
      keyValueTable(page.config, page.compare),
      h("h3", {}, "meta"),
      keyValueTable({ command: (meta.command || []).join(" "), cwd: meta.cwd, "git commit": git.commit,
        "git branch": git.branch, "git dirty": git.dirty, host: meta.host, pid: meta.pid,
        versions: meta.versions, heartbeat: meta.heartbeat, "torch threads": meta.torch_threads,
        reloads: meta.reloads, error: meta.error ? meta.error.type + ": " + meta.error.message : undefined }),
      meta.error && meta.error.traceback ? h("pre", {}, meta.error.traceback) : null,
      h("h3", {}, "summary"),
      page.summary ? keyValueTable(flatten(page.summary)) : h("p", {}, "no summary.json yet (written when the run ends)"),
      h("h3", {}, "evaluations"),
      Object.keys(page.evaluations).length ? keyValueTable(Object.fromEntries(Object.entries(page.evaluations)
        .map(([k, v]) => [k, v && v.metrics ? v.metrics : v]))) : h("p", {}, "none (bin/evaluate.py writes them)"),
      h("h3", {}, "log.txt (live tail)"),
      h("pre", { id: "log" }, ""),
    );
  }
  function flatten(object, prefix = "") {
    const out = {};
    for (const [key, value] of Object.entries(object || {})) {
      if (value && typeof value === "object" && !Array.isArray(value)) Object.assign(out, flatten(value, prefix + key + "/"));
      else out[prefix + key] = value;
    }
    return out;
  }
  function followLog(name) {
    let offset = null;
    const read = async () => {
      try {
        const query = new URLSearchParams({ name });
        if (offset !== null) query.set("offset", offset);
        const data = await api("api/log?" + query.toString());
        const log = document.getElementById("log");
        if (!log) return;
        if (offset === null || data.cut) log.textContent = (data.cut ? "[...]\n" : "") + data.text;
        else if (data.text) log.textContent += data.text;
        if (data.text) log.scrollTop = log.scrollHeight;
        offset = data.offset;
      } catch (error) { /* the next read tries again */ }
    };
    read();
    logTimer = setInterval(read, 2000);
  }

  // -- experiments ---------------------------------------------------------------------------------------
  async function showTab(tab) {
    board.state.tab = tab; saveState();
    for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === tab);
    document.getElementById("runs-view").hidden = tab !== "runs";
    document.getElementById("toolbar").hidden = tab !== "runs";
    const view = document.getElementById("experiments-view");
    view.hidden = tab !== "experiments";
    if (tab !== "experiments" || STATIC) return;
    const list = await api("api/experiments");
    board.experiments = list;
    fill(view, list.length ? "" : h("p", {}, "no experiment folders (with an experiment.json) under this root"),
      ...list.map((e) => h("div", { class: "experiment" },
        h("h3", {}, e.title, " ", h("small", {}, e.name)),
        h("p", {}, "prepared ", formatTime(e.prepared), " · ", String(e.runs), " runs: ",
          Object.entries(e.counts).map(([status, n]) => [statusBadge(status + " " + n), " "])),
        h("table", {}, Object.entries(e.grid).map(([key, values]) => h("tr", {}, h("td", {}, key),
          h("td", {}, values.map((v) => JSON.stringify(v)).join(", "))))),
        h("button", { onclick: () => { board.state.exp = e.name; showExperimentFilter(); showTab("runs"); reloadRows(); } },
          "show its runs"),
        e.problems.map((p) => h("p", { class: "problem" }, p)),
        e.report.figures.map((path) => h("img", { src: "api/file?path=" + encodeURIComponent(path), alt: path, title: path })),
        e.report.summary ? h("details", {}, h("summary", {}, "report/summary.md"), h("pre", {}, e.report.summary)) : null)));
  }

  function columnsChanged() {
    buildPickers();
    const s = board.state, metrics = board.meta.history_metrics;
    if (!s.metric && metrics.length) s.metric = metrics.includes(board.meta.monitor) ? board.meta.monitor : metrics[0];
    fillSelect(document.getElementById("metric"), metrics.length ? metrics : [s.metric], s.metric);
    if (!s.cols.length) rebuildColumns();
  }

  // -- live updates ----------------------------------------------------------------------------------------
  // Every second; every 0.3 s while the server is still reading the tree (its rows arrive in batches).
  let busy = true;
  async function followLoop() {
    await follow();
    setTimeout(followLoop, busy ? 300 : 1000);
  }
  async function follow() {
    try {
      const data = await api("api/changes?since=" + board.version);
      busy = !!data.loading || !data.checked;
      const live = document.getElementById("live");
      live.textContent = data.loading ? "reading runs " + data.loading[0] + "/" + data.loading[1]
        : data.checked ? "live" : "checking runs against their files…";
      if (data.version === board.version) return;
      const changed = data.changed;
      board.version = data.version;
      const before = board.meta;
      board.meta = await api("api/meta");
      if (JSON.stringify([before.columns, before.default_columns, before.history_metrics])
          !== JSON.stringify([board.meta.columns, board.meta.default_columns, board.meta.history_metrics])) {
        columnsChanged();  // a tree read for the first time: its columns arrive with its runs
      }
      updateCountsLine();
      board.grid.refreshInfiniteCache();
      const selected = new Set(board.state.sel);
      if (changed === null || changed.some((name) => selected.has(name)) || board.state.gsel.length) drawCurves();
      if (board.state.run && (changed === null || changed.includes(board.state.run))) openRun(board.state.run);
    } catch (error) {
      document.getElementById("live").textContent = "server not answering";
    }
  }

  // Select runs (and groups) as the boxes do: for tests, the benchmark, and the browser's console.
  board.select = (names, groups) => {
    board.state.sel = names || [];
    board.state.gsel = groups || [];
    saveState();
    if (board.grid && !STATIC) board.grid.refreshCells({ columns: ["_select"], force: true });
    return drawCurves();
  };

  // -- start ------------------------------------------------------------------------------------------------
  async function start() {
    board.state = readState(STATIC ? STATIC.state : location.hash.slice(1));
    if (!STATIC) {
      const query = viewParams();
      query.set("start", 0);
      query.set("end", BLOCK);
      early = { query: query.toString(), answer: api("api/runs?" + query.toString()) };
      early.answer.catch(() => {});  // a bad view: getRows reports it
    }
    board.meta = STATIC ? STATIC.meta : await api("api/meta");
    board.timings.meta = performance.now();
    board.version = board.meta.version;
    setupToolbar();
    buildPickers();
    setupCurveControls();
    updateCountsLine();
    board.timings.toolbar = performance.now();
    createGrid();
    board.timings.grid = performance.now();
    showTab(board.state.tab);
    drawCurves();
    if (board.state.run) openRun(board.state.run);
    if (!STATIC) setTimeout(followLoop, 300);
    window.addEventListener("resize", () => renderChart());
    board.ready = true;
  }
  start().catch((error) => showError("the board could not start: " + error.message));
})();
