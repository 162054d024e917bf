"""GET /preview?user_id=...: the user's homepage as the API ranks it, for merchandisers and product managers.

One self-contained HTML page (no external scripts, styles or fonts): each module's title, type, featured items,
score and reasons, the user's latest events, and buttons that post the feedback actions to /v1/feedback and then
re-rank, so the effect of "hide" or "more like this" shows at once.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime

import numpy as np

from graphrec.data.config import EVENT_TYPES

RECENT_EVENTS_SHOWN = 12
FEATURED_SHOWN = 6

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.3rem} .meta{color:#666;font-size:.85rem}
.grid{display:flex;gap:1.5rem;align-items:flex-start}
ol.modules{list-style:none;padding:0;flex:3} aside{flex:1;font-size:.85rem}
li.module{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.7rem;margin-bottom:.6rem}
.type{display:inline-block;font-size:.7rem;text-transform:uppercase;background:#eef;padding:.1rem .4rem}
.score{float:right;font-variant-numeric:tabular-nums;color:#555}
.reasons{color:#0a5;font-size:.85rem;margin:.3rem 0} .items{color:#777;font-size:.8rem}
button{margin-right:.4rem;font-size:.8rem} .fallback{color:#b50;font-weight:600}
"""

SCRIPT = """
async function feedback(user, module, action) {
  const response = await fetch('/v1/feedback', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({user_id: user, content_id: module, action: action})});
  if (!response.ok) { alert('feedback failed: ' + response.status); return; }
  window.location.reload();
}
document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  feedback(JSON.parse(button.dataset.user), JSON.parse(button.dataset.module), button.dataset.action);
});
"""


def render_preview(service, user_id: str, slots: int) -> str:
    """The preview page of `user_id`'s homepage (ranked now, through the same path as POST /v1/rank)."""
    generation = service.generation
    state = generation.state
    from graphrec.rank.online import coerce_id

    typed_user = coerce_id(user_id, state.user_dtype)
    user = typed_user if typed_user is not None else user_id
    page = service.rank(user, slots=slots, record=False)  # a preview is not a page view: not logged, not counted
    escape = html.escape
    rows = []
    for module in page.modules:
        index = state.module_of(module["content_id"])
        title = state.module_title[index] if index is not None else None
        kind = state.module_type[index] if index is not None else "unknown"
        featured = state.featured_items[index][:FEATURED_SHOWN] if index is not None else []
        items = ", ".join(_item_label(state, int(i)) for i in featured)
        reasons = "; ".join(escape(r["text"]) for r in module["reasons"])
        data = f"data-user='{escape(json.dumps(user))}' data-module='{escape(json.dumps(module['content_id']))}'"
        buttons = "".join(
            f"<button {data} data-action='{action}'>{label}</button>"
            for action, label in (
                ("hide", "hide"),
                ("hide_similar", "hide similar"),
                ("more_like_this", "more like this"),
            )
        )
        rows.append(
            f"<li class='module' data-content-id='{escape(str(module['content_id']))}'>"
            f"<span class='score'>#{module['rank']} &middot; {module['score']:.4f}</span>"
            f"<span class='type'>{escape(str(kind))}</span> "
            f"<strong>{escape(str(title or module['content_id']))}</strong>"
            f"<div class='reasons'>{reasons}</div><div class='items'>{escape(items)}</div>{buttons}</li>"
        )
    fallback = f" <span class='fallback'>fallback: {escape(page.fallback)}</span>" if page.fallback else ""
    events = _recent_events(state, typed_user)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>homepage preview: {escape(user_id)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Homepage of {escape(user_id)}</h1>"
        f"<p class='meta'>ranker {escape(str(page.model_version))} &middot; embeddings "
        f"{escape(str(page.embedding_version))} &middot; arm {escape(page.arm)}{fallback} &middot; "
        f"ranked at {page.timestamp:%Y-%m-%d %H:%M} UTC</p>"
        f"<div class='grid'><ol class='modules'>{''.join(rows)}</ol>"
        f"<aside><h2>Latest events</h2><ul>{events}</ul></aside></div>"
        f"<script>{SCRIPT}</script></body></html>"
    )


def _item_label(state, item: int) -> str:
    category = state.item_category[item]
    name = state.category_names[category] if 0 <= category < len(state.category_names) else None
    return f"item {_item_id(state, item)}" + (f" ({name})" if name else "")


def _item_id(state, item: int):
    if not hasattr(state, "_item_ids"):
        state._item_ids = list(state.item_index)
    return state._item_ids[item]


def _recent_events(state, user) -> str:
    u = state.user_index.get(user)
    if u is None:
        return "<li>no logged events</li>"
    part = state.event_segments.of(u)
    ts, kind, item, module = (state.events[k][part] for k in ("ts", "kind", "item", "module"))
    lines = []
    for row in np.argsort(-ts, kind="stable")[:RECENT_EVENTS_SHOWN]:
        when = datetime.fromtimestamp(ts[row] / 1e6, tz=UTC)
        what = EVENT_TYPES[kind[row]] if kind[row] >= 0 else "event"
        if item[row] >= 0:
            target = _item_label(state, int(item[row]))
        elif module[row] >= 0:
            target = f"module {state.module_title[module[row]] or state.module_ids[module[row]]}"
        else:
            target = "an item outside the catalog"
        lines.append(f"<li>{when:%Y-%m-%d %H:%M} {html.escape(what)} {html.escape(target)}</li>")
    return "".join(lines) or "<li>no logged events</li>"
