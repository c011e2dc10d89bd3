"""The worker's live status page (`GET /status`): what a person opens instead of reading logs.

Plain HTML and a little JavaScript that polls the worker's own JSON endpoints (`/stats`,
`/health`, `/recommendations/{user}`); no build step, no external assets.
"""

STATUS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamrec worker</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2330; background: #f6f7fb; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; }
  .grid { display: grid; grid-template-columns: repeat(4, minmax(9rem, 1fr)); gap: .8rem; margin-bottom: 1.2rem; }
  .card { background: #fff; border-radius: 8px; padding: .8rem 1rem; box-shadow: 0 1px 3px #0002; }
  .label { font-size: .8rem; color: #667; text-transform: uppercase; letter-spacing: .04em; }
  .value { font-size: 1.5rem; font-weight: 600; }
  .ok { color: #18794e; } .bad { color: #c02d2d; }
  table { border-collapse: collapse; width: 100%; background: #fff; border-radius: 8px; }
  td, th { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #eef; }
  form { margin: 1rem 0 .6rem; } input { font: inherit; padding: .3rem .5rem; }
  #error { color: #c02d2d; }
  .grid2 { display: grid; grid-template-columns: repeat(3, minmax(12rem, 1fr)); gap: .8rem; margin: 1rem 0; }
  .grid2 table { box-shadow: none; } .explore { color: #7a4cc2; font-weight: 600; }
</style>
</head>
<body>
<h1>streamrec worker <span id="health" class="ok">…</span></h1>
<div class="grid">
  <div class="card"><div class="label">throughput</div><div class="value" id="throughput">–</div><div>events/s</div></div>
  <div class="card"><div class="label">freshness p50 / p99</div><div class="value" id="freshness">–</div><div>ms, last 60 s</div></div>
  <div class="card"><div class="label">events processed</div><div class="value" id="events">–</div><div id="published"></div></div>
  <div class="card"><div class="label">dead-lettered</div><div class="value" id="dead">–</div><div id="dead-reasons"></div></div>
</div>
<div class="card"><span class="label">model</span> <span id="model">–</span>
  &nbsp; <span class="label">catalog</span> <span id="items">–</span> items
  &nbsp; <span class="label">uptime</span> <span id="uptime">–</span> s</div>
<div class="grid2">
  <div class="card"><div class="label">value segments (users)</div><table id="segments"><tbody></tbody></table></div>
  <div class="card"><div class="label">interest groups (users)</div><table id="groups"><tbody></tbody></table></div>
  <div class="card"><div class="label">exploration</div><div class="value" id="explore-rate">–</div>
    <div id="explore-variants"></div><div id="topics"></div></div>
</div>
<form id="lookup">
  <label>User <input id="user" name="user" placeholder="user id"></label>
  <label>Token <input id="token" type="password" placeholder="if the worker requires one"></label>
  <button>Show recommendations</button>
</form>
<div id="error"></div>
<div id="variant"></div>
<table id="recs"><thead><tr><th>#</th><th>item</th><th>score</th><th>why</th></tr></thead><tbody></tbody></table>
<script>
const $ = (id) => document.getElementById(id);
const headers = () => { const t = $("token").value || sessionStorage.getItem("streamrecToken");
  return t ? { Authorization: "Bearer " + t } : {}; };
let last = null;
async function refresh() {
  try {
    const health = await (await fetch("/health")).json();
    $("health").textContent = health.status; $("health").className = health.status === "ok" ? "ok" : "bad";
    const r = await fetch("/stats", { headers: headers() });
    if (r.status === 401) { $("error").textContent = "this worker needs a token"; return; }
    const s = await r.json();
    const events = Object.entries(s.processed).filter(([k]) => k.startsWith("event.")).reduce((a, [, v]) => a + v, 0);
    const now = Date.now() / 1000;
    if (last) $("throughput").textContent = Math.round((events - last.events) / (now - last.t));
    last = { events, t: now };
    $("events").textContent = events;
    $("published").textContent = s.published + " recommendations";
    const dead = Object.values(s.dead_lettered).reduce((a, v) => a + v, 0);
    $("dead").textContent = dead;
    $("dead-reasons").textContent = Object.entries(s.dead_lettered).map(([k, v]) => k + " " + v).join(", ");
    const f = s.freshness_last_60s;
    $("freshness").textContent = f.n ? f.p50_ms + " / " + f.p99_ms : "–";
    $("model").textContent = s.model_version + (s.event_encoder ? " + " + s.event_encoder : ""); $("items").textContent = s.items_cached; $("uptime").textContent = s.uptime_s;
    fillRows("segments", Object.entries(s.segments || {}).map(([k, v]) => [k.replace(/_/g, " "), v]));
    fillRows("groups", (s.interest_groups || []).map((g) => [g.name, g.users]));
    const rates = Object.entries(s.exploration_rate || {});
    $("explore-rate").textContent = rates.length ? rates.map(([, v]) => (100 * v).toFixed(1) + "%").join(" / ") : "–";
    $("explore-variants").textContent = rates.map(([k]) => k).join(" / ") + (rates.length ? " (A/B variant)" : "");
    $("topics").textContent = (s.topics || 0) + " catalog topics";
  } catch (e) { $("error").textContent = "worker unreachable: " + e; }
}
function fillRows(id, rows) {
  $(id).querySelector("tbody").replaceChildren(...rows.map((cells) => {
    const row = document.createElement("tr");
    for (const text of cells) { const cell = document.createElement("td"); cell.textContent = text; row.appendChild(cell); }
    return row;
  }));
}
async function showUser(user) {
  if (!user) return;
  if ($("token").value) sessionStorage.setItem("streamrecToken", $("token").value);
  const r = await fetch("/recommendations/" + encodeURIComponent(user) + "?k=10", { headers: headers() });
  const body = await r.json();
  if (!r.ok) { $("error").textContent = body.error; return; }
  $("error").textContent = "";
  $("variant").textContent = "variant: " + (body.variant || "default") + ", model " + body.model_version;
  // Item ids and reasons come from producers: set as text, never as HTML.
  const tbody = $("recs").querySelector("tbody");
  tbody.replaceChildren(...body.items.map((i) => {
    const row = document.createElement("tr");
    for (const text of [i.position, i.item_id, i.score.toFixed(3), i.reason]) {
      const cell = document.createElement("td"); cell.textContent = text; row.appendChild(cell);
    }
    if (i.explore) row.lastChild.className = "explore";
    return row;
  }));
}
$("lookup").addEventListener("submit", (e) => { e.preventDefault(); showUser($("user").value);
  history.replaceState(null, "", "?user=" + encodeURIComponent($("user").value)); });
const initial = new URLSearchParams(location.search).get("user");
if (initial) { $("user").value = initial; showUser(initial); }
refresh(); setInterval(refresh, 1000);
</script>
</body>
</html>
"""
