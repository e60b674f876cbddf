"""The audit as tables (the CLI's rich tables, the flow's Prefect markdown artifact) and as one
self-contained HTML file with inline SVG plots that opens offline (`prefcurate audit --html`).

The tables are built once, here, and each output only renders them.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from prefcurate.audit.flags import FLAGS
from prefcurate.store import Store


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple]


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def interval(ci) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


# Counts in the bias sections that are not metrics of their own, and the metrics whose n has its own name.
COUNTS = {"n", "n_opener_pairs", "n_flips", "first_twice", "second_twice"}
N_OF = {"opener_win_rate": "n_opener_pairs", "first_position_flip_share": "n_flips"}


def pvalue(p: float | None) -> str:
    return "" if p is None else f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def bias_table(metrics: dict) -> Table:
    """Each bias metric as a row: value, 95% interval, n, and the prompts its bootstrap resampled."""
    rows = []
    for section in ("length_bias", "opener_bias", "position_bias"):
        values = metrics.get(section) or {}
        for key, value in values.items():
            if key.endswith(("_ci", "_n", "_clusters", "_se")) or key in COUNTS:
                continue
            n = values.get(f"{key}_n", values.get(N_OF.get(key, "n")))
            rows.append((f"{section}.{key}", fmt(value) or "n/a", interval(values.get(f"{key}_ci")), n,
                         values.get(f"{key}_clusters")))
    return Table("Judge bias", ["metric", "value", "95% interval", "n", "prompts"], rows)


def self_preference_table(s: dict) -> Table:
    """The judge's own family's answers: how often chosen, and how much more often than other judges say."""
    return Table("Self-preference (pairs with one side from the judge's model family)",
                 ["metric", "value", "95% interval", "n", "prompts"],
                 [("own_win_rate", fmt(s.get("own_win_rate")) or "n/a", interval(s.get("own_win_rate_ci")), s.get("n", 0),
                   s.get("own_win_rate_clusters")),
                  ("excess_win_rate", fmt(s.get("excess_win_rate")) or s.get("how", "n/a"), interval(s.get("excess_win_rate_ci")),
                   s.get("n_compared", 0), s.get("excess_win_rate_clusters"))])


# A calibration's metrics, in the order `prefcurate calibrate` and the audit show them.
CALIBRATION_METRICS = ("agreement", "kappa", "judge_p_longer", "human_p_longer", "swap_consistency")


def calibration_table(c: dict) -> Table:
    """The judge against people: each calibration metric with its interval, n and prompts."""
    title = (f"Calibration of {c['judge']} against people ({c.get('source')}, {c['n']} labelled pairs)" if c.get("n")
             else "Calibration against people")
    if not c.get("n"):
        return Table(title, ["metric", "value", "95% interval", "n", "prompts"], [("-", c.get("how", "n/a"), "", 0, "")])
    return Table(title, ["metric", "value", "95% interval", "n", "prompts"],
                 [(k, fmt(c.get(k)) or "n/a", interval(c.get(f"{k}_ci")), c.get(f"{k}_n"), c.get(f"{k}_clusters"))
                  for k in CALIBRATION_METRICS])


def reviews_table(r: dict) -> Table:
    """People's labels of the store's pairs (`prefcurate review`): the judge's agreement with them, and theirs
    with each other."""
    return Table(f"People's labels ({r.get('n_labels', 0)} labels of {r.get('n_pairs', 0)} pairs by "
                 f"{r.get('n_reviewers', 0)} reviewers)", ["metric", "value", "95% interval", "n", "prompts"],
                 [(k, fmt(r.get(k)) or "n/a", interval(r.get(f"{k}_ci")), r.get(f"{k}_n", 0), r.get(f"{k}_clusters"))
                  for k in ("judge_agreement", "reviewer_agreement")])


def checks_table(checks: dict) -> Table:
    """The rubric's verifiable checks: how many candidates, and how many chosen responses, pass each."""
    return Table("Checks (the rubric's verifiable checks)",
                 ["check", "kind", "hard", "pass rate", "95% interval", "n", "chosen pass rate", "n chosen"],
                 [(name, c["kind"], "yes" if c["hard"] else "no", fmt(c["pass_rate"]) or "n/a", interval(c["pass_rate_ci"]),
                   c["pass_rate_n"], fmt(c["chosen_pass_rate"]) or "n/a", c["chosen_pass_rate_n"])
                  for name, c in checks.items()] or [("-", "the rubric lists no checks", "", "", "", 0, "", 0)])


