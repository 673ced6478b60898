// The browser side of bcdiag's ScanViewer (widget.py): a canvas that shows what the
// kernel sends, asks for the visible box after each zoom or pan, and applies
// window/level, inversion and the heat-map overlay itself (no round trip).
// Hand-written on purpose: the kernel already serves regions at screen resolution, which
// leaves a viewer library nothing to do but fight that protocol.

const LEVELS = 65536; // uint16 levels of the image (regions.Quantisation)
const SETTLE_MS = 150; // a zoom or pan counts as finished after this pause
const MIN_ZOOM = 0.5; // relative to the whole image fitting the canvas
const MAX_CSS_PIXELS_PER_PIXEL = 16; // deepest zoom: one image pixel 16 CSS pixels wide
const WHEEL_STEP = 0.0015; // zoom factor per wheel pixel: exp(-deltaY * step)
const KEY_ZOOM = 1.25;
const KEY_PAN = 0.1; // of the visible extent per arrow key
const WINDOW_DRAG_RANGE = 1000; // CSS pixels of window/level drag that span the value range
const KEY_WINDOW = 0.02; // of the value range per Shift+arrow key (window/level)
const OUTLINE_RGB = [255, 214, 0];

function rgba(r, g, b, a) {
  return ((a << 24) | (b << 16) | (g << 8) | r) >>> 0; // ImageData's byte order
}

/** Display grey (packed RGBA) of each uint16 level, for the model's window. */
function windowTable(model, offset, scale) {
  const center = model.get("window_center");
  const width = model.get("window_width");
  const fn = model.get("window_function");
  const invert = model.get("invert");
  const table = new Uint32Array(LEVELS);
  for (let level = 0; level < LEVELS; level++) {
    const x = offset + level * scale;
    let y;
    if (fn === "SIGMOID") y = 1 / (1 + Math.exp((-4 * (x - center)) / width));
    else if (fn === "LINEAR_EXACT") y = (x - center) / width + 0.5;
    else if (width <= 1) y = x < center - 0.5 ? 0 : 1; // DICOM PS3.3 C.11.2.1.2.1
    else y = (x - (center - 0.5)) / (width - 1) + 0.5;
    y = Math.min(1, Math.max(0, y));
    const grey = Math.round((invert ? 1 - y : y) * 255);
    table[level] = rgba(grey, grey, grey, 255);
  }
  return table;
}

/** Heat as colour, red through yellow to white, more opaque where hotter. */
function heatTable(opacity) {
  const table = new Uint32Array(256);
  for (let v = 0; v < 256; v++) {
    const t = v / 255;
    const green = Math.round(255 * Math.min(1, 2 * t));
    const blue = Math.round(255 * Math.max(0, 2 * t - 1));
    table[v] = rgba(255, green, blue, Math.round(255 * opacity * t));
  }
  return table;
}

/** The contour of heat >= level, two pixels wide (one each side of the edge). */
function outline(heat, columns, rows, level, opacity, out) {
  const threshold = Math.max(1, Math.round(level * 255));
  const colour = rgba(...OUTLINE_RGB, Math.round(255 * opacity));
  out.fill(0);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < columns; x++) {
      const i = y * columns + x;
      const inside = heat[i] >= threshold;
      if (x + 1 < columns && heat[i + 1] >= threshold !== inside) out[i] = out[i + 1] = colour;
      if (y + 1 < rows && heat[i + columns] >= threshold !== inside) {
        out[i] = out[i + columns] = colour;
      }
    }
  }
}

function copied(view) {
  return view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength);
}

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

/** One answer of the kernel: the image's and the heat map's pixels and where they go. */
function layerOf(message, buffers) {
  const [rows, columns] = message.image_size;
  const layer = {
    imageBox: message.image_box,
    values: new Uint16Array(copied(buffers[0])),
    grey: canvasOf(columns, rows),
    greyDrawn: null,
    heat: null,
  };
  if (message.heat_size && buffers.length > 1) {
    const [heatRows, heatColumns] = message.heat_size;
    layer.heat = new Uint8Array(copied(buffers[1]));
    layer.heatBox = message.heat_box;
    layer.overlay = canvasOf(heatColumns, heatRows);
    layer.overlayDrawn = null;
  }
  return layer;
}

