/* vitcli explore: draws every map from the data embedded in this page. Plain JavaScript, no libraries, no
   network. Indices are 0-based: blocks, heads, tokens (prefix tokens first, then patches row by row). */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const META = JSON.parse($("vitcli-meta").textContent);
  const L = META.num_blocks, H = META.num_heads, T = META.num_tokens, N = META.num_patches, P = META.prefix;
  const GH = META.grid[0], GW = META.grid[1], PH = META.patch_size[0], PW = META.patch_size[1];
  const FRAME_W = GW * PW, FRAME_H = GH * PH; // the input pixels the patches cover
  const SCALE = Math.max(1, Math.round(420 / Math.max(FRAME_W, FRAME_H)));
  const CLS = META.cls_token;
  const DEFAULT_QUERY = CLS ? 0 : P + Math.floor(GH / 2) * GW + Math.floor(GW / 2);
  const IMG = $("source-image");
  const MAP_IDS = ["patch-canvas", "attn-canvas", "roll-canvas", "pca-canvas", "sim-canvas"];

  // ---- colour maps (matplotlib's inferno and viridis, 9 stops, interpolated to 256) --------------------------
  const STOPS = {
    inferno: [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
      [250, 193, 39], [245, 251, 161], [252, 255, 164]],
    viridis: [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
      [92, 200, 99], [170, 220, 50], [253, 231, 37]],
  };
  function makeLut(stops) {
    const lut = new Uint8ClampedArray(256 * 3), n = stops.length;
    for (let i = 0; i < 256; i++) {
      const pos = (i / 255) * (n - 1), j = Math.min(Math.floor(pos), n - 2), f = pos - j;
      for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(stops[j][c] * (1 - f) + stops[j + 1][c] * f);
    }
    return lut;
  }
  const LUT = { inferno: makeLut(STOPS.inferno), viridis: makeLut(STOPS.viridis) };
  function colormap(name, t) {
    const i = Math.max(0, Math.min(255, Math.round((Number.isFinite(t) ? t : 0) * 255))) * 3, lut = LUT[name];
    return [lut[i], lut[i + 1], lut[i + 2]];
  }

  // ---- decoding the embedded arrays ---------------------------------------------------------------------------
  function base64Bytes(text) {
    const s = atob(text.replace(/\s+/g, "")), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  async function inflate(bytes) {
    if (typeof DecompressionStream === "undefined") throw new Error("this browser lacks DecompressionStream");
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  async function loadArray(name) {
    const el = $("vitcli-array-" + name);
    if (!el) return null;
    let bytes = base64Bytes(el.textContent);
    if (el.dataset.encoding === "deflate") bytes = await inflate(bytes);
    const shape = el.dataset.shape.split(",").map(Number), n = shape.reduce((a, b) => a * b, 1);
    if (el.dataset.dtype === "uint8") {
      if (bytes.length !== n) throw new Error(name + ": " + bytes.length + " bytes for shape " + shape);
      return bytes;
    }
    if (el.dataset.dtype === "float32") {
      if (bytes.length !== 4 * n) throw new Error(name + ": " + bytes.length + " bytes for shape " + shape);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
    throw new Error(name + ": unknown dtype " + el.dataset.dtype);
  }

  let A, AS, R, RS, SIM, PCA; // codes and per-row scales
  const SQ = new Float64Array(256);
  for (let i = 0; i < 256; i++) SQ[i] = (i / 255) * (i / 255);

  // ---- values, exactly as shown ----------------------------------------------------------------------------
  function attnValue(l, h, q, k) {
    if (h === "mean") {
      let s = 0;
      for (let j = 0; j < H; j++) s += attnValue(l, j, q, k);
      return s / H;
    }
    const r = (l * H + h) * T + q;
    return AS[r] * SQ[A[r * T + k]];
  }
  function attnRow(l, h, q) {
    const out = new Float64Array(T);
    const heads = h === "mean" ? [...Array(H).keys()] : [h];
    for (const j of heads) {
      const r = (l * H + j) * T + q, s = AS[r], base = r * T;
      for (let k = 0; k < T; k++) out[k] += s * SQ[A[base + k]];
    }
    if (heads.length > 1) for (let k = 0; k < T; k++) out[k] /= heads.length;
    return out;
  }
  function rollValue(l, q, k) {
    const r = l * T + q;
    return RS[r] * SQ[R[r * T + k]];
  }
  function rollRow(l, q) {
    const out = new Float64Array(T);
    for (let k = 0; k < T; k++) out[k] = rollValue(l, q, k);
    return out;
  }
  function simValue(l, p, k) { return SIM[(l * N + p) * N + k] / 255 * 2 - 1; }
  function simRow(l, p) {
    const out = new Float64Array(N);
    for (let k = 0; k < N; k++) out[k] = simValue(l, p, k);
    return out;
  }

  // ---- words and numbers -----------------------------------------------------------------------------------
  function fmt(v) {
    if (v === 0) return "0";
    return String(Number(v.toPrecision(4)));
  }
  function fmtPx(v) { return String(Math.round(v * 10) / 10); }
  function fmtInt(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function fmtBytes(n) { return n >= 1e6 ? (n / 1e6).toFixed(2) + " MB" : n >= 1e3 ? (n / 1e3).toFixed(1) + " kB" : n + " B"; }
  function isPatch(t) { return t !== null && t >= P && t < T; }
  function rowCol(t) { const p = t - P; return [Math.floor(p / GW), p % GW]; }
  function tokenKind(t) {
    if (t < P) return CLS && t === 0 ? "CLS" : "register " + (t - (CLS ? 1 : 0));
    const rc = rowCol(t);
    return "patch (" + rc[0] + ", " + rc[1] + ")";
  }
  function shortKind(t) {
    if (t < P) return CLS && t === 0 ? "CLS" : "reg " + (t - (CLS ? 1 : 0));
    return tokenKind(t);
  }
  function boxText(t) {
    const b = META.boxes[t - P];
    return "x " + fmtPx(b[0]) + "–" + fmtPx(b[2]) + ", y " + fmtPx(b[1]) + "–" + fmtPx(b[3]);
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function tokenDescription(t) {
    // token index, grid position and pixel box in the original image, as DOM nodes
    const span = el("span");
    span.append(el("b", {}, "token " + t), " · " + tokenKind(t));
    if (isPatch(t)) {
      const rc = rowCol(t);
      span.append(" · row " + rc[0] + ", column " + rc[1] + " · pixels ");
      span.append(el("span", { class: "box", "data-box": META.boxes[t - P].join(",") }, boxText(t)));
      span.append(" of the original " + META.original_size[1] + " × " + META.original_size[0] + " image");
    } else {
      span.append(CLS && t === 0 ? " (not on the grid: the class token)" : " (not on the grid: a register token)");
    }
    return span;
  }

  // ---- state ----------------------------------------------------------------------------------------------
  const S = { block: L - 1, head: 0, mean: false, query: DEFAULT_QUERY, pinned: false, probe: null, opacity: 0.75 };
  function headKey() { return S.mean ? "mean" : S.head; }
  function headText(h) { return h === "mean" ? "mean of " + H + " heads" : "head " + h; }

  // ---- drawing -------------------------------------------------------------------------------------------
  const off = document.createElement("canvas");
  off.width = GW;
  off.height = GH;
  const offCtx = off.getContext("2d");

  function heatColors(vals, offset, cmap, lo, hi) {
    const out = new Uint8ClampedArray(N * 4), lut = LUT[cmap], span = hi - lo;
    for (let i = 0; i < N; i++) {
      const t = span > 0 ? (vals[offset + i] - lo) / span : 0;
      const j = Math.max(0, Math.min(255, Math.round(t * 255))) * 3;
      out[4 * i] = lut[j]; out[4 * i + 1] = lut[j + 1]; out[4 * i + 2] = lut[j + 2]; out[4 * i + 3] = 255;
    }
    return out;
  }
  function outline(ctx, t, color, dash) {
    if (!isPatch(t)) return;
    const rc = rowCol(t), x = rc[1] * PW * SCALE, y = rc[0] * PH * SCALE, w = PW * SCALE, h = PH * SCALE;
    const lw = Math.max(1.5, Math.min(3, w / 8));
    ctx.setLineDash([]);
    ctx.lineWidth = lw + 2;
    ctx.strokeStyle = "rgba(0,0,0,0.75)";
    ctx.strokeRect(x + lw / 2 + 1, y + lw / 2 + 1, w - lw - 2, h - lw - 2);
    ctx.lineWidth = lw;
    ctx.setLineDash(dash ? [Math.max(3, w / 6), Math.max(2, w / 10)] : []);
    ctx.strokeStyle = color;
    ctx.strokeRect(x + lw / 2 + 1, y + lw / 2 + 1, w - lw - 2, h - lw - 2);
    ctx.setLineDash([]);
  }
  function paint(id, rgba, opacity, extra) {
    const c = $(id), ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, c.width, c.height);
    if (!rgba || opacity < 1) ctx.drawImage(IMG, 0, 0, IMG.naturalWidth * SCALE, IMG.naturalHeight * SCALE);
    if (rgba) {
      offCtx.putImageData(new ImageData(rgba, GW, GH), 0, 0);
      ctx.globalAlpha = opacity;
      ctx.drawImage(off, 0, 0, GW, GH, 0, 0, FRAME_W * SCALE, FRAME_H * SCALE);
      ctx.globalAlpha = 1;
    }
    if (extra) extra(ctx);
    outline(ctx, S.query, "#ffffff", false);
    if (S.probe !== null && S.probe !== S.query) outline(ctx, S.probe, "#ffd400", true);
  }
  function legend(id, cmap, lo, hi, label) {
    const box = $(id);
    box.replaceChildren();
    const c = el("canvas", { width: "140", height: "10" }), ctx = c.getContext("2d");
    for (let x = 0; x < 140; x++) {
      const rgb = colormap(cmap, x / 139);
      ctx.fillStyle = "rgb(" + rgb.join(",") + ")";
      ctx.fillRect(x, 0, 1, 10);
    }
    box.append(el("span", { class: "lo", "data-value": String(lo) }, fmt(lo)), c,
      el("span", { class: "hi", "data-value": String(hi) }, fmt(hi)), el("span", {}, label));
  }
  function patchMax(row) {
    let m = 0;
    for (let k = P; k < T; k++) if (row[k] > m) m = row[k];
    return m;
  }
  function prefixStrip(id, row, max) {
    const box = $(id);
    box.replaceChildren();
    if (P === 0) { box.hidden = true; return; }
    box.hidden = false;
    let share = 0;
    for (let t = 0; t < P; t++) {
      share += row[t];
      const cell = el("div", { class: "tok" + (t === S.query ? " query" : ""), "data-token": String(t),
        "data-value": String(row[t]), title: "click to pin " + shortKind(t) + " as the query" });
      const sw = el("div", { class: "sw" });
      sw.style.background = "rgb(" + colormap("inferno", max > 0 ? Math.min(1, row[t] / max) : 0).join(",") + ")";
      cell.append(el("span", {}, shortKind(t)), sw, el("span", { class: "v" }, fmt(row[t])));
      cell.addEventListener("click", () => togglePin(t));
      box.append(cell);
    }
    box.append(el("span", { class: "share" }, "prefix tokens: " + (100 * share).toFixed(1) + "% of the row"));
  }

  function drawPatches() {
    paint("patch-canvas", null, 1, (ctx) => {
      ctx.strokeStyle = "rgba(255,255,255,0.45)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let c = 0; c <= GW; c++) { const x = Math.min(c * PW * SCALE + 0.5, FRAME_W * SCALE - 0.5); ctx.moveTo(x, 0); ctx.lineTo(x, FRAME_H * SCALE); }
      for (let r = 0; r <= GH; r++) { const y = Math.min(r * PH * SCALE + 0.5, FRAME_H * SCALE - 0.5); ctx.moveTo(0, y); ctx.lineTo(FRAME_W * SCALE, y); }
      ctx.stroke();
    });
    const info = $("hover-info");
    info.replaceChildren();
    const t = S.probe !== null ? S.probe : S.query;
    info.append(el("span", { class: "k" }, S.probe !== null ? "pointer: " : "query: "), tokenDescription(t));
    info.dataset.token = String(t);
  }
  function drawAttention() {
    const h = headKey(), row = attnRow(S.block, h, S.query), max = patchMax(row);
    paint("attn-canvas", heatColors(row, P, "inferno", 0, max), S.opacity);
    legend("attn-legend", "inferno", 0, max, "attention to patches");
    prefixStrip("attn-prefix", row, max);
    $("attn-title").textContent = "block " + S.block + ", " + headText(h) + ", from " + shortKind(S.query);
    return row;
  }
  function drawRollout() {
    const row = rollRow(S.block, S.query), max = patchMax(row);
    paint("roll-canvas", heatColors(row, P, "inferno", 0, max), S.opacity);
    legend("roll-legend", "inferno", 0, max, "rollout to patches");
    prefixStrip("roll-prefix", row, max);
    $("roll-title").textContent = "up to block " + S.block + ", from " + shortKind(S.query);
    $("roll-block").textContent = String(S.block);
  }
  function drawPca() {
    if (!PCA) { $("pca-canvas").hidden = true; $("pca-none").hidden = false; return; }
    const out = new Uint8ClampedArray(N * 4), base = S.block * N * 3;
    for (let i = 0; i < N; i++) {
      out[4 * i] = PCA[base + 3 * i]; out[4 * i + 1] = PCA[base + 3 * i + 1]; out[4 * i + 2] = PCA[base + 3 * i + 2];
      out[4 * i + 3] = 255;
    }
    paint("pca-canvas", out, S.opacity);
    $("pca-title").textContent = "after block " + S.block;
  }
  function simPatch() { return isPatch(S.query) ? S.query : isPatch(S.probe) ? S.probe : null; }
  function drawSimilarity() {
    const t = simPatch();
    $("sim-title").textContent = "after block " + S.block + (t === null ? "" : ", to " + tokenKind(t));
    if (t === null) {
      paint("sim-canvas", null, 1);
      $("sim-legend").replaceChildren();
      $("sim-note").textContent = "Similarity is between patch tokens: hover or pin a patch.";
      return;
    }
    const p = t - P, row = simRow(S.block, p);
    let lo = Infinity, hi = -Infinity;
    for (let k = 0; k < N; k++) if (k !== p) { lo = Math.min(lo, row[k]); hi = Math.max(hi, row[k]); }
    if (N === 1) { lo = -1; hi = 1; }
    paint("sim-canvas", heatColors(row, 0, "viridis", lo, hi), S.opacity);
    legend("sim-legend", "viridis", lo, hi, "cosine (other patches)");
    $("sim-note").textContent = "Colours span the other patches' range; the patch itself (1.0) is outlined.";
  }

  const HM = { left: 56, top: 18 };
  let HK = 1; // heads canvas: pixels per patch
  function setupHeads() {
    const c = $("heads-canvas"), w = (H + 1) * (GW + 1), h = L * (GH + 1);
    HK = Math.max(1, Math.floor(Math.min(760 / w, 620 / h)));
    c.width = HM.left + w * HK;
    c.height = HM.top + h * HK;
  }
  function drawHeads() {
    const c = $("heads-canvas"), ctx = c.getContext("2d"), w = (H + 1) * (GW + 1), h = L * (GH + 1);
    const img = new Uint8ClampedArray(w * h * 4).fill(255);
    for (let l = 0; l < L; l++) {
      const mean = new Float64Array(T);
      for (let j = 0; j <= H; j++) {
        let row;
        if (j < H) {
          row = attnRow(l, j, S.query);
          for (let k = 0; k < T; k++) mean[k] += row[k] / H;
        } else row = mean;
        const colors = heatColors(row, P, "inferno", 0, patchMax(row));
        for (let i = 0; i < N; i++) {
          const x = j * (GW + 1) + (i % GW), y = l * (GH + 1) + Math.floor(i / GW), o = 4 * (y * w + x);
          img[o] = colors[4 * i]; img[o + 1] = colors[4 * i + 1]; img[o + 2] = colors[4 * i + 2];
        }
      }
    }
    const tmp = document.createElement("canvas");
    tmp.width = w; tmp.height = h;
    tmp.getContext("2d").putImageData(new ImageData(img, w, h), 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, c.width, c.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, w, h, HM.left, HM.top, w * HK, h * HK);
    ctx.fillStyle = "#5c5c63";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let l = 0; l < L; l++) ctx.fillText("block " + l, HM.left - 4, HM.top + (l * (GH + 1) + GH / 2) * HK);
    ctx.textAlign = "center";
    for (let j = 0; j <= H; j++) ctx.fillText(j < H ? String(j) : "mean", HM.left + (j * (GW + 1) + GW / 2) * HK, HM.top / 2);
    const j = S.mean ? H : S.head;
    ctx.strokeStyle = "#2458c6";
    ctx.lineWidth = 2;
    ctx.strokeRect(HM.left + j * (GW + 1) * HK - 1, HM.top + S.block * (GH + 1) * HK - 1, GW * HK + 2, GH * HK + 2);
  }
  function headsCell(e) {
    const c = $("heads-canvas"), r = c.getBoundingClientRect();
    const x = ((e.clientX - r.left) * c.width / r.width - HM.left) / HK, y = ((e.clientY - r.top) * c.height / r.height - HM.top) / HK;
    const j = Math.floor(x / (GW + 1)), l = Math.floor(y / (GH + 1));
    return j >= 0 && j <= H && l >= 0 && l < L && x >= 0 && y >= 0 ? [l, j] : null;
  }

  function drawValues(row) {
    const q = $("query-info");
    q.replaceChildren(el("span", { class: "k" }, S.pinned ? "query (pinned): " : "query: "), tokenDescription(S.query));
    q.dataset.token = String(S.query);
    const pr = $("probe-info");
    pr.replaceChildren();
    if (S.probe !== null) {
      const h = headKey(), t = S.probe;
      const a = attnValue(S.block, h, S.query, t), ro = rollValue(S.block, S.query, t);
      pr.append(el("span", { class: "k" }, "pointer: "), tokenDescription(t), el("br"),
        "attention " + shortKind(S.query) + " → " + shortKind(t) + ": ",
        el("b", { id: "probe-attn", "data-value": String(a) }, fmt(a)),
        " · rollout: ", el("b", { id: "probe-roll", "data-value": String(ro) }, fmt(ro)));
      const sp = simPatch();
      if (sp !== null && isPatch(t)) {
        const s = simValue(S.block, sp - P, t - P);
        pr.append(" · cosine similarity to " + shortKind(sp) + ": ", el("b", { id: "probe-sim", "data-value": String(s) }, fmt(s)));
      }
      pr.dataset.token = String(t);
    } else {
      pr.append(el("span", { class: "k" }, "Point at a patch to read its values; click to pin the query."));
      delete pr.dataset.token;
    }
    const order = [...Array(T).keys()].sort((x, y) => row[y] - row[x] || x - y).slice(0, Math.min(10, T));
    const body = $("top-table").tBodies[0];
    body.replaceChildren();
    order.forEach((t, i) => {
      const tr = el("tr", { "data-token": String(t), "data-value": String(row[t]) });
      tr.append(el("td", {}, String(i + 1)), el("td", {}, String(t)), el("td", {}, shortKind(t)),
        el("td", { class: "v" }, fmt(row[t])));
      body.append(tr);
    });
    $("top-caption").textContent = "Tokens " + shortKind(S.query) + " attends to most: block " + S.block + ", " +
      headText(headKey());
  }
  function drawControls() {
    $("block").value = String(S.block);
    $("block-out").textContent = S.block + " / " + (L - 1);
    $("head").value = String(S.head);
    $("head").disabled = S.mean;
    $("head-out").textContent = S.mean ? "mean" : S.head + " / " + (H - 1);
    $("mean").checked = S.mean;
    $("query-badge").textContent = "token " + S.query + " · " + shortKind(S.query) + (S.pinned ? " (pinned)" : "");
    $("unpin").hidden = !S.pinned;
  }

  function render() {
    drawControls();
    drawPatches();
    const row = drawAttention();
    drawRollout();
    drawPca();
    drawSimilarity();
    drawHeads();
    drawValues(row);
  }

  // ---- interaction ---------------------------------------------------------------------------------------
  function clampInt(v, lo, hi) {
    const n = Math.round(Number(v));
    if (!Number.isFinite(n) || n < lo || n > hi) throw new RangeError(v + " is not in " + lo + "…" + hi);
    return n;
  }
  function setBlock(l) { S.block = clampInt(l, 0, L - 1); render(); }
  function setHead(h) {
    if (h === "mean") S.mean = true;
    else { S.head = clampInt(h, 0, H - 1); S.mean = false; }
    render();
  }
  function setMean(on) { S.mean = !!on; render(); }
  function hover(t) {
    S.probe = t === null || t === undefined ? null : clampInt(t, 0, T - 1);
    if (!S.pinned) S.query = S.probe === null ? DEFAULT_QUERY : S.probe;
    render();
  }
  function pin(t) { S.query = clampInt(t, 0, T - 1); S.pinned = true; render(); }
  function unpin() {
    S.pinned = false;
    S.query = S.probe === null ? DEFAULT_QUERY : S.probe;
    render();
  }
  function togglePin(t) { if (S.pinned && S.query === t) unpin(); else pin(t); }
  function tokenAt(c, e) {
    const r = c.getBoundingClientRect();
    const x = (e.clientX - r.left) * c.width / r.width / SCALE, y = (e.clientY - r.top) * c.height / r.height / SCALE;
    const col = Math.floor(x / PW), row = Math.floor(y / PH);
    return col >= 0 && col < GW && row >= 0 && row < GH ? P + row * GW + col : null;
  }

  function wire() {
    for (const id of MAP_IDS) {
      const c = $(id);
      c.width = FRAME_W * SCALE;
      c.height = FRAME_H * SCALE;
      c.addEventListener("pointermove", (e) => { const t = tokenAt(c, e); if (t !== S.probe) hover(t); });
      c.addEventListener("pointerleave", () => { if (S.probe !== null) hover(null); });
      c.addEventListener("click", (e) => { const t = tokenAt(c, e); if (t !== null) togglePin(t); });
    }
    $("block").max = String(L - 1);
    $("head").max = String(H - 1);
    $("block").addEventListener("input", (e) => setBlock(e.target.value));
    $("head").addEventListener("input", (e) => setHead(e.target.value));
    $("mean").addEventListener("change", (e) => setMean(e.target.checked));
    $("opacity").addEventListener("input", (e) => { S.opacity = Number(e.target.value) / 100; render(); });
    $("unpin").addEventListener("click", unpin);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && S.pinned) unpin(); });
    const hc = $("heads-canvas");
    hc.addEventListener("click", (e) => {
      const cell = headsCell(e);
      if (!cell) return;
      S.block = cell[0];
      if (cell[1] === H) S.mean = true; else { S.head = cell[1]; S.mean = false; }
      render();
    });
    hc.addEventListener("pointermove", (e) => {
      const cell = headsCell(e);
      hc.title = cell ? "block " + cell[0] + ", " + (cell[1] === H ? "mean of heads" : "head " + cell[1]) : "";
    });
  }

  function fillText() {
    const prov = META.provenance;
    document.title = prov.model + " — vitcli explore";
    $("model-name").textContent = prov.model;
    $("weights").textContent = prov.weights + (prov.pretrained ? "" : " (not pretrained)");
    $("version").textContent = prov.vitcli_version;
    $("command").textContent = prov.command;
    $("random-banner").hidden = !!prov.pretrained;
    const extra = $("provenance-extra");
    for (const [k, v] of Object.entries(prov)) {
      if (["model", "weights", "pretrained", "vitcli_version", "command"].includes(k)) continue;
      const d = el("div");
      d.append(el("dt", {}, k), el("dd", {}, summaryText(v)));
      extra.append(d);
    }
    $("grid-text").textContent = GH + " × " + GW + " (" + N + " patches of " + PH + " × " + PW + " pixels, " +
      T + " tokens" + (P ? ", " + P + " of them prefix tokens" : "") + ")";
    const top5 = $("top5").tBodies[0];
    if (META.top5) {
      for (const p of META.top5) {
        const tr = el("tr", { "data-index": String(p.index), "data-prob": String(p.prob) });
        const bar = el("div", { class: "bar" });
        bar.style.width = Math.max(0, Math.min(100, 100 * p.prob)).toFixed(1) + "%";
        const cell = el("td", { class: "barcell" });
        cell.append(bar);
        tr.append(el("td", {}, p.label), el("td", { class: "v" }, "#" + p.index),
          el("td", { class: "v" }, (100 * p.prob).toFixed(2) + "%"), cell);
        top5.append(tr);
      }
    } else {
      $("top5").hidden = true;
      $("top5-none").hidden = false;
    }
    const sum = $("summary").tBodies[0];
    for (const [k, v] of Object.entries(META.summary)) {
      const tr = el("tr", { "data-key": k });
      tr.append(el("td", {}, k), el("td", {}, summaryText(v)));
      sum.append(tr);
    }
    const parts = $("parts").tBodies[0];
    for (const [k, v] of Object.entries(META.part_bytes)) {
      const tr = el("tr");
      tr.append(el("td", {}, k), el("td", { class: "v" }, fmtBytes(v)));
      parts.append(tr);
    }
  }
  function summaryText(v) {
    if (typeof v === "number") return Number.isInteger(v) ? fmtInt(v) : fmt(v);
    if (Array.isArray(v)) return v.map(summaryText).join(v.every((x) => typeof x === "number") ? " × " : ", ");
    if (v === null) return "—";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // ---- the test and docs API -------------------------------------------------------------------------------
  function valueShown(kind, o) {
    o = o || {};
    const l = o.block !== undefined ? o.block : S.block;
    const q = o.query !== undefined ? o.query : S.query;
    const k = o.key;
    if (kind === "attention") return attnValue(l, o.head !== undefined ? o.head : headKey(), q, k);
    if (kind === "rollout") return rollValue(l, q, k);
    if (kind === "similarity") return simValue(l, q - P, k - P);
    throw new Error("unknown kind " + kind);
  }
  function patchColors(id) {
    // the colour at the centre of every patch of a map, as drawn: [[r, g, b], ...] in patch order
    const c = $(id), data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, out = [];
    for (let i = 0; i < N; i++) {
      const x = Math.floor(((i % GW) + 0.5) * PW * SCALE), y = Math.floor((Math.floor(i / GW) + 0.5) * PH * SCALE);
      const o = 4 * (y * c.width + x);
      out.push([data[o], data[o + 1], data[o + 2]]);
    }
    return out;
  }

  const api = {
    meta: META,
    get state() { return { block: S.block, head: headKey(), query: S.query, pinned: S.pinned, probe: S.probe, opacity: S.opacity }; },
    setBlock, setHead, setMean, hover, pin, unpin,
    setOpacity(x) { S.opacity = Math.max(0, Math.min(1, Number(x))); $("opacity").value = String(Math.round(S.opacity * 100)); render(); },
    valueShown, patchColors, colormap,
    headsLayout() { return { left: HM.left, top: HM.top, k: HK, cellW: GW + 1, cellH: GH + 1 }; },
  };
  window.vitcliExplore = api;

  async function start() {
    [A, AS, R, RS, SIM, PCA] = await Promise.all(
      ["attention", "attention_scale", "rollout", "rollout_scale", "similarity", "pca"].map(loadArray));
    if (IMG.decode) await IMG.decode();
    else if (!IMG.complete) await new Promise((ok, fail) => { IMG.onload = ok; IMG.onerror = fail; });
    fillText();
    setupHeads();
    wire();
    render();
    document.body.dataset.ready = "1";
  }
  api.ready = start().catch((err) => {
    const box = $("error");
    box.hidden = false;
    box.textContent = "This page could not draw its data: " + (err && err.message ? err.message : err);
    document.body.dataset.ready = "error";
    throw err;
  });
})();
