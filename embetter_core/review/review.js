// review.html's script: the threshold slider, the sampled pairs with their differences
// marked, the labels (kept in localStorage), their CSV and their precision / recall.
// Every text from the data goes in with textContent: nothing from the corpus is HTML.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const grid = data.grid;
  const pairs = data.pairs;
  const storeKey = "embetter-review:" + data.key;
  const LABEL_NAMES = { "1": "duplicate", "0": "not duplicate", skip: "skipped" };
  const $ = (id) => document.getElementById(id);
  const fmt = (x) => x.toLocaleString("en-US");
  const tfmt = (t) => (Number.isInteger(t) ? t.toFixed(1) : String(t)); // as Python prints it

  function make(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- labels, in localStorage under this sample's key ---------------------------------
  const pairKey = (p) => p.a + "\u0000" + p.b;
  function loadLabels() {
    try {
      const stored = JSON.parse(localStorage.getItem(storeKey) || "{}");
      return stored && typeof stored === "object" ? stored : {};
    } catch (err) {
      return {};
    }
  }
  let labels = loadLabels();
  function saveLabels() {
    try {
      localStorage.setItem(storeKey, JSON.stringify(labels));
      $("storage-note").textContent = "";
    } catch (err) {
      $("storage-note").textContent = "The browser did not keep the labels (" + err + "): download them now.";
    }
  }

  // -- the pairs of each band ------------------------------------------------------------
  const byBand = grid.map(() => []);
  pairs.forEach((p, i) => byBand[p.band].push(i));
  let band = data.start;
  let current = 0; // position in byBand[band]

  // -- word differences: longest common subsequence of the words -------------------------
  const MAX_CELLS = 400000;
  function words(text) {
    return text.split(/(\s+)/).filter((t) => t.length);
  }
  function unmatched(a, b) {
    // a, b: arrays of tokens; returns two Sets of the word positions outside the LCS
    const wa = [], wb = [];
    a.forEach((t, i) => { if (!/^\s+$/.test(t)) wa.push(i); });
    b.forEach((t, i) => { if (!/^\s+$/.test(t)) wb.push(i); });
    const n = wa.length, m = wb.length;
    const outA = new Set(), outB = new Set();
    if ((n + 1) * (m + 1) > MAX_CELLS) return null;
    const w = m + 1;
    const table = new Uint16Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        table[i * w + j] = a[wa[i]] === b[wb[j]]
          ? table[(i + 1) * w + j + 1] + 1
          : Math.max(table[(i + 1) * w + j], table[i * w + j + 1]);
      }
    }
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (a[wa[i]] === b[wb[j]]) { i++; j++; }
      else if (table[(i + 1) * w + j] >= table[i * w + j + 1]) outA.add(wa[i++]);
      else outB.add(wb[j++]);
    }
    while (i < n) outA.add(wa[i++]);
    while (j < m) outB.add(wb[j++]);
    return [outA, outB];
  }
  function marked(tokens, differ) {
    const box = make("div", "text");
    box.dir = "auto";
    tokens.forEach((t, i) => {
      if (differ && differ.has(i)) box.appendChild(make("mark", "", t));
      else box.appendChild(document.createTextNode(t));
    });
    return box;
  }

  // -- one pair ------------------------------------------------------------------------
  function side(p, which, tokens, differ) {
    const cell = make("div", "side");
    const id = make("div", "id");
    id.appendChild(make("bdi", "", which === "a" ? p.a : p.b));
    cell.appendChild(id);
    const image = which === "a" ? p.ia : p.ib;
    if (data.kind === "image") {
      if (image) {
        const img = make("img", "thumb");
        img.alt = "image " + (which === "a" ? p.a : p.b);
        img.src = image;
        cell.appendChild(img);
      }
      const path = make("div", "text path", which === "a" ? p.ta : p.tb);
      path.dir = "auto";
      cell.appendChild(path);
    } else {
      cell.appendChild(marked(tokens, differ));
    }
    return cell;
  }
  function pairCard(index, position) {
    const p = pairs[index];
    const card = make("article", "pair");
    card.dataset.index = String(index);
    card.tabIndex = -1;
    const label = labels[pairKey(p)];
    if (label !== undefined) card.dataset.label = label;
    if (position === current) card.classList.add("current");
    const head = make("div", "meta");
    head.appendChild(make("span", "score", "similarity " + p.s.toFixed(4)));
    head.appendChild(make("span", "state", label === undefined ? "not labelled" : LABEL_NAMES[label]));
    card.appendChild(head);
    const ta = words(p.ta), tb = words(p.tb);
    const differ = data.kind === "text" ? unmatched(ta, tb) : null;
    const sides = make("div", "sides");
    sides.appendChild(side(p, "a", ta, differ && differ[0]));
    sides.appendChild(side(p, "b", tb, differ && differ[1]));
    card.appendChild(sides);
    const buttons = make("div", "buttons");
    [["1", "Duplicate", "D"], ["0", "Not duplicate", "N"], ["skip", "Skip", "S"]].forEach(([value, name, key]) => {
      const button = make("button", "label-" + value);
      button.type = "button";
      button.appendChild(document.createTextNode(name + " "));
      button.appendChild(make("kbd", "", key));
      button.addEventListener("click", () => { current = position; setLabel(value); });
      buttons.appendChild(button);
    });
    card.appendChild(buttons);
    card.addEventListener("click", (event) => {
      if (event.target.closest("button")) return;
      current = position;
      renderPairs();
    });
    return card;
  }

  function renderPairs() {
    const list = $("pair-list");
    list.replaceChildren();
    const shown = byBand[band];
    const g = grid[band];
    const next = grid[band + 1];
    const range = next ? "from " + tfmt(g.threshold) + " up to " + tfmt(next.threshold) : "of " + tfmt(g.threshold) + " or more";
    $("band-title").textContent = "Pairs scoring " + range;
    $("band-note").textContent = fmt(g.band_pairs) + " candidate pair" + (g.band_pairs === 1 ? "" : "s") +
      " in this band; " + (shown.length === g.band_pairs ? "all shown." : fmt(shown.length) + " sampled at random.") +
      (shown.length ? " Keys: D duplicate, N not duplicate, S skip, J / K next / previous." : "");
    current = Math.min(current, Math.max(shown.length - 1, 0));
    shown.forEach((index, position) => list.appendChild(pairCard(index, position)));
  }

  // -- the slider and its counts -------------------------------------------------------
  function showThreshold(i) {
    band = i;
    current = 0;
    const g = grid[i];
    $("t-value").textContent = tfmt(g.threshold);
    $("c-pairs").textContent = fmt(g.pairs);
    $("c-clusters").textContent = fmt(g.clusters);
    $("c-removed").textContent = fmt(g.removed);
    $("c-kept").textContent = fmt(g.kept);
    $("rerun").textContent = "--threshold " + tfmt(g.threshold);
    document.body.dataset.threshold = String(g.threshold);
    renderPairs();
    renderMetrics();
  }
  const slider = $("slider");
  slider.max = String(grid.length - 1);
  slider.value = String(data.start);
  slider.addEventListener("input", () => showThreshold(Number(slider.value)));

  // -- labelling -------------------------------------------------------------------------
  function setLabel(value) {
    const shown = byBand[band];
    if (!shown.length) return;
    labels[pairKey(pairs[shown[current]])] = value;
    saveLabels();
    if (current < shown.length - 1) current++;
    renderPairs();
    renderProgress();
    renderMetrics();
    focusCurrent();
  }
  function focusCurrent() {
    const card = document.querySelector("#pair-list .pair.current");
    if (card) card.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    const move = { j: 1, k: -1 }[key];
    if (key === "d" || key === "n" || key === "s") {
      event.preventDefault();
      setLabel({ d: "1", n: "0", s: "skip" }[key]);
    } else if (move) {
      event.preventDefault();
      current = Math.max(0, Math.min(byBand[band].length - 1, current + move));
      renderPairs();
      focusCurrent();
    }
  });

  function labelled() {
    // [pair index, label] for this page's pairs labelled duplicate / not duplicate
    const out = [];
    pairs.forEach((p, i) => {
      const label = labels[pairKey(p)];
      if (label === "1" || label === "0") out.push([i, label]);
    });
    return out;
  }
  function renderProgress() {
    const done = labelled();
    const dups = done.filter(([, label]) => label === "1").length;
    const skipped = pairs.filter((p) => labels[pairKey(p)] === "skip").length;
    $("progress").textContent = fmt(done.length) + " labelled, " + fmt(dups) + " duplicate" +
      (dups === 1 ? "" : "s") + (skipped ? ", " + fmt(skipped) + " skipped" : "") +
      " (of " + fmt(pairs.length) + " sampled pairs)";
    $("download").disabled = done.length === 0;
  }

  // -- the labels file -------------------------------------------------------------------
  function csvCell(value) {
    return '"' + String(value).replace(/"/g, '""') + '"';
  }
  $("download").addEventListener("click", () => {
    const lines = [["id_a", "id_b", "score", "text_a", "text_b", "label"].join(",")];
    labelled().forEach(([i, label]) => {
      const p = pairs[i];
      lines.push([p.a, p.b, p.s, p.ta, p.tb, label].map(csvCell).join(","));
    });
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv;charset=utf-8" });
    const link = make("a");
    link.href = URL.createObjectURL(blob);
    link.download = "labels.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  });
  $("clear").addEventListener("click", () => {
    if (!window.confirm("Forget every label of this page?")) return;
    labels = {};
    saveLabels();
    renderPairs();
    renderProgress();
    renderMetrics();
  });

  // -- precision / recall of the thresholds, on the labels --------------------------------
  // Each labelled pair stands for its band: weight = pairs in the band / pairs sampled there,
  // so the figures estimate the whole candidate set's, not the sample's.
  function metrics() {
    const done = labelled();
    if (!done.some(([, label]) => label === "1")) return null;
    return grid.map((g, gi) => {
      let tp = 0, fp = 0, fn = 0;
      done.forEach(([i, label]) => {
        const p = pairs[i];
        const b = grid[p.band];
        const weight = b.band_pairs / Math.max(b.band_sampled, 1);
        const predicted = p.band >= gi;
        if (predicted && label === "1") tp += weight;
        else if (predicted) fp += weight;
        else if (label === "1") fn += weight;
      });
      const precision = tp + fp ? tp / (tp + fp) : NaN;
      const recall = tp + fn ? tp / (tp + fn) : NaN;
      const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0;
      return { threshold: g.threshold, precision, recall, f1: Number.isNaN(f1) ? 0 : f1 };
    });
  }
  function renderMetrics() {
    const rows = metrics();
    const body = $("metrics-body");
    body.replaceChildren();
    $("metrics").hidden = rows === null;
    if (rows === null) return;
    // the best F1; where several thresholds tie, the middle one (the widest margin to the
    // labels on either side of the tied range)
    const top = Math.max(...rows.map((r) => r.f1));
    const tied = rows.map((r, i) => i).filter((i) => rows[i].f1 >= top - 1e-12);
    const best = tied[Math.floor((tied.length - 1) / 2)];
    const show = (x) => (Number.isNaN(x) ? "—" : x.toFixed(3));
    rows.forEach((r, i) => {
      const tr = make("tr");
      if (i === best) tr.className = "best";
      if (i === band) tr.classList.add("now");
      [tfmt(r.threshold), show(r.precision), show(r.recall), show(r.f1)].forEach((v) => tr.appendChild(make("td", "", v)));
      body.appendChild(tr);
    });
    $("favoured").textContent = tfmt(rows[best].threshold);
    $("favoured-f1").textContent = rows[best].f1.toFixed(3);
    $("go-favoured").onclick = () => { slider.value = String(best); showThreshold(best); };
  }

  // -- the run's facts -------------------------------------------------------------------
  const facts = $("facts");
  Object.entries(data.facts).forEach(([k, v]) => {
    const tr = make("tr");
    tr.appendChild(make("th", "", k));
    const td = make("td");
    td.appendChild(make("bdi", "", v));
    tr.appendChild(td);
    facts.appendChild(tr);
  });
  $("sample-note").textContent = "Counts are over every candidate pair from " + tfmt(data.floor) +
    " up (" + data.method + " search, keep rule " + data.keep + ", " + fmt(data.rows) +
    " rows); the slider stops at the " + grid.length + " thresholds they were computed at. " +
    "At most " + data.per_band + " pairs per band are sampled for labelling; texts longer than " +
    fmt(data.max_chars) + " characters are cut.";

  showThreshold(data.start);
  renderProgress();
  document.body.dataset.ready = "1";
})();
