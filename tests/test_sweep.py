"""busnb sweep on CPU with smoke jobs, the runner's parameter check, and busnb bench at smoke size."""
import json

import pytest


def test_jobs_order_skip_full_ratio_and_stage_first(tmp_path):
    from busnb.sweep import make_jobs

    jobs = make_jobs("smoke", ["supervised", "+static", "dual_teacher"], [2.5, 100], [0, 1], tmp_path)
    names = [j.name for j in jobs]
    assert not any(n.startswith(("plus_static", "dual_teacher")) and "r100" in n for n in names)
    assert sum("supervised" in n for n in names) == 4 and len(names) == 8
    # one stage-holding job per (ratio, seed) first, then jobs without a stage, then the ones that reuse it
    assert names[:2] == ["plus_static-phantom-r2.5-s0", "plus_static-phantom-r2.5-s1"]
    assert all(n.startswith("supervised") for n in names[2:6])
    assert all(n.startswith("dual_teacher") for n in names[6:])


def test_sweep_runs_jobs_skips_finished_and_reports_failures(tmp_path):
    from busnb.results import collect
    from busnb.sweep import sweep

    sets = ["epochs=1", "steps_per_epoch=1", "image_size=32", "decoder_channels=16,8,8"]
    s = sweep("smoke", ["supervised"], [2.5], [0, 1], tmp_path / "sw", workers=2, sets=sets, progress=False)
    assert s["failed"] == [] and s["skipped"] == 0 and len(s["ran"]) == 2
    df = collect(tmp_path / "sw")
    assert sorted(df["seed"]) == [0, 1] and set(df["method"]) == {"supervised"}
    again = sweep("smoke", ["supervised"], [2.5], [0, 1], tmp_path / "sw", workers=2, sets=sets, progress=False)
    assert again["skipped"] == 2 and again["ran"] == []
    # a job whose folder holds another run fails with the reason in its log (no silent reuse)
    bad = sweep("smoke", ["supervised"], [2.5], [0], tmp_path / "sw", workers=1, sets=sets + ["lr=0.5"],
                progress=False)
    assert bad["skipped"] == 1  # finished folders are skipped by name; identity is checked by `busnb train`
    (tmp_path / "sw" / "supervised-phantom-r2.5-s0" / "metrics.json").unlink()
    bad = sweep("smoke", ["supervised"], [2.5], [0], tmp_path / "sw", workers=1, sets=sets + ["lr=0.5"],
                progress=False)
    assert bad["failed"] == ["supervised-phantom-r2.5-s0"]
    log = (tmp_path / "sw" / "logs" / "supervised-phantom-r2.5-s0.log").read_text()
    assert "holds a different run" in log and "profile.lr" in log
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["failed"] == bad["failed"]


def test_sweep_ray_executor_writes_the_same_runs(tmp_path, monkeypatch):
    """A local Ray (started for the sweep, shut down after) runs the jobs in the driver's directory: relative
    run folders and logs land where the local executor puts them (failures are reported by the same code)."""
    pytest.importorskip("ray")
    import ray

    from busnb.results import collect
    from busnb.sweep import sweep

    monkeypatch.chdir(tmp_path)
    sets = ["epochs=1", "steps_per_epoch=1", "image_size=32", "decoder_channels=16,8,8"]
    s = sweep("smoke", ["supervised"], [2.5], [0, 1], "sw", workers=2, sets=sets, executor="ray", progress=False)
    logs = {f.name: f.read_text()[-2000:] for f in (tmp_path / "sw" / "logs").glob("*.log")}
    assert s["failed"] == [] and len(s["ran"]) == 2 and s["executor"] == "ray", logs
    assert not ray.is_initialized()  # the sweep's own Ray is gone
    assert sorted(collect(tmp_path / "sw")["seed"]) == [0, 1]
    assert all((tmp_path / "sw" / "logs" / f"supervised-phantom-r2.5-s{k}.log").is_file() for k in (0, 1))


def test_runner_rejects_unknown_notebook_parameter(tmp_path):
    from busnb.runner import run_profile

    with pytest.raises(ValueError, match="did you mean 'method'"):
        run_profile("smoke", notebooks=["05"], extra={"metod": "cps"}, out=tmp_path / "r", progress=False)


def test_bench_smoke_writes_table(tmp_path):
    from busnb.bench import bench
    from busnb.config import get_profile

    prof = get_profile("smoke", image_size=32, decoder_channels=(16, 8, 8))
    rows = bench(prof, ["supervised", "dual_teacher"], steps=1, warmup=0, device="cpu", out=tmp_path / "b.json",
                 progress=False)
    data = json.loads((tmp_path / "b.json").read_text())
    assert [r["method"] for r in data["rows"]][1:] == ["supervised", "dual_teacher"]
    assert all(r["trainer_ms"] > 0 and r["plain_ms"] > 0 for r in rows[1:]) and data["device"].startswith("cpu")


# The GPU machine's image has torch, transformers, timm, scikit-image, scipy and pandas, but none of these
# (README, *Speed*: `make device-sweep` carries only segmentation-models-pytorch as a wheel).
NOT_ON_THE_GPU_IMAGE = ("lightly", "monai", "ray", "segment_anything", "papermill", "nbformat", "nbclient")
NOTEBOOK_TOOLS = ("busnb.nbstrip",)  # strips notebooks for commits: nbformat is its whole job, never run there


def test_every_module_imports_without_the_packages_the_gpu_image_lacks():
    """Each of these is used lazily, inside the function that needs it; a top-level import of one would break
    `make device-sweep` on the lent GPU machine, where no package can be installed from the network."""
    import subprocess
    import sys

    script = f"""
import importlib, pkgutil, sys
BLOCK = {set(NOT_ON_THE_GPU_IMAGE)!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ImportError("not on the GPU image: " + name)
sys.meta_path.insert(0, Block())
import busnb
names = [m.name for m in pkgutil.walk_packages(busnb.__path__, "busnb.") if not m.name.endswith("__main__") and m.name not in {NOTEBOOK_TOOLS!r}]
for name in names:
    importlib.import_module(name)
assert not BLOCK & {{m.split(".")[0] for m in sys.modules}}, "imported a blocked package"
print(len(names))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) > 40  # every module was walked, not an empty package
