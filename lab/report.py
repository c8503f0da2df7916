"""One offline page per run or sweep: ``python -m experiments.report RUN_OR_SWEEP_DIR``.

Writes ``report.html`` into the directory: one self-contained file (figures embedded as PNG
data, no network, no external script) with, from the top: the warnings the run raised
(non-convergence, wipe-outs, data gaps), the config and provenance (versions, backend,
devices, wall time), every figure, and every table behind them (click a column head to sort).
For a sweep directory (one with ``.sweep.json`` or point directories) it first rebuilds the
sweep table (``lab.sweep.write_table``) and adds the cross-point figures (the
natural table's main figures against the row key, one line per point) and the table of
points with their status.
"""

from __future__ import annotations

import base64
import html
import io
import json
import pathlib
import sys

import numpy as np
import pandas as pd

__all__ = ["write_report", "main"]

MAX_ROWS = 500  # rows of a table shown on the page; the file beside it holds them all

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;
text-align:right;white-space:nowrap}th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}
.scroll{max-height:420px;overflow:auto;border:1px solid #eee}.warn{background:#fff3cd;border:1px solid #e0c060;
padding:.5em 1em}.ok{color:#2a7a2a}pre{background:#f8f8f8;padding:.5em;overflow:auto;font-size:12px}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
"""

# Sort a table by a clicked column head; count the figures the browser decoded (a test reads it).
_JS = """
document.querySelectorAll('th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),i=Array.prototype.indexOf.call(th.parentNode.children,th),b=t.tBodies[0];
var rows=Array.prototype.slice.call(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
rows.sort(function(a,c){var x=a.cells[i].textContent,y=c.cells[i].textContent,p=parseFloat(x),q=parseFloat(y);
var r=(isNaN(p)||isNaN(q))?x.localeCompare(y):p-q;return asc?r:-r});rows.forEach(function(r){b.appendChild(r)})})});
function count(){var imgs=document.images,n=0;for(var k=0;k<imgs.length;k++){if(imgs[k].complete&&
imgs[k].naturalWidth>0)n++}document.body.setAttribute('data-figures-rendered',n);
document.body.setAttribute('data-tables',document.querySelectorAll('table.data').length)}
window.addEventListener('load',count);count();
"""


def _table_html(frame: pd.DataFrame, name: str) -> str:
    shown = frame.head(MAX_ROWS)
    note = (f"<p>{len(frame)} rows; the first {MAX_ROWS} shown, all in <code>{html.escape(name)}</code>.</p>"
            if len(frame) > MAX_ROWS else f"<p>{len(frame)} rows, from <code>{html.escape(name)}</code>.</p>")
    body = shown.to_html(index=False, classes="data", border=0, na_rep="", float_format=lambda x: f"{x:.6g}")
    return f'{note}<div class="scroll">{body}</div>'


def _img(data: bytes, caption: str) -> str:
    b64 = base64.b64encode(data).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _fig_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _warnings(summary: dict) -> list[str]:
    """The run's warnings: its ``warnings`` lists, and every note or status that says a figure
    is not what it seems (not converged, pinned, wiped out)."""
    out = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("warnings", "notes") and isinstance(v, list):
                    out.extend(str(x) for x in v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and "NOT CONVERGED" in node and node not in out:
            out.append(node)

    walk(summary)
    return list(dict.fromkeys(out))


def _run_sections(run_dir: pathlib.Path, level: str = "h2") -> tuple[list[str], list[str]]:
    """The HTML of one run directory (config, provenance, figures, tables), and its warnings."""
    parts, warnings = [], []
    summary = {}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        warnings = _warnings(summary)
    cfg = run_dir / ".hydra" / "config.yaml"
    if cfg.exists():
        parts.append(f"<{level}>Config</{level}><pre>{html.escape(cfg.read_text())}</pre>")
    run = summary.get("run") or {}
    if run:
        rows = {"wall time (s)": f"{run.get('wall_seconds', float('nan')):.1f}", "backend": run.get("backend"),
                "devices": run.get("device_count"), "processes": run.get("process_count"),
                "python": run.get("python"), **{k: v for k, v in (run.get("versions") or {}).items() if v}}
        parts.append(f"<{level}>Provenance</{level}>" + pd.DataFrame({"": list(rows), "value": list(rows.values())})
                     .to_html(index=False, border=0))
    pngs = sorted(run_dir.glob("*.png"))
    if pngs:
        parts.append(f"<{level}>Figures</{level}>" + "".join(_img(p.read_bytes(), p.name) for p in pngs))
    csvs = sorted(run_dir.glob("*.csv"))
    if csvs:
        parts.append(f"<{level}>Tables</{level}>")
        for p in csvs:
            parts.append(f"<h3>{html.escape(p.name)}</h3>" + _table_html(pd.read_csv(p), p.name))
    return parts, warnings


def _cross_point_figures(frame: pd.DataFrame, experiment: str) -> list[bytes]:
    """Figures across the points of a sweep: for the ruin surface, ruin probability at the
    Kelly multiple nearest 1 and P(drawdown) against the row key, one line per point; for
    the others, the main summary figures per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[frame["status"].isin(["done", "skipped"])]
    if done.empty:
        return []
    figs = []
    axis = f"row.{done['summary.axis'].iloc[0]}" if "summary.axis" in done else None  # the surface's row key
    if experiment == "ruin_surface" and "row.kelly_multiple" in done and axis in done:
        multiples = np.sort(done["row.kelly_multiple"].unique())
        c = float(multiples[np.argmin(np.abs(multiples - 1.0))])
        opt = [k for k in done.columns if k.startswith("summary.growth_optimal_multiple.")
               and not k.startswith("summary.growth_optimal_multiple_half")]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
        for point, g in done.groupby("point", sort=True):
            near = g[g["row.kelly_multiple"] == c].sort_values(axis)
            axes[0].plot(near[axis], near["row.ruin_probability"], "o-", label=point)
            axes[1].plot(near[axis], near["row.p_drawdown"], "o-", label=point)
            if opt:
                xs = [float(k.rpartition("multiple.")[2]) for k in opt]
                order = np.argsort(xs)
                axes[2].plot(np.asarray(xs)[order], g[opt].iloc[0].to_numpy(dtype=float)[order], "o-", label=point)
        values = np.sort(done[axis].unique())
        for ax, what in zip(axes, (f"P(ruin) at Kelly multiple c = {c:.3g}",
                                   f"P(max drawdown > level) at c = {c:.3g}",
                                   "growth-optimal Kelly multiple c")):
            ax.set_xlabel(axis[4:])
            ax.set_ylabel(what)
            if values.min() > 0 and values.max() / values.min() > 8:
                ax.set_xscale("log")
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.legend(fontsize=7)
        fig.suptitle("ruin probability across the sweep's points (one line per point)")
        fig.tight_layout()
        figs.append(_fig_bytes(fig))
    scalars = [c for c in done.columns if c.startswith("summary.") and pd.api.types.is_numeric_dtype(done[c])
               and done[c].notna().any() and not c.endswith(("seconds", "per_second", ".seed"))]
    per_point = done.groupby("point", sort=True)[scalars].first() if scalars else pd.DataFrame()
    keep = [c for c in per_point.columns if per_point[c].nunique() > 1][:8]
    if keep:
        cols = min(4, len(keep))
        rows = -(-len(keep) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, (1.2 + 0.35 * len(per_point)) * rows),
                                 squeeze=False)
        y = np.arange(len(per_point))
        for k, ax in enumerate(axes.ravel()):
            if k >= len(keep):
                ax.set_visible(False)
                continue
            col = keep[k]
            ax.barh(y, per_point[col].to_numpy(dtype=float))
            ax.set_yticks(y, per_point.index if k % cols == 0 else [""] * len(y), fontsize=8)
            ax.set_title(col.removeprefix("summary."), fontsize=9)
        fig.suptitle("summary figures per point (those that differ between points)")
        fig.tight_layout()
        figs.append(_fig_bytes(fig))
    return figs


