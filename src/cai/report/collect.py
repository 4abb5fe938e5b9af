"""Read what :func:`cai.report.discover.discover` found into the report's model: plain dicts and
numbers, plus ready SVG charts, that the template lays out. No HTML is written here."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

from cai.report import examples as ex
from cai.report import svg
from cai.report.baseline import before_after
from cai.report.discover import Found

STAGE_ORDER = ("critique", "sft", "label", "reward", "ppo", "rloo", "dpo", "eval", "redteam", "report")
CURVES = ("loss", "policy_loss", "reward", "kl", "length")  # drawn first; the rest fold away
NO_GRADER = {"grader", "hhh", "truthfulqa", "ifeval"}  # tasks scored without a grader, or measuring one
NOT_CURVES = {"step", "epoch", "time", "timestamp", "wall", "global_step"}


def _pick(d: dict[str, Any], *names: str) -> Any:
    for n in names:
        if d.get(n) not in (None, ""):
            return d[n]
    return None


def _rel(path: Path, roots: list[Path]) -> str:
    for r in roots:
        base = r if r.is_dir() else r.parent
        try:
            rel = str(path.resolve().relative_to(base.resolve()))
            return path.resolve().name if rel == "." else rel
        except ValueError:
            continue
    return str(path)


def _seconds(start: Any, end: Any) -> float | None:
    try:
        a = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = dt.datetime.fromisoformat(str(end).replace("Z", "+00:00"))
        return (b - a).total_seconds()
    except (TypeError, ValueError):
        return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# -- training --------------------------------------------------------------------------------------

def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a run killed mid-write leaves a torn last line
            if isinstance(rec, dict):
                rows.append(rec)
    return rows


def training_run(folder: Path, roots: list[Path]) -> dict[str, Any]:
    info = json.loads((folder / "cai_run.json").read_text(encoding="utf-8"))
    rows = read_metrics(folder / "metrics.jsonl")
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and k not in NOT_CURVES and _num(v) is not None]
    stage = str(_pick(info, "stage", "command", "name") or "train")
    charts, more = [], []
    for k in [k for k in CURVES if k in keys] + [k for k in keys if k not in CURVES]:
        pts = [(r.get("step", i), _num(r.get(k))) for i, r in enumerate(rows)]
        pts = [(float(x), y) for x, y in pts if y is not None and _num(x) is not None]
        chart = svg.line_chart([(k, [p[0] for p in pts], [p[1] for p in pts])], title=k, ylabel="")
        (charts if k in CURVES else more).append(chart)
    start, end = _pick(info, "start_time", "started", "start", "started_at"), _pick(info, "end_time", "ended", "end",
                                                                                         "finished", "ended_at")
    final = _pick(info, "final_metrics", "metrics") or {}
    return {"name": _rel(folder, roots), "stage": stage, "status": str(_pick(info, "status") or "?"),
            "base_model": str(_pick(info, "base_model", "model", "policy") or ""), "started": start, "ended": end,
            "seconds": _pick(info, "seconds", "duration_s") or _seconds(start, end),
            "final": {k: v for k, v in final.items() if _num(v) is not None} if isinstance(final, dict) else {},
            "steps": len(rows), "charts": charts, "more_charts": more,
            "config": info.get("config") if isinstance(info.get("config"), dict) else {},
            "data": [_data_line(d) for d in (info.get("data") or info.get("data_files") or [])]}


def _data_line(d: Any) -> str:
    """One training input as "role: path (sha256 prefix)"."""
    if not isinstance(d, dict):
        return str(d)
    path = _pick(d, "source", "path", "file") or "?"
    role = f"{d['role']}: " if d.get("role") else ""
    sha = f" (sha256 {str(d['sha256'])[:12]})" if d.get("sha256") else ""
    return f"{role}{path}{sha}"


# -- evals -----------------------------------------------------------------------------------------

def _metric(m: Any) -> dict[str, Any]:
    return {"value": _num(m.value), "ci": list(m.ci) if m.ci else None, "n": m.n,
            "higher_is_better": m.higher_is_better, "help": m.help}


def eval_result(path: Path, roots: list[Path], max_examples: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from cai.evals.results import read_result

    r = read_result(path)
    src = _rel(path, roots)
    items: list[dict[str, Any]] = []
    total = 0
    if r.examples:
        ex_path = (path.parent / r.examples)
        if ex_path.exists():
            from cai.store import read_records

            for rec in read_records(ex_path):
                item = ex.eval_item(rec, src, r.task, r.model)
                if item is None:
                    continue
                total += 1
                if len(items) < max_examples:
                    items.append(item)
    grader = r.grader or {}
    out = {"path": src, "task": r.task, "model": r.model or "", "grader": grader.get("name") or "",
           "grader_note": agreement_text(grader.get("agreement")) if grader and r.task not in NO_GRADER else "",
           "metrics": {k: _metric(m) for k, m in r.metrics.items()},
           "breakdown": {name: {g: {k: _metric(m) for k, m in ms.items()} for g, ms in groups.items()}
                         for name, groups in r.breakdown.items()},
           "examples_total": total, "examples_shown": len(items),
           "failures": sum(1 for i in items if i.get("failed")), "time": (r.provenance or {}).get("time"),
           "mtime": os.path.getmtime(path)}
    return out, items


def agreement_text(agreement: Any) -> str:
    """A grader's measured agreement with human labels, in one line: "accuracy 0.92 [0.90, 0.95],
    κ 0.84 [0.79, 0.89], n=450". Values may be numbers or metrics ({value, ci})."""
    if not isinstance(agreement, dict):
        return "agreement with human labels not measured"
    parts = []
    for key, name in (("accuracy", "accuracy"), ("kappa", "κ")):
        v = agreement.get(key)
        value, ci = (v.get("value"), v.get("ci")) if isinstance(v, dict) else (v, None)
        if _num(value) is None:
            continue
        parts.append(f"{name} {value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and len(ci) == 2 else ""))
    if agreement.get("n"):
        parts.append(f"n={agreement['n']}")
    return ", ".join(parts) or "agreement with human labels not measured"


def _choose(metrics: dict[str, dict[str, Any]], prefer: tuple[str, ...]) -> tuple[str, dict[str, Any]] | None:
    for want in prefer:
        for k, m in metrics.items():
            if want in k and m["value"] is not None:
                return k, m
    for k, m in metrics.items():
        if m["value"] is not None and m.get("higher_is_better") is not False:
            return k, m
    return None


def tradeoff(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One point per model: harmlessness (y) against helpfulness (x), like Figure 2 of the CAI
    paper. Helpfulness is the helpfulness task's win rate, or else IFEval's prompt-level strict
    accuracy (instructions followed, no judge), or else XSTest compliance on safe prompts (the
    share of safe requests answered); the latest result per (task, model) counts."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r["mtime"]):
        latest[(r["task"], r["model"])] = r
    models = list(dict.fromkeys(r["model"] for r in results))
    points, xname, yname = [], "", ""
    for model in models:
        harm = latest.get(("harmlessness", model))
        helpful = latest.get(("helpfulness", model))
        x_src = _choose(helpful["metrics"], ("win",)) if helpful else None
        if x_src is None and latest.get(("ifeval", model)):
            x_src = _choose(latest[("ifeval", model)]["metrics"], ("prompt_strict",))
        if x_src is None and latest.get(("over-refusal", model)):
            x_src = _choose(latest[("over-refusal", model)]["metrics"], ("compliance",))
        y_src = _choose(harm["metrics"], ("harmless",)) if harm else None
        if not (x_src and y_src):
            continue
        xname, yname = x_src[0], y_src[0]
        points.append({"label": model.removeprefix("hf:").removeprefix("vllm:").rstrip("/").split("/")[-1] or model,
                       "model": model, "x": x_src[1]["value"], "y": y_src[1]["value"],
                       "x_ci": x_src[1]["ci"], "y_ci": y_src[1]["ci"], "x_metric": xname, "y_metric": yname})
    if not points:
        return None
    chart = svg.scatter_ci(points, title="Helpfulness against harmlessness", xlabel=f"helpfulness ({xname})",
                           ylabel=f"harmlessness ({yname})", show_title=False)
    return {"svg": chart, "points": points}


def redteam_view(r: dict[str, Any]) -> dict[str, Any]:
    charts = []
    for name, groups in r["breakdown"].items():
        rows = []
        for g, ms in groups.items():
            c = _choose(ms, ("asr", "success"))
            if c:
                rows.append({"label": g, "value": c[1]["value"], "ci": c[1]["ci"], "n": c[1]["n"]})
        rows.sort(key=lambda row: -row["value"])
        if rows:
            metric = _choose(next(iter(groups.values())), ("asr", "success"))
            charts.append(svg.bars_ci(rows, title=f"{metric[0] if metric else 'rate'} {name.replace('_', ' ')}",
                                      xlabel="attack success rate (95% CI)"))
    return {**r, "charts": charts}


# -- data files ------------------------------------------------------------------------------------

def filter_counts(records: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> dict[str, Any] | None:
    from cai.data_stats import _filter_summary

    return _filter_summary(records, dropped)


def critique_file(path: Path, roots: list[Path], max_examples: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from cai.critique.records import dropped_path
    from cai.data_stats import summarize
    from cai.store import read_records

    records = read_records(path)
    src = _rel(path, roots)
    # `cai critique --filter` sets aside the records whose revisions all failed the filter, with why.
    dropped_file = dropped_path(path)
    dropped = read_records(dropped_file) if dropped_file.is_file() else []
    if not records:
        return {"path": src, "summary": None, "filter": filter_counts([], dropped)}, \
            [ex.critique_item(r, src) for r in dropped[:max_examples]]
    summary = summarize(records, examples=0, dropped=dropped)
    rows = []
    for pid, c in summary["principles"].items():
        done = c.get("steps", 0) - c.get("stopped", 0)
        rows.append({"principle": pid, "steps": c.get("steps", 0), "changed": c.get("changed", 0),
                     "changed_rate": (c.get("changed", 0) / done) if done else None, "empty": c.get("empty", 0),
                     "stopped": c.get("stopped", 0)})
    prov = records[0].get("provenance") or {}
    # Dropped records share the budget, at least a tenth of it, so that some show up beside the kept.
    n_dropped = min(len(dropped), max(max_examples // 10, max_examples - len(records)))
    items = [ex.critique_item(r, src) for r in records[:max_examples - n_dropped]]
    return ({"path": src, "summary": summary, "principles": rows, "time": prov.get("time"),
             "models": prov.get("models") or {}, "constitution": (prov.get("constitution") or {}).get("name"),
             "filter": summary.get("filter")},
            items + [ex.critique_item(r, src) for r in dropped[:n_dropped]])


def preference_file(path: Path, roots: list[Path], max_examples: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from cai.data_stats import summarize
    from cai.store import read_records

    records = read_records(path)
    src = _rel(path, roots)
    if not records:
        return {"path": src, "summary": None}, []
    summary = summarize(records, examples=0)
    probs = [float(r["p_chosen"]) for r in records if _num(r.get("p_chosen")) is not None]
    # The labeller names the winner "chosen", so p_chosen is >= 0.5 unless ties or CoT clamps say
    # otherwise: then the upper half, in finer bins, is what there is to see.
    lo = 0.5 if probs and min(probs) >= 0.5 else 0.0
    hist = svg.histogram(probs, title="p_chosen", xlabel="P(chosen is better)", lo=lo) if probs else ""
    prov = records[0].get("provenance") or {}
    return ({"path": src, "summary": summary, "hist": hist, "time": prov.get("time"),
             "models": prov.get("models") or {}, "constitution": (prov.get("constitution") or {}).get("name")},
            [ex.pair_item(r, src) for r in records[:max_examples]])


def labeler_result(path: Path, roots: list[Path]) -> dict[str, Any]:
    d = json.loads(path.read_text(encoding="utf-8"))
    o = d.get("overall") or {}
    return {"path": _rel(path, roots), "data": d.get("data"), "model": d.get("model"), "n": o.get("n"),
            "accuracy": _num(o.get("accuracy")), "ci": o.get("ci95"), "position_bias": _num(o.get("position_bias_rate")),
            "ece": _num(o.get("ece")), "majority": _num(o.get("majority_baseline")),
            "random": _num(o.get("random_baseline"))}


def experiment_view(path: Path) -> dict[str, Any] | None:
    """``cai run`` with arms: the arms side by side (the rows of compare.md) and their trade-off."""
    from cai.errors import CAIError
    from cai.evals.compare import pick_axes, table_rows
    from cai.run.experiment import FALLBACK_X, arm_columns

    d = json.loads(path.read_text(encoding="utf-8"))
    cols = arm_columns(d, path.parent)
    if not cols:
        return None
    view: dict[str, Any] = {"arms": [c.label for c in cols], "rows": table_rows(cols), "svg": "",
                            "missing": [a["name"] for a in d.get("arms") or [] if not a.get("results")]}
    try:
        xm, ym = pick_axes(cols, None, None)
    except CAIError:
        try:
            xm, ym = pick_axes(cols, FALLBACK_X, None)
        except CAIError:  # no metric for an axis: the table alone
            return view
    pts = []
    for c in cols:
        mx, my = c.metrics.get(xm), c.metrics.get(ym)
        if mx is None or my is None or _num(mx.value) is None or _num(my.value) is None:
            continue
        pts.append({"label": c.label, "x": mx.value, "y": my.value, "x_ci": list(mx.ci) if mx.ci else None,
                    "y_ci": list(my.ci) if my.ci else None})
    view["svg"] = svg.scatter_ci(pts, title="Helpfulness against harmlessness, per arm", xlabel=f"helpfulness ({xm})",
                                 ylabel=f"harmlessness ({ym})", show_title=False)
    return view


# -- stages ----------------------------------------------------------------------------------------

def _manifest_stages(path: Path) -> list[dict[str, Any]]:
    d = json.loads(path.read_text(encoding="utf-8"))
    stages = d.get("stages")
    if isinstance(stages, dict):
        stages = [{"name": k, **(v if isinstance(v, dict) else {})} for k, v in stages.items()]
    out = []
    for s in stages or []:
        if not isinstance(s, dict):
            continue
        outputs = s.get("outputs") or s.get("output") or ""
        name = str(_pick(s, "name", "stage") or "?")
        if isinstance(s.get("arms"), list) and s["arms"]:  # a run with arms: which arms the step serves
            name += " · " + ", ".join(map(str, s["arms"]))
        out.append({"name": name, "status": str(_pick(s, "status") or "?"),
                    "seconds": _num(_pick(s, "seconds", "wall_s", "duration_s", "time_s")),
                    "started": _pick(s, "started", "start_time"), "what": outputs if isinstance(outputs, str)
                    else ", ".join(map(str, outputs if isinstance(outputs, list) else outputs.values())),
                    "detail": f"peak RSS {s['peak_rss_mb']:.0f} MB" if _num(s.get("peak_rss_mb")) else ""})
    return out


def stages(found: Found, model: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages that ran: from a ``cai run`` manifest when there is one, else inferred from the
    artefacts found, in pipeline order."""
    if found.manifests:
        listed = _manifest_stages(found.manifests[0])
        if listed:
            return listed
    out = []
    for c in model["critique"]:
        s = c["summary"]
        out.append({"name": "critique", "what": c["path"], "status": "done", "started": c.get("time"), "seconds": None,
                    "detail": f"{s['records']} prompts, {s['revised_rate']:.0%} revised" if s else "empty"})
    for t in model["training"]:
        final = ", ".join(f"{k} {v:.4g}" for k, v in list(t["final"].items())[:3])
        out.append({"name": t["stage"], "what": t["name"], "status": t["status"], "started": t["started"],
                    "seconds": t["seconds"], "detail": f"{t['steps']} logged steps" + (f"; {final}" if final else "")})
    for p in model["preferences"]:
        s = p["summary"]
        detail = f"{s['records']} pairs" if s else "empty"
        if s and s.get("p_chosen"):
            detail += f", mean p_chosen {s['p_chosen']['mean']:.2f}"
        out.append({"name": "label", "what": p["path"], "status": "done", "started": p.get("time"), "seconds": None,
                    "detail": detail})
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in model["eval_results"]:  # a grader eval has no model: it measures the grader
        by_model.setdefault(r["model"] or f"grader {r['grader'] or '?'}", []).append(r)
    for name, rs in by_model.items():
        heads = []
        for r in sorted(rs, key=lambda r: r["task"]):
            head = next(iter(r["metrics"].items()), None)
            heads.append(f"{r['task']} {fmt_value(head[0], head[1]['value'])}" if head else r["task"])
        folders = sorted({str(Path(r["path"]).parent) for r in rs})
        out.append({"name": "eval", "what": f"{name} ({', '.join(folders)})", "status": "done",
                    "started": min(str(r.get("time") or "") for r in rs) or None, "seconds": None,
                    "detail": "; ".join(heads)})
    for lab in model["labelers"]:
        acc = "–" if lab["accuracy"] is None else f"{lab['accuracy']:.1%}"
        out.append({"name": "eval", "what": f"labeler {lab['model']} ({lab['path']})", "status": "done",
                    "started": None, "seconds": None, "detail": f"{lab['data']}: accuracy {acc} (n={lab['n']})"})
    for r in model["redteam"]:
        head = next(iter(r["metrics"].items()), None)
        out.append({"name": "redteam", "what": f"{r['model']} ({r['path']})", "status": "done", "started": r.get("time"),
                    "seconds": None, "detail": f"{head[0]} {fmt_value(head[0], head[1]['value'])}" if head else ""})
    rank = {n: i for i, n in enumerate(STAGE_ORDER)}
    out.sort(key=lambda s: (rank.get(s["name"].split()[0], len(rank)), str(s.get("started") or "")))
    return out


PERCENT_WORDS = ("rate", "accuracy", "acc", "share", "asr", "win", "mc1", "mc2", "fraction", "agreement")


def is_share(name: str, value: float | None) -> bool:
    return value is not None and 0 <= value <= 1 and any(w in name.lower() for w in PERCENT_WORDS)


def fmt_value(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.1f}%" if is_share(name, value) else f"{value:.4g}"


# -- everything ------------------------------------------------------------------------------------

def collect(found: Found, *, max_examples: int = 5000) -> dict[str, Any]:
    roots = found.roots
    items: list[dict[str, Any]] = []
    runs = [training_run(d, roots) for d in found.train_runs]
    rank = {n: i for i, n in enumerate(STAGE_ORDER)}
    runs.sort(key=lambda t: (rank.get(t["stage"], len(rank)), str(t["started"] or ""), t["name"]))
    model: dict[str, Any] = {"training": runs,
                             "critique": [], "preferences": [], "eval_results": [], "redteam": [],
                             "labelers": [labeler_result(p, roots) for p in found.labeler_results]}
    for p in found.critique_files:
        view, its = critique_file(p, roots, max_examples)
        model["critique"].append(view)
        items += its
    for p in found.preference_files:
        view, its = preference_file(p, roots, max_examples)
        model["preferences"].append(view)
        items += its
    for p in found.eval_results:
        view, its = eval_result(p, roots, max_examples)
        if view["task"] == "redteam":
            model["redteam"].append(redteam_view(view))
            its = [i for i in its if i.get("failed") is not False]  # the browser lists failures
        else:
            model["eval_results"].append(view)
        items += its
    tasks: dict[str, list[dict[str, Any]]] = {}
    for r in model["eval_results"]:
        tasks.setdefault(r["task"], []).append(r)
    model["eval_tasks"] = [{"task": t, "results": rs,
                            "metric_names": list(dict.fromkeys(k for r in rs for k in r["metrics"]))}
                           for t, rs in tasks.items()]
    model["experiment"] = experiment_view(found.experiments[0]) if found.experiments else None
    model["before_after"] = before_after(found.manifests)
    # With arms, the per-arm chart replaces the per-model one (trained models' folders all end in "model").
    model["tradeoff"] = None if model["experiment"] else tradeoff(model["eval_results"])
    model["stages"] = stages(found, model)
    model["examples"] = items
    return model