function paintPixels(canvas, fill) {
  const context = canvas.getContext("2d");
  const image = context.createImageData(canvas.width, canvas.height);
  fill(new Uint32Array(image.data.buffer));
  context.putImageData(image, 0, 0);
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "bcdiag-viewer";
  root.tabIndex = 0;
  const canvas = document.createElement("canvas");
  const label = document.createElement("div");
  label.className = "bcdiag-viewer-label";
  root.append(canvas, label);
  el.append(root);
  const context = canvas.getContext("2d");
  const started = performance.now();
  const viewId = Math.random().toString(36).slice(2);
  let requests = 0;
  let pending = { overview: null, detail: null };
  let overview = null;
  let detail = null;
  let detailAsked = null;
  let table = null; // window table, rebuilt when the window changes
  let tableVersion = 0;
  let overlayVersion = 0;
  let frame = 0;
  let settleTimer = 0;
  let drag = null;
  let quantisation = { offset: 0, scale: 1 };
  let [rows, columns] = model.get("image_shape");
  const view = { zoom: 1, x: columns / 2, y: rows / 2 };

  const ratio = () => window.devicePixelRatio || 1;
  const fit = () => Math.min(canvas.width / columns, canvas.height / rows);
  const scale = () => fit() * view.zoom; // canvas pixels per image pixel

  function ask(box, width, height) {
    const id = `${viewId}:${++requests}`;
    const [top, left, bottom, right] = box;
    model.send({ type: "region", id, top, left, bottom, right, width, height });
    return id;
  }

  function askOverview() {
    const s = fit();
    pending.overview = ask(
      [0, 0, rows, columns],
      Math.max(1, Math.round(columns * s)),
      Math.max(1, Math.round(rows * s)),
    );
  }

  function visibleBox(s) {
    const halfWidth = canvas.width / 2 / s;
    const halfHeight = canvas.height / 2 / s;
    return [
      Math.max(0, view.y - halfHeight),
      Math.max(0, view.x - halfWidth),
      Math.min(rows, view.y + halfHeight),
      Math.min(columns, view.x + halfWidth),
    ];
  }

  function askDetail() {
    const s = scale();
    const overviewScale = overview ? overview.grey.width / columns : 0;
    if (s <= overviewScale * 1.05) {
      detail = null; // the overview is sharp enough at this zoom
      detailAsked = null;
      requestDraw();
      return;
    }
    const box = visibleBox(s);
    const width = Math.max(1, Math.round((box[3] - box[1]) * s));
    const height = Math.max(1, Math.round((box[2] - box[0]) * s));
    const key = [...box, width, height].map((v) => v.toFixed(2)).join(",");
    if (key === detailAsked) return;
    detailAsked = key;
    pending.detail = ask(box, width, height);
  }

  function reportView() {
    model.set("view", {
      zoom: view.zoom,
      x: view.x,
      y: view.y,
      canvas_width: canvas.width,
      canvas_height: canvas.height,
    });
    model.save_changes();
  }

  function settle() {
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => {
      if (overview) askDetail();
      reportView();
    }, SETTLE_MS);
  }

  function clampView() {
    const most = (MAX_CSS_PIXELS_PER_PIXEL * ratio()) / fit();
    view.zoom = Math.min(Math.max(view.zoom, MIN_ZOOM), Math.max(most, 1));
    view.x = Math.min(Math.max(view.x, 0), columns);
    view.y = Math.min(Math.max(view.y, 0), rows);
  }

  function changed() {
    clampView();
    requestDraw();
    settle();
  }

  function zoomAt(factor, px, py) {
    const before = scale();
    const x = view.x + (px - canvas.width / 2) / before;
    const y = view.y + (py - canvas.height / 2) / before;
    view.zoom *= factor;
    clampView();
    const after = scale();
    view.x = x - (px - canvas.width / 2) / after;
    view.y = y - (py - canvas.height / 2) / after;
    changed();
  }

  function resetView() {
    Object.assign(view, { zoom: 1, x: columns / 2, y: rows / 2 });
    changed();
  }

  function refreshGrey(layer) {
    if (!table) {
      table = windowTable(model, quantisation.offset, quantisation.scale);
      tableVersion++;
    }
    if (layer.greyDrawn === tableVersion) return;
    paintPixels(layer.grey, (out) => {
      const values = layer.values;
      for (let i = 0; i < values.length; i++) out[i] = table[values[i]];
    });
    layer.greyDrawn = tableVersion;
  }

  function refreshOverlay(layer) {
    if (layer.overlayDrawn === overlayVersion) return;
    const opacity = model.get("opacity");
    paintPixels(layer.overlay, (out) => {
      if (model.get("overlay") === "heat") {
        const colours = heatTable(opacity);
        for (let i = 0; i < layer.heat.length; i++) out[i] = colours[layer.heat[i]];
      } else {
        const { width, height } = layer.overlay;
        outline(layer.heat, width, height, model.get("outline_level"), opacity, out);
      }
    });
    layer.overlayDrawn = overlayVersion;
  }

  function placed([top, left, bottom, right], s) {
    return [
      (left - view.x) * s + canvas.width / 2,
      (top - view.y) * s + canvas.height / 2,
      (right - left) * s,
      (bottom - top) * s,
    ];
  }

  function paint(layer, s) {
    refreshGrey(layer);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(layer.grey, ...placed(layer.imageBox, s));
    if (layer.heat && model.get("overlay") !== "off") {
      refreshOverlay(layer);
      context.drawImage(layer.overlay, ...placed(layer.heatBox, s));
    }
  }

  function number(value) {
    return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
  }

  function draw() {
    frame = 0;
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    if (!overview) {
      label.textContent = "Loading…";
      return;
    }
    const s = scale();
    paint(overview, s);
    if (detail) paint(detail, s);
    const center = number(model.get("window_center"));
    const width = number(model.get("window_width"));
    label.textContent = `W ${width}  L ${center}  ·  ${view.zoom.toFixed(2)}×`;
    root.dataset.overlay = overview.heat ? model.get("overlay") : "none"; // as last drawn
    if (!root.dataset.firstDrawMs) {
      root.dataset.firstDrawMs = (performance.now() - started).toFixed(0);
    }
  }

  function requestDraw() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function resized() {
    const width = Math.round(root.clientWidth * ratio());
    const height = Math.round(root.clientHeight * ratio());
    if (width === 0 || height === 0) return; // hidden (e.g. in a closed tab)
    if (width === canvas.width && height === canvas.height && overview) return;
    canvas.width = width;
    canvas.height = height;
    const overviewScale = overview ? overview.grey.width / columns : 0;
    if (overviewScale < fit() * 0.95 && !pending.overview) askOverview();
    detailAsked = null;
    changed();
  }

  function received(message, buffers) {
    if (message.type === "reset") {
      resetView();
    } else if (message.type === "region" && message.id === pending.overview) {
      quantisation = { offset: message.offset, scale: message.scale };
      table = null;
      overview = layerOf(message, buffers);
      pending.overview = null;
      requestDraw();
      settle();
    } else if (message.type === "region" && message.id === pending.detail) {
      detail = layerOf(message, buffers);
      pending.detail = null;
      requestDraw();
    }
  }

  function canvasPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * canvas.width) / rect.width,
      ((event.clientY - rect.top) * canvas.height) / rect.height,
    ];
  }

  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault(); // the page must not scroll under the image
      const unit = [1, 16, 400][event.deltaMode] ?? 1; // pixels, lines, pages
      zoomAt(Math.exp(-event.deltaY * unit * WHEEL_STEP), ...canvasPoint(event));
    },
    { passive: false },
  );
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.button !== 2) return;
    root.focus();
    drag = {
      windowing: event.button === 2 || event.shiftKey,
      x: event.clientX,
      y: event.clientY,
      center: model.get("window_center"),
      width: model.get("window_width"),
      viewX: view.x,
      viewY: view.y,
    };
    canvas.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.windowing) {
      const [low, high] = model.get("value_range");
      const step = Math.max(high - low, 1e-6) / WINDOW_DRAG_RANGE;
      model.set("window_width", Math.max(drag.width + dx * step, step));
      model.set("window_center", drag.center + dy * step);
      return;
    }
    const s = scale() / ratio(); // CSS pixels per image pixel
    view.x = drag.viewX - dx / s;
    view.y = drag.viewY - dy / s;
    changed();
  });
  const dropped = () => {
    if (drag?.windowing) model.save_changes();
    drag = null;
  };
  canvas.addEventListener("pointerup", dropped);
  canvas.addEventListener("pointercancel", dropped);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("dblclick", resetView);
  root.addEventListener("keydown", (event) => {
    const s = scale();
    const middle = [canvas.width / 2, canvas.height / 2];
    const pan = (fx, fy) => {
      view.x += (fx * canvas.width) / s;
      view.y += (fy * canvas.height) / s;
      changed();
    };
    const windowBy = (widthSteps, centerSteps) => {
      const [low, high] = model.get("value_range");
      const step = Math.max(high - low, 1e-6) * KEY_WINDOW;
      model.set("window_width", Math.max(model.get("window_width") + widthSteps * step, step));
      model.set("window_center", model.get("window_center") + centerSteps * step);
      model.save_changes();
    };
    const windowing = {
      // as a right-drag in that direction: left narrows the window, up lowers the level
      ArrowLeft: () => windowBy(-1, 0),
      ArrowRight: () => windowBy(1, 0),
      ArrowUp: () => windowBy(0, -1),
      ArrowDown: () => windowBy(0, 1),
    };
    const actions = event.shiftKey ? windowing : {
      "+": () => zoomAt(KEY_ZOOM, ...middle),
      "=": () => zoomAt(KEY_ZOOM, ...middle),
      "-": () => zoomAt(1 / KEY_ZOOM, ...middle),
      ArrowLeft: () => pan(-KEY_PAN, 0),
      ArrowRight: () => pan(KEY_PAN, 0),
      ArrowUp: () => pan(0, -KEY_PAN),
      ArrowDown: () => pan(0, KEY_PAN),
      0: resetView,
      Home: resetView,
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });

  const windowChanged = () => {
    table = null;
    requestDraw();
  };
  const overlayChanged = () => {
    overlayVersion++;
    requestDraw();
  };
  const revised = () => {
    [rows, columns] = model.get("image_shape");
    askOverview();
    detailAsked = null;
    settle();
  };
  const listeners = [
    ["msg:custom", received],
    ["change:revision", revised],
    ...["window_center", "window_width", "invert"].map((n) => [`change:${n}`, windowChanged]),
    ...["overlay", "opacity", "outline_level"].map((n) => [`change:${n}`, overlayChanged]),
  ];
  for (const [name, callback] of listeners) model.on(name, callback);
  const observer = new ResizeObserver(resized);
  observer.observe(root);

  return () => {
    observer.disconnect();
    clearTimeout(settleTimer);
    cancelAnimationFrame(frame);
    for (const [name, callback] of listeners) model.off(name, callback);
  };
}

export default { render };
