"""Scale-out benchmark: the Redis Streams backplane against one process, in one run.

Run it with ``python3 noxfile.py -s bench-scale`` (``-- --quick`` for a run
under three minutes); the nox session installs ``trio-sse[redis]``, builds the
load generator and checks that ``redis-server`` is installed.

Strategy
--------

A private ``redis-server`` runs on a free loopback port in its own temporary
directory (no persistence; the failover part starts its own with AOF), and is
killed at the end. Each part runs every configuration side by side in each
round, ``--rounds`` rounds (3 by default); figures are the median over rounds
with the spread (min to max), and ratios are taken within a round (the runs of one
round saw the same machine) before the median.

1. **Publish throughput**: one process (a child of this script) publishes small
   events into Redis as fast as it can, with ``publish_nowait`` in a loop (on
   ``trio.WouldBlock`` it awaits ``publish`` for that event, which waits for room)
   and with concurrent tasks each awaiting ``publish``. The last event is
   awaited, so the clock stops when Redis has acknowledged all of them. Redis'
   CPU over the same interval is read from ``/proc``.
2. **Fan-out**: ``benchmarks/servers/trio_sse_scaled_server.py`` (the
   ``trio_sse_server.py`` ticker and route, with a ``--backplane`` option) as
   ``local-1`` (one process, in-process backplane), ``redis-1`` (one process,
   Redis) and ``redis-2`` (two processes on two ports sharing the topic
   through Redis; only the first runs the ticker: "events published on one
   worker", and its ``CLOCK_MONOTONIC`` stamp is comparable with the load
   generator's clock because all run on this machine). One load generator
   spreads its clients over the ports (``loadgen --port A,B``), so there is one
   measured window, at whose markers this script samples the CPU of each server
   process, of Redis and (from its own report) of the load generator. Two
   scenarios: a fixed rate well below saturation (latency and CPU per
   delivery) and an offered rate far above what the machine can deliver
   (delivered/s at saturation; topics there use ``drop_oldest`` so that a
   client that falls behind loses events rather than its connection).
3. **Failover**: two server processes on an AOF-backed ``redis-server``, the
   ticker at 100 ev/s, one subscriber on each; ``kill -9`` Redis, start it
   again on the same port, and time from Redis answering again to the first
   event published after the kill reaching each subscriber. The subscribers
   also count duplicated and missing sequence numbers.

The processes (redis-server, the servers, the failover part) live in
``scale_procs.py``; summaries and the Markdown section in ``scale_report.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_load as bl  # noqa: E402  (the load benchmark's machinery, reused)
import scale_report  # noqa: E402
from scale_procs import CONFIGS, Config, Redis, cpu_s, failover, last_stats, servers  # noqa: E402

# ------------------------------------------------------- 1. publish throughput


@dataclass(frozen=True)
class Sizes:
    """How big each part is, per mode."""

    publish_events: int
    publish_tasks: int
    fanout_clients: int
    fanout_rate: float
    sat_clients: int
    sat_rate: float
    light_clients: int
    light_rate: float
    warmup: float
    duration: float
    failover_rounds: int
    rounds: int


# Saturation: offered about twice what one process delivers here, so that the
# Redis readers' backlog stays far below the stream's length (10,000 entries)
# over the run; further behind, a reader resets its subscribers (see
# RedisBackplane's stream_min_length) and the clients see a jump.
FULL = Sizes(100_000, 100, 10_000, 2, 1_000, 300, 1_000, 10, 3, 10, 3, 3)
QUICK = Sizes(30_000, 100, 1_000, 5, 400, 600, 300, 10, 1, 3, 2, 2)
SMOKE = Sizes(2_000, 20, 20, 20, 20, 100, 20, 20, 0.2, 0.5, 1, 1)


def publish_child(url: str, mode: str, events: int, tasks: int, redis_pid: int) -> None:
    """In a child process: publish ``events`` small events, print one JSON line."""
    import logging

    import trio

    from trio_sse import Broker, Event, RedisBackplane

    # The process reads its own topic back; when its reader falls behind the
    # stream it logs a warning per read: count them instead of printing them.
    warnings: list[str] = []
    log = logging.getLogger("trio_sse.redis")
    log.propagate = False
    log.addHandler(_ListHandler(warnings))

    async def main() -> dict[str, Any]:
        backplane = RedisBackplane(url)
        broker = Broker(backplane=backplane)
        topic = broker.topic(f"publish-{mode}-{os.getpid()}")
        pad = "x" * 64
        blocked = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(backplane.run)
            with trio.fail_after(10):
                # The backplane has no "connected" event to wait for: poll.
                while not backplane.connected:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                for i in range(100):  # warm-up: scripts loaded, connections open
                    await topic.publish(Event(data=f"{i} {pad}"))
            t0, cpu0, rcpu0 = time.perf_counter(), time.process_time(), cpu_s(redis_pid)
            received0 = backplane.stats().received
            with trio.fail_after(120):
                if mode == "nowait":
                    for i in range(events - 1):
                        event = Event(data=f"{i} {pad}")
                        try:
                            topic.publish_nowait(event)
                        except trio.WouldBlock:
                            blocked += 1
                            await topic.publish(event)
                    total = events
                else:
                    per_task = (events - 1) // tasks

                    async def publisher(k: int) -> None:
                        for i in range(per_task):
                            await topic.publish(Event(data=f"{k}-{i} {pad}"))

                    async with trio.open_nursery() as publishers:
                        for k in range(tasks):
                            publishers.start_soon(publisher, k)
                    total = per_task * tasks + 1
                await topic.publish(Event(data=f"last {pad}"))  # all acknowledged
            elapsed = time.perf_counter() - t0
            cpu, rcpu = time.process_time() - cpu0, cpu_s(redis_pid) - rcpu0
            stats = backplane.stats()
            nursery.cancel_scope.cancel()
        return {
            "mode": mode,
            "events": total,
            "tasks": tasks if mode == "tasks" else 1,
            "seconds": round(elapsed, 4),
            "events_per_s": round(total / elapsed, 1),
            "process_cpu_percent": round(100 * cpu / elapsed, 1),
            "process_us_per_event": round(cpu / total * 1e6, 2),
            "redis_cpu_percent": round(100 * rcpu / elapsed, 1),
            "redis_us_per_event": round(rcpu / total * 1e6, 2),
            "would_block": blocked,
            "publish_errors": stats.publish_errors,
            # What this process's own reader took back from the stream meanwhile.
            "read_back_per_s": round((stats.received - received0) / elapsed, 1),
            "reader_fell_behind": stats.gaps,
            "log_warnings": len(warnings),
        }

    print(json.dumps(trio.run(main)), flush=True)


class _ListHandler:
    """A logging handler that keeps the messages in a list."""

    def __new__(cls, sink: list[str]) -> Any:
        import logging

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                sink.append(record.getMessage())

        return Handler()


def run_publish(redis: Redis, mode: str, sizes: Sizes) -> dict[str, Any]:
    """One publish-throughput measurement in a fresh child process."""
    argv = [sys.executable, str(Path(__file__)), "--child-publish", redis.url, mode]
    argv += [str(sizes.publish_events), str(sizes.publish_tasks), str(redis.pid)]
    env = {**os.environ, **bl.SERVER_ENV}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
    redis.command("FLUSHALL")
    if out.returncode:
        reason = " | ".join(out.stderr.strip().splitlines()[-5:])
        return {"mode": mode, "status": "failed", "reason": reason}
    return {"status": "ok", **json.loads(out.stdout.strip().splitlines()[-1])}


# ------------------------------------------------------------- 2. fan-out


def fanout_run(
    config: Config, redis: Redis, clients: int, rate: float, sizes: Sizes, stamp: str, tag: str
) -> dict[str, Any]:
    """One configuration under one load; the figures of its measured window."""
    overflow = "drop_oldest" if tag == "saturation" else "evict"
    with servers(config, redis, rate, stamp, tag, overflow) as procs:
        for _, port, _ in procs:
            bl.probe(port, 64, timeout=10)
        ports = ",".join(str(port) for _, port, _ in procs)
        argv = [str(bl.LOADGEN), "--port", ports, "--clients", str(clients)]
        argv += ["--warmup", str(sizes.warmup), "--duration", str(sizes.duration)]
        argv += ["--connect-timeout", "60", "--inflight", "256"]
        pids = [proc.pid for proc, _, _ in procs]
        marks: dict[str, list[float]] = {}
        result = None
        lg_log = bl.LOGS / f"{stamp}-{tag}-{config.name}.loadgen.log"
        with open(lg_log, "wb") as err:
            lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
            watchdog = threading.Timer(60 + sizes.warmup + sizes.duration + 30, lg.kill)
            watchdog.start()
            try:
                assert lg.stdout is not None
                for line in lg.stdout:
                    if line.startswith("#"):
                        cpus = [bl.sample(pid).cpu_s for pid in pids]
                        marks[line[1:].strip()] = [*cpus, cpu_s(redis.pid), bl._machine_busy_s()]
                    elif line.startswith("{"):
                        result = json.loads(line)
                lg.wait()
            finally:
                watchdog.cancel()
        alive = all(proc.poll() is None for proc, _, _ in procs)
        stats = [last_stats(log) for _, _, log in procs]
    if result is None or "window" not in marks or "end" not in marks:
        raise RuntimeError(f"load generator gave no result: {bl.tail(lg_log)}")
    return _fanout_metrics(config, clients, rate, result, marks, alive, stats)


def _fanout_metrics(
    config: Config,
    clients: int,
    rate: float,
    lg: dict[str, Any],
    marks: dict[str, list[float]],
    alive: bool,
    stats: list[str],
) -> dict[str, Any]:
    window = lg["window_s"]
    n = config.processes
    cpu = [marks["end"][i] - marks["window"][i] for i in range(n)]
    redis_cpu = marks["end"][n] - marks["window"][n]
    machine = marks["end"][n + 1] - marks["window"][n + 1]
    events = lg["events"]
    per = []
    for i, port in enumerate(lg["per_port"]):
        per.append(
            {
                "events_per_s": round(port["events"] / window, 1),
                "cpu_percent": round(100 * cpu[i] / window, 1),
                "us_per_delivery": round(cpu[i] / port["events"] * 1e6, 2)
                if port["events"]
                else None,
                "p50_ms": port["latency_us"]["p50"] / 1000,
                "p99_ms": port["latency_us"]["p99"] / 1000,
                "connected": port["connected_at_window"],
            }
        )
    lat = lg["latency_us"]
    return {
        "config": config.name,
        "clients": clients,
        "rate": rate,
        "offered_per_s": clients * rate,
        "delivered_per_s": round(events / window, 1),
        "published_per_s": lg["published_per_s"],
        "p50_ms": lat["p50"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "server_cpu_percent": round(100 * sum(cpu) / window, 1),
        "us_per_delivery": round(sum(cpu) / events * 1e6, 2) if events else None,
        "redis_cpu_percent": round(100 * redis_cpu / window, 1),
        "redis_us_per_delivery": round(redis_cpu / events * 1e6, 3) if events else None,
        "loadgen_cpu_percent": round(100 * lg["cpu_s"] / window, 1),
        "other_load_cores": round((machine - sum(cpu) - redis_cpu - lg["cpu_s"]) / window, 2),
        "machine_busy_cores": round(machine / window, 2),
        "processes": per,
        "connected": lg["connected_at_window"],
        "served": lg["served"],
        "cut": lg["cut"],
        "gaps": lg["gaps"],
        "reorders": lg["reorders"],
        "servers_alive": alive,
        "server_stats": stats,
    }


# ------------------------------------------------------------------ main

PARTS = ("publish", "fanout", "light", "saturation", "failover")
SIZE_OPTIONS = (
    "fanout-clients",
    "fanout-rate",
    "light-clients",
    "light-rate",
    "sat-clients",
    "sat-rate",
    "duration",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller, 2 rounds, under 3 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny, for the test suite")
    parser.add_argument("--rounds", type=int, help="rounds (default: 3, quick 2, smoke 1)")
    parser.add_argument("--parts", default=",".join(PARTS), help="a subset of the default")
    parser.add_argument("--out", type=Path, default=bl.RESULTS, help="directory for the JSON")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument("--trio-sse", default="HEAD", metavar="REV|worktree")
    for name in SIZE_OPTIONS:
        parser.add_argument(f"--{name}", type=float, help="override the mode's size")
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="only summarize a results file again"
    )
    parser.add_argument("--child-publish", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:
        return report(args.report, write_docs=not args.no_docs)
    if args.child_publish:
        url, pmode, events, tasks, pid = args.child_publish
        publish_child(url, pmode, int(events), int(tasks), int(pid))
        return 0

    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    overrides = {
        k.replace("-", "_"): v
        for k in SIZE_OPTIONS
        if (v := getattr(args, k.replace("-", "_"))) is not None
    }
    for k in ("fanout_clients", "sat_clients", "light_clients"):
        if k in overrides:
            overrides[k] = int(overrides[k])
    sizes = dataclasses.replace(sizes, **overrides)
    rounds = args.rounds or sizes.rounds
    parts = args.parts.split(",")
    kind = "smoke" if args.smoke else "quick" if args.quick else "full"
    bl.raise_fd_limit()
    bl.build_loadgen()
    bl.LOGS.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.trio_sse == "worktree":
        under_test = "work tree" + (" (with uncommitted changes)" if bl._dirty() else "")
    else:
        path, commit = bl.export_trio_sse(args.trio_sse)
        bl.SERVER_ENV["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(path), os.environ.get("PYTHONPATH")])
        )
        under_test = f"commit {commit[:12]}"
    print(f"bench-scale: trio-sse under test: {under_test}; {kind}, {rounds} rounds", flush=True)
    started = time.monotonic()
    runs: dict[str, list[Any]] = {p: [] for p in PARTS}
    redis = Redis(appendonly=False)
    try:
        redis.start()
        for r in range(rounds):
            if "publish" in parts:
                for pmode in ("nowait", "tasks"):
                    res = run_publish(redis, pmode, sizes)
                    runs["publish"].append({"round": r, **res})
                    print(f"[{r}] publish {scale_report.publish_line(res)}", flush=True)
            for tag, clients, rate in (
                ("fanout", sizes.fanout_clients, sizes.fanout_rate),
                ("light", sizes.light_clients, sizes.light_rate),
                ("saturation", sizes.sat_clients, sizes.sat_rate),
            ):
                if tag not in parts:
                    continue
                for config in CONFIGS[r % 3 :] + CONFIGS[: r % 3]:  # rotate the order
                    try:
                        res = fanout_run(config, redis, clients, rate, sizes, stamp, tag)
                        res["status"] = "ok"
                    except (RuntimeError, OSError) as exc:
                        res = {"config": config.name, "status": "failed", "reason": str(exc)}
                    runs[tag].append({"round": r, **res})
                    print(f"[{r}] {tag:10} {scale_report.fanout_line(res)}", flush=True)
                    time.sleep(0.5)
    finally:
        redis.close()
    if "failover" in parts:
        runs["failover"] = failover(
            args.rounds or sizes.failover_rounds, 0.5 if args.smoke else 1.5, stamp
        )
        for res in runs["failover"]:
            print(f"failover {scale_report.failover_line(res)}", flush=True)
    partial = args.parts != parser.get_default("parts") or bool(overrides)
    name = (
        f"scale-{stamp}" + ("" if kind == "full" else f"-{kind}") + ("-partial" if partial else "")
    )
    result = {
        "meta": {
            "file": f"{name}.json",
            "kind": kind,
            "rounds": rounds,
            "date": dt.date.today().isoformat(),
            "command": os.environ.get("BENCH_INVOCATION")
            or "python3 benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
            "elapsed_s": round(time.monotonic() - started, 1),
            "sizes": sizes.__dict__,
            "machine": bl.machine(),
            "versions": {
                "trio-sse source": under_test,
                "redis-server": bl._cmd("redis-server", "--version"),
                "coredis": bl._version("coredis"),
                "trio": bl._version("trio"),
                "cc": bl._cmd("cc", "-dumpfullversion"),
            },
        },
        "summary": scale_report.summarize(runs),
        "runs": runs,
    }
    out = args.out / f"{name}.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    section = scale_report.markdown(result)
    print()
    print(section)
    print(f"bench-scale: wrote {out}")
    if kind == "full" and not partial and not args.no_docs:
        scale_report.update_doc(bl.DOC_PAGE, section)
        print(f"bench-scale: updated the '{scale_report.SECTION}' section of docs/benchmarks.md")
    print(f"bench-scale: {time.monotonic() - started:.0f} s")
    return 0


def report(path: Path, *, write_docs: bool) -> int:
    """Summarize ``path`` again (after a change to the report) and rewrite it."""
    result = json.loads(path.read_text())
    result["summary"] = scale_report.summarize(result["runs"])
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    section = scale_report.markdown(result)
    print(section)
    if write_docs and result["meta"]["kind"] == "full" and "partial" not in path.name:
        scale_report.update_doc(bl.DOC_PAGE, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
