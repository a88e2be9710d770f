// The console's only script, loaded from /console/static (its CSP runs no inline code); the pages work without it.

// Ask before a destructive form (data-confirm="question") is submitted.
document.addEventListener("submit", function (event) {
  const question = event.target instanceof HTMLFormElement ? event.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) event.preventDefault();
});

// Keep the runner's line-number gutter in step with the textarea.
(function () {
  const source = document.getElementById("source");
  const gutter = document.querySelector(".code .gutter");
  if (!source || !gutter) return;
  const bad = gutter.querySelector(".bad");
  const badLine = bad ? Number(bad.textContent) : null;
  function renumber() {
    const count = source.value.split("\n").length;
    if (gutter.children.length === count) return;
    gutter.textContent = "";
    for (let n = 1; n <= count; n++) {
      const span = document.createElement("span");
      span.textContent = String(n);
      if (n === badLine) { span.className = "bad"; span.id = "error-line"; }
      gutter.appendChild(span);
      gutter.appendChild(document.createTextNode("\n"));
    }
  }
  source.addEventListener("input", renumber);
  source.addEventListener("scroll", function () { gutter.scrollTop = source.scrollTop; });
})();

// The runner's sample events: the menu (hidden without this script) fills the event box.
(function () {
  const menu = document.getElementById("sample-event");
  const box = document.getElementById("event");
  if (!menu || !box) return;
  menu.closest("label").hidden = false;
  menu.addEventListener("change", function () {
    if (menu.value) box.value = menu.value;
  });
})();

// The runner's Run answers in place: the form is posted to its JSON twin (same session, CSRF token and rate) and the
// outcome replaces the result panel. Anything but a JSON answer (signed out, refused) posts the form the usual way.
(function () {
  const form = document.getElementById("runner");
  const slot = document.getElementById("result-slot");
  if (!form || !slot) return;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  // A JSON value as nested <details>: objects and arrays fold, the first two levels open.
  function tree(value, key, depth) {
    const label = [];
    if (key !== null) label.push(el("span", { class: "key", text: JSON.stringify(key) }), document.createTextNode(": "));
    if (value !== null && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
      const brackets = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
      const summary = el("summary", {}, [...label, document.createTextNode(brackets[0]),
        el("span", { class: "count", text: ` ${entries.length} ${Array.isArray(value) ? "items" : "keys"} ` }),
        document.createTextNode(brackets[1])]);
      const details = el("details", depth < 2 ? { open: "" } : {}, [summary]);
      for (const [k, v] of entries) details.appendChild(tree(v, Array.isArray(value) ? null : k, depth + 1));
      return details;
    }
    const kind = typeof value === "string" ? "str" : typeof value === "number" ? "num" : "lit";
    return el("div", { class: "leaf" }, [...label, el("span", { class: kind, text: JSON.stringify(value) })]);
  }

  function table(id, headers, rows) {
    const head = el("tr", {}, headers.map((h) => el("th", { text: h })));
    return el("table", { id: id }, [head, ...rows.map((r) => el("tr", {}, r.map((c) => el("td", { text: String(c) }))))]);
  }

  function render(answer) {
    const title = el("h2", { text: answer.ok ? "Succeeded" : "Failed" });
    if (answer.duration_ms != null) title.appendChild(el("small", { text: ` in ${answer.duration_ms.toFixed(1)} ms` }));
    if (answer.run_id && answer.run_url) {
      title.appendChild(el("small", { text: " · run " }));
      title.appendChild(el("a", { href: answer.run_url }, [el("code", { text: answer.run_id })]));
    }
    const main = [];
    const side = [];
    if (answer.error) {
      const e = answer.error;
      const where = answer.error_line ? ` at line ${answer.error_line}` : "";
      main.push(el("div", { class: "error-box", id: "error" }, [
        el("b", { class: "error-type", text: e.exception || e.type }), document.createTextNode(`${where}:`),
        el("pre", { class: "error-message", text: e.message + (e.errors ? "\n" + e.errors.join("\n") : "") }),
      ]));
      if (e.traceback) main.push(el("details", {}, [el("summary", { text: "Traceback (snippet lines only)" }), el("pre", { text: e.traceback })]));
    }
    if (answer.ok) {
      const kind = answer.value_kind;
      main.push(el("h3", { text: kind === "twiml" ? "Result (TwiML)" : kind === "text" ? "Result (text)" : "Result (JSON)" }));
      if (kind === "json") main.push(el("div", { class: "json-tree", id: "result-value", "data-kind": kind }, [tree(answer.value, null, 0)]));
      else main.push(el("pre", { class: `value ${kind}`, id: "result-value", "data-kind": kind, text: answer.value_text }));
    }
    if (answer.stdout != null) side.push(el("h3", { text: "Output" }), el("pre", { id: "stdout", text: answer.stdout || "(nothing printed)" }));
    if (answer.logs && answer.logs.length) {
      side.push(el("h3", { text: "Logs" }), table("logs", ["Level", "Message", "Fields"],
        answer.logs.map((l) => [l.level, l.message, JSON.stringify(l.fields)])));
    }
    if (answer.egress && answer.egress.length) {
      main.push(el("h3", { text: "Outgoing calls" }), table("egress", ["Method", "Host", "Path", "Status", "ms"],
        answer.egress.map((c) => [c.method, c.host, c.path, c.status, (c.duration_ms || 0).toFixed(1)])));
    }
    const grid = el("div", { class: "result-grid" }, [el("div", {}, main), el("div", {}, side)]);
    const card = el("section", { class: `card result ${answer.ok ? "ok" : "failed"}`, id: "outcome", "data-in-place": "1" }, [title, grid]);
    slot.replaceChildren(card);
    const compileErrors = document.getElementById("compile-errors");
    if (compileErrors) compileErrors.remove();
    if (window.zingyconnEditor) {
      const message = answer.error ? `${answer.error.exception || answer.error.type}: ${answer.error.message}` : "";
      window.zingyconnEditor.showError(answer.error_line || null, message);
    }
    card.scrollIntoView({ block: "nearest" });
  }

  // Ctrl/Cmd+Enter anywhere in the form (the event box, a field) runs, as it does in the editor.
  form.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.defaultPrevented) return;
    event.preventDefault();
    form.requestSubmit(form.querySelector("button[value=run]"));
  });

  form.addEventListener("submit", function (event) {
    const button = event.submitter;
    if (!button || button.value !== "run" || event.defaultPrevented) return;
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    body.set("action", "run");
    form.classList.add("busy");
    fetch(form.dataset.runUrl, { method: "POST", body: body, credentials: "same-origin", redirect: "manual" })
      .then(function (response) {
        const json = (response.headers.get("content-type") || "").startsWith("application/json");
        if (!json) throw new Error(`in-place run answered ${response.status}`);
        return response.json();
      })
      .then(render)
      .catch(function () {
        // Signed out, refused or offline: let the server answer the ordinary form post.
        form.submit();
      })
      .finally(function () { form.classList.remove("busy"); });
  });
})();
