"""The chart page: a static HTML form that fetches ``durations.svg`` with the API key typed into it."""

from __future__ import annotations

from aiohttp import web

from checks.rules import UUID
from checks.spec import UNIQUE_KEY

from .views import error

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pingstream: run durations</title>
<style>body{font-family:sans-serif;margin:2em} img{display:block;margin-top:1em;max-width:100%} #msg{color:#b00}</style>
</head><body>
<h1>Run durations</h1>
<form id="f">
  <label>API key <input id="key" type="password" size="34" autocomplete="off" required></label>
  <label>bucket <select id="bucket"><option>1h</option><option>1d</option></select></label>
  <button>Show</button>
</form>
<p id="msg"></p>
<img id="chart" alt="">
<script>
document.getElementById("f").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const msg = document.getElementById("msg"), img = document.getElementById("chart");
  msg.textContent = "";
  const bucket = document.getElementById("bucket").value;
  const r = await fetch("durations.svg?bucket=" + encodeURIComponent(bucket),
                        {headers: {"X-Api-Key": document.getElementById("key").value}});
  if (!r.ok) {
    let text = r.statusText;
    try { text = (await r.json()).error; } catch (e) {}
    msg.textContent = r.status + " " + text;
    return;
  }
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(await r.blob());
  img.alt = "p50/p95/p99 run duration per " + bucket;
});
</script>
</body></html>
"""


async def chart_page(request: web.Request) -> web.Response:
    # Static: it names no check and holds no data; the chart itself is fetched with the key typed in.
    code = request.match_info["code"]
    if not (UUID.match(code) or UNIQUE_KEY.match(code)):
        return error("not found", 404)
    return web.Response(text=PAGE, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                   "img-src blob:; connect-src 'self'"})
