"""Turn a run's results (the dict written to latest.json) into targets, Markdown and a chart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from _copy import section as copy_section
from _cursor import section as cursor_section
from _executemany import section as executemany_section
from _listen import section as listen_section
from _timeouts import section as timeouts_section

X = "\N{MULTIPLICATION SIGN}"
PGC_SUBJECTS = ("pgc-psycopg-sync", "pgc-psycopg-async", "pgc-asyncpg-async", "pgc-pg8000-sync",
                "pgc-pg8000-async")
# (pgconnector subject, the raw pool it must keep up with)
RAW_PEERS = (("pgc-psycopg-sync", "psycopg_pool-sync"),
             ("pgc-psycopg-async", "psycopg_pool-async"),
             ("pgc-asyncpg-async", "asyncpg-pool"))
PG8000_PEER = "sqla-pg8000"
# The contention peer of each pg8000 manager: psycopg_pool of the same kind of worker.
WAIT_PEERS = (("pgc-pg8000-sync", "psycopg_pool-sync"),
              ("pgc-pg8000-async", "psycopg_pool-async"))


# ------------------------------------------------------------------------------ targets


def _get(tree: dict[str, Any], *path: str) -> Any:
    for step in path:
        if not isinstance(tree, dict) or step not in tree:
            return None
        tree = tree[step]
    return tree


def _round_trips(results: dict[str, Any], key: str, measure: str) -> str:
    value = _get(results, "round_trips", key, measure)
    return "?" if value is None else f"{value:g}"


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 5 with both numbers, the ratio and whether it is met.

    Ratios are "higher is better" for rates and speed (reference time / our time) and "lower
    is better" for the flatness and cold-start ratios; ``need`` and ``op`` say which.
    """
    rows: list[dict[str, Any]] = []

    def add(goal: str, ours_key: str, ref_key: str | None, ours: float | None,
            ref: float | None, unit: str, ratio: float | None, op: str, need: float,
            round_trips: str = "", note: str = "") -> None:
        if ours is None or ratio is None:
            return
        met = ratio >= need if op == ">=" else ratio <= need
        rows.append({"goal": goal, "subject": ours_key, "reference": ref_key, "ours": ours,
                     "theirs": ref, "unit": unit, "ratio": ratio, "op": op, "need": need,
                     "pass": met, "round_trips": round_trips, "note": note})

    def speed(ours: float | None, ref: float | None) -> float | None:
        return None if ours is None or ref is None else ref / ours

    def rate(ours: float | None, ref: float | None) -> float | None:
        return None if ours is None or ref is None else ours / ref

    def select1(key: str, workers: str) -> float | None:
        return _get(results, "select1_qps", key, workers, "median")

    def cycle(key: str) -> float | None:
        return _get(results, "cycle_us", key, "median")

    workers = [str(c) for c in results["plan"]["concurrency"]]
    for ours, ref in RAW_PEERS:
        rt = f"{_round_trips(results, ours, 'select1')}/{_round_trips(results, ref, 'select1')}"
        for c in workers:
            add(f"select1 at {c} worker(s) ≥ 0.95{X} raw pool", ours, ref, select1(ours, c),
                select1(ref, c), "q/s", rate(select1(ours, c), select1(ref, c)), ">=", 0.95, rt)
    for ours, ref in RAW_PEERS:
        rt = f"{_round_trips(results, ours, 'cycle')}/{_round_trips(results, ref, 'cycle')}"
        add(f"cycle ≥ 0.85{X} raw pool (speed)", ours, ref, cycle(ours), cycle(ref), "µs",
            speed(cycle(ours), cycle(ref)), ">=", 0.85, rt)
    for ours in ("pgc-pg8000-sync", "pgc-pg8000-async"):
        ref = PG8000_PEER
        rt = f"{_round_trips(results, ours, 'cycle')}/{_round_trips(results, ref, 'cycle')}"
        add(f"cycle ≥ 1.2{X} QueuePool (speed)", ours, ref, cycle(ours), cycle(ref), "µs",
            speed(cycle(ours), cycle(ref)), ">=", 1.2, rt)
        rt = f"{_round_trips(results, ours, 'select1')}/{_round_trips(results, ref, 'select1')}"
        for c in workers:
            add(f"select1 at {c} worker(s) ≥ 1.2{X} QueuePool", ours, ref, select1(ours, c),
                select1(ref, c), "q/s", rate(select1(ours, c), select1(ref, c)), ">=", 1.2, rt)
    for ours, ref in WAIT_PEERS:
        mine = _get(results, "contention", ours, "p99_ms")
        theirs = _get(results, "contention", ref, "p99_ms")
        add("contention p99 borrow wait ≤ psycopg_pool's", ours, ref, mine, theirs, "ms",
            speed(mine, theirs), ">=", 1.0)
    for ours in PGC_SUBJECTS:
        for measure, what in (("scaling_pool_size_us", "cycle cost flat within 20% over pool "
                                                        "size"),
                              ("scaling_waiters_us", "cost per held cycle flat within 20% over "
                                                     "waiters")):
            points = _get(results, measure, ours) or {}
            medians = [point["median"] for point in points.values()]
            if medians:
                span = f"{min(points, key=int)} to {max(points, key=int)}"
                # The raw pool's own curve says what the workers cost whoever the pool is.
                ref = _reference_of(results, ours)
                theirs = [p["median"] for p in (_get(results, measure, ref or "") or {}).values()]
                note = (f"{_label(results, ref)}: {max(theirs) / min(theirs):.2f}{X}"
                        if theirs else "")
                add(f"{what} {span} (max/min)", ours, None, max(medians), min(medians), "µs",
                    max(medians) / min(medians), "<=", 1.2, note=note)
    for ours in PGC_SUBJECTS:
        one = results["meta"]["one_connection"].get(ours)
        mine = _get(results, "cold_start", ours, "first_ms")
        theirs = _get(results, "cold_start", one, "first_ms") if one else None
        every = _get(results, "cold_start", ours, "all_ms")
        add(f"cold start (connect() returns) ≤ 2{X} one connection open", ours, one, mine, theirs,
            "ms", None if mine is None or not theirs else mine / theirs, "<=", 2.0,
            note=f"all {results['plan']['cold_min_size']} open: {_num(every)} ms")
    return rows


