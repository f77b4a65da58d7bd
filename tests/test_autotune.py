"""Autotuning of the Triton launches (fused_inception/triton/autotune.py), run here on the CPU.

On a GPU the launchers time their candidates with CUDA events; here tuning is forced under the
interpreter with fake timers, so the selection, the per-shape cache, the pruning by the tuning
table and the final launch with the chosen config all run in CI:
- `choose` on its own: fastest wins, cached per key, failing candidates skipped, candidates not
  clean in the table never timed, off under the interpreter / with FUSED_INCEPTION_AUTOTUNE=0 /
  during CUDA graph capture / on archs the table does not list;
- the two launchers in a real forward: every candidate runs (each to a correct output), the
  chosen one is the config of the final launch, and the output is right (poisoned, float64);
- the committed table: every candidate of GoogLeNet's launches is listed for sm_80 and sm_90,
  every pick is clean, and a slice recompiled now agrees with it (subprocess, no interpreter).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import assert_close_rel, randomize_block, reference_f64

from fused_inception import BlockConfig, FusedInception
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.triton import INTERPRETER, autotune, block_1x1, block_kxk, common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIXTEEN_BIT = (torch.float16, torch.bfloat16)

pytestmark = pytest.mark.skipif(not INTERPRETER, reason="tests of the interpreter's launches")


def _table_with(family: str, dtype: str, clean: list[tuple], arch: str = "sm_90") -> dict:
    fields = ["a", "b"]
    slot = {"fields": fields, "clean": [{"config": list(c)} for c in clean], "refused": []}
    return {"format": autotune.TABLE_FORMAT, "archs": {arch: {family: {dtype: slot}}}}


@pytest.fixture
def fake_table(monkeypatch):
    """Replace the committed table by one built by the test: call it with (family, dtype,
    clean configs)."""

    def install(family: str, dtype: str, clean: list[tuple], arch: str = "sm_90") -> None:
        table = _table_with(family, dtype, clean, arch)
        monkeypatch.setattr(autotune, "table", lambda: table)

    return install


def _choose(pick, candidates, run, *, key=(1,), refused=(), family="fam"):
    def check(cfg):
        if cfg in refused:
            raise ValueError("the grid is too large")

    return autotune.choose(
        family, key, torch.device("cpu"), "float16", pick, lambda: candidates, check, run
    )


def test_fastest_candidate_wins_and_is_cached_per_key(fake_table):
    configs = [(1, 1), (2, 2), (3, 3), (4, 4)]
    fake_table("fam", "float16", configs)
    speed = {(1, 1): 3.0, (2, 2): 1.0, (3, 3): 2.0, (4, 4): 5.0}
    timed, ran = [], []

    def timer(run):
        run()
        return speed[ran[-1]]

    with autotune.forced(lambda run: timed.append(1) or timer(run)):
        chosen = _choose((1, 1), configs, ran.append)
        assert chosen == (2, 2)
        assert sorted(ran) == sorted(configs), "every clean candidate runs once"
        # The same key again: no timing, the same answer.
        assert _choose((1, 1), configs, ran.append) == (2, 2)
        assert len(timed) == 4
        # Another shape tunes again.
        speed[(4, 4)] = 0.5
        assert _choose((1, 1), configs, ran.append, key=(2,)) == (4, 4)
        assert len(timed) == 8
        tuned = autotune.results()
        assert {k[-1] for k in tuned} == {1, 2}
        assert tuned[("fam", "float16", "cpu", 1)].times[(3, 3)] == 2.0
    assert autotune.results() == {}, "forced() clears what it tuned"


def test_pruned_and_unusable_candidates_never_run(fake_table):
    pick, clean_other, unlisted, unusable = (1, 1), (2, 2), (3, 3), (4, 4)
    fake_table("fam", "float16", [pick, clean_other, unusable])
    ran = []
    with autotune.forced(lambda run: run() or {pick: 2.0, clean_other: 1.0}[ran[-1]]):
        chosen = _choose(
            pick,
            [pick, clean_other, unlisted, unusable],
            ran.append,
            refused=(unusable,),
        )
    assert chosen == clean_other
    assert sorted(ran) == [pick, clean_other]


def test_the_pick_runs_even_if_the_table_does_not_list_it(fake_table):
    fake_table("fam", "float16", [(2, 2)])
    ran = []
    with autotune.forced(lambda run: run() or {(1, 1): 1.0, (2, 2): 2.0}[ran[-1]]):
        assert _choose((1, 1), [(2, 2)], ran.append) == (1, 1)
    assert sorted(ran) == [(1, 1), (2, 2)]


def test_a_failing_candidate_is_skipped_and_a_failing_pick_raises(fake_table):
    fake_table("fam", "float16", [(1, 1), (2, 2), (3, 3)])

    def run(cfg):
        if cfg == (2, 2):
            raise RuntimeError("out of resources: shared memory")

    def timer(fn):
        fn()
        return 1.0

    with autotune.forced(timer):
        assert _choose((1, 1), [(1, 1), (2, 2), (3, 3)], run) == (1, 1)
        (tuned,) = autotune.results().values()
        assert tuned.times[(2, 2)] is None
        assert "out of resources" in tuned.errors[(2, 2)]
        with pytest.raises(RuntimeError, match="out of resources"):
            _choose((2, 2), [(1, 1), (3, 3)], run, key=(9,))


def test_no_table_entry_means_no_tuning(fake_table):
    fake_table("other_family", "float16", [(1, 1), (2, 2)])
    timed = []
    with autotune.forced(lambda run: timed.append(run) or 1.0):
        assert _choose((1, 1), [(1, 1), (2, 2)], lambda c: None) == (1, 1)
    assert timed == []
    with pytest.raises(ValueError, match="arch must be one of"):
        with autotune.forced(lambda run: 1.0, arch="sm_86"):
            pass


def test_off_under_the_interpreter_unless_forced(fake_table):
    fake_table("fam", "float16", [(1, 1), (2, 2)])
    ran = []
    assert _choose((1, 1), [(1, 1), (2, 2)], ran.append) == (1, 1)
    assert ran == [] and autotune.results() == {}


@pytest.fixture
def gpu_path(monkeypatch, fake_table):
    """choose() as it runs on an sm_90 GPU: not the interpreter, the device's arch, the CUDA
    event timer replaced by a fake one; returns the list of timed configs."""
    fake_table("fam", "float16", [(1, 1), (2, 2)])
    monkeypatch.setattr(autotune, "INTERPRETER", False)
    monkeypatch.setattr(autotune, "device_arch", lambda device: "sm_90")
    ran: list = []
    monkeypatch.setattr(
        autotune, "cuda_event_timer", lambda run: run() or {(1, 1): 2.0, (2, 2): 1.0}[ran[-1]]
    )
    autotune.clear()
    yield ran
    autotune.clear()


def test_gpu_path_tunes(gpu_path, monkeypatch):
    monkeypatch.delenv(autotune.ENV, raising=False)
    assert _choose((1, 1), [(1, 1), (2, 2)], gpu_path.append) == (2, 2)
    assert sorted(gpu_path) == [(1, 1), (2, 2)]


def test_gpu_path_off_by_environment(gpu_path, monkeypatch):
    monkeypatch.setenv(autotune.ENV, "0")
    assert _choose((1, 1), [(1, 1), (2, 2)], gpu_path.append) == (1, 1)
    assert gpu_path == []


def test_gpu_path_never_tunes_while_a_cuda_graph_is_captured(gpu_path, monkeypatch):
    monkeypatch.setattr(autotune, "_graph_capturing", lambda: True)
    assert _choose((1, 1), [(1, 1), (2, 2)], gpu_path.append) == (1, 1)
    assert gpu_path == [] and autotune.results() == {}, "nothing timed, nothing remembered"
    # A key tuned before capture keeps its answer during capture.
    monkeypatch.setattr(autotune, "_graph_capturing", lambda: False)
    assert _choose((1, 1), [(1, 1), (2, 2)], gpu_path.append) == (2, 2)
    monkeypatch.setattr(autotune, "_graph_capturing", lambda: True)
    assert _choose((1, 1), [(1, 1), (2, 2)], gpu_path.append) == (2, 2)


def test_gpu_path_off_on_archs_without_a_table(gpu_path, monkeypatch):
    monkeypatch.setattr(autotune, "device_arch", lambda device: None)
    assert _choose((1, 1), [(1, 1), (2, 2)], gpu_path.append) == (1, 1)
    assert gpu_path == []


# ---------------------------------------------------------------------------------------------
# The launchers in a real forward, GPU configs, tuning forced with a fake timer.

SMALL_BLOCK = BlockConfig(40, 24, 16, 40, 8, 24, 16, 7)


@pytest.mark.parametrize("k3", [3, 5])
def test_forward_runs_every_candidate_and_launches_the_chosen(monkeypatch, k3):
    monkeypatch.setattr(common, "FORCE_GPU_CONFIGS", True)
    dtype = torch.float16
    block = FusedInception(*SMALL_BLOCK.args(), branch3_kernel=k3, norm=False, backend="triton")
    block = randomize_block(block, seed=k3).eval()
    gen = torch.Generator().manual_seed(k3)
    x = torch.randn(2, SMALL_BLOCK.in_channels, 6, 5, generator=gen).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    ref = reference_f64(block, x)
    block = block.to(dtype)

    # Every candidate of both launchers is clean in this table; the timer favours 4 warps.
    c = SMALL_BLOCK
    one = block_1x1.tuning_candidates(
        dtype, c_in=c.in_channels, n_x=c.ch1x1 + c.ch3x3red + c.ch5x5red, width=5
    )
    kxk = block_kxk.tuning_candidates(
        dtype, c2r=c.ch3x3red, c2=c.ch3x3, c3r=c.ch5x5red, c3=c.ch5x5, k3=k3,
        c4r=c.in_channels, c4=c.pool_proj,
    )  # fmt: skip
    assert len(one) >= 5 and len(kxk) >= 5
    table = _table_with("block_1x1", "float16", one)
    table["archs"]["sm_90"]["block_kxk"] = _table_with("block_kxk", "float16", kxk)["archs"][
        "sm_90"
    ]["block_kxk"]
    monkeypatch.setattr(autotune, "table", lambda: table)

    launched = []
    real_launch = common.launch

    def recording_launch(kernel, grid, args, constexprs, *, num_warps, num_stages, **kw):
        launched.append((kw["op"], num_warps))
        real_launch(
            kernel, grid, args, constexprs, num_warps=num_warps, num_stages=num_stages, **kw
        )

    monkeypatch.setattr(common, "launch", recording_launch)

    def timer(run):
        before = len(launched)
        run()
        assert len(launched) == before + 1
        return 1.0 if launched[-1][1] == 4 else 2.0

    with autotune.forced(timer), torch.no_grad(), poison_outputs(True):
        out = block(x)
        tuned = autotune.results()
        assert len(tuned) == 2
        for family, cands in (("block_1x1", one), ("block_kxk", kxk)):
            (result,) = [t for k, t in tuned.items() if k[0] == family]
            assert set(result.times) == set(cands), "every candidate was timed"
            assert result.config.num_warps == 4 and result.config == cands[0]._replace(num_warps=4)
        # Each launcher's final launch (after its candidates) used the chosen config: 4 warps.
        assert launched[len(one)] == ("block_1x1", 4) and launched[-1] == ("block_kxk", 4)
        assert len(launched) == len(one) + len(kxk) + 2
        n_launches = len(launched)
        again = block(x)
        assert len(launched) == n_launches + 2, "a tuned shape launches once per kernel"
    assert_close_rel(out, ref, dtype, f"tuned k={k3}")
    assert torch.equal(out, again)


# ---------------------------------------------------------------------------------------------
# The committed table.


def _googlenet_candidates():
    """(family, dtype, config) of every candidate and pick of GoogLeNet's 16-bit launches."""
    for cfg in GOOGLENET_BLOCKS.values():
        for dtype in SIXTEEN_BIT:
            # The configs do not depend on the batch (tiles.py): one shape per block.
            shape = {
                "c_in": cfg.in_channels,
                "n_x": cfg.ch1x1 + cfg.ch3x3red + cfg.ch5x5red,
                "width": cfg.hw,
            }
            pick = block_1x1.pick_config(dtype, **shape)
            for cand in block_1x1.tuning_candidates(dtype, **shape):
                yield "block_1x1", dtype, cand, cand == pick
            for k3 in (3, 5):
                shape = {
                    "c2r": cfg.ch3x3red, "c2": cfg.ch3x3, "c3r": cfg.ch5x5red, "c3": cfg.ch5x5,
                    "k3": k3, "c4r": cfg.in_channels, "c4": cfg.pool_proj,
                }  # fmt: skip
                pick = block_kxk.pick_config(dtype, **shape)
                for cand in block_kxk.tuning_candidates(dtype, **shape):
                    yield "block_kxk", dtype, cand, cand == pick


