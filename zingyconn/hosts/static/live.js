// The live tail of runs: listens to the page's server-sent events and prepends each run to the table.
// Loaded from /console/static (the console's CSP runs no inline code); rows are built with textContent only.
(function () {
  const status = document.getElementById("live-status");
  const body = document.querySelector("#live-runs tbody");
  if (!status || !body || !window.EventSource) return;
  const MAX_ROWS = 200; // the page keeps the newest rows only
  const source = new EventSource(status.dataset.events);
  source.addEventListener("open", function () { status.textContent = "Live: waiting for runs…"; });
  source.addEventListener("error", function () { status.textContent = "Disconnected; reconnecting…"; });
  source.addEventListener("end", function () { status.textContent = "Signed out; reload to sign in."; source.close(); });
  source.addEventListener("run", function (message) {
    const run = JSON.parse(message.data);
    const row = document.createElement("tr");
    row.className = run.status;
    const cells = [run.started, run.kind, run.name || "—", run.version ? "v" + run.version : "—", run.status,
      (run.duration_ms || 0).toFixed(1)];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    const link = document.createElement("a");
    link.href = run.url;
    link.textContent = run.id;
    const cell = document.createElement("td");
    cell.appendChild(link);
    row.appendChild(cell);
    body.insertBefore(row, body.firstChild);
    while (body.children.length > MAX_ROWS) body.removeChild(body.lastChild);
    status.textContent = "Live: " + body.children.length + " run(s) since this page opened.";
  });
})();
