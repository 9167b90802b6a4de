"""scripts/evaluate_physics.py end to end on generated scenes with tiny stage-1 / stage-2 exports: every
output exists, metrics.json has every documented field, scenes of held-out and of seen families are
pooled apart, the gallery is self-contained with one section per scene, PNGs open; and inputs that
cannot work fail clearly."""

from __future__ import annotations

import csv as csv_module
import json
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

COMMON = {"data.height": 64, "data.width": 64, "data.window.num_frames": 5, "data.window.stride": 2}


def _args(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def exports(generated_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """A 2-step stage-1 run and a 1-step stage-2 run on top of it (numbers meaningless, files real)."""
    from stages.assemble import make_accelerator

    from stages.common import load_config
    from stages.runner import train
    from stages.stage1 import main as stage1_main
    from stages.stage2_build import build_stage2
    from stages.stage2_config import Stage2Config

    root, csv = generated_dataset
    out = tmp_path_factory.mktemp("eval_exports")
    stage1_main(["--config", str(REPO / "stages/configs/stage1_demo.toml"), *_args({
        **COMMON, "data.root": root, "data.metadata": csv, "run.output_dir": out / "stage1",
        "features.cache_dir": out / "cache", "features.mode": "online", "heads.features": 16,
        "optim.max_steps": 2, "optim.warmup_steps": 1, "run.val_split": "", "checkpoint.every_steps": 100,
        "log.every_steps": 1})])
    config = load_config(Stage2Config, REPO / "stages/configs/stage2_demo.toml", _args({
        **COMMON, "data.root": root, "data.metadata": csv, "run.output_dir": out / "stage2",
        "features.cache_dir": out / "cache", "objective.heads_dir": out / "stage1" / "final",
        "optim.max_steps": 1, "optim.warmup_steps": 1, "checkpoint.every_steps": 100, "run.val_split": "",
        "lora.rank": 4, "lora.alpha": 8.0}))
    train(build_stage2(config, make_accelerator()))
    return out / "stage1" / "final", out / "stage2" / "final"


def _eval_args(generated_dataset, exports, out: Path, **extra) -> list[str]:
    root, csv = generated_dataset
    values = {"--stage1": exports[0], "--stage2": exports[1], "--root": root, "--metadata": csv, "--split": "holdout",
              "--out": out, "--cache-dir": out.parent / "eval_cache", "--steps": 2, "--frames": 5, "--size": 64,
              "--cfg-scale": 1.0, "--max-scenes": 2, "--log-level": "WARNING", **extra}
    return [str(x) for kv in values.items() for x in kv if x != ""]


def _mixed_split(csv: Path, out: Path) -> tuple[Path, list[str]]:
    """The CSV with split 'mixed' = the first holdout scene and the first test_seen scene (what the
    old 'test' split was: held-out and seen families together)."""
    with csv.open(newline="") as handle:
        rows = list(csv_module.DictReader(handle))
    picked = [next(r for r in rows if r["split"] == split) for split in ("test_seen", "holdout")]
    for row in picked:
        row["split"] = "mixed"
    with out.open("w", newline="") as handle:
        writer = csv_module.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out, [r["video"].split("/")[0] for r in picked]


@pytest.fixture(scope="module")
def evaluation(generated_dataset, exports, tmp_path_factory) -> tuple[Path, dict]:
    from evaluate_physics import main

    out = tmp_path_factory.mktemp("eval") / "out"
    mixed, _ = _mixed_split(generated_dataset[1], out.parent / "mixed.csv")
    payload = main(_eval_args((generated_dataset[0], mixed), exports, out, **{"--split": "mixed"}))
    return out, payload


def test_every_output_exists_and_metrics_json_has_every_field(evaluation):
    from stages.evaluation.evaluate import (
        METRICS_FIELDS,
        OVERALL_FIELDS,
        SCENE_FIELDS,
        SCENE_MODEL_FIELDS,
        VERDICT_FIELDS,
    )

    out, _ = evaluation
    for name in ("metrics.json", "report.md", "per_scene.png", "metrics_table.png", "training_curves.png",
                 "contact_sheet_stage1.png", "contact_sheet_stage2.png", "gallery.html"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRICS_FIELDS) <= set(metrics), set(METRICS_FIELDS) - set(metrics)
    assert metrics["models"] == ["stage1", "stage2"] and len(metrics["scenes"]) >= 1
    for scene in metrics["scenes"]:
        assert set(SCENE_FIELDS) <= set(scene)
        for model in metrics["models"]:
            assert set(SCENE_MODEL_FIELDS) <= set(scene["models"][model])
            for key in ("depth_abs_rel", "median_depth_abs_rel", "flow_epe", "zero_flow_epe_moving"):
                assert key in scene["models"][model]["perception"]
            assert set(scene["models"][model]["prediction"]) >= {"spatial_iou", "spatiotemporal_iou", "mse"}
    for model in metrics["models"]:
        assert set(OVERALL_FIELDS) <= set(metrics["overall"][model])
        assert set(VERDICT_FIELDS) <= set(metrics["verdicts"][model])
        assert all(isinstance(v["pass"], bool) for v in metrics["verdicts"][model].values())
    assert {"heads.safetensors", "heads.json"} <= set(metrics["checkpoints"]["stage1"])
    assert re.fullmatch(r"[0-9a-f]{64}", metrics["checkpoints"]["stage2"]["lora.safetensors"])
    assert metrics["args"]["split"] == "mixed" and metrics["geometry"] == {"frames": 5, "stride": 2, "size": 64}
    assert metrics["scenes"][0]["g_scene"] == pytest.approx(9.81, rel=1e-3)
    report = (out / "report.md").read_text()
    assert "unseen" in report and "leakage" in report and ("PASS" in report or "FAIL" in report)


def test_held_out_and_seen_families_are_pooled_apart(evaluation):
    """One scene per group: each group's pooled numbers are exactly its scene's, the pooled-over-all
    ones are neither, and the report has a section per group."""
    from stages.evaluation.evaluate import GROUP_FIELDS

    out, _ = evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    scenes = {s["scene"]: s for s in metrics["scenes"]}
    seen = next(name for name in scenes if not name.startswith("stack_topple"))
    assert sorted(scenes) == sorted([seen, "stack_topple_00000"])
    assert (scenes["stack_topple_00000"]["family"], scenes["stack_topple_00000"]["group"]) == \
        ("stack_topple", "held_out_families")
    assert (scenes[seen]["family"], scenes[seen]["group"]) == (seen.rsplit("_", 1)[0], "seen_families")
    groups = metrics["groups"]
    assert list(groups) == ["held_out_families", "seen_families"]
    for key, name in (("held_out_families", "stack_topple_00000"), ("seen_families", seen)):
        assert set(GROUP_FIELDS) <= set(groups[key]) and groups[key]["scenes"] == [name]
        for model in metrics["models"]:
            pooled = groups[key]["overall"][model]["perception"]
            assert pooled == scenes[name]["models"][model]["perception"]
            assert pooled["flow_epe"] != metrics["overall"][model]["perception"]["flow_epe"]
            assert set(groups[key]["verdicts"][model]) == set(metrics["verdicts"][model])
    report = (out / "report.md").read_text()
    assert "## Scenes of families never seen in training: 1 scene(s) (`held_out_families`)" in report
    assert "## Unseen scenes of families seen in training: 1 scene(s) (`seen_families`)" in report


def test_gallery_is_self_contained_with_one_section_per_scene(evaluation):
    out, payload = evaluation
    text = (out / "gallery.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert "<link" not in text and "url(" not in text
    assert text.count('<section class="scene"') == len(payload["scenes"])
    for scene in payload["scenes"]:
        assert f'id="{scene["scene"]}"' in text


def test_pngs_open(evaluation):
    out, _ = evaluation
    for path in out.glob("*.png"):
        with Image.open(path) as image:
            image.verify()
    with Image.open(out / "contact_sheet_stage1.png") as sheet:
        assert sheet.width > 64 and sheet.height > 4 * 64 // 2


def test_missing_stage_dir_is_a_clear_error(generated_dataset, exports, tmp_path):
    from evaluate_physics import main

    missing = tmp_path / "no_such_run" / "final"
    with pytest.raises(SystemExit, match=re.escape(str(missing))):
        main(_eval_args(generated_dataset, exports, tmp_path / "out", **{"--stage2": missing}))
    with pytest.raises(SystemExit, match="lacks lora.safetensors"):
        main(_eval_args(generated_dataset, exports, tmp_path / "out", **{"--stage2": exports[0]}))


def test_empty_split_and_bad_geometry_are_clear_errors(generated_dataset, exports, tmp_path):
    from evaluate_physics import main

    with pytest.raises(SystemExit, match="no rows with split 'nope'"):
        main(_eval_args(generated_dataset, exports, tmp_path / "out", **{"--split": "nope"}))
    with pytest.raises(SystemExit, match="multiple of 32"):
        main(_eval_args(generated_dataset, exports, tmp_path / "out", **{"--size": 80}))
    with pytest.raises(SystemExit, match="1 \\+ 4k"):
        main(_eval_args(generated_dataset, exports, tmp_path / "out", **{"--frames": 6}))
    assert not (tmp_path / "out" / "metrics.json").exists()
