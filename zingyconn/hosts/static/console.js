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
