// Heatmaps painted on a <canvas> from stored concept maps. GET /api/v1/maps/<key> answers the
// map min-max normalised to 0..255 ({shape: [h, w], values}); each value is upsampled bilinearly
// (pixel centres, edges clamped) to a canvas of the image's aspect ratio, longest side MAX_SIDE px,
// and coloured with the Turbo colormap, the same colours as camcore.concept_maps.TURBO_LUT. The
// alpha of a pixel is its value, so cold regions stay clear; CSS scales the canvas smoothly over
// the photo and its opacity slider fades it.
"use strict";
window.camlabel.heatmap = (function () {
  const MAX_SIDE = 96;  // a map has ~14x14 cells: 96 px holds all it shows
  const maps = new Map();  // url -> Promise of the map JSON

  // Turbo colormap, polynomial fit by Anton Mikhailov (Google, 2019): 256 x [r, g, b] uint8
  function turboLut() {
    const coefficients = [
      [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
      [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
      [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ];
    const step = 1 / 255;
    const lut = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = i === 255 ? 1 : i * step;
      coefficients.forEach(function (c, channel) {
        const value = c[0] + c[1] * x + c[2] * x * x + c[3] * x * x * x + (c[4] * x * x * x * x + c[5] * x * x * x * x * x);
        lut[i * 3 + channel] = Math.floor(Math.min(1, Math.max(0, value)) * 255 + 0.5);
      });
    }
    return lut;
  }
  const LUT = turboLut();

  function load(url) {
    if (!maps.has(url)) {
      const request = fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" }).then(function (response) {
        if (!response.ok) throw new Error("concept map " + url + ": HTTP " + response.status);
        return response.json();
      });
      request.catch(function () { maps.delete(url); });  // a failed fetch is tried again next time
      maps.set(url, request);
    }
    return maps.get(url);
  }

  // [width, height] of the canvas for an image of width x height px (the map's own aspect when unknown)
  function canvasSize(map, width, height) {
    const w = width > 0 ? width : map.shape[1];
    const h = height > 0 ? height : map.shape[0];
    const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
    return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))];
  }

  // one source axis of a bilinear upsample: for each output pixel, [lower index, upper index, weight of upper]
  function taps(outSize, inSize) {
    const scale = inSize / outSize;
    const result = [];
    for (let o = 0; o < outSize; o++) {
      const f = Math.min(inSize - 1, Math.max(0, (o + 0.5) * scale - 0.5));
      const lo = Math.floor(f);
      result.push([lo, Math.min(inSize - 1, lo + 1), f - lo]);
    }
    return result;
  }

  function paint(canvas, map, width, height) {
    const size = canvasSize(map, width, height);
    canvas.width = size[0];
    canvas.height = size[1];
    const mh = map.shape[0], mw = map.shape[1], v = map.values;
    const xs = taps(size[0], mw), ys = taps(size[1], mh);
    const context = canvas.getContext("2d");
    const image = context.createImageData(size[0], size[1]);
    const px = image.data;
    let p = 0;
    ys.forEach(function (ty) {
      const r0 = ty[0] * mw, r1 = ty[1] * mw, wy = ty[2];
      xs.forEach(function (tx) {
        const top = v[r0 + tx[0]] + (v[r0 + tx[1]] - v[r0 + tx[0]]) * tx[2];
        const bottom = v[r1 + tx[0]] + (v[r1 + tx[1]] - v[r1 + tx[0]]) * tx[2];
        const index = Math.min(255, Math.max(0, Math.round(top + (bottom - top) * wy)));
        px[p] = LUT[index * 3];
        px[p + 1] = LUT[index * 3 + 1];
        px[p + 2] = LUT[index * 3 + 2];
        px[p + 3] = index;
        p += 4;
      });
    });
    context.putImageData(image, 0, 0);
  }

  // paint `canvas` with the map at `url` once (for an image of width x height px); a promise
  function show(canvas, url, width, height) {
    if (canvas.dataset.painted === url) return Promise.resolve();
    return load(url).then(function (map) {
      paint(canvas, map, width, height);
      canvas.dataset.painted = url;
    });
  }

  return { lut: LUT, load: load, paint: paint, show: show };
})();
