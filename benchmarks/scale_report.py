"""Summaries and the Markdown section of the scale-out benchmark (``bench_scale.py``).

Every figure is the median over rounds with its spread (min to max). Ratios
against one process are taken within each round (the configurations of a
round ran back to back, so they saw the same machine), then summarized.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SECTION = "## Scaling out (Redis backplane)"
X = "\u00d7"  # the multiplication sign, spelled so that linters see no look-alike
DASH = "\u2013"  # the en dash of "min to max"
REFERENCE = "local-1"
CONFIG_TITLES = {
    "local-1": "1 process, in-process backplane",
    "redis-1": "1 process, Redis backplane",
    "redis-2": "2 processes, Redis backplane",
}


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that are not ``None``."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {
        "median": round(statistics.median(vals), 3),
        "min": round(min(vals), 3),
        "max": round(max(vals), 3),
        "n": len(vals),
    }


def fmt(s: dict[str, float] | None, spec: str = ".1f", unit: str = "") -> str:
    """``median (min to max)``, or a dash."""
    if s is None:
        return "—"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{s['median']:{spec}}{unit}"
    return f"{s['median']:{spec}}{unit} ({s['min']:{spec}}{DASH}{s['max']:{spec}})"


# ------------------------------------------------------------ one-line reports


def publish_line(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{r.get('mode')}: {r.get('status')}: {r.get('reason', '')}"
    return (
        f"{r['mode']:7} {r['events_per_s']:9,.0f} ev/s  process {r['process_cpu_percent']:3.0f}% "
        f"({r['process_us_per_event']:.1f} µs/ev)  redis {r['redis_cpu_percent']:3.0f}% "
        f"({r['redis_us_per_event']:.1f} µs/ev)  would_block {r['would_block']}  "
        f"read back {r['read_back_per_s']:,.0f}/s, fell behind {r['reader_fell_behind']}"
    )


def fanout_line(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{r.get('config')}: {r.get('status')}: {r.get('reason', '')[:300]}"
    per = " + ".join(f"{p['us_per_delivery']}" for p in r["processes"])
    return (
        f"{r['config']:8} {r['delivered_per_s']:9,.0f}/s of {r['offered_per_s']:,.0f}  "
        f"p50 {r['p50_ms']:6.1f} p99 {r['p99_ms']:7.1f} ms  "
        f"{r['us_per_delivery']} µs/del ({per})  servers {r['server_cpu_percent']:.0f}%  "
        f"redis {r['redis_cpu_percent']:.0f}%  lg {r['loadgen_cpu_percent']:.0f}%  "
        f"other {r['other_load_cores']:.1f}  served {r['served']}/{r['clients']} "
        f"gaps {r['gaps']} cut {r['cut']}"
    )


def failover_line(r: dict[str, Any]) -> str:
    firsts = ", ".join(
        "—" if v is None else f"{v:.0f} ms" for v in r["first_event_after_restart_ms"]
    )
    subs = "; ".join(
        f"p{s['process']}: {s['events']} ev, {s['duplicates']} dup, {s['missing']} missing"
        for s in r.get("subscribers", [])
    )
    return f"redis down {r['redis_down_ms']:.0f} ms; first event after restart {firsts} ({subs})"


# ------------------------------------------------------------------- summary


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def _per_config(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in CONFIG_TITLES:
        mine = [r for r in _ok(rows) if r["config"] == name]
        if not mine:
            continue
        keys = (
            "delivered_per_s",
            "published_per_s",
            "p50_ms",
            "p99_ms",
            "us_per_delivery",
            "server_cpu_percent",
            "redis_cpu_percent",
            "redis_us_per_delivery",
            "loadgen_cpu_percent",
            "other_load_cores",
            "machine_busy_cores",
        )
        entry: dict[str, Any] = {k: spread(r[k] for r in mine) for k in keys}
        nproc = len(mine[0]["processes"])
        entry["processes"] = [
            {
                k: spread(r["processes"][i][k] for r in mine)
                for k in ("events_per_s", "cpu_percent", "us_per_delivery", "p50_ms", "p99_ms")
            }
            for i in range(nproc)
        ]
        entry["served_min"] = min(r["served"] for r in mine)
        entry["clients"] = mine[0]["clients"]
        entry["offered_per_s"] = mine[0]["offered_per_s"]
        entry["gaps_max"] = max(r["gaps"] for r in mine)
        entry["cut_max"] = max(r["cut"] for r in mine)
        out[name] = entry
    return out


def _ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round comparisons of each Redis configuration with ``local-1``."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in _ok(rows):
        by_round.setdefault(r["round"], {})[r["config"]] = r
    out: dict[str, Any] = {}
    for name in ("redis-1", "redis-2"):
        added, cpu, delivered = [], [], []
        for configs in by_round.values():
            ref, got = configs.get(REFERENCE), configs.get(name)
            if ref is None or got is None:
                continue
            added.append(got["p99_ms"] - ref["p99_ms"])
            if ref["us_per_delivery"] and got["us_per_delivery"]:
                cpu.append(got["us_per_delivery"] / ref["us_per_delivery"])
            if ref["delivered_per_s"]:
                delivered.append(got["delivered_per_s"] / ref["delivered_per_s"])
        out[name] = {
            "added_p99_ms": spread(added),
            "cpu_per_delivery_ratio": spread(cpu),
            "delivered_ratio": spread(delivered),
        }
    return out


def summarize(runs: dict[str, list[Any]]) -> dict[str, Any]:
    """Median and spread of every figure, and the issue's goals."""
    publish = {
        mode: {
            k: spread(r[k] for r in _ok(runs["publish"]) if r["mode"] == mode)
            for k in (
                "events_per_s",
                "process_cpu_percent",
                "process_us_per_event",
                "redis_cpu_percent",
                "redis_us_per_event",
                "read_back_per_s",
                "reader_fell_behind",
            )
        }
        for mode in ("nowait", "tasks")
    }
    failover = runs["failover"]
    summary: dict[str, Any] = {
        "publish": publish,
        "fanout": _per_config(runs["fanout"]),
        "fanout_vs_one_process": _ratios(runs["fanout"]),
        "light": _per_config(runs["light"]),
        "light_vs_one_process": _ratios(runs["light"]),
        "saturation": _per_config(runs["saturation"]),
        "saturation_vs_one_process": _ratios(runs["saturation"]),
        "failover": {
            "first_event_after_restart_ms": spread(
                v for r in failover for v in r["first_event_after_restart_ms"]
            ),
            "redis_down_ms": spread(r["redis_down_ms"] for r in failover),
            "not_recovered": sum(
                v is None for r in failover for v in r["first_event_after_restart_ms"]
            ),
            "duplicates": max(
                (s["duplicates"] for r in failover for s in r.get("subscribers", [])), default=0
            ),
            "missing": max(
                (s["missing"] for r in failover for s in r.get("subscribers", [])), default=0
            ),
            "publish_errors": failover[-1].get("publish_errors") if failover else None,
        },
    }
    summary["goals"] = goals(summary)
    return summary


