"""The review page: a local web page on which people label pairs (review.py does the work).

Server-rendered HTML from FastAPI, with its script and style served by the app itself: nothing is
loaded from the network. What the browser sends is a pair id, a side, a note and a reviewer's name,
each checked and length-limited, and escaped wherever it is shown again; never SQL or a path. The
store stays open (and locked: a second writer gets the usual error) while the page is served, with
DuckDB's access to files and the network turned off. A form carries a token made when the server
starts, so another site open in the same browser cannot post labels to it.
"""

from __future__ import annotations

import html
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, quote

# FastAPI reads the endpoints' annotations by name, so what they name is imported here, not in create_app.
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from prefcurate.review import (
    MAX_NOTE,
    MAX_REVIEWER,
    LabelRefused,
    clean_reviewer,
    judge_said,
    labelled_by,
    next_pair,
    record_label,
)
from prefcurate.store import Store

MAX_BODY = 16_384  # bytes of a posted form: a note of MAX_NOTE characters, escaped, and the rest
HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; form-action 'self'; "
                                      "frame-ancestors 'none'; base-uri 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:1.2rem auto;max-width:1200px;color:#222;padding:0 1rem}
header{display:flex;justify-content:space-between;align-items:center;gap:1rem;flex-wrap:wrap}
h1{font-size:1.25rem;margin:0}progress{width:14rem}.muted{color:#666}
.prompt,.response{white-space:pre-wrap;border:1px solid #ccc;border-radius:6px;padding:.7rem;background:#fafafa;
max-height:26rem;overflow:auto}.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem;margin-top:1rem}
.keys{display:flex;gap:.5rem;flex-wrap:wrap;margin:1rem 0}button{font-size:1rem;padding:.45rem 1rem;cursor:pointer}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3rem;font-size:.85em;background:#fff}
.revealed{background:#eef6ee;border:1px solid #9c9;border-radius:6px;padding:.5rem .8rem}
textarea{width:100%;box-sizing:border-box}"""

# Keys: 1 or the left arrow, 2 or the right arrow, t (or 3) tie, s skip; not while typing a note.
SCRIPT = """document.addEventListener('keydown', function (e) {
  var t = e.target.tagName;
  if (t === 'TEXTAREA' || t === 'INPUT' || e.ctrlKey || e.metaKey || e.altKey) return;
  var side = {'1': 'left', 'ArrowLeft': 'left', '2': 'right', 'ArrowRight': 'right', 't': 'tie', '3': 'tie', 's': 'skip'}[e.key];
  var form = document.getElementById('label');
  if (!side || !form) return;
  e.preventDefault();
  form.requestSubmit(form.querySelector('button[value="' + side + '"]'));
});
"""


@contextmanager
def open_for_review(db: str | os.PathLike | None) -> Iterator[Store]:
    """The store, open for writing (its lock held) with DuckDB's access to files and the network off: the
    page only reads and writes the store's own tables."""
    with Store(db) as store:
        store.execute("SET enable_external_access = false")
        yield store


def create_app(store: Store, sample: list[str], reviewer: str):
    """The FastAPI app serving ``sample`` (pair ids) for labelling, ``reviewer`` the default name."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    token, lock = secrets.token_urlsafe(24), threading.Lock()  # one DuckDB connection: one request at a time

    def page(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>prefcurate review</title>'
                            f'<link rel="stylesheet" href="/review.css"></head><body>{body}'
                            f'<script src="/review.js"></script></body></html>', status, headers=HEADERS)

    @app.get("/review.css")
    def css() -> Response:
        return Response(STYLE, media_type="text/css", headers=HEADERS)

    @app.get("/review.js")
    def js() -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers=HEADERS)

    @app.get("/")
    def index(name: str = reviewer, last: str | None = None) -> HTMLResponse:
        try:
            name = clean_reviewer(name[:MAX_REVIEWER + 1])
        except LabelRefused as e:
            return page(f"<p>{html.escape(str(e))}</p>", 400)
        with lock:
            done = len(labelled_by(store, name, sample))
            shown = next_pair(store, sample, name)
            revealed = _revealed(store, last, name)
        return page(_header(name, done, len(sample)) + revealed + (_pair_form(shown, name, token) if shown else
                    f"<p>All {len(sample)} pairs of this review are labelled by {html.escape(name)}. Thank you.</p>"))

    @app.post("/label")
    async def label(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return PlainTextResponse("form too large", 413, headers=HEADERS)
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), max_num_fields=8).items()}
        if not secrets.compare_digest(form.get("token", ""), token):
            return PlainTextResponse("this form is from another server session: reload the page", 403, headers=HEADERS)
        try:
            with lock:
                name = clean_reviewer(form.get("reviewer", ""))
                record_label(store, sample, form.get("pair_id", ""), name, form.get("side", ""), form.get("note", ""))
        except LabelRefused as e:
            return PlainTextResponse(str(e), 400, headers=HEADERS)
        return RedirectResponse(f"/?name={quote(name)}&last={quote(form['pair_id'])}", 303, headers=HEADERS)

    return app


def _header(name: str, done: int, total: int) -> str:
    return (f'<header><h1>prefcurate review</h1><form method="get" action="/"><label>reviewer '
            f'<input name="name" value="{html.escape(name)}" maxlength="{MAX_REVIEWER}" required></label> '
            f'<button type="submit">switch</button></form>'
            f'<div id="progress"><progress max="{total}" value="{done}"></progress> '
            f'<span id="counts">{done} labelled / {total - done} to do</span></div></header>')


def _revealed(store: Store, last: str | None, name: str) -> str:
    """Once a reviewer has labelled a pair, the judge's verdict on it, which the page hid until then."""
    mine = store.query("SELECT label, shown_left FROM human_labels WHERE pair_id = ? AND reviewer = ?", [last, name])
    if not last or not mine:
        return ""
    label, shown_left = mine[0]["label"], mine[0]["shown_left"]
    side = ("left" if label == shown_left else "right") if label in ("chosen", "rejected") else label
    judge_side = "left" if shown_left == "chosen" else "right"
    verdict = "you agree" if side == judge_side else "you disagree" if side in ("left", "right") else f"you said {side}"
    j = judge_said(store, last)
    return (f'<p class="revealed" id="revealed">Pair {html.escape(last)}: the judge ({html.escape(j["judge"])}) chose the '
            f'<b>{judge_side}</b> response, scoring it {j["chosen_score"]:.2f} against {j["rejected_score"]:.2f} '
            f'(margin {j["margin"]:.2f}); {verdict}.'
            + (f' The audit flagged it: {html.escape(j["flags"])}.' if j["flags"] else "") + "</p>")


def _pair_form(shown, name: str, token: str) -> str:
    prompt = "\n\n".join(f"[{m.get('role', '')}] {m.get('content', '')}" for m in shown.messages)
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
                     for k, v in (("token", token), ("pair_id", shown.pair_id), ("reviewer", name)))
    buttons = "".join(f'<button type="submit" name="side" value="{s}">{label} <kbd>{key}</kbd></button>'
                      for s, label, key in (("left", "Left is better", "1 / ←"), ("right", "Right is better", "2 / →"),
                                            ("tie", "Tie", "t"), ("skip", "Skip", "s")))
    return (f'<h2>Prompt</h2><div class="prompt" id="prompt">{html.escape(prompt)}</div>'
            f'<div class="pair"><section><h2>Left</h2><div class="response" id="left">{html.escape(shown.left)}</div></section>'
            f'<section><h2>Right</h2><div class="response" id="right">{html.escape(shown.right)}</div></section></div>'
            f'<form method="post" action="/label" id="label">{hidden}<div class="keys">{buttons}</div>'
            f'<label>note (optional) <textarea name="note" rows="2" maxlength="{MAX_NOTE}"></textarea></label></form>'
            f'<p class="muted">pair {html.escape(shown.pair_id)}; the judge\'s verdict is shown after you label it.</p>')
