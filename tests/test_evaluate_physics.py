"""scripts/evaluate_physics.py end to end on generated scenes with tiny stage-1 / stage-2 exports: every
output exists, metrics.json has every documented field, scenes of held-out and of seen families are
pooled apart, the gallery is self-contained with one section per scene, PNGs open; and inputs that
cannot work fail clearly."""

from __future__ import annotations

import csv as csv_module
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import eval_args

REPO = Path(__file__).resolve().parents[1]


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
    from scripts.evaluate_physics import main

    out = tmp_path_factory.mktemp("eval") / "out"
    mixed, _ = _mixed_split(generated_dataset[1], out.parent / "mixed.csv")
    payload = main(eval_args((generated_dataset[0], mixed), exports, out, **{"--split": "mixed"}))
    return out, payload


def _sha256_tree(directory: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _nan(value) -> float:
    return math.nan if value is None else value  # metrics.json writes NaN as null


def test_every_output_exists_and_metrics_json_has_every_field(evaluation, exports, generated_dataset):
    """Besides every file and field: the values metrics.json records follow from its other values
    (which scenes, their seeds, the checkpoint hashes, each overall row pooled from the scene rows,
    each verdict from its overall value and rule), checked here by recomputing them."""
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
    assert all((out / name).is_file() for name in metrics["outputs"]), metrics["outputs"]
    assert metrics["models"] == ["stage1", "stage2"]
    args = metrics["args"]
    assert args["split"] == "mixed" and metrics["geometry"] == {"frames": 5, "stride": 2, "size": 64}

    # The scenes: --max-scenes distinct rows of the evaluated split, scene k seeded seed + k.
    with open(out.parent / "mixed.csv", newline="") as handle:
        split_rows = [row["video"] for row in csv_module.DictReader(handle) if row["split"] == args["split"]]
    assert len(metrics["scenes"]) == min(args["max_scenes"], len(split_rows)) == 2
    assert len({s["video"] for s in metrics["scenes"]}) == 2 and {s["video"] for s in metrics["scenes"]} <= set(split_rows)
    for k, scene in enumerate(metrics["scenes"]):
        assert set(SCENE_FIELDS) <= set(scene)
        assert scene["g_scene"] == pytest.approx(9.81, rel=1e-3)
        for model in metrics["models"]:
            record = scene["models"][model]
            assert set(SCENE_MODEL_FIELDS) <= set(record) and record["seed"] == args["seed"] + k
            for key in ("depth_abs_rel", "median_depth_abs_rel", "flow_epe", "zero_flow_epe_moving"):
                assert record["perception"][key] >= 0, (model, key)
            assert set(record["prediction"]) >= {"spatial_iou", "spatiotemporal_iou", "mse"}
            assert 0 <= record["prediction"]["spatial_iou"] <= 1 and record["prediction"]["mse"] >= 0

    # The checkpoints: sha256 of every file of each export, recomputed here.
    assert metrics["checkpoints"] == {"stage1": _sha256_tree(exports[0]), "stage2": _sha256_tree(exports[1])}
    assert {"heads.safetensors", "heads.json"} <= set(metrics["checkpoints"]["stage1"])
    assert re.fullmatch(r"[0-9a-f]{64}", metrics["checkpoints"]["stage2"]["lora.safetensors"])

    # Overall rows pooled from the scene rows: prediction means, pixel-weighted g, frame-weighted coherence.
    for model in metrics["models"]:
        overall, rows = metrics["overall"][model], [s["models"][model] for s in metrics["scenes"]]
        assert set(OVERALL_FIELDS) <= set(overall)
        for key, value in overall["prediction"].items():
            assert _nan(value) == pytest.approx(np.mean([_nan(r["prediction"][key]) for r in rows]), nan_ok=True), key
        for part in ("physics_heads", "physics_generated"):
            pixels = [r[part]["free_fall_px"] for r in rows]
            assert overall[part]["free_fall_px"] == sum(pixels), part
            if sum(pixels):
                fits = [r[part]["g_fit"] for r in rows]
                pooled = sum(_nan(g) * n for g, n in zip(fits, pixels) if n) / sum(pixels)
                assert overall[part]["g_fit"] == pytest.approx(pooled), part
        for part in ("coherence_heads", "coherence_generated"):
            frames = [r[part]["frames_scored"] for r in rows]
            assert overall[part]["frames_scored"] == sum(frames) > 0, part
            share = sum(r[part]["coherent_frames"] * n for r, n in zip(rows, frames)) / sum(frames)
            assert overall[part]["coherent_frames"] == pytest.approx(share), part

        # Verdicts: the overall value they quote, and pass exactly when the rule holds.
        verdicts, constants = metrics["verdicts"][model], metrics["constants"]
        assert set(VERDICT_FIELDS) <= set(verdicts)
        assert all(isinstance(v["pass"], bool) for v in verdicts.values())
        coherence = verdicts["temporal_coherence"]
        assert coherence["value"] == overall["coherence_generated"]["coherent_frames"]
        assert coherence["pass"] is (coherence["value"] >= constants["coherence_pass"])
        for part in ("physics_heads", "physics_generated"):
            error = overall[part]["g_rel_error"]
            assert verdicts[part]["value"] == error
            assert verdicts[part]["pass"] is (error is not None and error < constants["g_tolerance"]), part
        beats = overall["beats_baseline"]
        assert verdicts["heads_beat_baselines"]["value"] == overall["perception"]["depth_scale_abs_rel"]
        assert verdicts["heads_beat_baselines"]["pass"] is (
            beats["depth_scale_abs_rel"] and beats["flow_epe_moving"] and beats["flow_epe"]), beats
        perception = overall["perception"]
        for alignment in ("", "scale_", "affine_"):
            key = f"depth_{alignment}abs_rel"
            assert beats[key] is (perception[key] < perception[f"median_{key}"]), key
        # The median baseline is constant per clip: scale alignment leaves it unchanged.
        assert perception["median_depth_scale_abs_rel"] == pytest.approx(perception["median_depth_abs_rel"])
        for method in ("dis", "farneback"):
            assert perception[f"{method}_flow_epe"] >= 0 and perception[f"{method}_flow_epe_moving"] >= 0, method
    report = (out / "report.md").read_text()
    assert "unseen" in report and "leakage" in report and ("PASS" in report or "FAIL" in report)
    assert "| model | metric | heads | baseline | DIS | Farneback |" in report


def test_perception_is_broken_down_per_family_and_per_look(evaluation, generated_dataset):
    """Two scenes of two families and (today's scenes) one look: each family pool is its scene's
    perception, the look pool is the overall one; report.md has a row per pool and model."""
    from data.layout import SCENE_SUBPATH
    from data.scene_meta import read_scene_meta, scene_look

    out, _ = evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    scenes = metrics["scenes"]
    for scene in scenes:
        assert scene["look"] == scene_look(read_scene_meta(generated_dataset[0] / scene["scene"] / SCENE_SUBPATH))
    families, looks = metrics["breakdown"]["family"], metrics["breakdown"]["look"]
    assert {name: pool["scenes"] for name, pool in families.items()} == {s["family"]: [s["scene"]] for s in scenes}
    assert sorted(name for pool in looks.values() for name in pool["scenes"]) == sorted(s["scene"] for s in scenes)
    report = (out / "report.md").read_text()
    assert "## Perception per family" in report and "## Perception per look" in report
    for model in metrics["models"]:
        for scene in scenes:
            assert families[scene["family"]]["perception"][model] == scene["models"][model]["perception"]
            assert re.search(rf"^\| {scene['family']} \| 1 \| {model} \| ", report, re.MULTILINE)
        if len(looks) == 1:
            assert next(iter(looks.values()))["perception"][model] == metrics["overall"][model]["perception"]


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
    """Every PNG the run lists opens, is not blank, and each contact sheet has the documented layout:
    per scene a title line and four strips (GT, generated, flow, depth) of the picked frames."""
    from stages.evaluation.gallery import LABEL_PX, MODEL_ROWS, STRIP_FRAMES, THUMB_PX

    out, payload = evaluation
    pngs = [name for name in payload["outputs"] if name.endswith(".png")]
    assert {"per_scene.png", "metrics_table.png", "contact_sheet_stage1.png", "contact_sheet_stage2.png"} <= set(pngs)
    assert sorted(pngs) == sorted(p.name for p in out.glob("*.png"))
    for name in pngs:
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            lo, hi = zip(*image.convert("RGB").getextrema())
            assert image.width >= 100 and image.height >= 100 and max(hi) - min(lo) > 50, (name, image.size)

    geometry = payload["geometry"]
    thumb, k = min(geometry["size"], THUMB_PX), min(geometry["frames"], STRIP_FRAMES)
    strip_w, rows = k * thumb + (k - 1) * 2, 1 + len(MODEL_ROWS)
    block_h = 18 + rows * (thumb + 4)
    for model in payload["models"]:
        with Image.open(out / f"contact_sheet_{model}.png") as sheet:
            pixels = np.asarray(sheet.convert("RGB"))
        assert pixels.shape[:2] == (len(payload["scenes"]) * (block_h + 8), LABEL_PX + strip_w), pixels.shape
        for scene in range(len(payload["scenes"])):
            for row in range(rows):  # every strip holds pictures, not the white background
                y = scene * (block_h + 8) + 18 + row * (thumb + 4)
                strip = pixels[y:y + thumb, LABEL_PX:LABEL_PX + strip_w].astype(float)
                assert strip.std() > 1 and (strip < 250).mean() > 0.5, (model, scene, row)


def test_perception_sheets_and_previews_show_what_the_heads_see(evaluation):
    """Per model a perception contact sheet (a row per scene, five panels) in the outputs, report.md
    and the gallery; per scene and model an animated preview GIF of every window frame, embedded."""
    from heads.visualize import GAP_PX, PREVIEW_BAR_PX, PREVIEW_FRAMES, PREVIEW_PX
    from stages.evaluation.gallery import perception_sheet_name, preview_name
    from tests.helpers import assert_perception_sheet

    out, payload = evaluation
    size, frames = payload["geometry"]["size"], payload["geometry"]["frames"]
    report, gallery = (out / "report.md").read_text(), (out / "gallery.html").read_text()
    for model in payload["models"]:
        name = perception_sheet_name(model)
        assert name in payload["outputs"] and f"]({name})" in report, name
        assert_perception_sheet(out / name, len(payload["scenes"]), (size, size))
        assert f'alt="perception {model}"' in gallery
    panel = min(size, PREVIEW_PX)
    for scene in payload["scenes"]:
        for model in payload["models"]:
            name = preview_name(scene["scene"], model)
            assert name in payload["outputs"], name
            with Image.open(out / name) as gif:
                assert gif.format == "GIF" and gif.n_frames == min(frames, PREVIEW_FRAMES), (name, gif.n_frames)
                assert gif.size == (3 * panel + 2 * GAP_PX, panel + PREVIEW_BAR_PX), (name, gif.size)
    assert gallery.count("data:image/gif;base64,") == len(payload["scenes"]) * len(payload["models"])


def test_missing_stage_dir_is_a_clear_error(generated_dataset, exports, tmp_path):
    from scripts.evaluate_physics import main

    missing = tmp_path / "no_such_run" / "final"
    with pytest.raises(SystemExit, match=re.escape(str(missing))):
        main(eval_args(generated_dataset, exports, tmp_path / "out", **{"--stage2": missing}))
    with pytest.raises(SystemExit, match="lacks lora.safetensors"):
        main(eval_args(generated_dataset, exports, tmp_path / "out", **{"--stage2": exports[0]}))


def test_empty_split_and_bad_geometry_are_clear_errors(generated_dataset, exports, tmp_path):
    from scripts.evaluate_physics import main

    with pytest.raises(SystemExit, match="no rows with split 'nope'"):
        main(eval_args(generated_dataset, exports, tmp_path / "out", **{"--split": "nope"}))
    with pytest.raises(SystemExit, match="multiple of 32"):
        main(eval_args(generated_dataset, exports, tmp_path / "out", **{"--size": 80}))
    with pytest.raises(SystemExit, match="1 \\+ 4k"):
        main(eval_args(generated_dataset, exports, tmp_path / "out", **{"--frames": 6}))
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_best_of_two_keeps_the_verifiers_choice_and_the_first_samples_metrics(generated_dataset, exports, tmp_path):
    """--best-of 2: two seeds per scene, the higher verifier score is the rollout scored, and the first
    sample's metrics stay beside it; sample 0 is the rollout of a plain evaluation (same seed)."""
    from scripts.evaluate_physics import main
    from stages.evaluation.best_of import SEED_SPACING

    def stage1_only(out: Path, **extra) -> list[str]:
        args = eval_args(generated_dataset, exports, out, **{"--max-scenes": 1, **extra})
        at = args.index("--stage2")
        return args[:at] + args[at + 2:] + ["--no-flow-baselines"]

    plain = main(stage1_only(tmp_path / "plain"))
    # Any two clips of the root make a manifest: the verifier table joins the report (--pairs).
    with generated_dataset[1].open(newline="") as handle:
        videos = [row["video"] for row in csv_module.DictReader(handle)][:2]
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"plausible,implausible,kind\n{videos[0]},{videos[1]},any label\n")
    payload = main(stage1_only(tmp_path / "best", **{"--best-of": 2, "--verifier": "heads", "--pairs": manifest}))
    assert payload["verify"]["pairs"] == 1 and set(payload["verify"]["rows"]) == {
        "heads", "oracle", "features", "frame_difference", "random"}
    assert (tmp_path / "best" / "verify" / "verify.json").is_file()
    assert "## Physics verifier: violation pairs" in (tmp_path / "best" / "report.md").read_text()
    assert "The heads on the plausible clips" in (tmp_path / "best" / "report.md").read_text()
    scene, first = payload["scenes"][0]["models"]["stage1"], plain["scenes"][0]["models"]["stage1"]
    record = scene["best_of"]
    assert record["n"] == 2 and record["verifier"] == "heads" and first["best_of"] is None
    assert record["seeds"] == [scene["seed"], scene["seed"] + SEED_SPACING]
    assert record["chosen"] == int(np.argmax(record["scores"])) and len(set(record["scores"])) == 2
    assert record["prediction_first"] == pytest.approx(first["prediction"])
    chosen_is_first = record["chosen"] == 0
    assert (scene["prediction"] == pytest.approx(first["prediction"])) == chosen_is_first
    assert payload["overall"]["stage1"]["best_of"]["chosen_not_first"] == float(not chosen_is_first)
    assert "## Best of 2 rollouts (verifier `heads`)" in (tmp_path / "best" / "report.md").read_text()


