"""Issue 9: same command, same result; one writer per run folder; a finished run reused only when it is the
same run; user-facing errors; lean checkpoints."""
import json
import os
import subprocess
import sys

import pytest
import torch

from busnb.config import SettingError, check_overrides, get_profile
from busnb.experiment import run_experiment
from busnb.rundir import RunBusy, RunConflict, RunLock, clean_tmp

TINY = dict(epochs=1, steps_per_epoch=2, image_size=32, decoder_channels=(16, 8, 8))


def _prof(**kw):
    return get_profile("smoke", **{**TINY, **kw})


def test_two_fresh_runs_give_identical_metrics(tmp_path):
    """Networks are built after the run is seeded: two fresh runs of one command agree exactly (CPU)."""
    prof = _prof()
    a = run_experiment(prof, "mean_teacher", out_dir=tmp_path / "a", progress=False)
    b = run_experiment(prof, "mean_teacher", out_dir=tmp_path / "b", progress=False)
    assert a["test"] == b["test"]
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    sa = torch.load(tmp_path / "a" / "best.pt", weights_only=False)["net"]
    sb = torch.load(tmp_path / "b" / "best.pt", weights_only=False)["net"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = run_experiment(prof, "mean_teacher", seed=1, out_dir=tmp_path / "c", progress=False)
    hc = json.loads((tmp_path / "c" / "history.json").read_text())
    assert [h["loss"] for h in hc] != [h["loss"] for h in ha]  # the seed matters


def test_finished_run_reused_only_when_identical(tmp_path, capsys):
    prof = _prof()
    out = tmp_path / "run"
    first = run_experiment(prof, "supervised", out_dir=out, progress=False)
    stamp = (out / "best.pt").stat().st_mtime_ns
    again = run_experiment(prof, "supervised", out_dir=out, progress=True)
    assert again["test"] == first["test"] and (out / "best.pt").stat().st_mtime_ns == stamp
    assert "reused" in capsys.readouterr().out
    with pytest.raises(RunConflict, match=r"profile\.lr: 0\.001 -> 0\.5"):
        run_experiment(_prof(lr=0.5), "supervised", out_dir=out, progress=False)
    with pytest.raises(RunConflict, match="variant") as err:
        run_experiment(prof, "mean_teacher", out_dir=out, progress=False)
    assert "busnb train --force" in str(err.value) and "force=True" in str(err.value)  # a fix for each way in
    assert json.loads((out / "run.json").read_text())["identity"]["profile"]["lr"] == 0.001  # untouched
    forced = run_experiment(_prof(lr=0.5), "supervised", out_dir=out, progress=False, force=True)
    assert json.loads((out / "run.json").read_text())["identity"]["profile"]["lr"] == 0.5
    assert forced["epochs"] == 1
    # force (notebooks: replace a stale run) keeps the same finished run; retrain (`busnb train --force`) does not
    stamp = (out / "best.pt").stat().st_mtime_ns
    run_experiment(_prof(lr=0.5), "supervised", out_dir=out, progress=False, force=True)
    assert (out / "best.pt").stat().st_mtime_ns == stamp
    capsys.readouterr()
    again = run_experiment(_prof(lr=0.5), "supervised", out_dir=out, progress=True, retrain=True)
    assert (out / "best.pt").stat().st_mtime_ns != stamp and again["test"] == forced["test"]
    assert "the same run: trained anew" in capsys.readouterr().out


def test_folder_with_foreign_checkpoint_is_not_reused(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(RunConflict, match="no run.json"):
        run_experiment(_prof(), "supervised", out_dir=out, progress=False)


def test_one_writer_per_folder_and_stale_lock(tmp_path, capsys):
    with RunLock(tmp_path / "r"):
        assert (tmp_path / "r" / "run.lock").is_file()
        with pytest.raises(RunBusy, match=f"pid {os.getpid()}"):
            with RunLock(tmp_path / "r"):
                pass
        with pytest.raises(RunBusy):
            run_experiment(_prof(), "supervised", out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "run.lock").exists()
    # a lock left by a process that died (SIGKILL) is detected and taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "run.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with RunLock(tmp_path / "s"):
        pass
    assert "stale lock" in capsys.readouterr().out


def test_tmp_leftovers_cleaned_and_files_readable(tmp_path):
    from busnb.atomic import write_json

    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "keep.txt").write_text("x")
    assert clean_tmp(tmp_path, quiet=True) == 1
    assert not list(tmp_path.glob(".*.tmp")) and (tmp_path / "keep.txt").exists()
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_checkpoints_hold_what_resume_needs(tmp_path):
    """last.pt leaves out the frozen static teacher (restored from the stage cache); best.pt holds only the
    evaluated network; resuming a finished-stage run re-attaches the teacher."""
    prof = _prof()
    r = run_experiment(prof, "+static", out_dir=tmp_path / "st", progress=False)
    last = torch.load(tmp_path / "st" / "last.pt", weights_only=False)
    assert not any(k.startswith("static_teacher.") for k in last["method"])
    assert any(k.startswith("student.") for k in last["method"])
    best = torch.load(tmp_path / "st" / "best.pt", weights_only=False)
    assert set(best) == {"net", "epoch", "val_dice"} and not any(k.startswith("student.") for k in best["net"])
    assert r["stages"][0]["kind"] == "static_teacher" and r["stage1"]["n_pseudo_kept"] >= 0
    published = list(tmp_path.glob("_stages/static_teacher-*/metrics.json"))  # the stage's own row for tables
    assert len(published) == 1 and json.loads(published[0].read_text())["method"] == "appg_static_teacher"
    from busnb.experiment import load_trained

    m = load_trained(tmp_path / "st", prof, "+static")
    stage = torch.load(os.path.join(r["stages"][0]["dir"], "best.pt"), weights_only=False)["net"]
    assert all(torch.equal(m.static_teacher.state_dict()[k], stage[k]) for k in stage)


def test_settings_checked_before_data():
    with pytest.raises(SettingError, match="Did you mean 'epochs'"):
        check_overrides("smoke", {"epoch": 3})
    with pytest.raises(SettingError, match="epochs must be an integer"):
        check_overrides("smoke", {"epochs": "abc"})
    with pytest.raises(SettingError, match="must be at least 1"):
        check_overrides("cpu", {"epochs": 0})
    assert check_overrides("cpu", {"epochs": "5", "lr": "1e-4", "decoder_channels": "8,8,8,8,8"}) == \
        {"epochs": 5, "lr": 1e-4, "decoder_channels": (8, 8, 8, 8, 8)}


def test_cli_prints_one_line_errors(capsys, tmp_path):
    from busnb.cli import main

    assert main(["train", "--set", "epoch=3", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown setting 'epoch'") and "Traceback" not in err
    assert main(["train", "--method", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing was started
    with pytest.raises(SettingError):
        main(["--debug", "train", "--set", "epochs=abc"])
    with pytest.raises(SettingError):  # --debug after the sub-command works too
        main(["train", "--set", "epochs=abc", "--debug"])


def test_cli_checks_method_options_device_and_seed_before_writing(capsys, tmp_path):
    from busnb.cli import main

    out = tmp_path / "x"
    for args, msg in ((["--method-arg", "lamda=1"], "'supervised' has no option 'lamda'"),
                      (["--method", "dual_teacher", "--method-arg", "keep_top=abc"], "takes a number for keep_top"),
                      (["--method", "dual_teacher", "--method-arg", "nosuch=1"], "options: ['aurcl'"),
                      (["--method", "dual_teachr"], "did you mean 'dual_teacher'"),
                      (["--device", "gpu"], "not a device name")):
        assert main(["train", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (args, err)
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda", "--out", str(out)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--seed", "-1", "--out", str(out)])
    assert "negative" in capsys.readouterr().err
    assert not out.exists()  # nothing was written: the corrected command runs in the same folder


def test_every_variant_passes_its_own_option_check():
    from busnb.methods import VARIANTS, check_method_kwargs

    for name, (base, opts) in VARIANTS.items():
        check_method_kwargs(base, opts)
    with pytest.raises(SettingError, match="true or false"):
        check_method_kwargs("dual_teacher", {"aurcl": 1})
    with pytest.raises(SettingError, match="has no option"):
        check_method_kwargs("baseline", {"lambda_u": 1.0})  # a supervised variant takes none


def test_cli_says_which_commands_a_failed_import_removed(capsys, monkeypatch):
    """A command module that cannot be imported is named on stderr with the fix; the other commands stay."""
    import sys

    from busnb.cli import main

    monkeypatch.setitem(sys.modules, "busnb.bench", None)  # `import busnb.bench` now raises ImportError
    with pytest.raises(SystemExit) as e:
        main(["-h"])
    assert e.value.code == 0
    out, err = capsys.readouterr()
    assert "commands of busnb.bench are unavailable" in err and "make venv" in err
    assert "pretrain" in out and "predict" in out and "\n    bench" not in out


def test_rng_state_roundtrip_accepts_old_format():
    from busnb.train import rng_state, set_rng_state

    torch.manual_seed(3)
    st = rng_state()
    a = torch.rand(3)
    set_rng_state(st)
    assert torch.equal(torch.rand(3), a)
    set_rng_state(st["cpu"])  # checkpoints of earlier versions stored the bare CPU state
    assert torch.equal(torch.rand(3), a)


def test_static_teacher_keeps_only_the_most_confident_pseudo_labels(tmp_path):
    """keep_top ranks the kept pseudo-labels by their image-only confidence (no mask) and trains T^A on the top
    share; the default (1, the paper) leaves the stage's parameters - and so its cache key - unchanged."""
    from types import SimpleNamespace

    from busnb.methods import build_method
    from busnb.models import build_model
    from busnb.stages import most_confident

    conf = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.5, "e": 0.0}
    labels = SimpleNamespace(confidence=conf.__getitem__)
    samples = [SimpleNamespace(id=i) for i in "abcde"]
    assert [s.id for s in most_confident(samples, labels, 0.5)] == ["a", "c", "d"]  # ceil(2.5), input order
    assert [s.id for s in most_confident(samples, labels, 0.4)] == ["a", "c"]       # tie c/d broken by id
    assert [s.id for s in most_confident(samples, labels, 1.0)] == list("abcde")
    assert [s.id for s in most_confident(samples, labels, 0.01)] == ["a"]
    with pytest.raises(ValueError, match="keep_top"):
        most_confident(samples, labels, 0)
    make = lambda **k: build_model("resnet18", None, (16, 8, 8))  # noqa: E731
    assert "keep_top" not in build_method("dual_teacher", make).stages()[0].params
    assert build_method("dual_teacher", make, keep_top=0.5).stages()[0].params["keep_top"] == 0.5
    with pytest.raises(ValueError, match="keep_top"):
        build_method("dual_teacher", make, keep_top=1.5)
    prof = _prof()
    full = run_experiment(prof, "+static", out_dir=tmp_path / "full", progress=False)
    half = run_experiment(prof, "+static", out_dir=tmp_path / "half", progress=False,
                          method_kwargs={"keep_top": 0.5})
    n = full["stage1"]["n_pseudo_kept"]
    assert n >= 2 and half["stage1"]["n_pseudo_kept"] == -(-n // 2)
