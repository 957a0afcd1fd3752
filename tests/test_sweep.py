"""The checkpoint sweep both sampling stages run (serpent/stages/sweep.py, issue 35 item 2): what is kept, the
retries, one divergence record for both, resuming an interrupted sweep. A fake computation stands in for SGLD, so
these run in a moment; tests/test_llc.py and tests/test_susceptibility.py run the stages themselves."""

from __future__ import annotations

import numpy as np
import pytest

from serpent.errors import DivergenceError
from serpent.io import atomic_write_json, read_json
from serpent.outputs import LLC_STEP, SUSCEPTIBILITY, SUSCEPTIBILITY_DIVERGED
from serpent.stages.distributed import World
from serpent.stages.sweep import RETRY_EPSILON_FACTORS, Sweep, retry_epsilons, select_steps
from serpent.susceptibility import SusceptibilityResult

EPS = 1e-3
STEPS = [10, 20, 30]


class FakeStage:
    """What a sweep asks of its Stage: the run, the stamp of a checkpoint and whether a stored stamp is current."""

    def __init__(self, root, settings="S"):
        self.run, self.name, self.settings = root, "fake", settings

    def stamp(self, step):
        return {"settings": self.settings, "checkpoint": f"c{step}"}

    def is_current(self, step, stamp):
        return isinstance(stamp, dict) and stamp.get("settings") == self.settings and \
            stamp.get("checkpoint", f"c{step}") == f"c{step}"


def _llc_like(stage):
    from serpent.stages.llc import _sweep
    return _sweep(stage), (lambda path, result, stamp: atomic_write_json(path, {**stamp, **result}))


def _susceptibility_like(stage):
    from serpent.stages.susceptibility import _sweep
    return _sweep(stage), (lambda path, result, stamp: result.save(path))


def _result(kind, step, eps):
    if kind is _llc_like:
        return {"row": {"step": step, "epsilon": eps}, "traces": {"loss": [1.0, 2.0]}}
    return SusceptibilityResult(step=step, components=["0:0"], chi=np.zeros((2, 1)), chi_se=np.zeros((2, 1)),
                                probe_tokens=np.zeros((1, 3), dtype=np.int64), seq_index=np.zeros(2, dtype=np.int64),
                                position=np.array([1, 2]), doc_names=["d"],
                                settings={"key": "S", "checkpoint": f"c{step}", "epsilon": eps})


def _fragile(kind, calls, interrupt_at=None):
    """Step 20 diverges at the configured step size only, step 30 at every one."""
    def compute(step, eps, world, first):
        calls.append((step, eps, first))
        if step == interrupt_at:
            raise KeyboardInterrupt
        if step == 30 or (step == 20 and first):
            raise DivergenceError(f"SGLD diverged at step 3 (epsilon {eps:.2g}); use a smaller epsilon")
        return _result(kind, step, eps)
    return compute


def _note(failures):
    return "every step size diverged: " + ", ".join(f"{eps:.2g}" for eps, _ in failures)


def test_select_steps_and_the_retry_step_sizes_live_with_the_sweep():
    import serpent
    assert serpent.select_steps is select_steps and select_steps([5, 7, 9], 2) == [5, 9]
    assert retry_epsilons(EPS) == [EPS] + [EPS * f for f in RETRY_EPSILON_FACTORS]
    import serpent.stages.susceptibility as sus
    assert not hasattr(sus, "RETRY_EPSILON_FACTORS")       # no longer borrowed from the llc stage


@pytest.mark.parametrize("kind", [_llc_like, _susceptibility_like], ids=["llc", "susceptibility"])
def test_a_diverging_step_is_retried_and_recorded_the_same_way_for_both_samplers(tmp_path, kind):
    stage = FakeStage(tmp_path)
    sweep, write = kind(stage)
    calls = []
    swept = sweep.run(STEPS, _fragile(kind, calls), write, _note, epsilon=EPS, progress=False)
    assert swept.gathered and swept.good == [10, 20] and swept.todo == STEPS and swept.computed == [10, 20]
    assert [e for s, e, _ in calls if s == 20] == pytest.approx([EPS, EPS / 3])      # retried, the largest that holds
    assert [e for s, e, _ in calls if s == 30] == pytest.approx(retry_epsilons(EPS))  # every step size
    assert swept.diverged == {30: _note([(e, "") for e in retry_epsilons(EPS)])}
    # one divergence record, whichever sampler: the stamp and the note, in the file the outputs declare for it
    record = sweep.record.file(tmp_path, step=30)
    assert read_json(record) == {"settings": "S", "checkpoint": "c30", "diverged": swept.diverged[30]}
    assert sweep.kept(30) == swept.diverged[30]
    head = sweep.kept(20)
    assert (head["row"]["epsilon"] if kind is _llc_like else head["epsilon"]) == pytest.approx(EPS / 3)

    calls.clear()                                            # resumed: nothing is sampled again
    again = sweep.run(STEPS, _fragile(kind, calls), write, _note, epsilon=EPS, progress=False)
    assert calls == [] and again.todo == [] and again.diverged == swept.diverged and again.good == [10, 20]

    other = FakeStage(tmp_path, settings="T")                # other settings: nothing kept is current
    assert [kind(other)[0].kept(s) for s in STEPS] == [None] * 3