def test_second_takes_give_the_physics_iq_score_for_base_and_lora(generated_dataset, exports, tmp_path, capsys):
    """With take 2 beside every held-out scene, metrics.json, report.md, the gallery and the printout
    carry the Physics-IQ score of both models; each scene's variance terms compare take 2 with take 1."""
    import shutil

    from data.sim.generate import GenConfig, SceneJob
    from data.sim.takes import TakeNoise, generate_take
    from heads import iq_score
    from scripts.evaluate_physics import main

    root = tmp_path / "scenes"
    shutil.copytree(generated_dataset[0], root)
    with generated_dataset[1].open(newline="") as handle:
        holdout = [r["video"].split("/")[0] for r in csv_module.DictReader(handle) if r["split"] == "holdout"][:2]
    cfg = GenConfig(width=64, height=64, frames=17, looks=("studio",))
    for name in holdout:
        meta = json.loads((root / name / "env_0/0/0/scene.json").read_text())
        assert generate_take(root, SceneJob(meta["family"], meta["seed"]), cfg, TakeNoise()) == "written"
    out = tmp_path / "out"
    payload = main(eval_args((root, generated_dataset[1]), exports, out))
    iq = payload["physics_iq"]
    assert set(iq["models"]) == {"stage1", "stage2"}
    for model, table in iq["models"].items():
        rows = [{"scene": s["scene"], **s["models"][model]["prediction"]} for s in payload["scenes"]]
        assert all(0.0 < r["variance_spatiotemporal_iou"] <= 1.0 and r["variance_mse"] > 0 for r in rows)
        assert table["all"]["score"] == iq_score.score(rows) or math.isnan(table["all"]["score"])
        assert set(table["per_family"]) == {"stack_topple"} and table["all"]["scenes"] == 2
    report = (out / "report.md").read_text()
    assert "## Physics-IQ score" in report and "### stage2" in report
    assert "Physics-IQ score" in (out / "gallery.html").read_text()
    assert "Physics-IQ score (95 % bootstrap interval over scenes):" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["physics_iq"]["models"]["stage1"]["all"]["videos"] == 2


