"""Sharded runs under torchrun: every process takes a fixed, disjoint share of the items.

Why: precomputing features, captioning a dataset, answering thousands of evaluation rows and batch
inference are independent per item, so N processes (one per GPU, one or several nodes) each do
1/N of them. The launcher researchers already use starts them:

    torchrun --nproc_per_node 8 -m data.features --data_root D --cache_dir C
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_endpoint HOST:29500 ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them (no launcher) the world is one process
and nothing distributed happens. Facts and file layout: docs/SHARDING.md.

- `Launch.from_env()`: this process's rank, the world size and its local rank (its GPU).
- `share(n)`: item indices i with i % world_size == rank (round robin, so items of similar cost
  spread over the processes); deterministic, disjoint, together all of 0..n-1.
- `RowParts`: each process appends the rows it finished to its own part file
  `<output>.part<rank>.jsonl` (one fsynced line per item, so an interrupted run loses at most a
  torn last line); `done()` reads every part file, whatever world size wrote it, so a resumed run
  skips finished items; after a barrier rank 0 writes the output in input order (atomically) and
  removes the parts.
- `Group`: the process group for that barrier and for gathering per-process counts (gloo: the
  coordination is a few small messages, so it needs no GPU), destroyed before the process ends
  (a gloo group torn down at interpreter shutdown once aborted a rank that had finished).
- `write_run_record`: `run.json` with `world_size` and `per_rank` (items each process handled).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import torch

from util import atomic

RUN_RECORD = "run.json"
# Ranks that finish early wait at the barrier for the slowest one: allow long jobs.
TIMEOUT = datetime.timedelta(hours=float(os.environ.get("M2UGEN_SHARD_TIMEOUT_HOURS", "48")))


class ShardError(ValueError):
    """A launcher environment that does not describe a valid process (one line)."""


@dataclasses.dataclass(frozen=True)
class Launch:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Launch":
        if "WORLD_SIZE" not in environ:
            return cls()

        def number(name: str, default: Optional[str] = None) -> int:
            value = environ.get(name, default)
            try:
                return int(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ShardError(f"launcher variable {name}={value!r} is not an integer") from None

        world, rank = number("WORLD_SIZE"), number("RANK", "0")
        local = number("LOCAL_RANK", str(rank))
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ShardError(f"launcher variables RANK={rank} WORLD_SIZE={world} "
                             f"LOCAL_RANK={local} do not describe a process")
        return cls(rank, world, local)

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> list[int]:
        """This process's item indices among 0..n-1."""
        return list(range(self.rank, n, self.world_size))

    def device(self, requested: str = "auto") -> str:
        """The device flag resolved for this process: with CUDA and a launcher, its own GPU."""
        if requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}" if self.sharded \
                else "cuda"
        return requested


class Group:
    """The process group of a sharded run (a no-op for one process). Use as a context manager:
    the group is destroyed on exit, also when the block raised."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self._owned = False

    def __enter__(self) -> "Group":
        import torch.distributed as dist

        if self.launch.sharded and not dist.is_initialized():
            dist.init_process_group("gloo", rank=self.launch.rank,
                                    world_size=self.launch.world_size, timeout=TIMEOUT)
            self._owned = True
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch.distributed as dist

        if self._owned and dist.is_initialized():
            dist.destroy_process_group()
        self._owned = False

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.launch.sharded:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order (on every process)."""
        import torch.distributed as dist

        if not self.launch.sharded:
            return [value]
        out: list[Any] = [None] * self.launch.world_size
        dist.all_gather_object(out, value)
        return out


def part_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.part{rank}.jsonl")


def _part_files(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{output.name}.part*.jsonl"))


def read_part(path: Path) -> tuple[dict[int, Any], int]:
    """{item index: row} of one part file, and how many torn lines were dropped (an interrupted
    write leaves at most one, at the end; its item is simply done again)."""
    rows: dict[int, Any] = {}
    torn = 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            if not line.endswith("\n"):
                raise ValueError("no line end")
            entry = json.loads(line)
            rows[int(entry["index"])] = entry["row"]
        except (ValueError, KeyError, TypeError):
            torn += 1
    return rows, torn


class RowParts:
    """One JSON-lines output written by several processes, one row per input item."""

    def __init__(self, output: str | os.PathLike, launch: Launch) -> None:
        self.output = Path(output)
        self.launch = launch
        self.path = part_path(self.output, launch.rank)
        self.torn = 0
        self.handled = 0

    def done(self) -> dict[int, Any]:
        """Rows already finished by any process of this or an interrupted earlier run."""
        rows: dict[int, Any] = {}
        for path in _part_files(self.output):
            part, torn = read_part(path)
            rows.update(part)
            self.torn += torn if path == self.path else 0
        return rows

    def add(self, index: int, row: Any) -> None:
        """Record item `index`'s finished row (one fsynced line)."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        atomic.append_jsonl(self.path, {"index": index, "row": row})
        self.handled += 1

    def clear(self) -> None:
        """Delete every part file (after the output that holds their rows was written)."""
        for path in _part_files(self.output):
            path.unlink()

    def merge(self, n: int, render: Callable[[Any], str]) -> None:
        """Rank 0, after every process finished: the output in input order, parts removed.
        Raises if an item has no row (a process failed before finishing its share)."""
        rows = self.done()
        missing = [i for i in range(n) if i not in rows]
        if missing:
            raise RuntimeError(f"{self.output}: {len(missing)} of {n} items have no result "
                               f"(e.g. item {missing[0]}); rerun the same command to finish them")
        atomic.write_text(self.output, "".join(render(rows[i]) for i in range(n)))
        self.clear()


def write_run_record(folder: str | os.PathLike, launch: Launch, per_rank: Iterable[int],
                     name: str = RUN_RECORD, **extra: Any) -> Path:
    """`run.json` (or `name`): who did how much (world size, items per process) + `extra`."""
    path = Path(folder) / name
    record = {"world_size": launch.world_size, "per_rank": [int(n) for n in per_rank], **extra}
    atomic.write_json(path, record)
    return path


__all__ = ["Launch", "Group", "RowParts", "ShardError", "RUN_RECORD", "part_path", "read_part",
           "write_run_record"]
