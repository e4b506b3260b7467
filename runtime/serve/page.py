"""``GET /``: one self-contained page (no external assets) on top of ``POST /v1/upscale``.

Pick or drop an image; the page uploads it (upload progress), waits for the model (with the
server's Server-Timing once it answers), then shows a before/after slider, bicubic against the
model, and a download link for the exact bytes the API returned. Bicubic is computed in the
browser (Keys' cubic, a = -0.5, as OpenCV's INTER_CUBIC) from the picked file. The Content-Security-Policy
allows only this page's own script and style (by hash), images from blob: URLs and requests to
this server.
"""

from __future__ import annotations

import base64
import hashlib

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 64em; padding: 0 1em; color: #222; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; }
#drop.over { background: #eef; }
#controls { margin: 1em 0; }
#token-row { display: none; }
progress { width: 100%; }
#compare { position: relative; display: none; overflow: hidden; max-width: 100%; margin-top: 1em; }
#compare canvas, #compare img { display: block; width: 100%; height: auto; image-rendering: pixelated; }
#model { position: absolute; left: 0; top: 0; }
#slider { width: 100%; }
#download { display: none; }
#status { white-space: pre-wrap; }
.error { color: #a00; }
"""

_SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let lastUrl = null;

function say(text, error) { $("status").textContent = text; $("status").className = error ? "error" : ""; }

function cubic(t) {  // Keys (a = -0.5), as OpenCV's INTER_CUBIC
  const a = -0.5, x = Math.abs(t);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

function resizeAxis(src, w, h, s, horizontal) {  // one separable pass, 4 channels, float
  const ow = horizontal ? w * s : w, oh = horizontal ? h : h * s;
  const out = new Float32Array(ow * oh * 4), n = horizontal ? w : h, m = horizontal ? ow : oh;
  for (let o = 0; o < m; o++) {
    const x = (o + 0.5) / s - 0.5, x0 = Math.floor(x), taps = [];
    for (let k = -1; k <= 2; k++) taps.push([Math.min(n - 1, Math.max(0, x0 + k)), cubic(x - (x0 + k))]);
    const lines = horizontal ? oh : ow;
    for (let l = 0; l < lines; l++) {
      for (let c = 0; c < 4; c++) {
        let v = 0;
        for (const [i, wgt] of taps) v += wgt * src[((horizontal ? l * w + i : i * w + l) * 4) + c];
        out[((horizontal ? l * ow + o : o * ow + l) * 4) + c] = v;
      }
    }
  }
  return out;
}

async function bicubic(file, scale) {
  const bmp = await createImageBitmap(file);
  const c = document.createElement("canvas");
  c.width = bmp.width; c.height = bmp.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(bmp, 0, 0);
  const src = ctx.getImageData(0, 0, c.width, c.height).data;
  const wide = resizeAxis(src, c.width, c.height, scale, true);
  const full = resizeAxis(wide, c.width * scale, c.height, scale, false);
  const out = new ImageData(c.width * scale, c.height * scale);
  for (let i = 0; i < full.length; i++) out.data[i] = Math.min(255, Math.max(0, Math.round(full[i])));
  const big = $("bicubic");
  big.width = out.width; big.height = out.height;
  big.getContext("2d").putImageData(out, 0, 0);
}

function upload(file) {
  const ext = $("ext").value, q = new URLSearchParams();
  if (ext) q.set("ext", ext);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "v1/upscale" + (q.toString() ? "?" + q : ""));
  xhr.responseType = "blob";
  const token = $("token").value || sessionStorage.getItem("srdeploy-token");
  if (token) xhr.setRequestHeader("Authorization", "Bearer " + token);
  const form = new FormData();
  form.append("file", file, file.name);
  $("progress").value = 0; $("progress").max = 1;
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) { $("progress").value = e.loaded / e.total; } };
  xhr.upload.onload = () => { $("progress").removeAttribute("value"); say("upscaling " + file.name + " ..."); };
  xhr.onprogress = (e) => { if (e.lengthComputable) { $("progress").value = e.loaded / e.total; } };
  xhr.onerror = () => say("the server could not be reached", true);
  xhr.onload = async () => {
    $("progress").value = 1;
    if (xhr.status === 401) {
      $("token-row").style.display = "block"; say("this server needs its token", true); return;
    }
    if (xhr.status !== 200) { say(xhr.status + ": " + (await xhr.response.text()).trim(), true); return; }
    if (token) sessionStorage.setItem("srdeploy-token", token);
    show(file, xhr.response, xhr.getResponseHeader("Server-Timing") || "");
  };
  say("uploading " + file.name + " ...");
  xhr.send(form);
}

async function show(file, blob, timing) {
  if (lastUrl) URL.revokeObjectURL(lastUrl);
  lastUrl = URL.createObjectURL(blob);
  const type = blob.type.split("/")[1] || "png", ext = type === "jpeg" ? "jpg" : type.replace("x-portable-", "p");
  const a = $("download");
  a.href = lastUrl;
  a.download = file.name.replace(/\.[^.]*$/, "") + "_upscaled." + ext;
  a.style.display = "inline-block";
  say("done " + (timing ? "(" + timing + ")" : ""));
  const img = $("model");
  img.onerror = () => {
    $("compare").style.display = "none"; say("done; this browser cannot show ." + ext + ", download it");
  };
  img.onload = async () => {
    const bmp = await createImageBitmap(file).catch(() => null);
    if (!bmp) { say("done; no bicubic preview for this input format"); return; }
    const scale = Math.round(img.naturalWidth / bmp.width);
    if (img.naturalWidth * img.naturalHeight > 40e6) { say("done; too large for the preview, download it"); return; }
    await bicubic(file, scale);
    $("compare").style.display = "block";
    clip();
  };
  img.src = lastUrl;
}

function clip() { $("model").style.clipPath = "inset(0 0 0 " + $("slider").value + "%)"; }

function pick(files) { if (files && files.length) upload(files[0]); }
$("file").addEventListener("change", (e) => pick(e.target.files));
$("slider").addEventListener("input", clip);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.className = "over"; });
drop.addEventListener("dragleave", () => { drop.className = ""; });
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.className = ""; pick(e.dataTransfer.files); });
"""

_BODY = """
<h1>srdeploy upscale</h1>
<div id="drop">Drop an image here, or <input type="file" id="file" accept="image/*,.tif,.tiff,.pnm,.ppm,.pgm"></div>
<div id="controls">
  <label>format <select id="ext"><option value="">as input</option><option>png</option><option>jpg</option>
  <option>webp</option><option>tiff</option></select></label>
  <span id="token-row"><label>token <input type="password" id="token" autocomplete="off"></label></span>
</div>
<progress id="progress" value="0" max="1"></progress>
<p id="status">Pick an image.</p>
<a id="download" href="#">Download the upscaled image</a>
<div id="compare"><canvas id="bicubic"></canvas><img id="model" alt="model output"></div>
<input type="range" id="slider" min="0" max="100" value="50" aria-label="bicubic | model">
<p><small>Left of the slider: bicubic; right: the model. The API: <code>POST /v1/upscale</code>.</small></p>
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>srdeploy</title>"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{_STYLE}</style></head>"
        f"<body>{_BODY}<script>{_SCRIPT}</script></body></html>\n")
CSP = (f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; img-src blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
