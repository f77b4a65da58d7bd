"""python -m fused_inception.evaluate: the table's rows, fused and unfused agreeing, torchvision
weights loaded from a file giving torchvision's own predictions, a train checkpoint's averaged
model, and clear errors. Crops of 28 (scales 32-44) keep the 144-crop runs quick."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel

from fused_inception import evaluate as evaluate_cli
from fused_inception import train as train_cli
from fused_inception.bench.cases import randomize_bn
from fused_inception.recipe import EvalTransform, SyntheticImages, multicrop_predict

TINY = ["--crop-size", "28", "--synthetic-size", "70", "90", "--threads", "1"]


def _evaluate(*argv: str) -> evaluate_cli.EvalResult:
    return evaluate_cli.evaluate(evaluate_cli.parse_args([*TINY, *argv]))


def test_rows_for_1_10_144_crops():
    result = _evaluate("--variant", "torchvision", "--crops", "1", "10", "144",
                       "--synthetic-images", "2", "--synthetic-classes", "6")  # fmt: skip
    assert [(r["crops"], r["variant"]) for r in result.rows] == [
        (c, v) for c in (1, 10, 144) for v in ("unfused", "fused")
    ]
    for r in result.rows:
        assert r["images"] == 2 and r["images_per_s"] > 0
        assert 0 <= r["top5_error"] <= r["top1_error"] <= 1
    for (impl, crops), probs in result.probs.items():
        assert probs.shape == (2, 6), (impl, crops)
        torch.testing.assert_close(probs.sum(1), torch.ones(2))
        assert_close_rel(probs, result.probs[("unfused", crops)], torch.float32, what=impl)
    table = evaluate_cli.format_table(result)
    assert "top-1 err" in table and "fused" in table and "max |fused - unfused|" in table


def test_torchvision_weights_from_disk(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    randomize_bn(tv, torch.Generator().manual_seed(1), spread=0.5)
    # As torchvision's ImageNet weights come: no auxiliary heads in the state_dict.
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith(("aux1", "aux2"))}
    torch.save(state, tmp_path / "googlenet.pth")
    result = _evaluate("--weights", str(tmp_path / "googlenet.pth"), "--crops", "10",
                       "--synthetic-images", "2")  # fmt: skip
    # torchvision's model on the same crops, with the input transform its weights expect.
    tv.eval().transform_input = True
    data = SyntheticImages(2, 10, 70, 90)
    crops = torch.stack([EvalTransform(10, 28)(data[i][0]) for i in range(2)])
    with torch.no_grad():
        expected = multicrop_predict(tv, crops)
    assert result.probs[("unfused", 10)].shape == (2, 1000)
    assert_close_rel(result.probs[("unfused", 10)], expected, torch.float32, what="unfused")
    assert_close_rel(result.probs[("fused", 10)], expected, torch.float32, what="fused")


def test_checkpoint_uses_the_averaged_model(tmp_path):
    train_argv = ["--variant", "torchvision", "--image-size", "32", "--synthetic-size", "40",
                  "48", "--threads", "1", "--synthetic-images", "8", "--synthetic-classes", "3",
                  "--batch-size", "4", "--checkpoint-dir", str(tmp_path)]  # fmt: skip
    trained = train_cli.train(train_cli.parse_args(train_argv))
    ckpt = str(tmp_path / train_cli.CHECKPOINT_NAME)
    args = evaluate_cli.parse_args([*TINY, "--checkpoint", ckpt, "--synthetic-images", "2"])
    models = evaluate_cli.build_models(args, 3)
    averaged = trained.averaged.module.state_dict()
    for name, value in models["unfused"].state_dict().items():
        assert torch.equal(value, averaged[name]), name
    args.no_average = True
    last = evaluate_cli.build_models(args, 3)["unfused"].state_dict()
    assert not torch.equal(last["fc.weight"], averaged["fc.weight"])


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate_cli.parse_args(["--help"])
    assert info.value.code == 0 and "--crops" in capsys.readouterr().out
    assert evaluate_cli.main(["--data", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--crops", "5"], id="crops-5"),
        pytest.param(["--weights", "w.pth", "--variant", "paper"], id="weights-paper"),
        pytest.param(["--crop-size", "56"], id="paper-small-crops"),
        pytest.param(["--weights", "a", "--checkpoint", "b"], id="weights-and-checkpoint"),
    ],
)
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        evaluate_cli.parse_args(argv)
    assert info.value.code == 2
