"""Several processes on one stage: ``torchrun --nproc_per_node=N -m serpent susceptibilities RUN`` (or ``llc``).

The processes ("ranks") are started by ``torchrun`` and talk through ``torch.distributed`` (gloo on CPUs, NCCL on
GPUs; each rank takes GPU ``LOCAL_RANK``). How the sampling stages share their work, each rank seeding its chains
exactly as one process does, so that the numbers are those of a one-process run:

* **checkpoints across ranks** when there are at least as many checkpoints left to compute as ranks: rank r takes
  every N-th, computes each one whole, and keeps its result in the checkpoint's own file (the same numbers as one
  process, to the bit);
* **within a checkpoint** otherwise: the susceptibility stage gives each rank a share of the components (every rank
  also runs the unrestricted chains, which each component's χ is measured against: the same seeds, the same
  chains), the LLC stage a share of the chains (chain c keeps its seed ``seed + c``); rank 0 gathers the shares and
  writes the result. Equal to a one-process run up to float rounding (the replicas are batched differently).

What is left to compute is rank 0's reading of the run directory, sent to every rank (:meth:`World.agreed`), so
that every rank shares out the same list. Every rank writes only the per-checkpoint files it computed (atomically); after a barrier rank 0 reads them all,
writes the stage's tables and records the stage. When a rank dies, ``torchrun`` stops the others; run the same command
again and every checkpoint already kept is reused. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) there
is one rank and nothing here does anything.

>>> solo = World()
>>> solo.share([10, 20, 30]), solo.is_main, solo.gather({"a": 1}), solo.agreed([20, 30])
(([10, 20, 30], False), True, [{'a': 1}], [20, 30])
>>> World(rank=1, size=2).share([10, 20, 30, 40])
([20, 40], False)
>>> World(rank=1, size=4).share([10, 20])           # fewer checkpoints than ranks: every rank works on each
([10, 20], True)
>>> [World(rank=r, size=3).part(list("abcdefg")) for r in range(3)]   # shares of a checkpoint's components
[['a', 'b', 'c'], ['d', 'e'], ['f', 'g']]
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..errors import ConfigError

__all__ = ["World", "SOLO", "current_world", "susceptibilities_across_ranks", "TIMEOUT_ENV"]

#: Seconds a rank waits for the others at a collective before giving up (``torch.distributed``'s default is 30 min).
TIMEOUT_ENV = "SERPENT_DIST_TIMEOUT"


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: ``rank`` of ``size`` (``World()``: one process alone)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: it writes the stage's tables and records the stage."""
        return self.rank == 0

    def share(self, todo: Sequence[int]) -> tuple[list[int], bool]:
        """The checkpoints this rank computes, and whether the ranks split each checkpoint's work instead.

        With at least as many checkpoints as ranks: every ``size``-th, starting at ``rank``; with fewer: all of
        them, each one shared by every rank (``within=True``).
        """
        todo = list(todo)
        if self.size == 1:
            return todo, False
        if len(todo) >= self.size:
            return todo[self.rank::self.size], False
        return todo, True

    def part(self, items: Sequence) -> list:
        """This rank's share of one checkpoint's components or chains: a contiguous block, the first ranks taking one
        more when the count does not divide (empty when there are more ranks than items)."""
        items = list(items)
        q, r = divmod(len(items), self.size)
        lo = self.rank * q + min(self.rank, r)
        return items[lo:lo + q + (self.rank < r)]

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects: numbers, arrays, dicts)."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist
        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def agreed(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank: what the ranks decide from the files must be one decision. (Each rank
        reading the run directory for itself sees another state as soon as a fast rank has kept its first result, and
        the ranks would then share out different lists, or wait at different collectives.)"""
        if self.size == 1:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def together(self, compute: Callable[[], Any], combine: Callable[[list], Any]) -> Any:
        """One piece of work shared by the ranks: ``compute()`` this rank's share (None when it has none), and on
        every rank ``combine`` of all the shares, in rank order. A DivergenceError on any rank is raised on all of
        them (so that every rank retries alike). Alone, ``compute()`` itself."""
        if self.size == 1:
            return compute()
        from ..errors import DivergenceError
        res, error = None, None
        try:
            res = compute()
        except DivergenceError as e:
            error = str(e)
        shares = self.gather((res, error))
        if error := next((e for _, e in shares if e), None):
            raise DivergenceError(error)
        return combine([r for r, _ in shares if r is not None])

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.size > 1:
            import torch.distributed as dist
            dist.barrier()

    def device(self, device=None) -> torch.device:
        """The device of this rank: ``device`` (default: CUDA if available), on a GPU the one of ``LOCAL_RANK``."""
        from ..device import default_device
        dev = default_device(device)
        if dev.type == "cuda" and self.size > 1 and dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)) % torch.cuda.device_count())
        return dev


#: One process alone.
SOLO = World()


def current_world(device=None) -> World:
    """The ranks this process belongs to: started by ``torchrun`` (``WORLD_SIZE`` > 1), the process group is set up on
    first call (NCCL when the stage runs on CUDA, else gloo); otherwise ``World()``."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or not torch.distributed.is_available():
        return World()
    import torch.distributed as dist
    if not dist.is_initialized():
        from ..device import default_device
        cuda = default_device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        raw = os.environ.get(TIMEOUT_ENV, "1800")
        try:
            timeout = datetime.timedelta(seconds=float(raw))
        except ValueError:
            raise ConfigError(f"{TIMEOUT_ENV}: got {raw!r}; give the seconds a rank waits for the others") from None
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def susceptibilities_across_ranks(model, probe_tokens, batches, cfg, *, components="heads", world: World | None = None,
                                  **kwargs):
    """:func:`serpent.susceptibility.susceptibilities` of any hooked transformer (ours, or a TransformerLens 4
    ``TransformerBridge``: Pythia, GPT-2...), its components shared among the ranks of ``torchrun``: each rank
    samples a contiguous share of them beside its own unrestricted chains (the same seeds on every rank), and every
    rank returns the whole result (:func:`~serpent.susceptibility.combine_components`). A divergence on any rank
    raises on all of them. Alone (no ``torchrun``) it is ``susceptibilities`` itself. ``kwargs`` are those of
    ``susceptibilities``.

    A script run as ``torchrun --nproc_per_node=8 script.py``::

        model = TransformerBridge.boot_transformers("EleutherAI/pythia-1.4b",
                                                    device=f"cuda:{os.environ['LOCAL_RANK']}")
        result = susceptibilities_across_ranks(model, probe, batches, cfg, components="heads+mlp", device="cuda")
        if current_world().is_main:
            result.save("pythia-1.4b_step143000.safetensors")
    """
    from ..susceptibility import combine_components, component_specs, susceptibilities

    world = world or current_world(kwargs.get("device"))
    if world.size == 1:
        return susceptibilities(model, probe_tokens, batches, cfg, components=components, **kwargs)
    if "device" in kwargs:
        kwargs["device"] = world.device(kwargs["device"])
    mine = world.part(component_specs(model, components))
    return world.together(
        lambda: susceptibilities(model, probe_tokens, batches, cfg, components=mine, **kwargs) if mine else None,
        combine_components)