def test_committed_table_lists_every_candidate_and_every_pick_is_clean():
    table = autotune.table()
    assert table["format"] == autotune.TABLE_FORMAT
    assert set(table["archs"]) == set(autotune.TABLE_ARCHS)
    tunable = {}
    for family, dtype, cfg, is_pick in _googlenet_candidates():
        name = common.dtype_name(dtype)
        for arch in autotune.TABLE_ARCHS:
            slot = table["archs"][arch][family][name]
            assert slot["fields"] == list(cfg._fields)
            clean = autotune.clean_configs(family, name, arch)
            refused = {tuple(r["config"]) for r in slot["refused"]}
            assert tuple(cfg) in clean | refused, f"{arch} {family} {name} {cfg} not listed"
            if is_pick:
                assert tuple(cfg) in clean, f"the pick {cfg} is not clean on {arch}"
            tunable.setdefault((arch, family, name), set()).update({tuple(cfg)} & clean)
    # Tuning is not vacuous: each arch, family and dtype has alternatives to the picks.
    for where, configs in tunable.items():
        assert len(configs) >= 8, f"{where}: only {len(configs)} clean candidates"


def test_table_agrees_with_a_compile_now():
    """5b's float16 candidates (and every specialization of their configs from other blocks)
    compiled for sm_90 now have the table's status and registers, and no candidate of the nine
    blocks is missing from it."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "fused_inception.report", "--tuning", "--check"]
    cmd += ["--blocks", "5b", "--dtypes", "float16", "--arch", "sm_90"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "check: 0 mismatches" in proc.stdout
