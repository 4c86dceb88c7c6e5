"""The demo under load: concurrent API sessions against a running `gradio_app.py`.

    python benchmarks/bench_demo.py --model ckpts/tiny/stage3 [--sessions 16] [--seconds 120]
        [--concurrency 4] [--session_ttl 30] [--settle 120] [--rounds 1] [--work DIR]

Starts the demo as a separate process (the command a user runs, on a free local port, its
temporary files under --work), then drives it only through its public API endpoint `chat`
(gradio_client), as a program would:

1. reference: each of four scripted conversations runs alone, one after the other; a script is
   four turns (text; a 10 s MP3; an image; a video), decoded greedily, so its replies are fixed;
2. idle: the reference sessions expire (--session_ttl) and the server's resident memory (RSS)
   is read: the idle level;
3. load: --sessions threads each open a session (a gradio_client Client), run a script through,
   close it and open the next, until --seconds have passed. Each turn records the latency to its
   first streamed text and to its full answer; a reply that differs from the script's reference
   reply means the session saw someone else's history or lost its own (a leak), an error reply
   or an exception is an error;
4. after: once every session is closed, the server has --session_ttl to expire them; RSS is read
   --settle seconds after the last session ended, and the session folders and uploads the
   server kept must be gone;
5. --rounds N runs 3-4 N times on the same server, RSS read after each: memory a leak holds
   grows round by round, a high-water mark left by the first burst does not.

Prints one table; `--json FILE` also writes every number. Latency targets are not asserted
anywhere: the table is the measurement (docs/DEMO.md lists measured runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One script = the four kinds of turn a demo user sends; media keys name files made by `media`.
SCRIPTS: tuple[tuple[tuple[str, Optional[str]], ...], ...] = (
    (("What is the opposite of slow?", None), ("Describe this music.", "audio"),
     ("Describe this image.", "image"), ("Compose music for this video.", "video")),
    (("Say hello.", None), ("Make this music fast.", "audio"),
     ("What colour is the object in this picture?", "image"), ("Describe this video.", "video")),
    (("Compose a slow piano melody in a low register.", None),
     ("What instrument is playing?", "audio"), ("Compose fast music for this image.", "image"),
     ("Is the scene brightening or darkening?", "video")),
    (("Name an instrument with keys and hammers.", None), ("Is the tempo slow or fast?", "audio"),
     ("Give me a slow melody for this picture.", "image"),
     ("What happens in this clip?", "video")),
)
TURN_SETTINGS = {"temperature": 0.0, "max_new_tokens": 48, "audio_seconds": 2.0}


def make_media(folder: Path) -> dict[str, Path]:
    """A 10 s MP3, a PNG and an MP4 from the synthetic data's generators (fixed seeds)."""
    import soundfile as sf

    from data.synthetic_media import SAMPLE_RATE, draw_image, render_video, synth_music
    from data.synthetic_media import write_mp4, write_png

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {"audio": folder / "clip.mp3", "image": folder / "image.png",
             "video": folder / "video.mp4"}
    wave = synth_music({"instrument": "piano", "register": "low", "tempo": "slow"}, rng,
                       seconds=10.0)
    sf.write(paths["audio"], wave, SAMPLE_RATE, format="MP3")
    write_png(paths["image"], draw_image({"colour": "blue", "size": "large"}, rng))
    write_mp4(paths["video"], render_video({"colour": "red", "brightness": "brightening"}, rng))
    return paths


