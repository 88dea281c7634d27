"""SSE fan-out under load: many subscribers following live runs over HTTP, event lag and server CPU.

The server (``agentflow serve``'s app under uvicorn, no model, runs in a temporary SQLite file) runs
in a subprocess; this process is the client. A workflow of tool nodes runs ``--runs`` times at once,
each followed by ``--subscribers`` SSE clients (``GET /v1/runs/{id}/events``, httpx + httpx-sse, one
connection each): 100 x 10 = 1,000 subscribers by default. Each run first waits for a common start
time, so every subscriber is connected before its run's events flow; then ``--nodes`` nodes in a row
each sleep the scenario's node time (4 events a node: node.started, tool.call, tool.result,
node.completed). Run starts are staggered over one node time so that the load is even, not a burst
every node time; so all runs also end within one node time, and the 1,000 streams close together.

    lag = time the client parsed the event - the event's ``time`` field (set when the runtime emitted it)

over every live event each subscriber receives (events emitted before it connected, replayed from the
store, are counted but not timed). Both clocks are this machine's. The client shares the CPU with the
server, so on a small machine the lag includes the client's own queueing: the table shows the client's
CPU time too.

One scenario per ``--intervals`` value (node time: 1.0, 0.5 and 0.3 s by default: about 4k, 8k and
13k event deliveries a second with 1,000 subscribers), after a baseline on the same server: one run
followed by one subscriber.

    python bench/server_load.py                     # about a minute on 2 cores
    python bench/server_load.py --intervals 0.5 --runs 50 --subscribers 20

Target (from the issue): p99 lag <= 100 ms with 1,000 subscribers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_P99_S = 0.100


# ---- the server (``--serve``, in the subprocess) ------------------------------------------------------------

async def wait_until(t: float) -> float:
    """Sleep until the Unix time ``t``."""
    import anyio

    await anyio.sleep(max(0.0, t - time.time()))
    return t


async def tick(delay: float) -> float:
    import anyio

    await anyio.sleep(delay)
    return delay


def workflow_yaml(nodes: int) -> str:
    lines = ["name: ticker", "input:", "  type: object",
             "  properties: {start_at: {type: number}, interval: {type: number}}", "  required: [start_at, interval]",
             "nodes:", '  - {id: gate, kind: tool, tool: wait_until, args: {t: "{{ input.start_at }}"}}']
    lines += [f'  - {{id: t{i}, kind: tool, tool: tick, args: {{delay: "{{{{ input.interval }}}}"}}}}'
              for i in range(1, nodes + 1)]
    lines.append("edges:")
    chain = ["gate", *(f"t{i}" for i in range(1, nodes + 1))]
    lines += [f"  - {{from: {a}, to: {b}}}" for a, b in itertools.pairwise(chain)]
    return "\n".join(lines) + "\n"


def serve(port: int, store: str, loop: str) -> None:
    import logging

    import uvicorn

    from agentflow.server import ServerConfig, create_app

    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    app = create_app(ServerConfig(model=None, store=store), tools=[wait_until, tick])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096,
                timeout_keep_alive=60, loop=loop)  # the loop `agentflow serve` picks (--loop)


# ---- the client ----------------------------------------------------------------------------------------------

@dataclass
class Stream:
    """What one subscriber saw."""

    lags: list[float] = field(default_factory=list)
    connected_at: float = float("inf")
    replayed: int = 0
    events: int = 0
    complete: bool = False
    error: str | None = None


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux ``/proc/PID/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def follow(client: Any, run_id: str, stream: Stream, connected: Any) -> None:
    from httpx_sse import aconnect_sse

    try:
        async with aconnect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
            source.response.raise_for_status()
            since = stream.connected_at = time.time()
            connected()
            last = 0
            async for sse in source.aiter_sse():
                now = time.time()
                event = json.loads(sse.data)
                stream.events += 1
                if event["seq"] != last + 1:
                    raise RuntimeError(f"seq {event['seq']} after {last}")
                last = event["seq"]
                if event["time"] >= since:
                    stream.lags.append(now - event["time"])
                else:
                    stream.replayed += 1
                if sse.event in ("run.completed", "run.failed", "run.cancelled"):
                    stream.complete = sse.event == "run.completed"
                    break
    except Exception as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
        connected()


async def scenario(base_url: str, runs: int, subscribers: int, nodes: int, interval: float, lead_s: float,
                   server_pid: int, label: str) -> dict[str, Any]:
    import anyio
    import httpx
    from tqdm import tqdm

    total = runs * subscribers
    limits = httpx.Limits(max_connections=total + 16, max_keepalive_connections=total + 16)
    timeout = httpx.Timeout(30.0 + lead_s + nodes * interval * 3, connect=30.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        start_at = time.time() + lead_s
        run_ids: list[str] = []
        for i in range(runs):  # staggered over one interval: an even load, not a burst every interval
            body = {"input": {"start_at": start_at + interval * i / runs, "interval": interval}}
            response = await client.post("/v1/workflows/ticker/runs", json=body)
            response.raise_for_status()
            run_ids.append(response.json()["run_id"])
        streams = [Stream() for _ in range(total)]
        connecting = tqdm(total=total, desc=f"{label}: connect", unit="sub", leave=False)
        done = tqdm(total=total, desc=f"{label}: follow", unit="sub", leave=False)

        async def one(index: int) -> None:
            await follow(client, run_ids[index // subscribers], streams[index], lambda: connecting.update(1))
            done.update(1)

        live: dict[str, float] = {}

        async def sample_at_start() -> None:
            await anyio.sleep(max(0.0, start_at - time.time()))
            live.update(cpu=cpu_seconds(server_pid), client=time.process_time(), wall=time.monotonic())

        cpu_before = cpu_seconds(server_pid)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sample_at_start)
            for index in range(total):
                tg.start_soon(one, index)
        end = {"cpu": cpu_seconds(server_pid), "client": time.process_time(), "wall": time.monotonic()}
        connecting.close()
        done.close()
    lags = sorted(lag for s in streams for lag in s.lags)
    errors = [s.error for s in streams if s.error]
    return {"label": label, "subscribers": total, "runs": runs, "lags": lags,
            "events": sum(s.events for s in streams), "replayed": sum(s.replayed for s in streams),
            "complete": sum(s.complete for s in streams), "errors": errors,
            "late": sum(s.connected_at > start_at for s in streams), "cpu_all": end["cpu"] - cpu_before,
            "cpu": end["cpu"] - live["cpu"], "client_cpu": end["client"] - live["client"],
            "wall": end["wall"] - live["wall"], "interval": interval}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(args: argparse.Namespace) -> None:
    import httpx

    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="agentflow-load-") as tmp:
        port = free_port()
        store = str(Path(tmp) / "runs.db")
        server = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port), "--store", store,
                                   "--loop", args.loop])
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
            put = httpx.put(f"{base_url}/v1/workflows/ticker", content=workflow_yaml(args.nodes),
                            headers={"content-type": "application/yaml"}, timeout=10)
            put.raise_for_status()
            import anyio

            total = args.runs * args.subscribers
            plan = [(f"baseline: 1 x 1, {args.intervals[-1]:g} s nodes", 1, 1, args.intervals[-1], 1.0)]
            plan += [(f"{args.runs} runs x {args.subscribers} = {total:,}, {interval:g} s nodes", args.runs,
                      args.subscribers, interval, args.lead) for interval in args.intervals]
            results = [anyio.run(scenario, base_url, runs, subscribers, args.nodes, interval, lead, server.pid, label)
                       for label, runs, subscribers, interval, lead in plan]
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nSSE fan-out: runs of {args.nodes} tool nodes (4 events a node); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; server and client on this machine; server event loop {args.loop}, "
          f"HTTP parser {_http_parser()}")
    print("| scenario (subscribers, node time) | events received (live / replayed) | complete streams "
          "| deliveries/s | lag p50 (ms) | lag p99 (ms) | lag max (ms) | target p99 | server CPU (s) "
          "| server CPU (% of a core) | client CPU (s) | live window (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lags = r["lags"]
        p50, p99 = percentile(lags, 0.5) * 1e3, percentile(lags, 0.99) * 1e3
        worst = (lags[-1] if lags else float("nan")) * 1e3
        target = f"<= {TARGET_P99_S * 1e3:.0f} ms " + ("(met)" if p99 <= TARGET_P99_S * 1e3 else "(missed)")
        print(f"| {r['label']} | {r['events']:,} ({len(lags):,} / {r['replayed']:,}) "
              f"| {r['complete']}/{r['subscribers']} | {len(lags) / r['wall']:,.0f} | {p50:.1f} | {p99:.1f} "
              f"| {worst:.1f} | {target} | {r['cpu']:.2f} | {100 * r['cpu'] / r['wall']:.0f}% "
              f"| {r['client_cpu']:.2f} | {r['wall']:.1f} |")
    for r in results:
        if r["errors"]:
            print(f"\n{r['label']}: {len(r['errors'])} subscriber(s) failed, first: {r['errors'][0]}")
        if r["late"]:
            print(f"\n{r['label']}: {r['late']} subscriber(s) connected after the runs started (raise --lead)")
    base = results[0]
    for r in results[1:]:
        if base["lags"] and r["lags"]:
            ratios = [percentile(r["lags"], q) / percentile(base["lags"], q) for q in (0.5, 0.99)]
            print(f"{r['label']}: lag vs the baseline: p50 {ratios[0]:.1f}x, p99 {ratios[1]:.1f}x")
    print("\nlag: the client's receive time minus the event's `time` (when the runtime emitted it), live events "
          "only (events from before a subscriber connected are replayed from the store and not timed). "
          "deliveries/s: live events received per second of the live window (from the runs' common start to the "
          "last event). CPU: utime + stime (/proc/PID/stat) over the live window.")


def _http_parser() -> str:
    """What uvicorn's ``http="auto"`` picks, as `agentflow serve` runs it."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100, help="concurrent runs (default 100)")
    p.add_argument("--subscribers", type=int, default=10, help="SSE subscribers per run (default 10)")
    p.add_argument("--nodes", type=int, default=10, help="tool nodes per run after the start gate (default 10)")
    p.add_argument("--intervals", type=lambda text: [float(v) for v in text.split(",")], default=[1.0, 0.5, 0.3],
                   help="seconds each node sleeps, one scenario per value: fewer seconds, more events per second "
                   "(default 1.0,0.5,0.3)")
    p.add_argument("--lead", type=float, default=5.0,
                   help="seconds from creating the runs to their start, for the subscribers to connect (default 5)")
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                   help="the server's event loop (default: uvloop where installed, as `agentflow serve`)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    from agentflow.runtime.loop import choose_loop

    try:
        arguments.loop = choose_loop(None if arguments.loop == "auto" else arguments.loop)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"--loop: {exc}") from None
    if arguments.serve:
        serve(arguments.port, arguments.store, arguments.loop)
    else:
        main(arguments)
