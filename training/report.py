"""The run's HTML report: `runs/<run_date>/report.html`, read straight from disk (file://).

One self-contained page (inline CSS, no JavaScript, no network) with the numbers of every stage of the run report,
the plots under `figures/`, and the config. Every numeric cell taken from the report is written as
`<td data-key="stages.evaluate.ndcg@20.graphrec" data-value="0.2859">0.2859</td>`: its dotted path into the report
(list indices as numbers) and the raw value, so `report_values` reads the numbers back and a test checks each
against the report. Imports only the standard library and matplotlib, so writing it costs well under a second.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import shutil
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

log = logging.getLogger("graphrec.report")

FIGURES = ("embedding_curves.png", "ranker_loss.png", "calibration.png")
SLICES = ("overall", "cold_users", "heavy_users", "new_modules", "warm_modules")
METRIC_ORDER = ("impressions", "ctr", "auc", "logloss", "gauc", "ndcg@10", "ece")
POLICY_COLUMNS = {
    "expected_clicks": "expected clicks / request",
    "expected_clicks_se": "s.e.",
    "ratio_to_oracle": "ratio to oracle",
    "ips": "IPS",
    "snips": "SNIPS",
    "logged_clicks": "logged clicks",
}
NOT_RUN = '<p class="muted">not run in this run</p>'

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #d5d9e0; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.status { font-size: 34px; font-weight: 700; margin: 8px 0; text-transform: uppercase; letter-spacing: 1px; }
.published { color: #1a7f37; } .gated { color: #c62828; } .nothing-to-do { color: #6b7280; } .done { color: #1f5fbf; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #d5d9e0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.inner { margin: 0; } table.inner td { border: none; padding: 0 6px 0 0; }
tr.best td { background: #e6f4ea; font-weight: 600; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #c62828; font-weight: 600; }
.muted { color: #6b7280; }
img { max-width: 100%; border: 1px solid #d5d9e0; margin: 6px 0; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; }
"""


def format_number(value: int | float) -> str:
    """Ints with thousands separators; floats with 4 decimals, or 4 significant digits below 0.01."""
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.4g}"
    return f"{value:,.4f}"


def report_values(html_text: str) -> dict[str, float]:
    """The {data-key: value} of every numeric cell of a report written by `write_html_report`."""
    parser = _CellParser()
    parser.feed(html_text)
    parser.close()
    return parser.values


class _CellParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, float] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        key, raw = found.get("data-key"), found.get("data-value")
        if tag == "td" and key is not None and raw is not None:
            try:
                self.values[key] = int(raw)
            except ValueError:
                self.values[key] = float(raw)


def write_html_report(report: dict[str, Any], workdir: Path, run_dir: Path) -> Path:
    """Write `run_dir/report.html` and its plots in `run_dir/figures/` (each atomically); returns the HTML's path.

    Sections the report lacks say "not run in this run". `workdir` is where the evaluation directory is looked for
    when the report's `stages.evaluate.dir` does not exist (a moved workdir).
    """
    run_dir, workdir = Path(run_dir), Path(workdir)
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    stages = _dict(report.get("stages"))
    made: set[str] = set()
    sections = [
        ("header", lambda: _header(report)),
        ("Stages", lambda: _stages(report, stages)),
        ("Data reconciliation", lambda: _reconciliation(stages)),
        ("Graph", lambda: _graph(stages)),
        ("Embeddings against baselines", lambda: _embeddings(stages)),
        ("Training curves", lambda: _curves(stages, workdir, figures, made)),
        ("Ranker", lambda: _ranker(stages)),
        ("Calibration", lambda: _calibration(stages, figures, made)),
        ("Quality gate", lambda: _gate(stages)),
        ("Embedding drift", lambda: _drift(stages)),
        ("Config", lambda: _config(report)),
    ]
    body = []
    for title, render in sections:
        # The report is written after publishing: a section the data breaks must not fail the run.
        try:
            body.append(render())
        except Exception as error:
            log.warning("report section %r could not be rendered: %r", title, error)
            body.append(_section(title, f'<p class="fail">could not be rendered: {_esc(repr(error))}</p>'))
    title = f"graphrec run {report.get('run_date') or ''}".strip()
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )
    path = run_dir / "report.html"
    _write_atomic(path, page.encode("utf-8"))
    for name in FIGURES:  # a figure of an earlier write that this report has no data for
        if name not in made:
            (figures / name).unlink(missing_ok=True)
    return path


