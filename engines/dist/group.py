"""Joining a `torch.distributed` process group, and the mesh a model runs on inside it.

A run of TP x PP ranks: rank = stage * tp + tp_rank, so the ranks of one pipeline stage are
contiguous (tensor parallelism inside a node, as vLLM and Megatron-LM place it: its all-reduce
per layer needs the fast link; the pipeline's one hop per stage can cross nodes). The backend is
gloo on the CPU and NCCL on CUDA. Every wait has a timeout (`init_process_group`'s, which the
collectives inherit; gloo's default is 30 minutes), so a rank that never comes or dies ends the
others instead of hanging them.

Setting up the group is where a launch goes wrong (no MASTER_ADDR under torchrun, a port already
taken, a rank that never joins): each is turned into one line here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

from ..errors import UserError

DEFAULT_TIMEOUT_S = 300.0  # loading a big model on a slow rank must not trip it; `--dist-timeout` sets it


def backend_for(device: str) -> str:
    """The collective library for the device the weights live on."""
    return "nccl" if device == "cuda" else "gloo"


def torchrun_env() -> dict | None:
    """(rank, world, local_rank) and the rendezvous address when this process was started by
    torchrun (or any launcher that sets RANK and WORLD_SIZE); None when it was not."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise UserError(f"RANK={os.environ['RANK']!r} and WORLD_SIZE={os.environ['WORLD_SIZE']!r} are not numbers",
                        "launch with torchrun, which sets them") from None
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise UserError(f"{var} is not set, though RANK and WORLD_SIZE are (a launcher's rendezvous is missing)",
                            "launch with torchrun, which sets it, or export MASTER_ADDR and MASTER_PORT on every rank")
    return {"rank": rank, "world": world, "local_rank": local,
            "addr": os.environ["MASTER_ADDR"], "port": os.environ["MASTER_PORT"]}


def init(rank: int, world: int, backend: str, addr: str, port: int | str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the default process group at tcp://addr:port; a UserError in one line when it
    cannot: the port is taken, or the other ranks do not come within `timeout_s`."""
    import torch.distributed as dist

    try:
        dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    except Exception as e:  # torch raises DistNetworkError, DistStoreError, RuntimeError: read the text
        raise UserError(*explain_init(e, addr, port, world, timeout_s)) from None


def explain_init(e: BaseException, addr: str, port, world: int, timeout_s: float) -> tuple[str, str]:
    text = str(e)
    if re.search(r"address already in use|errno: 98|EADDRINUSE", text, re.I):
        return (f"port {port} on {addr} is already in use, so rank 0 cannot host the rendezvous",
                "pick a free MASTER_PORT (aios picks one itself when it spawns the ranks)")
    if re.search(r"timed? ?out|timeout", text, re.I):
        return (f"not every one of the {world} ranks joined {addr}:{port} within {timeout_s:g} s",
                "start every rank (torchrun --nproc-per-node on each node), or raise --dist-timeout")
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return (f"cannot join the process group at {addr}:{port}: {first}",
            "check MASTER_ADDR and MASTER_PORT, and that every node can reach rank 0")


@dataclass
class Mesh:
    """The ranks one model runs on: `ranks` (global ranks, stage-major), `tp` x `pp` of them.

    This rank's place is (`stage`, `tp_rank`); `tp_group` holds its stage's ranks (the
    all-reduce), `group` all of the mesh's (the sampled token's broadcast); `prev` and `next`
    are the global ranks of the same tp_rank in the stages before and after (None at the ends).
    """

    ranks: tuple[int, ...]
    tp: int
    pp: int
    rank: int  # global
    tp_group: object
    group: object

    @property
    def index(self) -> int:  # this rank's place in the mesh
        return self.ranks.index(self.rank)

    @property
    def stage(self) -> int:
        return self.index // self.tp

    @property
    def tp_rank(self) -> int:
        return self.index % self.tp

    @property
    def prev(self) -> int | None:
        return self.ranks[self.index - self.tp] if self.stage > 0 else None

    @property
    def next(self) -> int | None:
        return self.ranks[self.index + self.tp] if self.stage < self.pp - 1 else None

    @property
    def head(self) -> int:
        """The global rank that computes the logits and samples: the last stage's tp_rank 0."""
        return self.ranks[(self.pp - 1) * self.tp]

    @property
    def is_head(self) -> bool:
        return self.rank == self.head

    @property
    def world(self) -> int:
        return self.tp * self.pp

    def describe(self) -> str:
        return f"TP={self.tp} x PP={self.pp}"


def build_mesh(ranks: list[int] | tuple[int, ...], tp: int, pp: int) -> Mesh | None:
    """A mesh over `ranks` of the default group. Every rank of the default group must call it
    (with the same arguments, in the same order: `new_group` is collective); the ranks outside
    `ranks` get None."""
    import torch.distributed as dist

    ranks = tuple(ranks)
    if len(ranks) != tp * pp:
        raise ValueError(f"a TP={tp} x PP={pp} mesh needs {tp * pp} ranks, got {len(ranks)}")
    me = dist.get_rank()
    whole = dist.group.WORLD if len(ranks) == dist.get_world_size() else dist.new_group(list(ranks))
    mine = None
    for s in range(pp):
        members = list(ranks[s * tp:(s + 1) * tp])
        g = dist.new_group(members) if tp > 1 else None
        if me in members:
            mine = g
    if me not in ranks:
        return None
    return Mesh(ranks, tp, pp, me, mine, whole)