def audit_tables(metrics: dict) -> list[Table]:
    """Everything `prefcurate audit` prints, in order."""
    c, noise = metrics["consistency"], metrics["noise_estimate"]
    tables = [
        bias_table(metrics),
        Table("Probes", ["probe", "n", "mean shift", "flip rate", "mean score", "kappa"],
              [(k, v["n"], fmt(v.get("mean_shift")), fmt(v.get("flip_rate")), fmt(v.get("mean_score")), fmt(v.get("kappa")))
               for k, v in metrics["probes"].items()]),
        Table("Consistency", ["metric", "value", "95% interval", "n", "prompts"], [
            ("swap_consistency", fmt(c["swap_consistency"]), interval(c["swap_consistency_ci"]), c["n_swap"],
             c.get("swap_consistency_clusters")),
            ("repeat_flip_rate", fmt(c["repeat_flip_rate"]), interval(c["repeat_flip_rate_ci"]), c["n_repeat"],
             c.get("repeat_flip_rate_clusters")),
            (f"kappa ({c['kappa_method'] or 'no repeats'}, {c['repeat_source'] or '-'})", fmt(c["kappa"]), "", c["n_repeat"], ""),
            ("score_sd_mean", fmt(c["score_sd_mean"]), "", c["n_score_sd"], ""),
            ("noise_estimate", fmt(noise["rate"]), interval(noise["rate_ci"]), noise["n"], noise.get("clusters", "")),
            ("suggested label_smoothing", fmt(noise["label_smoothing"]), noise["loss_type"] or "", "", ""),
        ]),
        self_preference_table(metrics.get("self_preference") or {}),
        calibration_table(metrics.get("calibration") or {}),
        reviews_table(metrics.get("reviews") or {}),
        checks_table(metrics.get("checks") or {}),
        Table("Flags", ["flag", "stage", "pairs", "blocks snapshots"],
              [(flag, FLAGS[flag][0], n, "yes" if flag in metrics["blocking_flags"] else "no")
               for flag, n in metrics["flags"].items()]),
        Table("Gates", ["gate", "value", "95% interval", "n", "prompts", "p", "q", "MDE", "threshold", "status"],
              [(k, fmt(g["value"]), interval(g["ci"]), g["n"], g.get("clusters"), pvalue(g.get("p")), pvalue(g.get("q")),
                fmt(g.get("mde")), " ".join(f"{b} {t}" for b, t in g["threshold"].items() if t is not None),
                g["status"] + (f" (n needed ~{g['n_needed']})" if g.get("n_needed") else ""))
               for k, g in metrics["gates"].items()]),
    ]
    return tables


def verdict_line(metrics: dict) -> str:
    state = "passed" if metrics["passed"] else "FAILED"
    return (f"audit {metrics['audit_id']}: {state} ({metrics['n_inconclusive']} gate(s) inconclusive); "
            f"{metrics['n_fit']} of {metrics['n_pairs']} pairs fit for a snapshot")


def markdown(metrics: dict) -> str:
    """The audit summary as markdown (the flow's Prefect artifact)."""
    out = [f"# prefcurate audit\n\n**{verdict_line(metrics)}**\n"]
    for t in audit_tables(metrics):
        out.append(f"## {t.title}\n")
        out.append("| " + " | ".join(t.columns) + " |")
        out.append("|" + "---|" * len(t.columns))
        out.extend("| " + " | ".join(fmt(v).replace("|", "\\|") for v in r) + " |" for r in t.rows)
        out.append("")
    return "\n".join(out)


# -- HTML ------------------------------------------------------------------------------------
W, H, PAD = 560, 260, 44


def _frame(title: str, body: str, x_label: str, y_label: str) -> str:
    return f'<figure><figcaption>{html.escape(title)}</figcaption>{svg(body, x_label, y_label)}</figure>'