def _page(title: str, warnings: list[str], body: list[str]) -> str:
    warn = ("<div class='warn'><b>Warnings</b><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
            + "</ul></div>") if warnings else "<p class='ok'>No warnings were raised.</p>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{warn}{''.join(body)}"
            f"<script>{_JS}</script></body></html>\n")


def is_sweep(directory: pathlib.Path) -> bool:
    from lab.sweep import STATE

    return (directory / STATE).exists() or any((p / ".hydra").is_dir() for p in directory.iterdir() if p.is_dir())


def write_report(directory) -> pathlib.Path:
    """``report.html`` for a run or a sweep directory; returns its path."""
    from sim.outputs import atomic_write

    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such run or sweep directory")
    if is_sweep(directory):
        from lab.sweep import write_table

        frame = write_table(directory)
        experiment = next((json.loads((p / "summary.json").read_text()).get("experiment")
                           for p in sorted(directory.iterdir()) if (p / "summary.json").exists()), "sweep")
        counts = frame.drop_duplicates("point")["status"].value_counts().to_dict() if "status" in frame else {}
        body = [f"<p>{len(frame.drop_duplicates('point'))} points: " + ", ".join(f"{v} {k}" for k, v in counts.items())
                + ". Table of all points: <code>sweep.parquet</code> / <code>sweep.csv</code>.</p>"]
        body.append("<h2>Across points</h2>" + "".join(
            _img(b, "across the sweep's points") for b in _cross_point_figures(frame, experiment)))
        body.append("<h2>Points</h2>" + _table_html(frame, "sweep.csv"))
        warnings = [f"{r['point'] or 'a point'}: {r['status']}: {r['error']}" for _, r in
                    frame.drop_duplicates("point").iterrows() if r["status"] in ("failed", "incomplete")]
        for p in sorted(q for q in directory.iterdir() if (q / ".hydra").is_dir()):
            parts, w = _run_sections(p, level="h3")
            warnings += [f"{p.name}: {x}" for x in w]
            body.append(f"<h2>Point {html.escape(p.name)}</h2>" + "".join(parts))
        page = _page(f"{experiment} sweep: {directory.name}", warnings, body)
    else:
        parts, warnings = _run_sections(directory)
        summary = directory / "summary.json"
        name = json.loads(summary.read_text()).get("experiment", "run") if summary.exists() else "run"
        page = _page(f"{name}: {directory.name}", warnings, parts)
    return atomic_write(directory / "report.html", lambda p: pathlib.Path(p).write_text(page))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m experiments.report RUN_OR_SWEEP_DIR   (writes report.html there)", file=sys.stderr)
        return 2
    try:
        path = write_report(argv[0])
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