# ------------------------------------------------------------------------------ markdown


def _label(results: dict[str, Any], key: str | None) -> str:
    if key is None:
        return "—"
    info = results["meta"]["subjects"].get(key)
    return info["label"] if info else key


def _reference_of(results: dict[str, Any], key: str) -> str | None:
    return results["meta"]["references"].get(results["meta"]["subjects"][key]["family"])


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}{X}"


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _section(title: str, note: str, table: list[str]) -> list[str]:
    return [title, "", note, "", *table]


def _subject_cell(results: dict[str, Any], key: str) -> str:
    info = results["meta"]["subjects"][key]
    label = info["label"]
    if key in results["meta"]["references"].values():
        label += " **(reference)**"
    if info["kind"] == "pgconnector":
        label = f"**{label}**"
    return label


def _ordered(results: dict[str, Any], section: dict[str, Any]) -> list[str]:
    """The keys of ``section`` in the order subjects were declared (grouped by family)."""
    return [key for key in results["meta"]["subjects"] if key in section]


def _vs_reference(results: dict[str, Any], section: dict[str, Any], key: str,
                  value: Callable[[dict[str, Any]], float | None], higher_is_better: bool,
                  ) -> float | None:
    ref = _reference_of(results, key)
    if ref is None or ref not in section:
        return None
    mine, theirs = value(section[key]), value(section[ref])
    if mine is None or theirs is None or not mine or not theirs:
        return None
    return mine / theirs if higher_is_better else theirs / mine


