// The console's code editor: CodeMirror 6 over the runner's textarea, built into zingyconn/hosts/static/editor.js
// (see README.md here). It enhances the page only: the textarea stays in the form and carries the source, so the
// form posts the same fields with or without this script.
import { autocompletion, completeFromList } from "@codemirror/autocomplete";
import { indentWithTab } from "@codemirror/commands";
import { python, pythonLanguage } from "@codemirror/lang-python";
import { indentUnit } from "@codemirror/language";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { Prec } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { basicSetup } from "codemirror";

// What a snippet has in scope (docs/snippets.md) and the Twilio client's everyday calls (docs/twilio-in-snippets.md).
const SNIPPET_NAMES = [
  { label: "event", type: "variable", info: "The input: the webhook request, a task's payload, or the console's JSON" },
  { label: "zingyConn", type: "variable", info: "zingyConn.twilio(NAME), zingyConn.enqueue(SCRIPT, payload)" },
  { label: "log", type: "variable", info: "log.debug/info/warning/error(message, **fields)" },
  { label: "printed", type: "variable", info: "What the run has printed so far" },
  { label: "zingyConn.twilio", type: "function", apply: 'zingyConn.twilio("main")', detail: "(connection)", info: "The tenant's Twilio client for a stored connection" },
  { label: "zingyConn.enqueue", type: "function", apply: "zingyConn.enqueue(", detail: "(script, payload)", info: "Put a script on the task queue" },
  { label: "log.debug", type: "function", apply: "log.debug(", detail: "(message, **fields)" },
  { label: "log.info", type: "function", apply: "log.info(", detail: "(message, **fields)" },
  { label: "log.warning", type: "function", apply: "log.warning(", detail: "(message, **fields)" },
  { label: "log.error", type: "function", apply: "log.error(", detail: "(message, **fields)" },
  { label: 'event.get("form")', type: "property", detail: "webhook form fields" },
  { label: 'event.get("json")', type: "property", detail: "webhook JSON body" },
  { label: 'event.get("query")', type: "property", detail: "webhook query string" },
  { label: 'event.get("headers")', type: "property", detail: "webhook headers" },
];
const CLIENT_CALLS = [
  { label: "messages.create", apply: 'messages.create(to="", from_="", body="")', detail: "(to, from_, body)", info: "Send a message" },
  { label: "messages.list", apply: "messages.list(limit=20)", detail: "(to, from_, date_sent, limit)", info: "List messages" },
  { label: "messages.stream", apply: "messages.stream(limit=20)", detail: "(limit)", info: "Iterate over messages" },
  { label: "messages.page", apply: "messages.page(page_size=50)", detail: "(page_size)", info: "One page of messages" },
  { label: "messages", apply: "messages(sid).fetch()", detail: "(sid).fetch/update/delete", info: "One message" },
  { label: "calls.create", apply: 'calls.create(to="", from_="", twiml="<Response/>")', detail: "(to, from_, twiml)", info: "Place a call" },
  { label: "calls.list", apply: "calls.list(limit=20)", detail: "(limit)", info: "List calls" },
  { label: "lookups.v2.phone_numbers", apply: "lookups.v2.phone_numbers(number).fetch()", detail: "(number).fetch()", info: "Look a number up" },
  { label: "access_token", apply: 'access_token(identity="", grants=[{"type": "video"}], ttl=600)', detail: "(identity, grants, ttl)", info: "A signed access token for the client SDKs" },
  { label: "verify.v2.services", apply: "verify.v2.services(sid)", detail: "(sid)", info: "A Verify service" },
].map((call) => ({ ...call, type: "method" }));
const snippetNames = completeFromList(SNIPPET_NAMES);

// After "client." (or any name bound to zingyConn.twilio(...)), offer the client's calls; elsewhere, the names in scope.
function complete(context) {
  const member = context.matchBefore(/[\w.]*\.\w*/);
  if (member && !["event", "zingyConn", "log"].includes(member.text.split(".")[0])) {
    return { from: member.from + member.text.indexOf(".") + 1, options: CLIENT_CALLS, validFor: /^[\w.]*$/ };
  }
  return snippetNames(context);
}

function lineDiagnostic(view, line, message) {
  const doc = view.state.doc;
  const target = doc.line(Math.min(Math.max(1, line), doc.lines));
  return { from: target.from, to: Math.max(target.from, target.to), severity: "error", message };
}

// Enhance one textarea; runs the form's Run button on Ctrl/Cmd+Enter.
function enhance(textarea, nonce) {
  const form = textarea.form;
  const run = () => {
    const button = form && form.querySelector("button[value=run]");
    if (button) form.requestSubmit(button);
    return true;
  };
  const view = new EditorView({
    doc: textarea.value,
    extensions: [
      basicSetup,
      python(),
      indentUnit.of("    "), // PEP 8, as the snippets in the docs are written
      pythonLanguage.data.of({ autocomplete: complete }),
      autocompletion({ activateOnTyping: true }),
      lintGutter(),
      Prec.highest(keymap.of([{ key: "Mod-Enter", run, preventDefault: true }])),
      keymap.of([indentWithTab]),
      EditorView.cspNonce.of(nonce || ""),
      EditorView.contentAttributes.of({ "aria-label": "Snippet", "data-testid": "editor" }),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) {
          textarea.value = update.state.doc.toString();
          view.dispatch(setDiagnostics(update.state, []));
        }
      }),
    ],
  });
  textarea.parentElement.classList.add("enhanced");
  textarea.setAttribute("aria-hidden", "true");
  textarea.tabIndex = -1;
  textarea.insertAdjacentElement("afterend", view.dom);
  // The page may already show an error line (a compile error or a failed run rendered by the server).
  const marked = document.getElementById("error-line");
  if (marked) showError(view, Number(marked.textContent), marked.title || "The error points at this line.");
  return view;
}

function showError(view, line, message) {
  queueMicrotask(() => view.dispatch(setDiagnostics(view.state, line ? [lineDiagnostic(view, line, message)] : [])));
}

const nonce = document.currentScript ? document.currentScript.nonce : "";
const textarea = document.getElementById("source");
if (textarea) {
  const view = enhance(textarea, nonce);
  window.zingyconnEditor = {
    view,
    // Mark *line* with *message* (an error the server reported), or clear every mark when line is null.
    showError: (line, message) => showError(view, line, message),
    setText: (text) => view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } }),
  };
}
