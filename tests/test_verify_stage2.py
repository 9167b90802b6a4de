"""verify_physics.py --stage2: the verifier judges with the adapted model (the stage-2 LoRA fused
into the DiT, the stage-2 heads), not silently with the stage-1 one; a bad export is one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers import eval_args


def _manifest(generated_dataset, tmp_path: Path) -> Path:
    """Any two clips of the root make a manifest (kind is a free label)."""
    with generated_dataset[1].open(newline="") as handle:
        videos = [row["video"] for row in csv.DictReader(handle)][:2]
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"plausible,implausible,kind\n{videos[0]},{videos[1]},any label\n")
    return manifest


def _config(generated_dataset, exports, tmp_path: Path, stage2: str):
    from stages.evaluation.verify import VerifyConfig

    return VerifyConfig(stage1=str(exports[0]), stage2=stage2, root=str(generated_dataset[0]),
                        pairs=str(_manifest(generated_dataset, tmp_path)), out=str(tmp_path / "out"),
                        cache_dir=str(tmp_path / "cache"), device="cpu")


def test_stage2_verifies_the_adapted_dit_and_the_stage2_heads(generated_dataset, exports, tmp_path):
    from stages.evaluation import exports as ck
    from stages.evaluation.verify import _model

    trained = ck.stage1_config(exports[0])
    base_pair, base = _model(_config(generated_dataset, exports, tmp_path, ""), trained)
    pair, adapted = _model(_config(generated_dataset, exports, tmp_path, str(exports[1])), trained)
    stage2_heads = ck.load_pair(exports[1] / ck.STAGE2_HEADS, torch.device("cpu")).state_dict()
    assert all(torch.equal(v, stage2_heads[k]) for k, v in pair.state_dict().items())
    assert any(not torch.equal(v, base_pair.state_dict()[k]) for k, v in stage2_heads.items())
    before, after = base.backbone.dit.state_dict(), adapted.backbone.dit.state_dict()
    assert set(before) == set(after)  # fused: no adapter modules left behind
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.endswith(".weight") for k in changed), changed


def test_the_command_records_the_stage2_export_and_refuses_a_stage1_dir(generated_dataset, exports, tmp_path):
    from scripts.verify_physics import main

    manifest = _manifest(generated_dataset, tmp_path)
    common = ["--stage1", str(exports[0]), "--root", str(generated_dataset[0]), "--pairs", str(manifest),
              "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--verifiers", "heads,frame_difference",
              "--log-level", "WARNING"]
    payload = main([*common, "--stage2", str(exports[1]), "--out", str(tmp_path / "out")])
    assert payload["model"] == {"stage1": str(exports[0]), "stage2": str(exports[1])}
    assert payload["pairs"] == 1 and set(payload["rows"]) == {"heads", "frame_difference"}
    assert (tmp_path / "out" / "verify.json").is_file()
    with pytest.raises(SystemExit, match="lacks lora.safetensors"):
        main([*common, "--stage2", str(exports[0]), "--out", str(tmp_path / "bad")])


def test_the_evaluation_report_verifies_each_model_with_its_own_heads(generated_dataset, exports, tmp_path,
                                                                      monkeypatch):
    """evaluate_physics.py --stage2 --pairs: the heads verifier runs once with stage 1's model
    (verify/) and once with stage 2's (verify_stage2/), so the report's stage-2 row is not stage 1's;
    both on the backbone the evaluation loaded (one load, not one more per model), scoring every
    clip as the verifier command does with that model."""
    import json

    import stages.evaluation.evaluate as evaluate
    import stages.features
    from scripts.evaluate_physics import main
    from scripts.verify_physics import main as verify_main

    loads = []

    class CountedSource(stages.features.FeatureSource):
        def __init__(self, *args, **kwargs):
            loads.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(stages.features, "FeatureSource", CountedSource)
    monkeypatch.setattr(evaluate, "FeatureSource", CountedSource)
    manifest = _manifest(generated_dataset, tmp_path)
    out = tmp_path / "eval"
    payload = main(eval_args(generated_dataset, exports, out, **{"--max-scenes": 1, "--pairs": manifest,
                                                                  "--no-flow-baselines": ""}))
    assert len(loads) == 1
    common = ["--stage1", str(exports[0]), "--root", str(generated_dataset[0]), "--pairs", str(manifest),
              "--cache-dir", str(tmp_path / "cache_alone"), "--device", "cpu", "--verifiers", "heads,features",
              "--log-level", "WARNING"]
    verify_main([*common, "--out", str(tmp_path / "alone" / "verify")])
    verify_main([*common, "--stage2", str(exports[1]), "--out", str(tmp_path / "alone" / "verify_stage2")])
    first, second = payload["verify"], payload["verify_stage2"]
    assert first["model"]["stage2"] is None and second["model"] == {"stage1": str(exports[0]),
                                                                    "stage2": str(exports[1])}
    assert set(second["rows"]) == {"heads", "features"} and second["pairs"] == 1
    clips = {key: json.loads((out / key / "verify.json").read_text())["clips"] for key in ("verify", "verify_stage2")}
    assert clips["verify"].keys() == clips["verify_stage2"].keys()
    assert all(clips["verify"][v]["heads"]["score"] != clips["verify_stage2"][v]["heads"]["score"]
               for v in clips["verify"])
    for key in ("verify", "verify_stage2"):
        alone = json.loads((tmp_path / "alone" / key / "verify.json").read_text())["clips"]
        assert {v: {n: alone[v][n] for n in ("heads", "features")} for v in alone} == {
            v: {n: clips[key][v][n] for n in ("heads", "features")} for v in alone}, key
    report = (out / "report.md").read_text()
    assert f"## Physics verifier: violation pairs, stage-2 model `{exports[1]}`" in report
    assert "Details: verify_stage2/verify.json" in report
