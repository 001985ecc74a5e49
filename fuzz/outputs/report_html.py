"""report.html: one self-contained page (inline CSS and SVG, a few lines of inline script, nothing fetched),
a pure function of the report dict. See fuzz.outputs.report_views for what it shows."""

from __future__ import annotations

from html import escape

from moe_lora_fuzz.fuzz.outputs.report_commands import commands
from moe_lora_fuzz.fuzz.space.coverage import RATIO_BINS, REQUIRED_EDGES
from moe_lora_fuzz.fuzz.triage.classify import CLASSES, counts

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2433;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6}
.meta{color:#566;margin-bottom:12px}.chips span{display:inline-block;padding:3px 10px;margin:0 6px 6px 0;
border-radius:12px;cursor:pointer;user-select:none;border:1px solid #ccd}.off{opacity:.35}
.bug{background:#fde2e1}.intermittent{background:#fff0c2}.precision{background:#e1effd}
.unchecked-precondition{background:#ececec}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #d8dde6;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f3f5f8}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#f6f8fa;padding:6px 8px;margin:4px 0;
white-space:pre-wrap;word-break:break-all}.cause{border:1px solid #d8dde6;border-radius:6px;padding:8px 12px;
margin:10px 0}.missing{color:#b00020;font-weight:600}.heat td{min-width:38px;text-align:center;font-size:12px}
.small{font-size:12px;color:#566}svg text{font:11px system-ui,sans-serif}
"""

SCRIPT = """
document.querySelectorAll('.chips span').forEach(function (chip) {
  chip.addEventListener('click', function () {
    chip.classList.toggle('off');
    var hide = chip.classList.contains('off');
    document.querySelectorAll('.cause.' + chip.dataset.cls).forEach(function (el) {
      el.style.display = hide ? 'none' : '';
    });
  });
});
document.body.setAttribute('data-rendered', 'ok');
"""


def _e(v) -> str:
    return escape(str(v), quote=True)


def _causes(report: dict) -> str:
    causes = report.get("root_causes") or []
    n = counts(causes)
    chips = "".join(f'<span class="{c}" data-cls="{c}">{n[c]} {c}</span>' for c in CLASSES)
    parts = [f'<div class="chips">{chips}</div>']
    if not causes:
        parts.append("<p>No root causes: every judged case passed.</p>")
    for cls in CLASSES:
        for c in (c for c in causes if c.get("class", "bug") == cls):
            extra = ""
            if cls == "intermittent" and c.get("rate") is not None:
                extra = f"<p><b>failure rate</b> {c['rate']:.0%} of {c.get('rate_runs')} runs of the minimal case</p>"
            if cls == "precision":
                extra = f"<p><b>bound it meets</b> {_e(c.get('bound', ''))}</p>"
            cmds = commands(c, c.get("impl") or report.get("impl", ""))
            rows = "".join(f"<tr><th>{k}</th><td><pre>{_e(v)}</pre></td></tr>" for k, v in cmds.items())
            triaged = "" if c.get("triaged", True) else ' <span class="missing">untriaged</span>'
            parts.append(
                f'<div class="cause {cls}"><b>{_e(cls)}</b> · {_e(c["kind"])} · {len(c.get("findings", []))} '
                f"findings{triaged}<p><b>trigger</b> {_e(c['trigger'])}</p>"
                f"<p><b>minimal case</b> <code>{_e(c.get('minimal_case') or '(see the repro file)')}</code></p>"
                f"{extra}<table>{rows}</table></div>"
            )
    return "".join(parts)


def _bars(values: list[tuple[str, int]], red_from: int | None = None, width: int = 620) -> str:
    """A horizontal-axis bar chart in SVG: one bar per (label, count)."""
    if not values:
        return "<p class=small>no data</p>"
    top = max(v for _, v in values) or 1
    bw = max(8, min(40, (width - 40) // len(values)))
    h = 150
    out = [f'<svg width="{bw * len(values) + 50}" height="{h + 60}" role="img">']
    for i, (label, v) in enumerate(values):
        bh = int((h - 10) * v / top)
        x = 40 + i * bw
        color = "#d0463c" if red_from is not None and i >= red_from else "#4a78c2"
        out.append(
            f'<rect x="{x}" y="{h - bh}" width="{bw - 2}" height="{bh}" fill="{color}">'
            f"<title>{_e(label)}: {v}</title></rect>"
        )
        if v:
            out.append(f'<text x="{x}" y="{h - bh - 2}">{v}</text>')
        out.append(f'<text x="{x + 3}" y="{h + 6}" transform="rotate(60 {x + 3} {h + 6})">{_e(label)}</text>')
    out.append(f'<line x1="38" y1="{h}" x2="{40 + bw * len(values)}" y2="{h}" stroke="#333"/></svg>')
    return "".join(out)


def _ratios(report: dict) -> str:
    hist = (report.get("coverage") or {}).get("ratio_histogram") or {}
    if not hist:
        return "<p class=small>no values judged yet</p>"
    parts = ["<p class=small>worst |error| / bound per judged case (passing and mismatching); red: above the bound</p>"]
    first_bad = RATIO_BINS.index("2^0")
    for dtype, bins in hist.items():
        values = [(b, bins.get(b, 0)) for b in RATIO_BINS]
        parts.append(f"<h3>{_e(dtype)}</h3>{_bars(values, red_from=first_bad)}")
    return "".join(parts)


def _heat(report: dict) -> str:
    knobs = (report.get("coverage") or {}).get("knobs") or {}
    if not knobs:
        return "<p class=small>no cases yet</p>"
    rows = []
    for name, values in knobs.items():
        total = sum(values.values()) or 1
        cells = []
        for v, n in sorted(values.items(), key=lambda kv: -kv[1]):
            share = n / total
            bg = f"rgba(74,120,194,{0.12 + 0.88 * share:.2f})"
            fg = "#fff" if share > 0.5 else "#123"
            cells.append(
                f'<td style="background:{bg};color:{fg}" title="{_e(name)}={_e(v)}: {n} cases">{_e(v)}<br>{n}</td>'
            )
        rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    return f'<table class="heat">{"".join(rows)}</table>'


def _edges(report: dict) -> str:
    cov = report.get("coverage") or {}
    edges, first = cov.get("edges") or {}, cov.get("first_reached") or {}
    unreachable = cov.get("unreachable_edges") or []
    rows = []
    for e in REQUIRED_EDGES:
        n = edges.get(e, 0)
        cls = "" if n else ' class="small"' if e in unreachable else ' class="missing"'
        rows.append(f"<tr><td{cls}>{e}</td><td>{n}</td><td>{first.get(e, '')}</td></tr>")
    until = cov.get("cases_until_every_edge")
    head = f"<p>every required edge it can reach reached after {until} cases</p>" if until else ""
    missing = [e for e in cov.get("missing_edges") or [] if e not in unreachable]
    if missing:
        head += f'<p class="missing">never reached: {_e(", ".join(missing))}</p>'
    if unreachable:
        head += f"<p>this implementation cannot reach: {_e(', '.join(unreachable))}</p>"
    return head + f"<table><tr><th>edge</th><th>cases</th><th>first reached at case</th></tr>{''.join(rows)}</table>"


def _branches(report: dict) -> str:
    b = report.get("branches")
    if not b:
        return "<p class=small>the implementation records no dispatch branches (report key <code>branches</code>)</p>"
    items = b.items() if isinstance(b, dict) else ((x, "") for x in b)
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in items)
    return f"<table><tr><th>branch</th><th>reached</th></tr>{rows}</table>"


def _timeline(report: dict) -> str:
    pts = (report.get("coverage") or {}).get("timeline") or []
    if len(pts) < 2:
        return f"<p class=small>{report.get('cases_per_s', 0)} cases/s overall</p>"
    rates = []
    for (t0, c0), (t1, c1) in zip(pts, pts[1:], strict=False):
        if t1 > t0:
            rates.append((f"{t1:.0f}s", round((c1 - c0) / (t1 - t0), 2)))
    w, h = 620, 160
    tmax, cmax = max(p[0] for p in pts) or 1, max(p[1] for p in pts) or 1
    line = " ".join(f"{40 + (w - 50) * t / tmax:.1f},{h - (h - 20) * c / cmax:.1f}" for t, c in pts)
    svg = (
        f'<svg width="{w}" height="{h + 20}" role="img"><polyline points="{line}" fill="none" stroke="#4a78c2" '
        f'stroke-width="2"/><line x1="40" y1="{h}" x2="{w}" y2="{h}" stroke="#333"/>'
        f'<text x="42" y="14">{cmax} cases</text><text x="{w - 60}" y="{h + 14}">{tmax:.0f} s</text></svg>'
    )
    return f"<p>cumulative cases over time; {report.get('cases_per_s', 0)} cases/s overall</p>{svg}" + (
        f"<p>cases/s per interval</p>{_bars(rates)}" if rates else ""
    )


def _kv(d: dict) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.items()) + "</table>"


def render_html(report: dict) -> str:
    causes = report.get("root_causes") or []
    n = counts(causes)
    title = f"moe-lora-fuzz · {report.get('impl', '')} · {report.get('device', '')}"
    meta = (
        f"campaign {_e(report.get('campaign', ''))} · seed {_e(report.get('seed', ''))} · profile "
        f"{_e(report.get('profile', ''))} · {report.get('cases', 0)} cases in {report.get('elapsed_s', 0)} s"
        + (f" · <b>interrupted by {_e(report['interrupted'])}</b>" if report.get("interrupted") else "")
    )
    summary = ", ".join(f"{v} {k}" for k, v in n.items())
    sections = [
        ("Root causes", _causes(report)),
        ("Error-to-bound ratio per dtype", _ratios(report)),
        ("Coverage: knob by knob", _heat(report)),
        ("Required edges", _edges(report)),
        ("Dispatch branches", _branches(report)),
        ("Cases per second over time", _timeline(report)),
        ("Triage", _kv(report.get("triage") or {})),
    ]
    for key in ("steering", "corpus"):
        if report.get(key):
            body = report[key]
            files = body.get("files") if isinstance(body, dict) else None
            table = _kv({k: v for k, v in body.items() if k != "files"})
            if files:
                table += (
                    "<table>"
                    + "".join(
                        f"<tr><td>{'still fails' if f['still_fails'] else 'passes'}</td><td>{_e(f['repro'])}</td></tr>"
                        for f in files
                    )
                    + "</table>"
                )
            sections.append((key.capitalize(), table))
    body = "".join(f"<h2>{t}</h2>{s}" for t, s in sections)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'><link rel=icon href='data:,'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{_e(title)}</h1><div class=meta>{meta}</div><p><b>{len(causes)} root causes</b>: {summary}</p>"
        f"{body}<script>{SCRIPT}</script></body></html>\n"
    )
