"""Quality and profile reports: JSON documents and self-contained HTML pages.

A report is a plain dict (``kind: profile`` or ``kind: quality``); :func:`write_report`
writes it as JSON and as one HTML file with inline CSS and inline SVG histograms — no
scripts, fonts or stylesheets fetched from anywhere, so the page opens offline and can be
attached to a ticket. Paths may be local or any filesystem Beam knows (``gs://``, ``s3://``).

Example:
    >>> html = render_html({"kind": "profile", "title": "t", "row_count": 0, "columns": {}})
    >>> html.startswith("<!DOCTYPE html>") and "<script" not in html
    True
"""

from __future__ import annotations

import html as _html
import json
import math
import os
import tempfile
from typing import Any, Iterable

__all__ = ["write_report", "render_html", "render_text", "to_json", "histogram_svg"]


# --------------------------------------------------------------------------- writing


def to_json(report: dict[str, Any]) -> str:
    """The report as JSON (NaN/inf become null, other values via ``str``)."""
    return json.dumps(_finite(report), indent=2, ensure_ascii=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_text(path: str, text: str) -> None:
    data = text.encode("utf-8")
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as handle:
            handle.write(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # temp + rename: a reader never sees half a report
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".report-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(report: dict[str, Any], json_path: str | None, html_path: str | None = None) -> None:
    """Write ``report`` as JSON at ``json_path`` and as HTML at ``html_path`` (either may be None).

    Args:
        report: a profile or quality report dict.
        json_path: where the JSON goes (local path or a Beam filesystem URL).
        html_path: where the HTML page goes.
    """
    if json_path:
        _write_text(json_path, to_json(report))
    if html_path:
        _write_text(html_path, render_html(report))


# --------------------------------------------------------------------------- HTML pieces

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#1f2328;max-width:1200px}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#656d76}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.warn{color:#9a6700;font-weight:600}
.score{font-size:2.4rem;font-weight:700}.badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;color:#fff}
.badge.pass{background:#1a7f37}.badge.fail{background:#cf222e}.badge.warn{background:#9a6700}
.bar{background:#54aeff;height:.7rem;display:inline-block;vertical-align:middle}
.cols{display:flex;flex-wrap:wrap;gap:2rem}code{background:#f6f8fa;padding:0 .2rem}
"""


def _e(value: Any) -> str:
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        if not math.isfinite(value):
            return '<span class="muted">–</span>'
        return _html.escape(_fmt_number(value))
    if isinstance(value, (dict, list)):
        return "<code>" + _html.escape(json.dumps(_finite(value), ensure_ascii=False, default=str)) + "</code>"
    return _html.escape(str(value))


def _fmt_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1e6 or abs(value) < 1e-3:
        return f"{value:.4g}"
    return f"{value:,.4f}".rstrip("0").rstrip(".")


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '<span class="muted">–</span>'
    return f"{value * 100:.2f}%"


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)
    head = "".join(f"<th>{_html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def histogram_svg(histogram: dict[str, list] | None, width: int = 360, height: int = 120) -> str:
    """An inline SVG bar chart of ``{"edges": [...], "counts": [...]}``."""
    if not histogram or not histogram.get("counts"):
        return '<span class="muted">no numeric values</span>'
    counts = histogram["counts"]
    edges = histogram["edges"]
    peak = max(counts) or 1
    bar = width / len(counts)
    bars = []
    for i, count in enumerate(counts):
        h = (count / peak) * (height - 20)
        label = f"[{_fmt_number(float(edges[i]))}, {_fmt_number(float(edges[i + 1]))}): {count}" if i + 1 < len(edges) else str(count)
        bars.append(
            f'<rect x="{i * bar + 1:.1f}" y="{height - 15 - h:.1f}" width="{max(bar - 2, 1):.1f}" height="{h:.1f}" fill="#54aeff">'
            f"<title>{_html.escape(label)}</title></rect>"
        )
    lo, hi = _fmt_number(float(edges[0])), _fmt_number(float(edges[-1]))
    axis = (
        f'<text x="0" y="{height - 2}" font-size="10" fill="#656d76">{_html.escape(lo)}</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" fill="#656d76" text-anchor="end">{_html.escape(hi)}</text>'
    )
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{"".join(bars)}{axis}</svg>'


def _bars(items: list[dict[str, Any]], key: str, total: int) -> str:
    if not items:
        return '<span class="muted">–</span>'
    peak = max(item["count"] for item in items) or 1
    rows = []
    for item in items:
        width = 120 * item["count"] / peak
        share = f" ({item['count'] / total * 100:.1f}%)" if total else ""
        rows.append([_e(item[key]), f'<span class="bar" style="width:{width:.0f}px"></span> {item["count"]:,}{share}'])
    return _table([key, "count"], rows)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_html.escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


# --------------------------------------------------------------------------- profile page


def _profile_html(report: dict[str, Any]) -> str:
    title = report.get("title") or "Data profile"
    columns: dict[str, dict] = report.get("columns", {})
    rows = report.get("row_count", 0)
    parts = [
        f"<h1>{_html.escape(title)}</h1>",
        f'<p class="muted">{rows:,} rows · {len(columns)} columns · generated {_e(report.get("generated_at"))}'
        + (f" · source {_e(report.get('source'))}" if report.get("source") else "")
        + "</p>",
        "<h2>Overview</h2>",
        _table(
            ["column", "type", "inferred", "nulls", "distinct", "min", "max", "mean", "stddev"],
            (
                [
                    f'<a href="#col-{_html.escape(name)}">{_html.escape(name)}</a>',
                    _e(c.get("type")),
                    _e(c.get("inferred_type")),
                    _pct(c.get("null_fraction")),
                    _e(c.get("distinct")) + (" ≈" if c.get("distinct_approximate") else ""),
                    _e(c.get("min")),
                    _e(c.get("max")),
                    _e(c.get("mean")),
                    _e(c.get("stddev")),
                ]
                for name, c in columns.items()
            ),
            numeric=(3, 4, 7, 8),
        ),
    ]
    for name, c in columns.items():
        parts.append(f'<h2 id="col-{_html.escape(name)}">{_html.escape(name)} <span class="muted">{_e(c.get("type"))}</span></h2>')
        stats = [
            ["count", _e(c.get("count"))],
            ["nulls", f"{_e(c.get('nulls'))} ({_pct(c.get('null_fraction'))})"],
            ["distinct", _e(c.get("distinct")) + (" (HyperLogLog estimate)" if c.get("distinct_approximate") else "")],
            ["inferred type", _e(c.get("inferred_type"))],
        ]
        for key in ("min", "max", "mean", "stddev", "sum", "true_fraction", "empty"):
            if key in c:
                stats.append([key, _e(c.get(key))])
        if c.get("length"):
            length = c["length"]
            stats.append(["length min / mean / max", f"{_e(length.get('min'))} / {_e(length.get('mean'))} / {_e(length.get('max'))}"])
        blocks = [_table(["statistic", "value"], stats)]
        if c.get("quantiles"):
            q = c["quantiles"]
            note = " (KLL estimate)" if c.get("quantiles_approximate") else ""
            blocks.append("<div><h3>Quantiles" + note + "</h3>" + _table(list(q), [[_e(v) for v in q.values()]], numeric=range(len(q))) + "</div>")
        if "histogram" in c:
            blocks.append("<div><h3>Histogram</h3>" + histogram_svg(c.get("histogram")) + "</div>")
        if c.get("top_values") is not None:
            note = " (approximate)" if c.get("top_values_approximate") else ""
            blocks.append("<div><h3>Top values" + note + "</h3>" + _bars(c["top_values"], "value", c.get("non_null") or 0) + "</div>")
        if c.get("patterns"):
            blocks.append("<div><h3>Common patterns</h3>" + _bars(c["patterns"], "pattern", c.get("non_null") or 0) + "</div>")
        parts.append('<div class="cols">' + "".join(f"<div>{b}</div>" for b in blocks) + "</div>")
    return _page(title, "".join(parts))


# --------------------------------------------------------------------------- quality page


def _status(passed: bool | None, severity: str = "error") -> str:
    if passed is None:
        return '<span class="muted">n/a</span>'
    if passed:
        return '<span class="pass">pass</span>'
    return '<span class="warn">warn</span>' if severity == "warning" else '<span class="fail">fail</span>'


def _quality_html(report: dict[str, Any]) -> str:
    title = report.get("title") or "Data quality report"
    gate = report.get("gate", {})
    score = report.get("score")
    passed = gate.get("passed", True)
    badge = "pass" if passed else ("warn" if gate.get("action") == "continue" else "fail")
    badge_text = "gate passed" if passed else ("gate failed — run continued" if gate.get("action") == "continue" else "gate failed — run stopped")
    parts = [
        f"<h1>{_html.escape(title)}</h1>",
        f'<p class="muted">{report.get("row_count", 0):,} rows · generated {_e(report.get("generated_at"))}'
        + (f" · run {_e(report.get('run_id'))}" if report.get("run_id") else "")
        + "</p>",
        f'<p><span class="score">{_pct(score)}</span> overall score'
        + (f" (minimum {_pct(gate.get('min_score'))})" if gate.get("min_score") is not None else "")
        + f' &nbsp; <span class="badge {badge}">{badge_text}</span></p>',
    ]
    if gate.get("reasons"):
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in gate["reasons"]) + "</ul>")
    checks = report.get("checks", [])
    parts.append("<h2>Checks</h2>")
    parts.append(
        _table(
            ["check", "kind", "score", "threshold", "weight", "status", "detail"],
            (
                [
                    _e(c.get("name")),
                    _e(c.get("kind")),
                    _pct(c.get("score")),
                    _pct(c.get("threshold")) if c.get("threshold") is not None else '<span class="muted">–</span>',
                    _e(c.get("weight")),
                    _status(c.get("passed"), c.get("severity", "error")),
                    _e(c.get("message")),
                ]
                for c in checks
            ),
            numeric=(2, 3, 4),
        )
    )
    recommendations = report.get("recommendations") or []
    if recommendations:
        parts.append("<h2>Recommendations</h2><ol>" + "".join(f"<li>{_e(r)}</li>" for r in recommendations) + "</ol>")
    failing = [c for c in checks if c.get("samples")]
    if failing:
        parts.append("<h2>Failing samples</h2>")
        for c in failing:
            samples = c["samples"]
            parts.append(f"<h3>{_e(c.get('name'))}</h3>")
            if samples and isinstance(samples[0], dict):
                keys: list[str] = []
                for row in samples:
                    keys.extend(k for k in row if k not in keys)
                parts.append(_table(keys, ([_e(row.get(k)) for k in keys] for row in samples)))
            else:
                parts.append(_table(["value"], ([_e(v)] for v in samples)))
    anomalies = report.get("anomalies")
    if anomalies:
        parts.append("<h2>Run-level anomalies</h2>")
        parts.append(
            _table(
                ["metric", "column", "value", "strategy", "anomaly", "detail"],
                (
                    [
                        _e(a.get("metric")),
                        _e(a.get("column")),
                        _e(a.get("value")),
                        _e(a.get("strategy")),
                        _status(None if a.get("anomaly") is None else not a["anomaly"]),
                        _e(a.get("detail")),
                    ]
                    for a in anomalies
                ),
                numeric=(2,),
            )
        )
    expectations = [c for c in checks if c.get("kind") == "expectation" and c.get("result") is not None]
    if expectations:
        parts.append("<h2>Expectation results (Great Expectations format)</h2>")
        parts.append(
            _table(
                ["expectation", "success", "result"],
                ([_e(c.get("name")), _status(c.get("passed")), _e(c["result"].get("result"))] for c in expectations),
            )
        )
    return _page(title, "".join(parts))


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page for a profile or quality report."""
    if report.get("kind") == "quality":
        return _quality_html(report)
    return _profile_html(report)


def render_text(report: dict[str, Any]) -> str:
    """A short plain-text summary (for the terminal)."""
    if report.get("kind") == "quality":
        lines = [f"score {report.get('score', 0):.3f}  gate {'passed' if report.get('gate', {}).get('passed', True) else 'FAILED'}"]
        for c in report.get("checks", []):
            flag = "ok  " if c.get("passed") else "FAIL"
            lines.append(f"  {flag} {c.get('name')}: {c.get('score', 0):.3f} (threshold {c.get('threshold')})")
        return "\n".join(lines)
    lines = [f"{report.get('row_count', 0)} rows, {report.get('column_count', 0)} columns"]
    header = f"{'column':<24} {'type':<14} {'inferred':<10} {'nulls':>8} {'distinct':>9} {'min':>12} {'max':>12} {'mean':>12}"
    lines.append(header)
    for name, c in report.get("columns", {}).items():

        def short(value: Any) -> str:
            if value is None:
                return "-"
            if isinstance(value, float):
                return _fmt_number(value)
            return str(value)[:12]

        lines.append(
            f"{name[:24]:<24} {str(c.get('type'))[:14]:<14} {str(c.get('inferred_type'))[:10]:<10} {c.get('nulls', 0):>8} "
            f"{short(c.get('distinct')):>9} {short(c.get('min')):>12} {short(c.get('max')):>12} {short(c.get('mean')):>12}"
        )
    return "\n".join(lines)
