"""util.shard: launcher environment, shares, per-process part files, merge, run record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from util.shard import Launch, RowParts, ShardError, part_path, read_part, write_run_record

ROOT = Path(__file__).resolve().parents[2]


def test_no_launcher_is_one_process():
    assert Launch.from_env({}) == Launch(0, 1, 0)
    assert not Launch.from_env({}).sharded and Launch.from_env({}).share(3) == [0, 1, 2]


def test_torchrun_variables():
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    launch = Launch.from_env(env)
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 4, 1)
    assert launch.sharded and not launch.is_main
    assert launch.device("cpu") == "cpu"


@pytest.mark.parametrize("env, match", [
    ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two'"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 WORLD_SIZE=2"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
])
def test_bad_launcher_variables_are_one_line_errors(env, match):
    with pytest.raises(ShardError, match=match):
        Launch.from_env(env)


@pytest.mark.parametrize("n, world", [(0, 2), (1, 3), (7, 2), (10, 4), (5, 8)])
def test_shares_are_disjoint_and_cover_every_item(n, world):
    shares = [Launch(r, world, r).share(n) for r in range(world)]
    flat = sorted(i for s in shares for i in s)
    assert flat == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced


def _render(row) -> str:
    return json.dumps(row) + "\n"


def test_parts_merge_in_input_order_and_are_removed(tmp_path):
    out = tmp_path / "results.jsonl"
    parts = [RowParts(out, Launch(r, 2, r)) for r in range(2)]
    for i in (4, 0, 2):
        parts[0].add(i, {"id": i})
    for i in (1, 3):
        parts[1].add(i, {"id": i})
    assert sorted(parts[1].done()) == [0, 1, 2, 3, 4]
    parts[0].merge(5, _render)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert not list(tmp_path.glob("*.part*"))


def test_missing_rows_refuse_to_merge(tmp_path):
    out = tmp_path / "o.jsonl"
    RowParts(out, Launch(0, 2, 0)).add(0, "a")
    with pytest.raises(RuntimeError, match="1 of 2 items have no result"):
        RowParts(out, Launch(0, 2, 0)).merge(2, _render)
    assert not out.exists() and part_path(out, 0).exists()  # nothing lost: rerun to finish


def test_resume_reads_every_part_whatever_world_wrote_it(tmp_path):
    out = tmp_path / "o.jsonl"
    RowParts(out, Launch(0, 3, 0)).add(0, "x")  # an interrupted 3-process run
    RowParts(out, Launch(2, 3, 2)).add(5, "y")
    again = RowParts(out, Launch(1, 2, 1))  # resumed with 2 processes
    assert again.done() == {0: "x", 5: "y"}


def test_a_torn_last_line_is_dropped_and_counted(tmp_path):
    out = tmp_path / "o.jsonl"
    parts = RowParts(out, Launch(0, 1, 0))
    parts.add(0, "ok")
    with open(parts.path, "a") as f:
        f.write('{"index": 1, "row": "cut')  # the process died mid-write
    rows, torn = read_part(parts.path)
    assert rows == {0: "ok"} and torn == 1
    assert parts.done() == {0: "ok"} and parts.torn == 1


def test_run_record(tmp_path):
    path = write_run_record(tmp_path, Launch(0, 2, 0), [3, 2], items=5)
    assert json.loads(path.read_text()) == {"world_size": 2, "per_rank": [3, 2], "items": 5}


SCRIPT = textwrap.dedent("""
    import json, sys
    from util.shard import Group, Launch, RowParts, write_run_record
    launch = Launch.from_env()
    out = sys.argv[1] + "/o.jsonl"
    with Group(launch) as group:
        parts = RowParts(out, launch)
        for i in launch.share(7):
            parts.add(i, {"i": i, "rank": launch.rank})
        group.barrier()
        counts = group.gather(parts.handled)
        if launch.is_main:
            parts.merge(7, lambda row: json.dumps(row) + "\\n")
            write_run_record(sys.argv[1], launch, counts)
    import torch.distributed as dist
    with open(f"{sys.argv[1]}/after_exit_{launch.rank}.txt", "w") as f:
        f.write(str(dist.is_initialized()))
""")


@pytest.mark.slow
def test_two_real_processes_share_merge_and_leave_the_group(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["i"] for r in rows] == list(range(7))
    assert {r["rank"] for r in rows} == {0, 1} and all(r["rank"] == r["i"] % 2 for r in rows)
    assert json.loads((tmp_path / "run.json").read_text()) == {"world_size": 2,
                                                                "per_rank": [4, 3]}
    # one file per rank: two ranks printing to one pipe interleave their words
    assert [(tmp_path / f"after_exit_{rank}.txt").read_text() for rank in (0, 1)] == ["False"] * 2
