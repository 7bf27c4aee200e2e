"""The papermill runner on the results notebook alone (the full smoke run is `make demo`)."""
import json

import pytest


def test_runner_writes_run_folder(tmp_path):
    from busnb.runner import jobs, run_profile

    names = [j[0] for j in jobs("smoke")]
    assert names[0].startswith("00_") and names == sorted(names)
    out = run_profile("smoke", notebooks=["06"], out=tmp_path / "run", progress=False)
    params = json.loads((out / "params.json").read_text())
    assert params[0]["parameters"]["profile"] == "smoke"
    assert (out / "06_results.ipynb").is_file() and (out / "results.json").is_file()


def test_jobs_skip_semi_supervised_variants_at_full_labels():
    from busnb.runner import jobs

    j = [p for stem, _, p in jobs("cpu", ["supervised", "dual_teacher"]) if stem.startswith("05_")]
    assert {(p["method"], p["ratio"]) for p in j} == {("supervised", 2.5), ("supervised", 100.0), ("dual_teacher", 2.5)}


def test_jobs_take_groups_ratios_and_seeds():
    from busnb.methods import BASELINES
    from busnb.runner import jobs

    j = [p for stem, _, p in jobs("cpu", ["baselines"], ratios=[2.5, 10], seeds=[1]) if stem.startswith("05_")]
    assert [p["method"] for p in j[:2]] == ["supervised", "supervised"]
    assert {p["method"] for p in j} == set(BASELINES) and {p["seed"] for p in j} == {1}
    assert len(j) == 2 * len(BASELINES)


def test_a_notebook_name_that_matches_nothing_is_an_error(tmp_path):
    from busnb.runner import run_profile

    with pytest.raises(ValueError, match="--notebooks 99: no notebook name starts with that"):
        run_profile("smoke", notebooks=["00", "99"], out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
