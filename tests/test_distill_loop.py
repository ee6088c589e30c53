"""The reference loop behind `daqakd distill`: real Brevitas backend, digits, small subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from daqakd_plugins import hookimpl
from daqakd_plugins.cli import main
from daqakd_plugins.distill import DistillConfig, evaluate_student, load_student, run_distill
from daqakd_plugins.errors import ConfigError, NonFiniteError, UnknownNameError
from daqakd_plugins.plugins import register_plugin


@pytest.fixture(scope="module")
def teacher_file(digits_teacher, tmp_path_factory) -> Path:
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, meta["arch"], meta)


def _cfg(tmp_path: Path, teacher: Path, **kw: object) -> DistillConfig:
    base: dict[str, object] = dict(
        backend="brevitas", bits=2, act_bits=4, data="digits", teacher=str(teacher), epochs=2, augment="none",
        train_per_class=20, batch_size=32, lr=2e-3, export=False, progress=False, out=str(tmp_path / "run"),
    )
    base.update(kw)
    return DistillConfig(**base)  # type: ignore[arg-type]


@pytest.mark.slow
def test_cli_end_to_end_ranks_trains_exports_and_reports(fresh_plugins, tmp_path, teacher_file, capsys):
    out = tmp_path / "run"
    rc = main([
        "distill", "--backend", "brevitas", "--bits", "2", "--act-bits", "4", "--data", "digits",
        "--teacher", str(teacher_file), "--epochs", "2", "--out", str(out), "--augment", "auto",
        "--candidates", "none,randomerasing", "--rank-per-class", "10", "--train-per-class", "30",
        "--batch-size", "32", "--lr", "2e-3",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "student after KD" in printed
    r = json.loads((out / "report.json").read_text())
    for key in ("backend", "bits", "act_bits", "augmentation", "loss", "ranking", "accuracy", "epochs", "seconds",
                "seed", "export"):
        assert key in r
    assert (r["backend"], r["bits"], r["act_bits"], r["loss"], r["epochs"]) == ("brevitas", 2, 4, "paper", 2)
    assert [e["name"] for e in r["ranking"]] and {e["name"] for e in r["ranking"]} == {"none", "randomerasing"}
    assert r["augmentation"] == r["ranking"][0]["name"]  # the best-ranked candidate was used
    acc = r["accuracy"]
    assert acc["teacher_fp"] > 0.95 and acc["student_after"] > 0.3
    # "before" is the calibrated (PTQ) W2A4 student, "after" the same student after 2 epochs of KD: the
    # training must clearly help (measured 0.18 → 0.53), and "after" is the last epoch's test accuracy
    assert acc["student_after"] > acc["student_before"] + 0.15, acc
    assert r["history"][-1]["test_accuracy"] == pytest.approx(acc["student_after"], abs=1e-9)
    assert f"| student after calibration (PTQ) | {acc['student_before']:.4f} |" in (out / "report.md").read_text()
    assert r["num_quantizers"] > 0 and len(r["history"]) == 2
    # the exported student runs and agrees with torch
    fmts = {e["format"]: e for e in r["export"]["student"]}
    assert "onnx-qcdq" in fmts and fmts["onnx-qcdq"]["accuracy_abs_diff"] <= 0.01
    assert "| student after KD training |" in (out / "report.md").read_text()
    # checkpoint and student load with weights_only=True; the student rebuilds to the same accuracy
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 2 and ck["augmentation"] == r["augmentation"]
    assert json.loads(ck["ranking"])["best"] == r["augmentation"]
    from daqakd_plugins.data import load_digits

    d = load_digits()
    student, meta = load_student(out)
    assert evaluate_student(student, d.test_x, d.test_y) == pytest.approx(acc["student_after"], abs=1e-9)
    assert meta["augmentation"] == r["augmentation"]


def test_ce_is_plain_qat_without_a_teacher_term(fresh_plugins, tmp_path, teacher_file):
    r = run_distill(_cfg(tmp_path, teacher_file, loss="ce", epochs=1))
    assert [t["component"] for t in r["loss_terms"]] == ["ce"]
    assert set(r["history"][0]["terms"]) == {"ce", "total"}
    assert r["augmentation"] == "none" and r["ranking"] == []
    assert r["export"] == {"skipped": "--no-export"}


def test_bad_configuration_is_refused_before_training(fresh_plugins, tmp_path, teacher_file):
    with pytest.raises(ConfigError, match=r"^weight bits \(--bits\) 9 are outside what backend 'brevitas' supports "
                                          r"\(1\.\.8\); pass a value in that range\.$"):
        _cfg(tmp_path, teacher_file, bits=9)
    with pytest.raises(ConfigError, match=r"^activation bits \(--act-bits\) 1 are outside what backend 'brevitas' "
                                          r"supports \(2\.\.8\); pass a value in that range\.$"):
        _cfg(tmp_path, teacher_file, act_bits=1)
    with pytest.raises(UnknownNameError, match="registered loss(?:es)?: .*mixed.*paper.*sqakd"):
        _cfg(tmp_path, teacher_file, loss="hinton++")
    with pytest.raises(UnknownNameError, match="registered augmentations: .*trivialaugmentwide"):
        _cfg(tmp_path, teacher_file, augment="trivialaugment")
    with pytest.raises(UnknownNameError, match="registered backends: .*brevitas"):
        _cfg(tmp_path, teacher_file, backend="tensorrt")
    with pytest.raises(ConfigError, match="lr must be a positive"):
        _cfg(tmp_path, teacher_file, lr=-1.0)
    with pytest.raises(ConfigError, match="out="):
        DistillConfig(data="digits")


def test_cli_prints_bad_input_and_exits_2(fresh_plugins, tmp_path, capsys):
    rc = main(["distill", "--bits", "12", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert ("daqakd distill: error: weight bits (--bits) 12 are outside what backend 'brevitas' supports (1..8); "
            "pass a value in that range.") in err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(fresh_plugins, tmp_path, teacher_file):
    steps_per_epoch = 200 // 32 + 1  # 20 per class × 10 classes, batch 32

    class Poison:
        @hookimpl(wrapper=True)
        def daqakd_compute_loss(self, ctx):
            result = yield
            if ctx.step == steps_per_epoch + 2:  # the third step of epoch 2
                result.terms["kd"] = result.terms["kd"] + float("inf")
            return result

    register_plugin(Poison(), name="poison")
    cfg = _cfg(tmp_path, teacher_file, epochs=3)
    with pytest.raises(NonFiniteError) as ei:
        run_distill(cfg)
    msg = str(ei.value)
    assert f"step {steps_per_epoch + 2}" in msg and "kd=inf" in msg and "epoch 2" in msg
    assert "last good checkpoint" in msg and "checkpoint.pt (after epoch 1)" in msg
    ck = torch.load(Path(cfg.out) / "checkpoint.pt", map_location="cpu", weights_only=True)  # type: ignore[arg-type]
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["student"]["state_dict"].values() if v.is_floating_point())
    assert not (Path(cfg.out) / "report.json").exists()  # type: ignore[arg-type]


def test_calibration_sample_is_a_number_of_images_not_batches(fresh_plugins, tmp_path, teacher_file, capsys):
    """--batch-size no longer scales the calibration sample (issue 29): calib_images images, whatever the
    batch size; the console and the report say how many and which option set it."""
    small = run_distill(_cfg(tmp_path, teacher_file, epochs=1, batch_size=8, calib_images=40, progress=True,
                             out=str(tmp_path / "b8")))
    big = run_distill(_cfg(tmp_path, teacher_file, epochs=1, batch_size=32, calib_images=40, out=str(tmp_path / "b32")))
    for r, batches in ((small, 5), (big, 2)):
        cal = r["calibration"]
        assert (cal["images"], cal["batches"], cal["size_from"]) == (40, batches, "--calib-images 40")
        assert sum(cal["per_class"].values()) == 40
    assert small["calibration"]["per_class"] == big["calibration"]["per_class"]  # the same images
    err = capsys.readouterr().err
    assert "daqakd: calibrating the quantized student on 40 training images (class-stratified; --calib-images 40) " \
           "in 5 batch(es) of 8" in err
    assert "- calibration: 40 training images (class-stratified, seeded, shuffled; --calib-images 40), 5 batch(es) " \
           "of 8" in (tmp_path / "b8" / "report.md").read_text()
    # the default is a fixed 512 images; the older --calib-batches keeps its meaning (batches × batch size)
    assert _cfg(tmp_path, teacher_file, batch_size=16).calibration_size() == (512, "default (--calib-images 512)")
    assert _cfg(tmp_path, teacher_file, batch_size=16, calib_batches=2).calibration_size()[0] == 32
    with pytest.raises(ConfigError, match="pass one"):
        _cfg(tmp_path, teacher_file, calib_batches=2, calib_images=40)
