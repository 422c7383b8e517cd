/// The live dashboard served at `GET /`: gateway figures from `/metrics`, and the recent events
/// of a stream opened with a token the person pastes (exchanged for a one-time ticket).
enum DashboardPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tidings</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1d232b; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; }
  .figures { display: grid; grid-template-columns: repeat(4, 1fr); gap: .75rem; margin-bottom: 1.5rem; }
  .figure { border: 1px solid #d5dbe3; border-radius: 8px; padding: .75rem 1rem; }
  .figure b { display: block; font-size: 1.6rem; }
  .figure span { color: #5b6673; font-size: .85rem; }
  form { display: flex; gap: .5rem; margin-bottom: 1rem; }
  input { flex: 1; padding: .45rem .6rem; border: 1px solid #b9c2cd; border-radius: 6px; font: inherit; }
  button { padding: .45rem 1rem; border-radius: 6px; border: 0; background: #2456d3; color: white; font: inherit; cursor: pointer; }
  table { width: 100%; border-collapse: collapse; font-size: .9rem; }
  td, th { text-align: left; border-bottom: 1px solid #e6eaef; padding: .35rem .5rem; vertical-align: top; }
  td.data { font-family: ui-monospace, monospace; word-break: break-all; }
  #status { color: #5b6673; margin-bottom: .5rem; }
</style>
</head>
<body>
<h1>Tidings gateway</h1>
<div class="figures">
  <div class="figure"><b id="connections">–</b><span>open streams</span></div>
  <div class="figure"><b id="rate">–</b><span>events published / s</span></div>
  <div class="figure"><b id="delivered">–</b><span>events delivered / s</span></div>
  <div class="figure"><b id="ready">–</b><span>readiness</span></div>
</div>
<form id="watch">
  <input id="token" type="password" placeholder="subscriber token (JWT) to watch a stream" autocomplete="off">
  <input id="topics" placeholder="topics, comma separated (optional)">
  <input id="types" value="order.created,order.updated,order.deleted,tidings.reset,notice" title="event types to show">
  <button>Watch</button>
</form>
<div id="status">Paste a subscriber token to watch its recent events.</div>
<table><thead><tr><th>id</th><th>event</th><th>data</th><th>received</th></tr></thead><tbody id="events"></tbody></table>
<script>
const value = (text, name) => {
  let sum = 0, found = false;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ") || line.startsWith(name + "{")) { sum += parseFloat(line.split(" ").pop()); found = true; }
  }
  return found ? sum : null;
};
let last = null;
async function refresh() {
  try {
    const text = await (await fetch("metrics")).text();
    const now = Date.now();
    const published = value(text, "tidings_events_published_total") ?? 0;
    const delivered = value(text, "tidings_events_delivered_total") ?? 0;
    document.getElementById("connections").textContent = value(text, "tidings_connections_open") ?? 0;
    if (last) {
      const seconds = (now - last.at) / 1000;
      document.getElementById("rate").textContent = ((published - last.published) / seconds).toFixed(1);
      document.getElementById("delivered").textContent = ((delivered - last.delivered) / seconds).toFixed(1);
    }
    last = { at: now, published, delivered };
    const ready = await fetch("readyz");
    document.getElementById("ready").textContent = ready.ok ? "ready" : (await ready.json()).reason;
  } catch (e) { document.getElementById("ready").textContent = "unreachable"; }
}
refresh(); setInterval(refresh, 2000);
let source = null;
document.getElementById("watch").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (source) source.close();
  const status = document.getElementById("status");
  const response = await fetch("tickets", { method: "POST", headers: { Authorization: "Bearer " + document.getElementById("token").value } });
  if (!response.ok) { status.textContent = "Token refused: " + (await response.json()).detail; return; }
  const { ticket } = await response.json();
  const params = new URLSearchParams({ ticket });
  for (const t of document.getElementById("topics").value.split(",").map(s => s.trim()).filter(Boolean)) params.append("topic", t);
  source = new EventSource("events?" + params);
  const show = (ev) => {
    const row = document.createElement("tr");
    for (const text of [ev.lastEventId || "–", ev.type, ev.data, new Date().toLocaleTimeString()]) {
      const cell = document.createElement("td"); cell.textContent = text; row.appendChild(cell);
    }
    row.children[2].className = "data";
    const body = document.getElementById("events");
    body.prepend(row);
    while (body.children.length > 50) body.lastChild.remove();
  };
  source.onmessage = show;
  source.onopen = () => { status.textContent = "Watching. Events of the listed types appear below."; };
  source.onerror = () => { status.textContent = "Disconnected; the browser retries (a ticket is single use: press Watch again if it keeps failing)."; };
  // EventSource reports a named event only to listeners for that name.
  for (const t of document.getElementById("types").value.split(",").map(s => s.trim()).filter(Boolean)) source.addEventListener(t, show);
});
</script>
</body>
</html>
"""#
}
