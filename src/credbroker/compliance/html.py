"""The compliance report as files: JSON for machines, and one self-contained HTML page for
people (inline CSS and SVG, no script, nothing fetched)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from credbroker.compliance.model import ComplianceResult
from credbroker.domain import utc_text

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def chart_svg(hours: list[str], spaces: dict[str, list[int]]) -> str:
    """Vends per space per hour as grouped bars."""
    width, height, left, bottom, top = 760, 240, 40, 40, 20
    peak = max([1, *(n for counts in spaces.values() for n in counts)])
    slot = (width - left - 10) / max(1, len(hours))
    names = sorted(spaces)
    bar = max(1.0, (slot - 2) / max(1, len(names)))
    scale = (height - bottom - top) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="vends per space per hour">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#333"/>',
        f'<text x="4" y="{top + 4}" font-size="11">{peak}</text>',
        f'<text x="4" y="{height - bottom}" font-size="11">0</text>',
    ]
    for h, label in enumerate(hours):
        x0 = left + h * slot
        if h % 3 == 0:
            parts.append(
                f'<text x="{x0:.1f}" y="{height - bottom + 14}" font-size="10">'
                f"{escape(label[-2:])}h</text>"
            )
        for s, name in enumerate(names):
            count = spaces[name][h]
            if count:
                y = height - bottom - count * scale
                parts.append(
                    f'<rect x="{x0 + s * bar:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                    f'height="{count * scale:.1f}" fill="{_COLOURS[s % len(_COLOURS)]}">'
                    f"<title>{escape(name)} {escape(label)}h: {count}</title></rect>"
                )
    for s, name in enumerate(names):
        x = left + 10 + s * 110
        colour = _COLOURS[s % len(_COLOURS)]
        parts.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{colour}"/>')
        parts.append(
            f'<text x="{x + 14}" y="{height - 7}" font-size="11">{escape(name)} '
            f"({sum(spaces[name])})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(result: ComplianceResult) -> str:
    data = result.as_dict()
    rows = []
    for control in result.controls:
        status = "pass" if control.passed else "fail"
        evidence = "".join(f"<li>{escape(line)}</li>" for line in control.evidence)
        rows.append(
            f'<tr class="{status}"><td>{escape(control.name)}</td>'
            f'<td class="status">{status.upper()}</td><td>{escape(control.summary)}'
            f"<ul>{evidence}</ul></td></tr>"
        )
    overall = "PASS" if result.passed else "FAIL"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>credbroker compliance {escape(str(data["started_at"]))}: {overall}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; text-align: left; }}
tr.pass .status {{ background: #d4f7d4; }} tr.fail .status {{ background: #f7d4d4; }}
h1 span.pass {{ color: #1a7f1a; }} h1 span.fail {{ color: #b00; }}
ul {{ margin: 4px 0 0 1em; padding: 0; font-size: 90%; font-family: monospace; }}
</style></head><body>
<h1>credbroker compliance check: <span class="{overall.lower()}">{overall}</span></h1>
<p>Run {escape(utc_text(result.started_at) or "")} to {escape(utc_text(result.finished_at) or "")};
controls failing: <b id="failed">{len(result.failed())}</b> of {len(result.controls)};
grants in the last day: <b id="vends-total">{data["vends_total"]}</b>;
break-glass grants: <b id="break-glass">{len(result.break_glass)}</b>.</p>
<h2>Controls</h2>
<table><tr><th>control</th><th>status</th><th>summary and evidence</th></tr>
{"".join(rows)}
</table>
<h2>Vends per space per hour (UTC, last 24 hours)</h2>
{chart_svg(result.hours, result.vends_per_hour)}
</body></html>
"""


def write_report(result: ComplianceResult, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stem = "compliance-" + result.started_at.strftime("%Y%m%dT%H%M%SZ")
    json_path, html_path = folder / f"{stem}.json", folder / f"{stem}.html"
    json_path.write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    html_path.write_text(render_html(result))
    return json_path, html_path