@pytest.mark.parametrize("kind", [_llc_like, _susceptibility_like], ids=["llc", "susceptibility"])
def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, kind):
    stage = FakeStage(tmp_path)
    sweep, write = kind(stage)
    calls = []
    with pytest.raises(KeyboardInterrupt):
        sweep.run(STEPS, _fragile(kind, calls, interrupt_at=20), write, _note, epsilon=EPS, progress=False)
    assert sweep.kept(10) is not None and sweep.kept(20) is None
    calls.clear()
    swept = sweep.run(STEPS, _fragile(kind, calls), write, _note, epsilon=EPS, progress=False)
    assert sorted({s for s, _, _ in calls}) == [20, 30] and swept.todo == [20, 30] and swept.good == [10, 20]


def test_a_partial_sweep_keeps_its_results_and_reports_without_gathering(tmp_path):
    sweep, write = _llc_like(FakeStage(tmp_path))
    swept = sweep.run([10], _fragile(_llc_like, []), write, _note, epsilon=EPS, gather=False, progress=False)
    assert not swept.gathered and swept.report == {"computed": [10], "rank": 0, "ranks": 1, "gathered": False}
    assert sweep.kept(10)["row"]["step"] == 10


def test_the_older_divergence_markers_still_read_and_a_result_replaces_them(tmp_path):
    stage = FakeStage(tmp_path)
    sus, write = _susceptibility_like(stage)
    marker = SUSCEPTIBILITY_DIVERGED.file(tmp_path, step=20)
    atomic_write_json(marker, {"key": "S", "checkpoint": "c20", "note": "old note"})   # the susceptibility's old one
    assert sus.kept(20) == "old note"
    atomic_write_json(marker, {"key": "S", "checkpoint": "c99", "note": "old note"})   # another checkpoint's
    assert sus.kept(20) is None
    sus.run([20], lambda step, eps, world, first: _result(_susceptibility_like, step, eps), write, _note,
            epsilon=EPS, progress=False)
    assert not marker.exists() and sus.kept(20)["epsilon"] == EPS

    llc, _ = _llc_like(stage)                                # the llc's record is its step file, as before
    atomic_write_json(LLC_STEP.file(tmp_path, step=30), {"settings": "S", "checkpoint": "c30", "diverged": "n"})
    assert llc.kept(30) == "n"


def test_a_damaged_result_is_computed_again_and_its_stamp_is_read_from_the_header(tmp_path, monkeypatch):
    stage = FakeStage(tmp_path)
    sus, write = _susceptibility_like(stage)
    sus.run([10], lambda step, eps, world, first: _result(_susceptibility_like, step, eps), write, _note,
            epsilon=EPS, progress=False)
    f = SUSCEPTIBILITY.file(tmp_path, step=10)
    monkeypatch.setattr(SusceptibilityResult, "load", lambda *a: pytest.fail("the whole result was loaded"))
    assert sus.kept(10)["checkpoint"] == "c10"               # from the safetensors header alone
    f.write_bytes(f.read_bytes()[:-7])
    assert sus.kept(10) is None
    from safetensors.numpy import save_file
    save_file({"x": np.zeros(2)}, str(f), metadata={"format": "something else"})    # a foreign file
    assert sus.kept(10) is None


class SecondRank(World):
    """Rank 1 of 2 whose rank 0 read the run directory before a fast rank kept anything: ``agreed`` hands back rank
    0's list, as ``torch.distributed`` would; the barrier and gather have no one to wait for."""

    def __init__(self, main_todo):
        super().__init__(rank=1, size=2)
        object.__setattr__(self, "main_todo", main_todo)

    def agreed(self, obj):
        return self.main_todo

    def barrier(self):
        pass


@pytest.mark.parametrize("kind", [_llc_like, _susceptibility_like], ids=["llc", "susceptibility"])
def test_every_rank_shares_out_rank_0s_list_even_when_its_own_reading_of_the_files_is_later(tmp_path, kind):
    """The CI's flaky torchrun test: rank 0 kept step 10 before rank 1 looked, so rank 1 read [20, 30] as left and
    took 30 (rank 0's), leaving 20 to no one; with one checkpoint left it split it within and waited at another
    collective than rank 0. Every rank now takes its share of rank 0's list."""
    stage = FakeStage(tmp_path)
    sweep, write = kind(stage)
    write(sweep.result.file(tmp_path, step=10), _result(kind, 10, EPS), stage.stamp(10))   # rank 0's first, kept
    calls = []
    compute = lambda step, eps, world, first: calls.append((step, world.size)) or _result(kind, step, eps)
    swept = sweep.run(STEPS, compute, write, _note, epsilon=EPS, world=SecondRank(STEPS), progress=False)
    assert calls == [(20, 1)] and swept.report["computed"] == [20]          # rank 1's share of [10, 20, 30], alone
    calls.clear()
    swept = sweep.run(STEPS, compute, write, _note, epsilon=EPS, world=SecondRank([30]), progress=False)
    assert calls == [(30, 2)] and swept.report["computed"] == []       # one left: with rank 0, which writes it