def svg(body: str, x_label: str, y_label: str, title: str | None = None) -> str:
    """A plot's axes around ``body``; with ``title``, a file of its own (the README's figures)."""
    own = "" if title is None else (
        f'<rect width="{W}" height="{H}" fill="white"/>'
        f'<text x="{W / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>')
    font = "" if title is None else ' font-family="sans-serif" font-size="12"'
    return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}"{font}>'
            f'{own}<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#444"/>'
            f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="#444"/>'
            f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle">{html.escape(x_label)}</text>'
            f'<text x="12" y="{H / 2}" text-anchor="middle" transform="rotate(-90 12 {H / 2})">{html.escape(y_label)}</text>'
            f'{body}</svg>')


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def bars(title: str, labels: list[str], values: list[float], y_label: str,
         cis: list[list[float] | None] | None = None, standalone: bool = False) -> str:
    """A bar chart (negative values hang below zero), with 95% interval whiskers when given; ``standalone``:
    an SVG file of its own instead of an HTML figure."""
    if not values:
        return _frame(title, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">nothing to plot</text>', "", y_label)
    whiskers = [x for ci in (cis or []) if ci for x in ci]
    lo, hi = min(0.0, *values, *whiskers), max(0.0, *values, *whiskers)
    y = _scale(lo, hi if hi > lo else lo + 1, H - PAD, 16)
    step = (W - PAD - 20) / len(values)
    body = []
    for i, (label, v) in enumerate(zip(labels, values)):
        x = PAD + 6 + i * step
        top, bottom = sorted((y(v), y(0)))
        body.append(f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{step * 0.7:.1f}" height="{max(bottom - top, 0.5):.1f}" '
                    f'fill="#4a7bb7"><title>{html.escape(label)}: {v:.4g}</title></rect>')
        if cis and cis[i]:
            cx = x + step * 0.35
            body.append(f'<line x1="{cx:.1f}" y1="{y(cis[i][0]):.1f}" x2="{cx:.1f}" y2="{y(cis[i][1]):.1f}" stroke="#222"/>')
        if len(values) <= 12:
            body.append(f'<text x="{x + step * 0.35:.1f}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">'
                        f'{html.escape(label)}</text>')
    ticks = [hi, lo] if lo == 0 or y(lo) - y(0) >= 12 else [hi]  # a low end next to zero would overprint it
    if lo < 0:  # the bars stand on zero, not on the axis
        ticks.append(0.0)
        body.append(f'<line x1="{PAD}" y1="{y(0):.1f}" x2="{W - 14}" y2="{y(0):.1f}" stroke="#888" stroke-dasharray="3,3"/>')
    body += [f'<text x="{PAD - 4}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="10">{t:.3g}</text>' for t in ticks]
    return svg("".join(body), "", y_label, title) if standalone else _frame(title, "".join(body), "", y_label)


def scatter(title: str, points: list[tuple[float, float]], x_label: str, y_label: str) -> str:
    if not points:
        return _frame(title, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">nothing to plot</text>', x_label, y_label)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x = _scale(min(xs), max(xs), PAD + 4, W - 14)
    y = _scale(min(ys), max(ys), H - PAD - 4, 14)
    dots = "".join(f'<circle class="point" cx="{x(a):.1f}" cy="{y(b):.1f}" r="2.5" fill="#b7604a" fill-opacity="0.6"/>'
                   for a, b in points)
    ticks = (f'<text x="{PAD}" y="{H - PAD + 14}" font-size="10">{min(xs):.0f}</text>'
             f'<text x="{W - 14}" y="{H - PAD + 14}" text-anchor="end" font-size="10">{max(xs):.0f}</text>'
             f'<text x="{PAD - 4}" y="{H - PAD}" text-anchor="end" font-size="10">{min(ys):.2g}</text>'
             f'<text x="{PAD - 4}" y="18" text-anchor="end" font-size="10">{max(ys):.2g}</text>')
    return _frame(title, dots + ticks, x_label, y_label)


COLOURS = ("#4a7bb7", "#b7604a", "#1b7f3b", "#7a4ab7")


def lines(title: str, labels: list[str], series: dict[str, list[float | None]], y_label: str, x_label: str,
          cis: dict[str, list] | None = None, levels: dict[str, float] | None = None) -> str:
    """Lines over evenly spaced ``labels`` (None: a gap), with 95% interval whiskers for the series in
    ``cis`` and dashed horizontal ``levels``, each named in a legend."""
    values = [v for vs in series.values() for v in vs if v is not None] + list((levels or {}).values())
    if not labels or not values:
        return _frame(title, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">nothing to plot</text>', x_label, y_label)
    whiskers = [x for ci in (cis or {}).values() for pair in ci if pair for x in pair]
    lo, hi = min(0.0, *values, *whiskers), max(*values, *whiskers)
    legend_height = 13 * (len(series) + len(levels or {}))  # the legend stands above the highest point
    y = _scale(lo, hi if hi > lo else lo + 1, H - PAD, 24 + legend_height)
    x = _scale(0, max(len(labels) - 1, 1), PAD + 24, W - 40)
    body, legend = [], []
    for k, (name, vs) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = [(x(i), y(v)) for i, v in enumerate(vs) if v is not None]
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                    + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        body += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>' for a, b in pts]
        for i, ci in enumerate((cis or {}).get(name) or []):
            if ci:
                body.append(f'<line x1="{x(i):.1f}" y1="{y(ci[0]):.1f}" x2="{x(i):.1f}" y2="{y(ci[1]):.1f}" stroke="{colour}"/>')
        legend.append((name, colour, ""))
    for k, (name, level) in enumerate((levels or {}).items()):
        colour = COLOURS[(len(series) + k) % len(COLOURS)]
        body.append(f'<line x1="{PAD}" y1="{y(level):.1f}" x2="{W - 14}" y2="{y(level):.1f}" stroke="{colour}" '
                    f'stroke-dasharray="5,4"/>')
        legend.append((name, colour, ' stroke-dasharray="5,4"'))
    body += [f'<text x="{x(i):.1f}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">{html.escape(label)}</text>'
             for i, label in enumerate(labels)]
    body += [f'<text x="{PAD - 4}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="10">{t:.3g}</text>' for t in (lo, hi)]
    for k, (name, colour, dash) in enumerate(legend):
        body.append(f'<line x1="{PAD + 10}" y1="{18 + 13 * k}" x2="{PAD + 30}" y2="{18 + 13 * k}" stroke="{colour}" '
                    f'stroke-width="2"{dash}/><text x="{PAD + 34}" y="{22 + 13 * k}" font-size="10">{html.escape(name)}</text>')
    return _frame(title, "".join(body), x_label, y_label)


# The latest best-of-n curve in the store, and the latest GRPO run's test pass rates (sampled once: N = 1).
LATEST_CURVE_SQL = "SELECT * FROM v_best_of_n WHERE run_id = (SELECT arg_max(run_id, created_at) FROM best_of_n)"
LATEST_GRPO_SQL = "SELECT * FROM v_grpo_pass_rates ORDER BY finished_at DESC LIMIT 1"


def scaling(store: Store) -> dict:
    """More inference against more training: the latest best-of-n curve and the latest GRPO run."""
    grpo = store.query(LATEST_GRPO_SQL)
    return {"curve": store.query(LATEST_CURVE_SQL), "grpo": grpo[0] if grpo else None}


def scaling_table(s: dict) -> Table:
    """The best-of-n curve's rows, then the GRPO run's pass rates at N = 1 before and after training."""
    rows = [(f"best of {p['n']} ({p['split'] or 'all'} prompts)", p["prompts"], fmt(p["pass_rate"]) or "n/a",
             interval(p["pass_rate_ci"]), fmt(p["majority_pass_rate"]) or "n/a", fmt(p["mean_score"]) or "n/a")
            for p in s["curve"]]
    if g := s["grpo"]:
        rows += [("base policy, N = 1 (GRPO's test prompts)", g["prompts"], fmt(g["base_pass_rate"]), "", "", ""),
                 (f"GRPO {g['train_run_id']} ({g['steps']} steps, kept: {g['kept']}), N = 1", g["prompts"],
                  fmt(g["pass_rate"]), interval(g["pass_rate_ci"]), "", ""),
                 ("GRPO's gain over the base", g["prompts"], fmt(g["gain"]), interval(g["gain_ci"]), "", "")]
    return Table("Best of N against training (check pass rate of the answer kept)",
                 ["selection", "prompts", "pass rate", "95% interval", "majority answer", "mean judge score"],
                 rows or [("-", "no best-of-n curve or GRPO run in this store", "", "", "", "")])


def scaling_plot(s: dict) -> str:
    curve, g = s["curve"], s["grpo"]
    levels = {} if not g or g["pass_rate"] is None else {
        f"GRPO, N = 1 ({g['steps']} steps)": g["pass_rate"], "base policy, N = 1": g["base_pass_rate"]}
    return lines("Best of N: pass rate of the answer kept, against GRPO at N = 1", [str(p["n"]) for p in curve],
                 {"judge's best of N": [p["pass_rate"] for p in curve],
                  "majority answer of N": [p["majority_pass_rate"] for p in curve]},
                 "pass rate", "N (candidates per prompt)", cis={"judge's best of N": [p["pass_rate_ci"] for p in curve]},
                 levels=levels)


# Mean plain pointwise score and length of candidates, a fixed sample for the scatter plot.
SCORE_LENGTH_SQL = """
SELECT any_value(candidate_chars) AS chars, avg(overall) AS score
FROM v_judgments WHERE status = 'ok' AND mode = 'pointwise'
GROUP BY judge, rubric_hash, candidate_id
ORDER BY hash(candidate_id) LIMIT ?
"""


def score_length_points(store: Store, limit: int = 2000) -> list[tuple[float, float]]:
    return [(r["chars"], r["score"]) for r in store.query(SCORE_LENGTH_SQL, [limit])]


STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
th{background:#f2f2f2}figure{display:inline-block;margin:0 1rem 1rem 0}figcaption{font-weight:600}
.failed{color:#b00020;font-weight:600}.passed{color:#1b7f3b}svg text{font-size:11px}"""


def render_html(metrics: dict, points: list[tuple[float, float]], scaled: dict | None = None) -> str:
    """One HTML file: the verdict, the plots and every table; no scripts, no external resources.
    ``scaled``: the best-of-n curve and GRPO run to set side by side (``scaling``), when there are any."""
    hist = metrics["margins"]["histogram"]
    probes = [(k, v["mean_shift"], v.get("mean_shift_ci")) for k, v in metrics["probes"].items()
              if v.get("mean_shift") is not None]
    flips = [(k, v["flip_rate"], v.get("flip_rate_ci")) for k, v in metrics["probes"].items() if v.get("flip_rate") is not None]
    plots = [
        scatter("Score vs length (plain pointwise judgments)", points, "characters", "mean score"),
        bars("Margin histogram (pairs)", [f"{e:.2g}" for e in hist["edges"][:-1]] if hist else [],
             [float(c) for c in hist["counts"]] if hist else [], "pairs"),
        bars("Probe shifts: mean score change of the perturbed rejected response", [p[0] for p in probes],
             [p[1] for p in probes], "score shift", [p[2] for p in probes]),
        bars("Probe flip rates", [p[0] for p in flips], [p[1] for p in flips], "flip rate", [p[2] for p in flips]),
        bars("Flags per stage", list(metrics["flags_by_stage"]), [float(v) for v in metrics["flags_by_stage"].values()],
             "flagged pairs"),
        bars("Flags", list(metrics["flags"]), [float(v) for v in metrics["flags"].values()], "pairs"),
    ]
    shown = audit_tables(metrics)
    if scaled and (scaled["curve"] or scaled["grpo"]):
        plots.append(scaling_plot(scaled))
        shown.append(scaling_table(scaled))
    tables = []
    for t in shown:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in t.rows)
        tables.append(f"<h2>{html.escape(t.title)}</h2><table><tr>{head}</tr>{body}</table>")
    verdict = "passed" if metrics["passed"] else "failed"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>prefcurate audit {metrics["audit_id"]}</title>'
            f'<style>{STYLE}</style></head><body><h1>prefcurate audit</h1>'
            f'<p class="{verdict}">{html.escape(verdict_line(metrics))}</p>'
            f'<section id="plots">{"".join(plots)}</section>{"".join(tables)}</body></html>\n')


def _cell(value) -> str:
    text = fmt(value)
    cls = f' class="{text.split()[0]}"' if text.startswith(("failed", "passed")) else ""
    return f"<td{cls}>{html.escape(text)}</td>"
