"""python -m fused_inception.train: the loss falls on a learnable toy set, a resumed run ends in
exactly the state of an uninterrupted one, DDP over 2 gloo processes runs the same steps, and
the command line rejects bad arguments. Tiny images (torchvision variant at 32x32), 1 thread."""

from __future__ import annotations

import math
import os
import statistics

import pytest
import torch
from helpers import free_port, spawn_and_join

from fused_inception import FusedInception
from fused_inception import train as train_cli

WORLD_SIZE = 2
TIMEOUT_S = 90
# torchvision variant on 32x32 crops of 40x48 synthetic images: about 0.1 s a step of 4 images.
TINY = ["--variant", "torchvision", "--image-size", "32", "--synthetic-size", "40", "48"]
TINY += ["--threads", "1", "--log-every", "1000"]


def _args(*extra: str):
    return train_cli.parse_args([*TINY, *extra])


def test_loss_falls_on_learnable_toy_set():
    argv = ["--synthetic-images", "48", "--synthetic-classes", "2", "--batch-size", "8"]
    argv += ["--epochs", "5", "--lr", "0.003", "--update-bn-batches", "2"]
    result = train_cli.train(_args(*argv))
    losses = result.losses
    assert len(losses) == 30
    # Medians: single steps spike (the full augmentation on tiny crops, dropout, batch 8 BN).
    first, last = statistics.median(losses[:6]), statistics.median(losses[-6:])
    assert last < 0.75 * first, losses
    assert sum(isinstance(m, FusedInception) for m in result.model.modules()) == 9
    # update_bn recomputed the averaged model's statistics: no longer the running average.
    bn, bn_avg = result.model.conv1.bn, result.averaged.module.conv1.bn
    assert torch.isfinite(bn_avg.running_var).all() and bn_avg.momentum == bn.momentum
    assert not torch.allclose(bn_avg.running_mean, bn.running_mean)


def test_paper_variant_trains_on_the_fused_operator(monkeypatch):
    grad_fns = []
    build_model = train_cli.build_model

    def build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.inception4e.register_forward_hook(lambda m, i, out: grad_fns.append(out.grad_fn))
        return model

    monkeypatch.setattr(train_cli, "build_model", build)
    argv = ["--synthetic-images", "2", "--synthetic-size", "230", "250", "--batch-size", "2"]
    result = train_cli.train(train_cli.parse_args([*argv, "--threads", "1"]))
    assert result.step == 1 and math.isfinite(result.losses[0])
    assert "inception_block" in type(grad_fns[0]).__name__


def _state(path) -> dict:
    return torch.load(path, weights_only=False)


def _assert_equal_states(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal_states(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_states(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resume_equals_uninterrupted_run(tmp_path):
    # 12 images, batch 4: 3 steps an epoch, 2 epochs; the lr steps every epoch and averaging
    # starts at epoch 1, so the checkpoint after step 4 (inside epoch 1) carries all of it.
    common = ["--synthetic-images", "12", "--synthetic-classes", "3", "--batch-size", "4"]
    common += ["--epochs", "2", "--lr-step-epochs", "1", "--lr-gamma", "0.5"]
    common += ["--average-start", "1"]
    straight = train_cli.train(_args(*common, "--checkpoint-dir", str(tmp_path / "a")))
    assert straight.step == 6
    cut = tmp_path / "b"
    first = train_cli.train(_args(*common, "--checkpoint-dir", str(cut), "--stop-after", "4"))
    assert first.step == 4 and len(first.losses) == 4
    mid = _state(cut / train_cli.CHECKPOINT_NAME)
    assert (mid["epoch"], mid["batch"], mid["step"]) == (1, 1, 4)
    ckpt = str(cut / train_cli.CHECKPOINT_NAME)
    second = train_cli.train(_args(*common, "--checkpoint-dir", str(cut), "--resume", ckpt))
    assert second.step == 6 and len(second.losses) == 2
    assert first.losses + second.losses == straight.losses
    a = _state(tmp_path / "a" / train_cli.CHECKPOINT_NAME)
    b = _state(cut / train_cli.CHECKPOINT_NAME)
    assert a["scheduler"]["last_epoch"] == 2 and a["averaged"]["n_averaged"] == 3
    _assert_equal_states(a, b)


def _worker(rank: int, port: int, out_dir: str) -> None:
    # torchrun's environment, on loopback: train joins the gloo group from it.
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
        RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank),
    )  # fmt: skip
    argv = [*TINY, "--synthetic-images", "8", "--synthetic-classes", "2", "--batch-size", "2"]
    argv += ["--epochs", "1", "--checkpoint-dir", out_dir, "--device", "cpu"]
    assert train_cli.main(argv) == 0


def test_ddp_gloo_two_processes(tmp_path):
    spawn_and_join(_worker, (free_port(), str(tmp_path)), WORLD_SIZE, TIMEOUT_S)
    state = _state(tmp_path / train_cli.CHECKPOINT_NAME)
    # 8 images, 2 per process: 2 global steps; one random state per rank, and they differ.
    assert state["step"] == 2 and state["epoch"] == 1 and len(state["rng"]) == WORLD_SIZE
    assert not torch.equal(state["rng"][0]["cpu"], state["rng"][1]["cpu"])
    assert state["optimizer"]["state"], "no optimizer step was taken"


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["--epochs", "0"], "expected a positive integer", id="epochs-0"),
        pytest.param(["--variant", "alexnet"], "invalid choice", id="bad-variant"),
        pytest.param(["--image-size", "32"], "--variant paper needs", id="paper-small-image"),
        pytest.param(["--resume", "/nonexistent.pt"], "no such file", id="missing-resume"),
    ],
)
def test_bad_arguments_exit_2(argv, message):
    with pytest.raises(SystemExit) as info:
        train_cli.parse_args(argv)
    assert info.value.code == 2


def test_command_line_help_and_missing_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train_cli.parse_args(["--help"])
    assert info.value.code == 0 and "--checkpoint-dir" in capsys.readouterr().out
    assert train_cli.main(["--data", str(tmp_path / "nowhere"), "--variant", "torchvision"]) == 1
    assert "does not exist" in capsys.readouterr().err