# -- cells and tables -----------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    return _esc(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(key: str | None, value: Any, css: str = "") -> str:
    """A table cell; a number with a report path carries the path and its raw value (see `report_values`)."""
    if not _is_number(value):
        return f'<td class="{css}">{_text(value)}</td>' if css else f"<td>{_text(value)}</td>"
    raw = repr(int(value)) if isinstance(value, int) else repr(float(value))
    data = f' data-key="{_esc(key)}" data-value="{_esc(raw)}"' if key else ""
    return f'<td class="{" ".join(["num", css]).strip()}"{data}>{format_number(value)}</td>'


def _verdict(passed: Any, yes: str, no: str) -> str:
    return f'<td class="pass">{yes}</td>' if passed else f'<td class="fail">{no}</td>'


def _label(value: Any) -> str:
    return f"<td>{_esc(value)}</td>"


def _table(headers: list[str], rows: list[str], row_css: list[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    lines = [f"<tr>{head}</tr>"] if any(headers) else []
    for i, row in enumerate(rows):
        css = (row_css or [""] * len(rows))[i]
        lines.append(f'<tr class="{css}">{row}</tr>' if css else f"<tr>{row}</tr>")
    return "<table>\n" + "\n".join(lines) + "\n</table>"


def _pairs(prefix: str, values: dict[str, Any], header: tuple[str, str]) -> str:
    """A two-column table of a flat dict's entries."""
    rows = [_label(name) + _cell(f"{prefix}.{name}", value) for name, value in values.items()]
    return _table(list(header), rows)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _section(title: str, *parts: str) -> str:
    content = [p for p in parts if p]
    return (
        f'<section id="{_esc(title.lower().replace(" ", "-"))}">\n<h2>{_esc(title)}</h2>\n'
        + ("\n".join(content) if content else NOT_RUN)
        + "\n</section>"
    )


def _img(name: str, alt: str) -> str:
    return f'<img src="figures/{_esc(name)}" alt="{_esc(alt)}">'


# -- sections -------------------------------------------------------------------------------------------------------


def _header(report: dict[str, Any]) -> str:
    outcome = _dict(report.get("outcome"))
    status = str(outcome.get("status") or "unknown")
    css = status.replace(" ", "-")
    lines = [f"<h1>graphrec run {_esc(report.get('run_date') or '')}</h1>"]
    lines.append(f'<div class="status {_esc(css)}">{_esc(status)}</div>')
    if status == "published":
        previous = outcome.get("previous")
        lines.append(
            f"<p>Published <b>{_esc(outcome.get('version'))}</b>"
            + (f" (previous: {_esc(previous)})" if previous else " (the first pair)")
            + "</p>"
        )
    elif status == "gated":
        live = outcome.get("live")
        lines.append(
            "<p>The candidate pair was <b>not published</b>"
            + (f"; {_esc(live)} stays live" if live else "")
            + ". The gate's reasons:</p>"
        )
    elif status == "nothing to do":
        lines.append(f"<p>Every stage was up to date; {_esc(outcome.get('version'))} is live. Nothing changed.</p>")
    reasons = outcome.get("reasons") or []
    if reasons:
        lines.append("<ul>" + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul>")
    code = _dict(report.get("code_version"))
    rows = [
        _label("started") + _cell(None, report.get("started_at")),
        _label("finished") + _cell(None, report.get("finished_at")),
        _label("seconds") + _cell("seconds", report.get("seconds")),
    ]
    if code:
        commit = str(code.get("git_commit") or "")[:12] + (" (dirty)" if code.get("git_dirty") else "")
        rows.append(_label("code") + _cell(None, f"graphrec {code.get('graphrec', '')} {commit}".strip()))
    lines.append(_table(["", ""], rows))
    return "<header>\n" + "\n".join(lines) + "\n</header>"


def _stages(report: dict[str, Any], stages: dict[str, Any]) -> str:
    up_to_date = list(report.get("up_to_date") or [])
    names = list(stages) + [n for n in dict.fromkeys(up_to_date) if n not in stages]
    rows = []
    for name in names:
        stage = _dict(stages.get(name))
        if name in up_to_date:
            state = "up to date"
        elif isinstance(stage.get("skipped"), str):
            state = f"skipped: {stage['skipped']}"
        else:
            state = "ran"
        rows.append(
            _label(name)
            + _cell(f"stages.{name}.seconds", stage.get("seconds"))
            + _cell(f"stages.{name}.peak_rss_gib", stage.get("peak_rss_gib"))
            + _cell(None, state)
        )
    parts = [_table(["stage", "seconds", "peak memory (GiB)", "status"], rows)] if rows else []
    backfill = _dict(stages.get("backfill"))
    cutoffs = backfill.get("cutoffs")
    if isinstance(cutoffs, list) and cutoffs:
        rows = []
        for i, c in enumerate(cutoffs):
            c = _dict(c)
            skipped = c.get("skipped")
            state = "already in the store" if skipped is True else (skipped or "published")
            rows.append(
                _cell(None, c.get("cutoff"))
                + _cell(None, c.get("version"))
                + _cell(None, state)
                + _cell(f"stages.backfill.cutoffs.{i}.seconds", c.get("seconds"))
            )
        parts.append("<h3>Backfill</h3>\n" + _table(["cutoff", "version", "status", "seconds"], rows))
    return _section("Stages", *parts)


def _reconciliation(stages: dict[str, Any]) -> str:
    parts = []
    source = _dict(stages.get("input"))
    if source:
        parts.append(f"<p>Input format: <b>{_esc(source.get('format', '—'))}</b></p>")
        sources = _dict(source.get("sources"))
        if sources:
            rows = [
                _label(name)
                + _cell(None, _dict(s).get("path"))
                + _cell(f"stages.input.sources.{name}.bytes", _dict(s).get("bytes"))
                + f"<td><code>{_esc(str(_dict(s).get('sha256') or '')[:16])}</code></td>"
                for name, s in sources.items()
            ]
            parts.append(_table(["source", "path", "bytes", "sha256"], rows))
        generated = {k: v for k, v in _dict(source.get("generated")).items() if _is_number(v)}
        if generated:
            parts.append(
                "<h3>Generated data</h3>\n" + _pairs("stages.input.generated", generated, ("generated", "value"))
            )
    validate = _dict(stages.get("validate"))
    tables = _dict(validate.get("tables"))
    if tables:
        rows = []
        for name, t in tables.items():
            t = _dict(t)
            counts = [t.get(k) for k in ("input_rows", "used", "deduplicated", "quarantined")]
            balanced = all(isinstance(c, int) for c in counts) and counts[0] == sum(counts[1:])
            reasons = "".join(
                f"<tr>{_label(r)}{_cell(f'stages.validate.tables.{name}.reasons.{r}', n)}</tr>"
                for r, n in _dict(t.get("reasons")).items()
            )
            rows.append(
                _label(name)
                + "".join(
                    _cell(f"stages.validate.tables.{name}.{k}", t.get(k))
                    for k in ("input_rows", "used", "deduplicated", "quarantined")
                )
                + _verdict(balanced, "yes", "no")
                + (f'<td><table class="inner">{reasons}</table></td>' if reasons else "<td>—</td>")
            )
        headers = ["table", "input rows", "used", "deduplicated", "quarantined", "accounted for", "reasons"]
        parts.append("<h3>Validation</h3>\n" + _table(headers, rows))
    checks = _dict(validate.get("cross_checks"))
    checks = {k: v for k, v in checks.items() if _is_number(v)}
    if checks:
        parts.append("<h3>Cross-checks</h3>\n" + _pairs("stages.validate.cross_checks", checks, ("check", "rows")))
    return _section("Data reconciliation", *parts)


def _graph(stages: dict[str, Any]) -> str:
    parts = []
    snapshot = _dict(stages.get("snapshot"))
    if snapshot:
        parts.append(f"<p>Snapshot cutoff: <b>{_esc(snapshot.get('cutoff', '—'))}</b></p>")
        nodes = _dict(snapshot.get("num_nodes"))
        if nodes:
            parts.append(_pairs("stages.snapshot.num_nodes", nodes, ("node type", "nodes")))
        edges = _dict(snapshot.get("num_edges"))
        if edges:
            parts.append(_pairs("stages.snapshot.num_edges", edges, ("edge type", "edges")))
    split = _dict(stages.get("split"))
    if split:
        windows = _dict(split.get("split"))
        rows = [_label(k) + _cell(f"stages.split.split.{k}", v) for k, v in windows.items()]
        parts.append("<h3>Split</h3>\n" + (_table(["boundary", "time"], rows) if rows else ""))
        targets = _dict(split.get("targets"))
        columns = list(dict.fromkeys(k for t in targets.values() for k, v in _dict(t).items() if _is_number(v)))
        if targets:
            rows = [
                _label(name) + "".join(_cell(f"stages.split.targets.{name}.{c}", _dict(t).get(c)) for c in columns)
                for name, t in targets.items()
            ]
            parts.append(_table(["target", *(c.replace("_", " ") for c in columns)], rows))
    return _section("Graph", *parts)


def _embeddings(stages: dict[str, Any]) -> str:
    parts = []
    evaluate = _dict(stages.get("evaluate"))
    ndcg = {k: v for k, v in _dict(evaluate.get("ndcg@20")).items() if _is_number(v)}
    if ndcg:
        best = max((v for v in ndcg.values() if not math.isnan(v)), default=None)
        rows = [_label(name) + _cell(f"stages.evaluate.ndcg@20.{name}", v) for name, v in ndcg.items()]
        css = ["best" if v == best else "" for v in ndcg.values()]
        parts.append("<p>Test NDCG@20 of every method on the same split (best highlighted).</p>")
        parts.append(_table(["method", "NDCG@20"], rows, css))
    ours = {k: v for k, v in _dict(evaluate.get("graphrec")).items() if _is_number(v)}
    if ours:
        parts.append("<h3>graphrec</h3>\n" + _pairs("stages.evaluate.graphrec", ours, ("metric", "value")))
    if _is_number(evaluate.get("epochs")):
        parts.append(_table(["", ""], [_label("epochs chosen") + _cell("stages.evaluate.epochs", evaluate["epochs"])]))
    model = _dict(stages.get("model"))
    if model:
        parts.append("<h3>Model on every event</h3>")
        warm = _dict(model.get("warm_start"))
        rows = [_label("epochs") + _cell("stages.model.epochs", model.get("epochs"))]
        rows.append(_label("warm start") + _cell(None, f"from {warm['from']}" if warm.get("from") else "from scratch"))
        for entity, n in _dict(warm.get("shared")).items():
            rows.append(_label(f"shared {entity} rows") + _cell(f"stages.model.warm_start.shared.{entity}", n))
        parts.append(_table(["", ""], rows))
        weights = _dict(model.get("behaviour_weights"))
        if weights:
            parts.append(_pairs("stages.model.behaviour_weights", weights, ("behaviour", "weight")))
    return _section("Embeddings against baselines", *parts)


def _curves(stages: dict[str, Any], workdir: Path, figures: Path, made: set[str]) -> str:
    parts = []
    evaluate = _dict(stages.get("evaluate"))
    candidates = [Path(evaluate["dir"]) / "curves.png"] if evaluate.get("dir") else []
    candidates.append(workdir / "evaluation" / "curves.png")
    source = next((p for p in candidates if p.is_file()), None) if evaluate else None
    if source is not None:
        _copy_atomic(source, figures / "embedding_curves.png")
        made.add("embedding_curves.png")
        parts.append("<h3>Embeddings</h3>\n" + _img("embedding_curves.png", "embedding training curves"))
    training = _dict(_dict(_dict(stages.get("ranker")).get("evaluation")).get("training"))
    train_loss, val_loss = _floats(training.get("train_loss")), _floats(training.get("val_loss"))
    if train_loss or val_loss:
        _plot_ranker_loss(train_loss, val_loss, training.get("best_epoch"), figures / "ranker_loss.png")
        made.add("ranker_loss.png")
        parts.append("<h3>Ranker</h3>\n" + _img("ranker_loss.png", "ranker train and validation loss per epoch"))
        rows = [
            _label(label) + _cell(f"stages.ranker.evaluation.training.{k}", training.get(k))
            for k, label in (
                ("epochs_run", "epochs run"),
                ("best_epoch", "best epoch"),
                ("best_val_loss", "best val loss"),
            )
            if k in training
        ]
        if rows:
            parts.append(_table(["", ""], rows))
    return _section("Training curves", *parts)


def _ranker(stages: dict[str, Any]) -> str:
    parts = []
    rank = _dict(stages.get("ranker"))
    rows_count = {k: v for k, v in _dict(rank.get("rows")).items() if _is_number(v)}
    if rows_count:
        parts.append(_pairs("stages.ranker.rows", rows_count, ("rows", "impressions")))
    test = _dict(_dict(rank.get("evaluation")).get("test"))
    slices = [s for s in SLICES if isinstance(test.get(s), dict)]
    slices += [s for s, v in test.items() if isinstance(v, dict) and s not in slices]
    if slices:
        found = [k for s in slices for k, v in test[s].items() if _is_number(v)]
        columns = [k for k in METRIC_ORDER if k in found] + [k for k in dict.fromkeys(found) if k not in METRIC_ORDER]
        notes = any("note" in test[s] for s in slices)
        rows = []
        for s in slices:
            metrics = test[s]
            cells = [
                _cell(f"stages.ranker.evaluation.test.{s}.{k}", metrics[k]) if k in metrics else "<td></td>"
                for k in columns
            ]
            if "impressions" in columns:  # derived, so without a data-key: few clicks make a slice's AUC noise
                cells.insert(columns.index("impressions") + 1, _cell(None, _clicks(metrics)))
            rows.append(
                _label(s.replace("_", " ")) + "".join(cells) + (_cell(None, metrics.get("note")) if notes else "")
            )
        headers = ["slice", *(k.upper() if k in ("auc", "gauc", "ece", "ctr") else k for k in columns)]
        if "impressions" in columns:
            headers.insert(columns.index("impressions") + 2, "clicks")
        parts.append("<h3>Test metrics</h3>\n" + _table(headers + (["note"] if notes else []), rows))
    policy = _dict(rank.get("policy_value"))
    orders = {k: _dict(v) for k, v in _dict(policy.get("orders")).items()}
    if orders:
        columns = [c for c in POLICY_COLUMNS if any(c in o for o in orders.values())]
        rows = [
            _label(name)
            + "".join(
                _cell(f"stages.ranker.policy_value.orders.{name}.{c}", o[c]) if c in o else "<td></td>" for c in columns
            )
            for name, o in orders.items()
        ]
        parts.append(
            "<h3>Policy value</h3>\n"
            f"<p>Expected clicks per request under the true click model, top {_text(policy.get('top_k'))} slots "
            f"on {_text(policy.get('requests'))} test requests.</p>\n"
            + _table(["order", *(POLICY_COLUMNS[c] for c in columns)], rows)
        )
        ours = orders.get("ranker", {}).get("expected_clicks")
        uplift = []
        for reference, label in (("logging policy", "the logging policy"), ("popularity", "the popularity order")):
            theirs = orders.get(reference, {}).get("expected_clicks")
            if _is_number(ours) and _is_number(theirs) and theirs > 0:
                uplift.append(f"{ours / theirs - 1:+.1%} against {label}")
        if uplift:
            parts.append(f"<p><b>Uplift</b> in expected clicks of the ranker's order: {_esc(', '.join(uplift))}.</p>")
    return _section("Ranker", *parts)


def _clicks(metrics: dict[str, Any]) -> int | None:
    impressions, ctr = metrics.get("impressions"), metrics.get("ctr")
    if _is_number(impressions) and _is_number(ctr) and math.isfinite(ctr):
        return round(impressions * ctr)
    return None


def _calibration(stages: dict[str, Any], figures: Path, made: set[str]) -> str:
    parts = []
    test = _dict(_dict(_dict(stages.get("ranker")).get("evaluation")).get("test"))
    bins = [_dict(b) for b in test.get("calibration") or []]
    bins = [b for b in bins if _is_number(b.get("predicted")) and _is_number(b.get("observed"))]
    ece = _dict(test.get("overall")).get("ece")
    if bins:
        _plot_reliability(bins, ece if _is_number(ece) else None, figures / "calibration.png")
        made.add("calibration.png")
        parts.append(_img("calibration.png", "reliability diagram of the ranker's test predictions"))
    if _is_number(ece):
        parts.append(_table(["", ""], [_label("ECE") + _cell("stages.ranker.evaluation.test.overall.ece", ece)]))
    if bins:
        rows = [
            "".join(
                _cell(f"stages.ranker.evaluation.test.calibration.{i}.{k}", b.get(k))
                for k in ("predicted", "observed", "rows")
            )
            for i, b in enumerate(bins)
        ]
        parts.append(
            "<details><summary>Reliability bins (equal-count)</summary>\n"
            + _table(["mean predicted", "observed click rate", "rows"], rows)
            + "\n</details>"
        )
    return _section("Calibration", *parts)


def _gate(stages: dict[str, Any]) -> str:
    gate = _dict(stages.get("gate"))
    if not gate:
        return _section("Quality gate")
    if gate.get("blessed"):
        verdict, css = "blessed", "pass"
    elif gate.get("forced"):
        verdict, css = "not blessed, published anyway (forced)", "fail"
    else:
        verdict, css = "not blessed: not published", "fail"
    parts = [f'<p>Verdict: <span class="{css}">{_esc(verdict)}</span></p>']
    rows = [
        _label("enabled") + _cell(None, gate.get("enabled")),
        _label("forced") + _cell(None, gate.get("forced")),
        _label("against") + _cell(None, gate.get("against") or "nothing live: the first pair"),
    ]
    if gate.get("note"):
        rows.append(_label("note") + _cell(None, gate["note"]))
    parts.append(_table(["", ""], rows))
    checks = [_dict(c) for c in gate.get("checks") or []]
    if checks:
        rows = []
        for i, c in enumerate(checks):
            passed = c.get("passed")
            rows.append(
                _label(c.get("check", ""))
                + _cell(f"stages.gate.checks.{i}.candidate", c.get("candidate"))
                + _cell(f"stages.gate.checks.{i}.published", c.get("published"))
                + _cell(None, c.get("rule"))
                + _cell(None, c.get("basis"))
                + _verdict(passed, "pass", "fail")
            )
        parts.append(_table(["check", "candidate", "published", "rule", "basis", "result"], rows))
    reasons = gate.get("reasons") or []
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul>")
    comparison = _dict(gate.get("comparison"))
    if comparison:
        text = "the same holdout" if comparison.get("comparable") else f"not comparable: {comparison.get('reason', '')}"
        parts.append(f"<h3>Against the live ranker</h3>\n<p>{_esc(text)}</p>")
        counts = {k: comparison[k] for k in ("holdout_rows", "holdout_clicks", "policy_requests") if k in comparison}
        if counts:
            parts.append(_pairs("stages.gate.comparison", counts, ("", "")))
        new, old = _dict(comparison.get("candidate")), _dict(comparison.get("published"))
        keys = [k for k in dict.fromkeys([*new, *old]) if _is_number(new.get(k)) or _is_number(old.get(k))]
        if keys:
            rows = [
                _label(k)
                + _cell(f"stages.gate.comparison.candidate.{k}", new.get(k))
                + _cell(f"stages.gate.comparison.published.{k}", old.get(k))
                for k in keys
            ]
            parts.append(_table(["metric", "candidate", "published"], rows))
    return _section("Quality gate", *parts)


def _drift(stages: dict[str, Any]) -> str:
    # Reports from before the publish stage call it `export`.
    name = "publish" if isinstance(stages.get("publish"), dict) else "export"
    publish = _dict(stages.get(name))
    if not publish:
        return _section("Embedding drift")
    parts = []
    rows = [
        _label("version") + _cell(None, publish.get("version")),
        _label("space") + _cell(None, publish.get("space")),
        _label("ranker") + _cell(None, publish.get("ranker")),
        _label("online store") + _cell(None, publish.get("online_store") or "disabled"),
    ]
    if "forced" in publish:
        rows.append(_label("forced") + _cell(None, publish.get("forced")))
    parts.append(_table(["", ""], rows))
    entities = {k: v for k, v in _dict(publish.get("rows")).items() if _is_number(v)}
    if entities:
        parts.append(_pairs(f"stages.{name}.rows", entities, ("entity", "rows")))
    drift = _dict(publish.get("drift"))
    if drift:
        rows = [
            _label("previous version") + _cell(None, drift.get("previous_version") or "none: the first version"),
            _label("mean cosine to previous") + _cell(f"stages.{name}.drift.mean_cosine", drift.get("mean_cosine")),
            _label("compatible") + _cell(None, drift.get("compatible")),
        ]
        parts.append("<h3>Drift</h3>\n" + _table(["", ""], rows))
    return _section("Embedding drift", *parts)


def _config(report: dict[str, Any]) -> str:
    config = report.get("config")
    if config is None:
        return _section("Config")
    text = json.dumps(config, indent=2, sort_keys=False, default=str)
    return _section("Config", f"<details><summary>Show the config</summary>\n<pre>{_esc(text)}</pre>\n</details>")


# -- plots and files ------------------------------------------------------------------------------------------------


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values] if isinstance(values, list) and all(_is_number(v) for v in values) else []


def _figure(width: float, height: float):
    # The object API with an explicit Agg canvas: no pyplot state, no global backend switch in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _plot_ranker_loss(train: list[float], val: list[float], best_epoch: Any, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6, 3.6)
    ax = fig.add_subplot()
    if train:
        ax.plot(range(1, len(train) + 1), train, marker="o", label="train")
    if val:
        ax.plot(range(1, len(val) + 1), val, marker="o", label="validation")
    if _is_number(best_epoch):
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    ax.set(title="ranker logloss per epoch", xlabel="epoch", ylabel="loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_atomic(fig, path)


def _plot_reliability(bins: list[dict[str, Any]], ece: float | None, path: Path) -> None:
    fig = _figure(4.6, 4.4)
    ax = fig.add_subplot()
    predicted = [float(b["predicted"]) for b in bins]
    observed = [float(b["observed"]) for b in bins]
    top = max([*predicted, *observed, 1e-6]) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect calibration")
    ax.plot(predicted, observed, marker="o", label="ranker (equal-count bins)")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted P(click)", ylabel="observed click rate")
    ax.set_title("reliability" + (f" (ECE {format_number(ece)})" if ece is not None else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_atomic(fig, path)


def _temporary(path: Path) -> Path:
    # The pattern `training.run_state.clean_leftovers` removes after a killed run.
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_atomic(fig, path: Path) -> None:
    tmp = _temporary(path)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_atomic(source: Path, path: Path) -> None:
    tmp = _temporary(path)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