def goals(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against the medians.

    ``met`` is None when not measured; ``every_round`` says whether the whole
    spread (min to max) meets the target, not only the median.
    """
    rows: list[dict[str, Any]] = []

    def add(goal: str, target: str, value: dict[str, float] | None, spec: str, ok: Any) -> None:
        unit = " ms" if spec == "+.1f" else X if spec == ".2f" else "/s"
        rows.append(
            {
                "goal": goal,
                "target": target,
                "measured": fmt(value, spec, unit),
                "met": None if value is None else ok(value["median"]),
                "every_round": None if value is None else ok(value["min"]) and ok(value["max"]),
            }
        )

    best = max(
        (m["events_per_s"] for m in s["publish"].values() if m["events_per_s"]),
        key=lambda v: v["median"],
        default=None,
    )
    add("publish into local Redis", "≥ 20,000 events/s", best, ",.0f", lambda v: v >= 20_000)
    for label, part in (("fan-out", "fanout"), ("light fan-out", "light")):
        two = s[f"{part}_vs_one_process"]["redis-2"]
        add(
            f"{label}, 2 processes: added p99",
            "≤ 5 ms over 1 process",
            two["added_p99_ms"],
            "+.1f",
            lambda v: v <= 5,
        )
        add(
            f"{label}, 2 processes: CPU per delivery",
            f"≤ 1.2{X} 1 process",
            two["cpu_per_delivery_ratio"],
            ".2f",
            lambda v: v <= 1.2,
        )
    add(
        "saturation: delivered by 2 processes",
        f"≥ 1.5{X} 1 process",
        s["saturation_vs_one_process"]["redis-2"]["delivered_ratio"],
        ".2f",
        lambda v: v >= 1.5,
    )
    return rows


# ------------------------------------------------------------------ markdown


def _config_table(summary: dict[str, Any], ratios: dict[str, Any]) -> list[str]:
    head = [
        "configuration",
        "delivered/s (of offered)",
        "p50 / p99 ms",
        f"added p99 ms / CPU per delivery ({X} 1 process)",
        "server CPU µs/delivery: total (per process)",
        "server CPU",
        "Redis CPU (µs/delivery)",
        "load-gen CPU",
        "machine busy / other load (cores)",
        "served",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in summary.items():
        ratio = ratios.get(name)
        versus = "reference"
        if ratio is not None:
            versus = f"{fmt(ratio['added_p99_ms'], '+.1f')} / "
            versus += fmt(ratio["cpu_per_delivery_ratio"], ".2f", X)
        per = " + ".join(fmt(p["us_per_delivery"]) for p in m["processes"])
        extra = []
        if m["gaps_max"]:
            extra.append(f"≤ {m['gaps_max']:,} gaps")
        if m["cut_max"]:
            extra.append(f"≤ {m['cut_max']:,} cut")
        row = [
            f"{name}: {CONFIG_TITLES[name]}",
            f"{fmt(m['delivered_per_s'], ',.0f')} (of {m['offered_per_s']:,.0f})",
            f"{fmt(m['p50_ms'])} / {fmt(m['p99_ms'])}",
            versus,
            fmt(m["us_per_delivery"]) + (f" ({per})" if len(m["processes"]) > 1 else ""),
            fmt(m["server_cpu_percent"], ".0f", "%"),
            f"{fmt(m['redis_cpu_percent'], '.0f', '%')} ({fmt(m['redis_us_per_delivery'], '.2f')})",
            fmt(m["loadgen_cpu_percent"], ".0f", "%"),
            f"{fmt(m['machine_busy_cores'], '.1f')} / {fmt(m['other_load_cores'], '.1f')}",
            f"≥ {m['served_min']:,} / {m['clients']:,}"
            + (f" ({', '.join(extra)})" if extra else ""),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The ``## Scaling out (Redis backplane)`` section."""
    meta, s = result["meta"], result["summary"]
    mach, sizes = meta["machine"], meta["sizes"]
    out = [
        SECTION,
        "",
        "<!-- Generated by benchmarks/bench_scale.py from "
        f"benchmarks/results/{meta['file']}; rerun the benchmark rather than edit. -->",
        "",
        "Reproduce with `python3 noxfile.py -s bench-scale` (about 8 minutes; "
        "`-- --quick` for a smaller run under 3 minutes). The session checks for "
        "`redis-server`, builds the load generator, and runs `benchmarks/bench_scale.py`; "
        "its docstring explains the method.",
        "",
        f"- Command: `{meta['command']}` ({meta['date']}, {meta['rounds']} rounds, "
        f"{meta['elapsed_s'] / 60:.0f} min). Figures: median over rounds "
        f"(min{DASH}max); ratios "
        "are taken within each round, then summarized.",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory']}, Linux "
        f"{mach['kernel']}, Python {mach['python']}; shared and noisy. Everything "
        "(server processes, redis-server, the load generator) runs on these 2 cores.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "### Goals",
        "",
        f"| goal | target | measured (median, min{DASH}max) | met by the median? |",
        "|---|---|---|---|",
    ]
    for g in s["goals"]:
        met = "—" if g["met"] is None else ("yes" if g["met"] else "**no**")
        if g["met"] is not None and g["every_round"] != g["met"]:
            met += " (not in every round)"
        out.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {met} |")
    out += [
        "",
        "### Publish throughput, one process into local Redis",
        "",
        f"{sizes['publish_events']:,} events of about 70 bytes, one topic; the clock stops "
        "when Redis has acknowledged the last one. `nowait`: `publish_nowait` in a loop "
        "(on `trio.WouldBlock`, `await publish` of that event); `tasks`: "
        f"{sizes['publish_tasks']} tasks each awaiting `publish` in a loop.",
        "",
        "| mode | events/s | publisher CPU (µs/event) | Redis CPU (µs/event) "
        "| read back by the publisher's own reader /s | its reader fell behind (resets) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, m in s["publish"].items():
        out.append(
            f"| {mode} | {fmt(m['events_per_s'], ',.0f')} | "
            f"{fmt(m['process_cpu_percent'], '.0f', '%')} ({fmt(m['process_us_per_event'])}) | "
            f"{fmt(m['redis_cpu_percent'], '.0f', '%')} ({fmt(m['redis_us_per_event'])}) | "
            f"{fmt(m['read_back_per_s'], ',.0f')} | {fmt(m['reader_fell_behind'], '.0f')} |"
        )
    out += [
        "",
        "### Fan-out",
        "",
        "One ticker publishes; `redis-2` has half the clients on each process and the ticker "
        "in the first. Latency is publish (the ticker's clock) to receipt by the load "
        "generator. Server CPU per delivery is the server processes' CPU over the measured "
        "window divided by the events delivered to their clients; Redis and the load "
        "generator are reported on their own. *Machine busy* is every core's non-idle time "
        "during the window (2.0 = both cores full); *other load* is the part of it used by "
        "neither the servers, nor Redis, nor the load generator (other users of this "
        "shared machine).",
        "",
    ]
    scenarios = (
        ("fanout", "fanout", "ev/s", ""),
        (
            "light",
            "light",
            "ev/s",
            "Fewer clients: one broadcast pass takes a few ms instead of about 100 ms, so "
            "the latency the Redis hop adds shows.",
        ),
        (
            "saturation",
            "sat",
            "ev/s offered",
            "Offered about twice what one process delivers here; the topics use "
            "`drop_oldest`, so delivered/s is the capacity (gaps are events a client missed).",
        ),
    )
    for part, key, unit, text in scenarios:
        if not s[part]:
            continue
        title = part.capitalize() if part != "fanout" else "Fan-out"
        out += [
            f"#### {title}: {sizes[key + '_clients']:,} clients {X} {sizes[key + '_rate']:g} "
            f"{unit}",
            "",
            *([text, ""] if text else []),
            *_config_table(s[part], s[f"{part}_vs_one_process"]),
            "",
        ]
    sat = s["saturation_vs_one_process"]
    if sat.get("redis-2", {}).get("delivered_ratio"):
        out += [
            f"Delivered at saturation, {X} 1 process: redis-1 "
            f"{fmt(sat['redis-1']['delivered_ratio'], '.2f', X)}, redis-2 "
            f"{fmt(sat['redis-2']['delivered_ratio'], '.2f', X)}.",
            "",
        ]
    f = s["failover"]
    out += [
        "### Failover",
        "",
        "Two processes on an AOF-backed redis-server, ticker at 100 ev/s, one subscriber on "
        "each; `kill -9` of redis-server, started again at once on the same port. Time from "
        "Redis answering again to the first event published after the kill reaching a "
        f"subscriber: {fmt(f['first_event_after_restart_ms'], '.0f', ' ms')} "
        f"({f['first_event_after_restart_ms']['n'] if f['first_event_after_restart_ms'] else 0} "
        f"measurements; not recovered within 10 s: {f['not_recovered']}). redis-server was down "
        f"{fmt(f['redis_down_ms'], '.0f', ' ms')}. Duplicated events seen by a subscriber: "
        f"{f['duplicates']}; missing sequence numbers: {f['missing']}, against "
        f"{f['publish_errors']} `publish_errors` counted by the publishing process over all "
        "rounds: an event accepted by `publish_nowait` whose pipeline the kill broke counts "
        "as a publish error and is lost, unless Redis had written it before it died; the "
        "ticker does not use the sequence numbers of refused publishes).",
        "",
    ]
    return "\n".join(out).rstrip() + "\n"


def update_doc(page: Path, section: str) -> None:
    """Replace (or append) the section in ``page``, keeping its ``<!-- notes -->`` block."""
    text = page.read_text() if page.exists() else "# Benchmarks\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        page.write_text(text.rstrip() + "\n\n" + section)
        return
    nxt = text.find("\n## ", start + len(SECTION))
    end = len(text) if nxt < 0 else nxt + 1
    notes = re.search(r"<!-- notes -->.*?<!-- /notes -->\n", text[start:end], re.S)
    if notes:
        section = section + "\n" + notes.group(0)
    rest = text[end:]
    page.write_text(text[:start] + section + ("\n" + rest if rest else ""))
