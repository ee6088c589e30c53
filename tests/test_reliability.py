"""Nothing lost, nothing silent (issue 17): run-directory rules, checks before any work, non-finite
teachers, the inputs Distiller.loss and rank_augmentations share, degenerate data, and the smaller
messages. CLI cases run the real CLI in a subprocess and check the exit code, the message's key words
and what is on disk afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from daqakd_plugins.errors import DataError, NonFiniteError

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "daqakd_plugins", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=e)


def _refused(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words:
        assert w in r.stderr, (w, r.stderr[-2000:])


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def teacher_file(digits_teacher, tmp_path_factory) -> Path:
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, meta["arch"], meta)


def _quick(teacher: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--backend", "brevitas", "--bits", "4", "--data", "digits", "--teacher", str(teacher),
            "--epochs", "1", "--augment", "none", "--train-per-class", "10", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def finished_run(teacher_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "done"
    r = _cli(*_quick(teacher_file, out, "--no-export"))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# --------------------------------------------------------------------------------------------------
# run directories
# --------------------------------------------------------------------------------------------------
def test_reusing_a_finished_run_directory_is_refused_and_nothing_is_touched(finished_run, teacher_file) -> None:
    before = _digest(finished_run)
    r = _cli(*_quick(teacher_file, finished_run))
    _refused(r, "already holds", f"--resume {finished_run}", "--fresh", "another --out")
    assert _digest(finished_run) == before


def test_fresh_clears_what_the_new_run_does_not_rewrite(finished_run, teacher_file, tmp_path) -> None:
    import shutil

    run = tmp_path / "again"
    shutil.copytree(finished_run, run)
    (run / "export").mkdir()
    (run / "export" / "student.qcdq.onnx").write_bytes(b"an old student's file")
    (run / "notes.txt").write_text("mine")  # not a run file: kept
    r = _cli(*_quick(teacher_file, run, "--fresh", "--no-export"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (run / "export").exists()  # the old export is gone, not left next to the new report
    assert (run / "notes.txt").read_text() == "mine"
    report = json.loads((run / "report.json").read_text())
    assert report["export"] == {"skipped": "--no-export"} and report["resumed_from_epoch"] is None


def test_ctrl_c_names_resume_and_resume_keeps_no_export(teacher_file, tmp_path) -> None:
    out = tmp_path / "run"
    args = [sys.executable, "-m", "daqakd_plugins", *_quick(teacher_file, out, "--no-export")]
    args[args.index("--epochs") + 1] = "40"
    args[args.index("--train-per-class") + 1] = "30"
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    # A shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler; a user's Ctrl-C reaches a foreground process, so restore the default disposition.
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert f"daqakd distill --resume {out}" in err and "Traceback" not in err
    assert not (out / "report.json").exists()
    r = _cli("distill", "--resume", str(out), "--epochs", "40")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["export"] == {"skipped": "--no-export"} and not (out / "export").exists()
    assert report["resumed_from_epoch"] >= 1


# --------------------------------------------------------------------------------------------------
# checks before any work
# --------------------------------------------------------------------------------------------------
def test_out_that_is_a_file_fails_before_any_work(teacher_file, tmp_path) -> None:
    f = tmp_path / "a_file"
    f.write_text("x")
    _refused(_cli(*_quick(teacher_file, f)), "is a file", "directory")
    assert f.read_text() == "x"


def test_unwritable_out_fails_before_any_work(teacher_file) -> None:
    """/proc refuses new files on every Linux host (root included, where chmod would not)."""
    r = _cli(*_quick(teacher_file, Path("/proc/daqakd-test/run")))
    _refused(r, "/proc is not writable")


def test_rank_json_to_an_unwritable_path_fails_before_ranking(tmp_path) -> None:
    r = _cli("rank", "--data", "digits", "--json", "/proc/daqakd-ranking.json", "--candidates", "none")
    _refused(r, "--json", "not writable")
    assert "ranking" not in r.stdout.lower()  # nothing was ranked
    r = _cli("rank", "--data", "digits", "--json", str(tmp_path), "--candidates", "none")
    _refused(r, "is a directory")


def test_a_refused_run_leaves_no_empty_directory(tmp_path) -> None:
    out = tmp_path / "new" / "run"
    _refused(_cli("distill", "--data", str(tmp_path / "missing"), "--out", str(out)), "does not exist")
    assert not out.exists() and not out.parent.exists()


def test_bad_device_is_named(tmp_path) -> None:
    _refused(_cli("distill", "--device", "gpu", "--out", str(tmp_path / "r")), "--device 'gpu'", "'cpu'")
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------------
# non-finite teachers
# --------------------------------------------------------------------------------------------------
def test_teacher_lr_inf_is_refused_and_nothing_saved(tmp_path) -> None:
    out = tmp_path / "t.pt"
    _refused(_cli("teacher", "--lr", "inf", "--out", str(out)), "--lr must be a finite positive number")
    assert not out.exists()


def test_diverging_teacher_training_stops_with_the_fix(digits) -> None:
    from daqakd_plugins.train import train_teacher

    def poison(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * float("inf"), t  # what a diverged step produces: non-finite activations

    with pytest.raises(NonFiniteError, match=r"teacher training diverged.*lower --lr.*Nothing was saved"):
        train_teacher(digits, epochs=1, seed=0, progress=False, augment=poison)


def test_a_nan_teacher_file_is_refused(digits_teacher, tmp_path) -> None:
    from daqakd_plugins.models import load_model, save_model

    model, meta = digits_teacher
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    bad = type(model)(**{k: v for k, v in meta["arch"].items() if k != "name"})
    sd[next(k for k in sd if k.endswith("weight"))][0].fill_(float("nan"))
    bad.load_state_dict(sd)
    path = save_model(tmp_path / "nan.pt", bad, meta["arch"], meta)
    with pytest.raises(NonFiniteError, match=r"NaN/inf weights.*retrain"):
        load_model(path)


# --------------------------------------------------------------------------------------------------
# inputs: one validation shared by Distiller.loss and rank_augmentations
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kd(digits_teacher):
    from daqakd_plugins.distill import Distiller

    teacher, _ = digits_teacher
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Distiller(teacher, student, loss="paper")


@pytest.mark.parametrize(("make", "match"), [
    (lambda x, y: (x.permute(0, 2, 3, 1), y), r"channels-last \(NHWC\).*permute\(0, 3, 1, 2\)"),
    (lambda x, y: (x, y.float() + 0.5), r"fractional.*y\.long\(\)"),
    (lambda x, y: (x, y[:-1]), r"16 images but 15 labels"),
    (lambda x, y: (x[0], y), r"\[batch, channels, height, width\].*unsqueeze\(0\)"),
])
def test_bad_batches_get_the_same_message_in_distiller_and_ranking(kd, digits_teacher, digits, make, match) -> None:
    from daqakd_plugins.ranking import rank_augmentations

    teacher, _ = digits_teacher
    x, y = make(digits.train_x[:16], digits.train_y[:16])
    with pytest.raises(DataError, match=match):
        kd.loss(x, y)
    with pytest.raises(DataError, match=match):
        rank_augmentations(teacher, (x, y), "none", progress=False)


def test_uint8_images_and_integral_float_labels_are_converted(kd, digits) -> None:
    x, y = digits.train_x[:16], digits.train_y[:16]
    x8 = (x * 255).round().to(torch.uint8)
    torch.manual_seed(0)
    a = kd.loss(x8.float() / 255, y)
    torch.manual_seed(0)
    b = kd.loss(x8, y.float())
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# degenerate data
# --------------------------------------------------------------------------------------------------
def _png(path: Path, mode: str = "L", value: int = 128) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8) if mode == "L" else (8, 8, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path)


def test_one_class_folder_is_refused(tmp_path) -> None:
    from daqakd_plugins.data import load_image_folder

    for i in range(4):
        _png(tmp_path / "cats" / f"{i}.png")
    with pytest.raises(DataError, match=r"one class folder \('cats'\).*at least 2 classes"):
        load_image_folder(tmp_path)


def test_empty_class_folder_is_named(tmp_path) -> None:
    from daqakd_plugins.data import load_image_folder

    for i in range(4):
        _png(tmp_path / "cats" / f"{i}.png")
        _png(tmp_path / "dogs" / f"{i}.png")
    (tmp_path / "birds").mkdir()
    with pytest.raises(DataError, match=r"birds.*hold no images"):
        load_image_folder(tmp_path)


def test_mixed_grayscale_and_colour_become_rgb(tmp_path) -> None:
    from daqakd_plugins.data import load_image_folder

    for i in range(5):
        _png(tmp_path / "a" / f"{i}.png", "L", 10 * i)  # the first files are grayscale
        _png(tmp_path / "b" / f"{i}.png", "RGB", 200)
    b = load_image_folder(tmp_path, test_size=0.2).to_memory()
    assert b.train_x.shape[1] == 3 and b.test_x.shape[1] == 3
    gray = torch.cat([b.train_x[b.train_y == 0], b.test_x[b.test_y == 0]])
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])  # replicated channels


# --------------------------------------------------------------------------------------------------
# smaller messages
# --------------------------------------------------------------------------------------------------
def test_report_on_a_non_json_file_says_so(tmp_path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("this is\nnot json\nat all\n")
    _refused(_cli("report", str(f)), "is not a results file", "3 of 3 lines are not JSON")


def test_bad_daqakd_plugins_module_names_the_setting_that_fixes_it() -> None:
    r = _cli("plugins", env={"DAQAKD_PLUGINS": "no_such_daqakd_plugin"})
    _refused(r, "Remove 'no_such_daqakd_plugin' from DAQAKD_PLUGINS")
    assert "DAQAKD_DISABLE_PLUGINS=1" not in r.stderr


def test_checkpoint_errors_do_not_advise_weights_only_false(tmp_path) -> None:
    from daqakd_plugins.distill import load_checkpoint
    from daqakd_plugins.errors import CheckpointError

    torch.save({"fn": np.random.default_rng}, tmp_path / "checkpoint.pt")  # a pickled global: not weights_only
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    msg = str(info.value)
    assert "weights_only=True" in msg and "weights_only=False" not in msg and "will likely succeed" not in msg


def _set(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


# --------------------------------------------------------------------------------------------------
# the battery beyond the list (docs/troubleshooting.md, "Battery (issue 17)"): each case
# that was unclear or wrong, through the real CLI where it is a CLI case
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "words"), [
    (lambda d: d, ["is a directory", "pass the model file"]),
    (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("hello"))[0], ["is not a PyTorch file", "daqakd teacher"]),
    (lambda d: d / "missing.pt", ["does not exist", "daqakd teacher --out"]),
])
def test_a_wrong_teacher_file_is_refused_before_any_data_and_leaves_no_directory(tmp_path, make, words) -> None:
    teacher = make(tmp_path)
    out = tmp_path / "new" / "run"
    r = _cli(*_quick(Path(teacher), out, "--no-export"))
    _refused(r, f"--teacher {teacher}", *words)
    assert not out.exists() and not out.parent.exists()
    r = _cli("rank", "--teacher", str(teacher), "--candidates", "none")
    _refused(r, f"--teacher {teacher}", *words)


def test_a_run_refused_after_loading_data_removes_the_directory_it_made(digits_teacher, tmp_path) -> None:
    from daqakd_plugins.models import build_model, save_model

    _, meta = digits_teacher
    arch = {**meta["arch"], "num_classes": 3}
    other = save_model(tmp_path / "three.pt", build_model(arch), arch, {})
    out = tmp_path / "new" / "run"
    r = _cli(*_quick(other, out, "--no-export"))
    _refused(r, "the teacher predicts 3 classes but the data has 10")
    assert not out.exists() and not out.parent.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    _refused(_cli(*_quick(other, kept / "run", "--no-export")), "predicts 3 classes")
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # only what this run made is removed


def test_fresh_with_resume_names_the_conflict_not_the_path(tmp_path) -> None:
    r = _cli("distill", "--fresh", "--resume", str(tmp_path / "nowhere"))
    _refused(r, "--fresh starts over and --resume continues a run: pass one of them")
    assert "no checkpoint" not in r.stderr


def test_bits_below_the_activation_range_names_the_act_bits_default(teacher_file, tmp_path) -> None:
    out = tmp_path / "r"
    r = _cli(*_set(_quick(teacher_file, out, "--no-export"), "--bits", "1"))
    _refused(r, "--act-bits defaults to --bits", "pass --act-bits in 2..8")
    assert not out.exists()


def test_a_loss_that_needs_feature_layers_is_refused_on_the_command_line(teacher_file, tmp_path) -> None:
    out = tmp_path / "r"
    r = _cli(*_quick(teacher_file, out, "--no-export", "--loss", "paper+feature"))
    _refused(r, "--loss 'paper+feature' includes feature", "command line cannot name them", "features=")
    assert not out.exists()


def test_an_empty_candidate_list_is_refused_before_any_work(teacher_file, tmp_path) -> None:
    out = tmp_path / "r"
    args = _set(_quick(teacher_file, out, "--no-export", "--candidates", ""), "--augment", "auto")
    _refused(_cli(*args), "--candidates '' names no candidates")
    assert not out.exists()


def test_a_backend_that_does_not_import_is_refused_before_any_work(teacher_file, tmp_path) -> None:
    out = tmp_path / "r"
    code = ("import runpy, sys; sys.modules['brevitas'] = None; sys.argv = ['daqakd', *sys.argv[1:]]; "
            "runpy.run_module('daqakd_plugins', run_name='__main__')")
    e = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, *_quick(teacher_file, out, "--no-export")], capture_output=True,
                       text=True, timeout=600, cwd=REPO, env=e)
    _refused(r, "--backend brevitas", "does not import here", 'pip install "daqakd[brevitas]"')
    assert not out.exists()


def test_a_backend_whose_adapter_only_reports_availability_is_refused_before_any_work(teacher_file, tmp_path) -> None:
    (tmp_path / "stub_backend_plugin.py").write_text(
        "from daqakd_plugins import hookimpl\n"
        "from daqakd_plugins.contracts import BackendInfo\n\n\n"
        "@hookimpl\n"
        "def daqakd_register_backends(register):\n"
        "    register(BackendInfo(name='stub-backend', module='json', distribution='json', install='pip install stub',\n"
        "                         implemented=False))\n")
    out = tmp_path / "r"
    env = {"DAQAKD_PLUGINS": "stub_backend_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = _set(_quick(teacher_file, out, "--no-export"), "--backend", "stub-backend")
    _refused(_cli(*args, env=env), "--backend stub-backend", "only reports availability", "brevitas")
    assert not out.exists()


def test_report_on_an_empty_or_foreign_jsonl_says_what_it_is(tmp_path) -> None:
    from daqakd_plugins.evidence import read_results

    empty = tmp_path / "results.jsonl"
    empty.write_text("")
    assert read_results(empty) == []  # reproduce_figure1.py resumes from it: no error there
    _refused(_cli("report", str(empty)), "is empty (no result lines)", "reproduce_figure1.py")
    other = tmp_path / "other.jsonl"
    other.write_text('{"foo": 1}\n')
    _refused(_cli("report", str(other)), "is not a results file", "kind teacher, ranking or student")
    assert not (tmp_path / "analysis.json").exists()


def test_loss_names_a_trailing_plus_and_the_plural(teacher_file, tmp_path) -> None:
    r = _cli(*_quick(teacher_file, tmp_path / "r", "--loss", "paper+"))
    _refused(r, "loss 'paper+' has an empty part", "'paper+feature'")
    r = _cli(*_quick(teacher_file, tmp_path / "r", "--loss", "nosuch"))
    _refused(r, "registered losses: ")
    assert "losss" not in r.stderr


def test_a_file_torch_did_not_write_is_named_as_such(tmp_path) -> None:
    from daqakd_plugins.distill import load_checkpoint, load_student
    from daqakd_plugins.errors import CheckpointError
    from daqakd_plugins.models import load_model

    text = tmp_path / "checkpoint.pt"
    text.write_text("hello")
    png = tmp_path / "image.pt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    for load, path in ((load_model, text), (load_model, png), (load_checkpoint, tmp_path), (load_student, text)):
        with pytest.raises(CheckpointError, match="not a PyTorch file, or a truncated one") as info:
            load(path)
        assert "KeyError" not in str(info.value) and "weights_only=False" not in str(info.value)


def test_load_student_on_a_teacher_or_a_checkpoint_says_what_the_file_is(teacher_file, finished_run) -> None:
    from daqakd_plugins.distill import load_student
    from daqakd_plugins.errors import CheckpointError

    with pytest.raises(CheckpointError, match="float model file .* load it with daqakd_plugins.load_model"):
        load_student(teacher_file)
    with pytest.raises(CheckpointError, match=r"checkpoint of a distill run .*--resume"):
        load_student(finished_run / "checkpoint.pt")


def test_distiller_refuses_empty_batches_and_targets_that_are_not_distributions(kd, digits) -> None:
    x, y = digits.train_x[:8], digits.train_y[:8]
    with pytest.raises(DataError, match="the batch is empty"):
        kd.loss(x[:0], y[:0])
    for bad in (-torch.rand(8, 10), torch.rand(8, 10) * 3, torch.full((8, 10), float("nan"))):
        with pytest.raises(DataError, match="must be probability distributions"):
            kd.loss(x, bad)
    soft = torch.softmax(torch.randn(8, 10), 1)
    assert torch.isfinite(kd.loss(x, soft))  # proper distributions still pass


def test_distiller_names_the_image_shape_the_models_cannot_run(digits_teacher, digits) -> None:
    import warnings

    from daqakd_plugins.distill import Distiller
    from daqakd_plugins.errors import ModelError

    teacher, _ = digits_teacher
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kd = Distiller(teacher, copy_of(teacher), loss="paper")
    with pytest.raises(ModelError, match=r"cannot run on images of shape \(8, 3, 32, 32\).*channels"):
        kd.loss(torch.rand(8, 3, 32, 32), digits.train_y[:8])
    assert torch.isfinite(kd.loss(digits.train_x[:8], digits.train_y[:8]))  # the right images still work


def copy_of(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model)
    m.requires_grad_(True)
    return m


def test_run_distill_from_python_leaves_no_empty_directory_when_refused(tmp_path) -> None:
    from daqakd_plugins.distill import DistillConfig, run_distill
    from daqakd_plugins.errors import CheckpointError

    out = tmp_path / "new" / "run"
    cfg = DistillConfig(out=str(out), teacher=str(tmp_path / "missing.pt"), epochs=1, augment="none",
                        train_per_class=10, export=False, progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        run_distill(cfg)
    assert not out.exists() and not out.parent.exists()


def test_report_refuses_a_bootstrap_without_resamples_and_an_unwritable_out(tmp_path) -> None:
    data = REPO / "docs" / "evidence" / "cifar10-subset-cpu.jsonl"
    _refused(_cli("report", str(data), "--bootstrap", "0", "--out", str(tmp_path / "a")), "--bootstrap 0",
             "would print as nan", "pass ≥ 1")
    _refused(_cli("report", str(data), "--out", "/proc/daqakd-report"), "--out", "not writable")
    assert not (tmp_path / "a").exists()


def test_rank_markdown_to_an_unwritable_path_fails_before_ranking(tmp_path) -> None:
    r = _cli("rank", "--data", "digits", "--markdown", "/proc/daqakd-ranking.md", "--candidates", "none")
    _refused(r, "--markdown", "not writable")
    assert "best:" not in r.stdout  # nothing was ranked


def test_export_to_an_unwritable_directory_names_it(digits_teacher, digits) -> None:
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.errors import ConfigError

    teacher, _ = digits_teacher
    s = backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=4, act_bits=4), example_input=digits.train_x[:4])
    with pytest.raises(ConfigError, match=r"out_dir /proc/daqakd-export: /proc is not writable"):
        backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir="/proc/daqakd-export")
