"""`python -m sandbox run|serve|stop|status`: the local sandbox behind `make run`.

`run` makes sure a sandbox moto server is up (starting `serve` in the background if not),
then starts the Dagster UI on it in the foreground. `serve` is that background process: it
runs moto in-process (backdating needs that), deploys infra/fleet.yaml and infra/template.yaml, seeds the demo
fleet once, and keeps serving. Re-running `make run` reuses a server that is still up, with
its fleet; `make stop` ends it. Everything it writes stays under the project folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".sandbox"
STATE_FILE = STATE_DIR / "state.json"
LOG_FILE = STATE_DIR / "moto.log"
UI_FILE = STATE_DIR / "ui.json"
DAGSTER_HOME = ROOT / ".dagster_home"


def _read_state() -> dict | None:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _live_state(port: int | None = None) -> dict | None:
    from sandbox.server import moto_is_up

    state = _read_state()
    if not state or not state.get("ready") or not _pid_alive(int(state["pid"])):
        return None
    if port is not None and int(state["port"]) != port:
        return None
    return state if moto_is_up(state["url"]) else None


def serve(port: int) -> None:
    """Foreground: moto + template + demo fleet, then serve until killed."""
    from resources import load_aws_clients, load_settings
    from sandbox.deploy import deploy_stack
    from sandbox.seed import demo_spec, seed_fleet
    from sandbox.server import DEFAULT_REGION, sandbox_env, start_moto

    STATE_DIR.mkdir(exist_ok=True)
    server, url = start_moto(port=port)
    os.environ.update(sandbox_env(url, os.environ.get("AWS_REGION", DEFAULT_REGION)))
    aws, settings = load_aws_clients(), load_settings()
    started = time.monotonic()
    outputs = deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    fleet = seed_fleet(aws, settings, demo_spec())
    summary = {
        "pools": len(fleet.pools), "instances": fleet.instances, "busy": len(fleet.busy), "idle": len(fleet.idle),
        "stopped": len(fleet.stopped), "orphaned": len(fleet.orphaned), "protected_orphans": len(fleet.protected_orphans),
        "ecs_tasks": len(fleet.ecs_running) + len(fleet.ecs_stopped), "finished_jobs": fleet.finished_jobs,
        "running_jobs": len(fleet.running_jobs), "dead_parameters": len(fleet.dead_parameters),
        "queue_sets": len(fleet.live_queue_runners) + len(fleet.dead_queue_runners),
        "termination_messages": len(fleet.termination_message_ids) + len(fleet.malformed_message_ids),
        "seconds": round(time.monotonic() - started, 1),
    }
    STATE_FILE.write_text(json.dumps(
        {"pid": os.getpid(), "port": port, "url": url, "ready": True, "stack": outputs, "fleet": summary}, indent=2
    ))
    print(f"sandbox ready at {url}: {json.dumps(summary)}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    STATE_FILE.unlink(missing_ok=True)


def ensure_server(port: int, timeout_s: float = 300) -> dict:
    """Reuse a live sandbox server on ``port`` or start one in the background; returns its state."""
    state = _live_state(port)
    if state:
        print(f"Reusing the sandbox moto server at {state['url']} (pid {state['pid']}) and its fleet.")
        return state
    old = _read_state()
    if old and _pid_alive(int(old["pid"])):
        os.kill(int(old["pid"]), signal.SIGTERM)
    STATE_DIR.mkdir(exist_ok=True)
    STATE_FILE.unlink(missing_ok=True)
    print(f"Starting a moto server on 127.0.0.1:{port}, deploying infra/fleet.yaml and infra/template.yaml and seeding the demo fleet...")
    with LOG_FILE.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "serve", "--moto-port", str(port)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _live_state(port)
        if state:
            print(f"Sandbox ready in {state['fleet']['seconds']} s: {json.dumps(state['fleet'])}")
            return state
        if process.poll() is not None:
            raise SystemExit(f"The sandbox server exited ({process.returncode}); see {LOG_FILE}")
        time.sleep(0.5)
    raise SystemExit(f"The sandbox server was not ready after {timeout_s:.0f} s; see {LOG_FILE}")


def dagster_env(moto_url: str, dagster_home: Path = DAGSTER_HOME) -> dict[str, str]:
    """The environment `dagster dev` runs with: AWS pointed at the sandbox moto server, DAGSTER_HOME in the project."""
    from sandbox.server import DEFAULT_REGION, sandbox_env

    dagster_home.mkdir(parents=True, exist_ok=True)
    # The sandbox instance: run-queue limits as in production, no telemetry (sandbox/dagster.yaml).
    (dagster_home / "dagster.yaml").write_text((Path(__file__).parent / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(sandbox_env(moto_url, os.environ.get("AWS_REGION", DEFAULT_REGION)))
    env["DAGSTER_HOME"] = str(dagster_home)
    return env


def dagster_dev_command(port: int) -> list[str]:
    dagster = Path(sys.executable).parent / "dagster"
    return [str(dagster), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]


def run(moto_port: int, dagster_port: int) -> None:
    state = ensure_server(moto_port)
    env = dagster_env(state["url"])
    print(f"Starting the Dagster UI on http://localhost:{dagster_port} (DAGSTER_HOME={DAGSTER_HOME}); Ctrl-C or "
          "`make stop` stops it, `make stop` also stops the moto server.", flush=True)
    command = dagster_dev_command(dagster_port)
    # execve keeps this pid: `make stop` finds the UI by it, even when `make run` was started in the background.
    UI_FILE.write_text(json.dumps({"pid": os.getpid(), "port": dagster_port}))
    os.execve(command[0], command, env)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc; none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_gone(pids: list[int], grace_s: float) -> list[int]:
    deadline = time.monotonic() + grace_s
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _pid_alive(p)]


def stop_ui(grace_s: float = 30, keep: frozenset[int] = frozenset()) -> None:
    """Stop `dagster dev` as Ctrl-C in its terminal does: SIGINT to it and every process below it (its
    webserver, daemon and code server; not ``keep``, the moto server `make run` started before it), then
    make sure: what is left after ``grace_s`` (seen: the webserver and daemon outliving dagster dev) is
    stopped too, SIGTERM first."""
    try:
        pid = int(json.loads(UI_FILE.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        print("No sandbox Dagster UI is running.")
        return
    if _pid_alive(pid) and "dagster" in _command_of(pid):
        started = [p for p in _descendants(pid) if p not in keep]  # read before they are orphaned
        for target in [pid, *started]:
            try:
                os.kill(target, signal.SIGINT)
            except OSError:
                pass  # already gone
        for survivor in _wait_gone([pid], grace_s):
            os.kill(survivor, signal.SIGKILL)
        left = [p for p in started if _pid_alive(p)]
        for child in left:
            try:
                os.kill(child, signal.SIGTERM)
            except OSError:
                pass
        for child in _wait_gone(left, min(grace_s, 10)):
            os.kill(child, signal.SIGKILL)
        print(f"Stopped the sandbox Dagster UI (pid {pid}" + (f"; and {len(left)} process(es) it left)" if left else ")."))
    else:
        print("No sandbox Dagster UI is running.")
    UI_FILE.unlink(missing_ok=True)


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "dagster"  # no /proc (macOS): trust the pid file


def stop() -> None:
    state = _read_state()
    stop_ui(keep=frozenset({int(state["pid"])}) if state else frozenset())
    if state and _pid_alive(int(state["pid"])):
        os.kill(int(state["pid"]), signal.SIGTERM)
        print(f"Stopped the sandbox moto server (pid {state['pid']}).")
    else:
        print("No sandbox moto server is running.")
    STATE_FILE.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "serve", "stop", "status"])
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", "5000")))
    parser.add_argument("--dagster-port", type=int, default=int(os.environ.get("DAGSTER_PORT", "3000")))
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.moto_port)
    elif args.command == "run":
        run(args.moto_port, args.dagster_port)
    elif args.command == "stop":
        stop()
    else:
        state = _live_state()
        print(json.dumps(state, indent=2) if state else "No sandbox moto server is running.")


if __name__ == "__main__":
    main()