def _facts(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    packages = ", ".join(f"{k} {v}" for k, v in meta["packages"].items() if v)
    pinned = (f"client pinned to CPU {meta['client_cpus']}, server's postmaster on CPUs "
              f"{meta.get('server_cpus')}" if meta["pinned"]
              else "**not pinned**: numbers vary by up to 55% between runs; quote ranges")
    return [
        f"- Machine: {meta['cpu_model']}, {meta['cpu_count']} CPUs, {meta['kernel']}",
        f"- {meta['python']}; PostgreSQL {meta.get('postgresql')}; {meta.get('pgbench')}",
        f"- Packages: {packages}",
        f"- {pinned}",
        f"- Command: `{meta['command']}`; started {meta['started']}; "
        f"wall time {meta.get('wall_s', 0):.0f} s",
    ]


def _targets_section(results: dict[str, Any]) -> list[str]:
    targets = results["targets"]
    met = sum(1 for t in targets if t["pass"])
    lines = ["## Targets", "",
             f"{met} of {len(targets)} met. Ratios are higher-is-better for throughput and "
             "speed (reference µs / our µs; reference p99 / our p99); max/min and "
             "cold-start ratios must stay at or below the bound. Round trips: statements per "
             "operation (ours/reference), counted by the server.", ""]
    symbols = {">=": "≥", "<=": "≤"}
    rows = []
    for t in targets:
        against = (f"{_label(results, t['reference'])}: {_num(t['theirs'])} {t['unit']}"
                   if t["reference"] else f"min {_num(t['theirs'])} {t['unit']}")
        if t.get("note"):
            against += f" ({t['note']})"
        rows.append([t["goal"], _label(results, t["subject"]), f"{_num(t['ours'])} {t['unit']}",
                     against, _ratio(t["ratio"]), f"{symbols[t['op']]} {t['need']:g}",
                     t["round_trips"] or "—", "PASS" if t["pass"] else "**MISS**"])
    return lines + _table(["target", "pgconnector", "measured", "against", "ratio", "need",
                           "round trips", "result"], rows, right_from=4)


def _round_trip_section(results: dict[str, Any]) -> list[str]:
    rt = results["round_trips"]
    rows = [[_subject_cell(results, key)]
            + [_num(rt[key].get(m), 2) if m in rt[key] else "—"
               for m in ("cycle", "select1", "health")]
            for key in _ordered(results, rt)]
    note = ("Statements the server logged per operation (`log_statement = all` on a side "
            "server, after a warm-up). Each is one round trip here; compare subjects with equal "
            "counts. The labelled default-mode peers show what the same pool costs out of the "
            "box.")
    return _section("## Round trips per operation", note,
                    _table(["subject", "cycle", "select1", "health"], rows))


def _cycle_section(results: dict[str, Any], key_name: str, title: str, note: str) -> list[str]:
    section = results[key_name]
    rows = [[_subject_cell(results, key), _num(section[key]["median"]),
             _ratio(_vs_reference(results, section, key, lambda v: v["median"], False))]
            for key in _ordered(results, section)]
    return _section(title, note, _table(["subject", "µs/op", "speed vs reference"], rows))


def _select1_section(results: dict[str, Any]) -> list[str]:
    section = results["select1_qps"]
    workers = [str(c) for c in results["plan"]["concurrency"]]
    rows = []
    for key in _ordered(results, section):
        cells = [_subject_cell(results, key)]
        for c in workers:
            point = section[key].get(c)
            if point is None:
                cells.append("—")
                continue
            ratio = _vs_reference(results, section, key,
                                  lambda v, c=c: _get(v, c, "median"), True)
            cells.append(_num(point["median"]) + (f" ({_ratio(ratio)})" if ratio else ""))
        rows.append(cells)
    plan = results["plan"]
    note = (f"Borrow, `SELECT 1`, fetch, give back; pool max_size {plan['pool_size']}; "
            "threads for sync subjects, asyncio tasks for async ones. Median of "
            f"{plan['reps']} interleaved rounds of {plan['select1_s']:g} s; in brackets, the "
            "ratio to the family's reference. A plain connection runs at one worker only; "
            "pgbench is the C ceiling (its own connections, one per client).")
    header = ["subject", *[f"{c} worker{'s' if c != '1' else ''}" for c in workers]]
    return _section("## (b) SELECT 1 throughput (q/s)", note, _table(header, rows))


def _contention_section(results: dict[str, Any]) -> list[str]:
    section = results["contention"]
    plan = results["plan"]
    # A borrow that does not queue costs a few µs (the call itself); one that queues behind
    # 200 workers waits for many holds of ~30 µs each. Under 50 µs, the median borrow did not
    # queue at all, and p99/p50 would only measure the cost of the call.
    rows = [[_subject_cell(results, key), f"{v['total_s']:.2f}", _num(v["p50_ms"], 3),
             _num(v["p99_ms"], 2), _num(v["max_ms"], 2),
             _num(v["p99_ms"] / v["p50_ms"], 1) if v["p50_ms"] >= 0.05 else "p50 did not queue"]
            for key in _ordered(results, section) for v in [section[key]]]
    note = (f"{plan['contention_workers']} workers {X} {plan['contention_cycles']} cycles on a "
            f"pool of {plan['pool_size']}; each cycle borrows, runs `SELECT 1` and gives back. "
            "The wait is the time one borrow took. Waits grow with the hold time (a slower "
            "driver holds longer), so p99/p50 is the fairness figure that compares across "
            "drivers: a FIFO pool keeps it small. A pool that lets the releasing worker take "
            "its connection straight back shows no wait at p50 and a long tail. Median of "
            f"{plan['contention_reps']} rounds.")
    header = ["subject", "total s", "wait p50 ms", "wait p99 ms", "wait max ms", "p99/p50"]
    return _section("## (c) Contention", note, _table(header, rows))


def _cold_section(results: dict[str, Any]) -> list[str]:
    section = results["cold_start"]
    one_of = results["meta"]["one_connection"]
    plan = results["plan"]
    rows = []
    for key in _ordered(results, section):
        v = section[key]
        one = section.get(one_of.get(key, ""), {}).get("first_ms")
        first_ratio = v["first_ms"] / one if one else None
        all_ratio = v["all_ms"] / one if one else None
        rows.append([_subject_cell(results, key), _num(v["first_ms"], 1), _num(v["all_ms"], 1),
                     _ratio(first_ratio), _ratio(all_ratio)])
    note = ("From building the pool to a usable connection, and to all min_size = "
            f"{plan['cold_min_size']} open (psycopg_pool: `open()` + first `getconn()`, then "
            "`wait()`; asyncpg: `create_pool()`, which returns with all open; pgconnector: "
            "`connect()` returning, then the last `connect` event). Ratios are to opening one "
            "plain connection of the same driver. On one shared CPU the server forks and "
            "authenticates one connection at a time, so all-open cannot beat "
            f"{plan['cold_min_size']}{X} one connection by much. Median of "
            f"{plan['cold_reps']} rounds after a discarded warm-up round.")
    header = ["subject", "usable ms", "all open ms", "usable / one", "all open / one"]
    return _section("## (d) Cold start", note, _table(header, rows))


def _scaling_section(results: dict[str, Any], key_name: str, title: str,
                     note: str, column: str) -> list[str]:
    section = results[key_name]
    points = sorted({p for v in section.values() for p in v}, key=int)
    rows = []
    for key in _ordered(results, section):
        medians = [section[key][p]["median"] for p in points if p in section[key]]
        rows.append([_subject_cell(results, key),
                     *[_num(_get(section, key, p, "median")) for p in points],
                     _ratio(max(medians) / min(medians) if medians else None)])
    header = ["subject", *[f"{column} {p}" for p in points], "max/min"]
    return _section(title, note, _table(header, rows))


def markdown(results: dict[str, Any], title: str = "pgconnector benchmarks: latest run") -> str:
    plan = results["plan"]
    lines = [f"# {title}", ""]
    if results["meta"].get("smoke"):
        lines += ["**Smoke run**: tiny durations, for checking the runner only; the numbers "
                  "mean nothing.", ""]
    lines += [*_facts(results), ""]
    lines += _targets_section(results)
    lines += _round_trip_section(results)
    lines += _cycle_section(
        results, "cycle_us", "## (a) Cycle: borrow and give back, no query",
        f"One worker; µs per cycle, median of {plan['reps']} interleaved rounds of "
        f"{plan['cycle_s']:g} s. Speed vs reference = reference µs / subject µs.")
    lines += _select1_section(results)
    lines += _contention_section(results)
    lines += _cold_section(results)
    lines += _cycle_section(
        results, "health_us", "## (e) Health check",
        "pgconnector's `health_check()` (SELECT 1 through the pool, plus the status it "
        "returns); for a raw pool, SELECT 1 through the pool. µs per call, one worker, median "
        f"of {plan['reps']} rounds of {plan['health_s']:g} s.")
    lines += _scaling_section(
        results, "scaling_pool_size_us", "## (f) Scaling with the pool's size",
        f"µs per cycle (no query), one worker, {plan['scaling_cycles']:,} cycles, pools with "
        f"min_size = max_size; median of {plan['scaling_reps']} rounds. Flat means the cost "
        "of a borrow does not depend on how many connections the pool holds.", "size")
    lines += _scaling_section(
        results, "scaling_waiters_us", "## (f) Scaling with the number of waiters",
        f"µs per cycle = total time / total cycles, {plan['waiter_cycles']:,} cycles shared "
        f"by N workers (at least 20 each) on a pool of {plan['pool_size']}; each cycle holds "
        "its connection for a `SELECT 1` (with no query a thread keeps the GIL and a task "
        "never yields while holding, so no one would ever wait). Threads for sync subjects, "
        f"tasks for async; median of {plan['scaling_reps']} rounds. Flat means a hand-off "
        "does not grow with the number of waiters; threads also pay for GIL hand-offs, which "
        "the raw pools show too.",
        "workers")
    lines += listen_section(results)
    lines += timeouts_section(results)
    lines += cursor_section(results)
    lines += executemany_section(results)
    lines += copy_section(results)
    return "\n".join(lines)


def results_page(results: dict[str, Any], body: str, chart_name: str) -> str:
    """benchmarks/RESULTS.md: the latest.md of a full run, with its chart."""
    head = "<!-- Generated by `benchmarks/run.py --results-md`; do not edit by hand. -->\n\n"
    body = body.replace("# pgconnector benchmarks: latest run",
                        "# pgconnector benchmark results", 1)
    return f"{head}{body}\n## Charts\n\n![The measures above, charted]({chart_name})\n"


# ------------------------------------------------------------------------------ chart


def _style(results: dict[str, Any], key: str) -> dict[str, Any]:
    info = results["meta"]["subjects"][key]
    if info["kind"] == "pgconnector":
        return {"linestyle": "-", "linewidth": 2.4, "marker": "o"}
    if info["kind"] == "pgbench":
        return {"linestyle": "-.", "linewidth": 1.5, "marker": "", "color": "black"}
    if info["default_mode"]:
        return {"linestyle": ":", "linewidth": 1.3, "marker": "."}
    return {"linestyle": "--", "linewidth": 1.5, "marker": "s", "markersize": 4}


def _lines(ax: Any, results: dict[str, Any], section: dict[str, Any],
           keys: list[str], colors: dict[str, Any]) -> None:
    for key in keys:
        points = sorted(section[key], key=int)
        if len(points) < 2 and results["meta"]["subjects"][key]["kind"] == "connection":
            x = [int(p) for p in points]
            ax.plot(x, [section[key][p]["median"] for p in points], "x", markersize=9,
                    color=colors[key], label=_label(results, key))
            continue
        style = {"color": colors[key], **_style(results, key)}
        ax.plot([int(p) for p in points], [section[key][p]["median"] for p in points],
                label=_label(results, key), **style)


def chart(results: dict[str, Any], path: Path) -> None:
    """select1 q/s against concurrency (sync, async), cycle cost, the scaling curves, and the
    contention waits, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = list(results["meta"]["subjects"])
    palette = plt.get_cmap("tab20")
    colors = {key: palette(i % 20) for i, key in enumerate(subjects)}
    is_async = {key: results["meta"]["subjects"][key]["is_async"] for key in subjects}
    fig, axes = plt.subplots(2, 3, figsize=(21, 14))
    plan = results["plan"]

    select1 = results["select1_qps"]
    for ax, want_async, title in ((axes[0][0], False, "sync subjects (threads)"),
                                  (axes[0][1], True, "async subjects (tasks)")):
        keys = [k for k in _ordered(results, select1)
                if is_async[k] == want_async or k == "pgbench"]
        _lines(ax, results, select1, keys, colors)
        ax.set(xscale="log", yscale="log", xlabel="concurrent workers", ylabel="SELECT 1 q/s",
               title=f"SELECT 1 throughput, pool of {plan['pool_size']}: {title}")
        ax.set_xticks(plan["concurrency"], [str(c) for c in plan["concurrency"]])
        ax.grid(True, which="both", alpha=0.3)

    cycle = results["cycle_us"]
    keys = _ordered(results, cycle)
    ax = axes[0][2]
    ax.barh([_label(results, k) for k in keys], [cycle[k]["median"] for k in keys],
            color=[colors[k] for k in keys])
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="µs per cycle (lower is better)", title="Borrow + give back, one worker")
    ax.grid(True, axis="x", alpha=0.3)

    for ax, key_name, xlabel, title in (
            (axes[1][0], "scaling_pool_size_us", "pool size (min = max)",
             "Cycle cost vs pool size, one worker"),
            (axes[1][1], "scaling_waiters_us", "workers",
             f"Cost per cycle holding a SELECT 1 vs waiters, pool of {plan['pool_size']}")):
        section = results[key_name]
        _lines(ax, results, section, _ordered(results, section), colors)
        points = sorted({int(p) for v in section.values() for p in v})
        ax.set(xscale="log", xlabel=xlabel, ylabel="µs per cycle", title=title)
        ax.set_xticks(points, [str(p) for p in points])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)

    contention = results["contention"]
    keys = _ordered(results, contention)
    ax = axes[1][2]
    positions = range(len(keys))
    for shift, field, color in ((-0.2, "p50_ms", "tab:blue"), (0.2, "p99_ms", "tab:red")):
        # A log axis cannot show 0: QueuePool's median wait is often exactly that.
        ax.barh([p + shift for p in positions], [max(contention[k][field], 1e-3) for k in keys],
                height=0.4, label=field.replace("_ms", ""), color=color)
    ax.set_yticks(list(positions), [_label(results, k) for k in keys], fontsize=7)
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="borrow wait, ms (log)",
           title=f"Contention: {plan['contention_workers']} workers on a pool of "
                 f"{plan['pool_size']}")
    ax.legend()
    ax.grid(True, axis="x", alpha=0.3)

    # One legend for every panel: a subject keeps its colour throughout.
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **{"color": colors[key], **_style(results, key)})
               for key in subjects]
    fig.legend(handles, [_label(results, key) for key in subjects], loc="lower center",
               ncol=4, fontsize=9, frameon=False)
    meta = results["meta"]
    fig.suptitle(f"pgconnector benchmarks: {meta['cpu_model']}, pinned to CPU "
                 f"{meta['client_cpus']}, {meta['python']}, PostgreSQL "
                 f"{meta.get('postgresql')}" + ("  [SMOKE RUN: numbers meaningless]"
                                                if meta.get("smoke") else ""))
    fig.tight_layout(rect=(0, 0.09, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