# ---------------------------------------------------------------------------------------------
# The server process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    tmp: Path
    log: Path

    def session_folders(self) -> list[Path]:
        """What the demo keeps per session: its folders and gradio's copies of uploads."""
        left = [p for p in self.tmp.glob("m2ugen-demo-*/session-*")]
        left += [p for p in (self.tmp / "gradio").rglob("*") if p.is_file()]
        return left

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(model: str, work: Path, concurrency: int, session_ttl: int,
                 extra: Sequence[str] = (), env: Optional[dict[str, str]] = None,
                 timeout: float = 300.0) -> Server:
    """`gradio_app.py` on a free local port; its temporary files under work/tmp."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = work / "server.log"
    run_env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio"),
               "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    cmd = [sys.executable, str(ROOT / "gradio_app.py"), "--model", model, "--port", str(port),
           "--concurrency", str(concurrency), "--session_ttl", str(session_ttl), *extra]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench_demo: the server exited ({proc.returncode}); see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Server(proc, url, tmp, log)
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"bench_demo: the server did not listen within {timeout:.0f} s; see {log}")


# ---------------------------------------------------------------------------------------------
# Sessions


@dataclass
class Turn:
    session: int
    script: int
    index: int
    first_s: float
    full_s: float
    reply: str
    error: str = ""
    leak: bool = False


@dataclass
class Results:
    turns: list[Turn] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, turn: Turn) -> None:
        with self.lock:
            self.turns.append(turn)


def one_turn(client: Any, text: str, media: Optional[Path], modality: Optional[str]
             ) -> tuple[float, float, str]:
    """Send one turn; (seconds to the first streamed text, seconds to the answer, reply)."""
    from gradio_client import handle_file

    files = {modality: handle_file(str(media))} if modality and media else {}
    start = time.monotonic()
    job = client.submit(text=text, music="auto", api_name="/chat", **TURN_SETTINGS, **files)
    first = None
    while not job.done():
        outputs = job.outputs()
        if first is None and outputs and outputs[-1][0]:
            first = time.monotonic() - start
        time.sleep(0.005)
    reply, _ = job.result()
    full = time.monotonic() - start
    return (first if first is not None else full), full, reply


def run_script(url: str, script: int, media: dict[str, Path], session: int,
               expected: Optional[list[str]], results: Optional[Results],
               stop_at: Optional[float] = None) -> list[str]:
    """One session (one Client) through one script; returns its replies."""
    from gradio_client import Client

    try:
        client = Client(url, verbose=False)
    except Exception as err:  # noqa: BLE001 - a session that cannot connect is an error too
        if results is None:
            raise
        results.add(Turn(session, script, 0, float("nan"), float("nan"), "",
                         f"connect: {type(err).__name__}: {err}", False))
        return []
    replies = []
    try:
        for k, (text, modality) in enumerate(SCRIPTS[script]):
            if stop_at is not None and time.monotonic() >= stop_at and k == 0:
                break
            try:
                first, full, reply = one_turn(client, text, media.get(modality or ""), modality)
                error = reply if reply.startswith("Error") else ""
            except Exception as err:  # noqa: BLE001 - every failure is counted, none hidden
                first = full = float("nan")
                reply, error = "", f"{type(err).__name__}: {err}"
            replies.append(reply)
            leak = bool(expected) and not error and reply != expected[k]
            if results is not None:
                results.add(Turn(session, script, k, first, full, reply, error, leak))
            if error:
                break
    finally:
        client.close()
    return replies


def load(url: str, media: dict[str, Path], references: list[list[str]], sessions: int,
         seconds: float) -> tuple[Results, float]:
    """`sessions` threads, each running scripts back to back (a new session each) until the
    deadline; returns the turns and the wall time until the last one finished."""
    results = Results()
    start = time.monotonic()
    stop_at = start + seconds

    def worker(w: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            script = (w + n) % len(SCRIPTS)
            run_script(url, script, media, w, references[script], results, stop_at)
            n += 1

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return float("nan")
    return float(np.percentile(vals, q))


def wait_for_expiry(server: Server, seconds: float, poll: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.session_folders():
        time.sleep(poll)


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_demo-")).resolve()
    media = make_media(work / "media")
    env = dict(kv.split("=", 1) for kv in args.server_env)
    server = start_server(args.model, work, args.concurrency, args.session_ttl,
                          env=env)
    try:
        rss_start, _ = rss_mb(server.proc.pid)
        references = [run_script(server.url, s, media, -1, None, None)
                      for s in range(len(SCRIPTS))]
        wait_for_expiry(server, args.session_ttl + 90)
        time.sleep(args.idle_wait)
        rss_idle, _ = rss_mb(server.proc.pid)
        results, wall, rss_rounds = Results(), 0.0, []
        for _ in range(args.rounds):  # the same load again: a leak grows, a high-water mark not
            round_results, round_wall = load(server.url, media, references, args.sessions,
                                             args.seconds)
            results.turns += round_results.turns
            wall += round_wall
            ended = time.monotonic()
            wait_for_expiry(server, args.settle)
            time.sleep(max(0.0, args.settle - (time.monotonic() - ended)))
            rss_rounds.append(rss_mb(server.proc.pid)[0])
        rss_after, rss_peak = rss_mb(server.proc.pid)
        left = [str(p.relative_to(server.tmp)) for p in server.session_folders()]
    finally:
        server.stop()
    turns = results.turns
    ok = [t for t in turns if not t.error]
    summary = {
        "sessions": args.sessions, "seconds": args.seconds, "concurrency": args.concurrency,
        "session_ttl": args.session_ttl, "server_env": env,
        "answers": len(ok), "errors": len(turns) - len(ok),
        "leaks": sum(t.leak for t in turns), "answers_per_min": len(ok) / (wall / 60),
        "first_p50_s": percentile([t.first_s for t in ok], 50),
        "first_p95_s": percentile([t.first_s for t in ok], 95),
        "full_p50_s": percentile([t.full_s for t in ok], 50),
        "full_p95_s": percentile([t.full_s for t in ok], 95),
        "rss_start_mb": rss_start, "rss_idle_mb": rss_idle, "rss_peak_mb": rss_peak,
        "rss_after_mb": rss_after, "after_vs_idle": rss_after / rss_idle - 1,
        "rounds": args.rounds, "rss_after_rounds_mb": rss_rounds,
        "files_left": len(left), "settle_s": args.settle,
        "error_samples": sorted({t.error for t in turns if t.error})[:5],
        "leak_samples": [(t.script, t.index, t.reply, references[t.script][t.index])
                         for t in turns if t.leak][:5],
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def table(s: dict[str, Any]) -> str:
    rows = [
        ("sessions x seconds (concurrency)", f"{s['sessions']} x {s['seconds']:.0f} s "
                                             f"({s['concurrency']})"),
        ("answers (per minute)", f"{s['answers']} ({s['answers_per_min']:.1f})"),
        ("errors / leaks", f"{s['errors']} / {s['leaks']}"),
        ("first streamed text p50 / p95", f"{s['first_p50_s']:.2f} s / {s['first_p95_s']:.2f} s"),
        ("full answer p50 / p95", f"{s['full_p50_s']:.2f} s / {s['full_p95_s']:.2f} s"),
        ("server RSS at start / idle", f"{s['rss_start_mb']:.0f} MB / {s['rss_idle_mb']:.0f} MB"),
        ("server RSS peak", f"{s['rss_peak_mb']:.0f} MB"),
        (f"server RSS {s['settle_s']:.0f} s after", f"{s['rss_after_mb']:.0f} MB "
                                                    f"({s['after_vs_idle']:+.1%} vs idle)"),
        ("  after each round", " / ".join(f"{r:.0f} MB ({r / s['rss_idle_mb'] - 1:+.1%})"
                                          for r in s["rss_after_rounds_mb"])),
        ("session files left", str(s["files_left"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder (e.g. ckpts/tiny/stage3)")
    p.add_argument("--sessions", type=int, default=16, help="concurrent sessions (default 16)")
    p.add_argument("--seconds", type=float, default=120.0, help="load duration (default 120)")
    p.add_argument("--concurrency", type=int, default=4, help="the server's --concurrency")
    p.add_argument("--session_ttl", type=int, default=30, help="the server's --session_ttl")
    p.add_argument("--settle", type=float, default=120.0,
                   help="seconds after the last session before RSS is read (default 120)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the load this many times on one server, RSS after each "
                        "(default 1)")
    p.add_argument("--idle_wait", type=float, default=5.0,
                   help="seconds after the reference sessions expire before the idle RSS")
    p.add_argument("--server_env", nargs="*", default=[], metavar="NAME=VALUE",
                   help="extra environment for the server (e.g. MALLOC_ARENA_MAX=2)")
    p.add_argument("--work", default=None, help="folder for media, logs and server temp files")
    p.add_argument("--keep", action="store_true", help="keep --work afterwards")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    summary = run(args)
    print(table(summary))
    if summary["error_samples"] or summary["leak_samples"]:
        print(json.dumps({k: summary[k] for k in ("error_samples", "leak_samples")}, indent=1))
    if args.json:
        from util.atomic import write_text

        write_text(args.json, json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