def test_physics_iq_root_generation_base_and_lora_then_scoring(generated_dataset, exports, tmp_path):
    """A synthetic benchmark in the official layout (two takes as mp4 at the backbone's 24 fps) from
    generated scenes: the tiny backbone generates every switch frame's clip, base and with the
    LoRA, same seeds, under the official names; both folders score against take 1 and take 2."""
    import shutil

    from data.sim.generate import GenConfig, SceneJob
    from data.sim.takes import TakeNoise, generate_take
    from data.video_io import read_mp4, video_fps
    from scripts.physics_iq import main

    root = tmp_path / "scenes"
    shutil.copytree(generated_dataset[0], root)
    with generated_dataset[1].open(newline="") as handle:
        rows = [r for r in csv_module.DictReader(handle) if r["split"] == "holdout"][:2]
    for row in rows:
        meta = json.loads((root / row["video"] / "scene.json").read_text())
        generate_take(root, SceneJob(meta["family"], meta["seed"]), GenConfig(64, 64, 17, looks=("studio",)), TakeNoise())
    bench = tmp_path / "bench"
    main(["export", "--root", str(root), "--metadata", str(generated_dataset[1]), "--split", "holdout",
          "--out", str(bench), "--fps", "24"])
    out = tmp_path / "gen"
    result = main(["generate", "--physics-iq-root", str(bench), "--out", str(out), "--stage1", str(exports[0]),
                   "--stage2", str(exports[1]), "--size", "64", "64", "--seconds", "0.5", "--steps", "2",
                   "--cfg-scale", "1", "--cache-dir", str(tmp_path / "cache"), "--score", "--downsample", "1"])
    names = sorted(p.name for p in (out / "base").iterdir())
    assert names == sorted(p.name for p in (out / "lora").iterdir()) and len(names) == 2
    assert names[0].startswith("0001_perspective-center_trimmed-stack-topple-")
    base, lora = (read_mp4(out / m / names[0]) for m in ("base", "lora"))
    assert base.shape == (12, 64, 64, 3) and video_fps(out / "base" / names[0]) == 24.0  # 0.5 s after the switch
    assert not np.array_equal(base, lora)  # the fused LoRA changed the DiT
    assert [r["model"] for r in result["results"]] == ["base", "lora"]
    assert all(len(r["records"]) == 2 and 0.0 <= r["all"]["score"] <= 100.0 for r in result["results"])
    assert (out / "scores.json").is_file()
