"""Provenance: metrics.json names the code a run started with, even if the checkout moves during the run."""
import subprocess

import pytest

from busnb import provenance as P


@pytest.fixture
def fake_git(monkeypatch):
    """``git rev-parse HEAD`` answers whatever ``state["head"]`` holds at the time of the call."""
    state = {"head": "a" * 40, "calls": 0}

    def run(args, **kw):
        state["calls"] += 1
        out = state["head"] + "\n" if args[1] == "rev-parse" else ""
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(P.subprocess, "run", run)
    P.git_state.cache_clear()
    yield state
    P.git_state.cache_clear()


def test_git_state_is_fixed_at_the_first_call(fake_git):
    assert P.snapshot() == P.source_hash()
    fake_git["head"] = "b" * 40  # the checkout is switched to another commit mid-run
    assert P.git_state() == {"commit": "a" * 40, "dirty": False}
    assert P.provenance()["commit"] == "a" * 40
    assert fake_git["calls"] == 2  # rev-parse and status, once


def test_run_identity_takes_the_snapshot(fake_git):
    from busnb.config import get_profile
    from busnb.experiment import run_identity

    parts = {"fingerprint": {"content": "c", "ids": "i"}, "dataset": "phantom", "split_name": "phantom",
             "ratio": 2.5, "seed": 0}
    ident = run_identity(get_profile("smoke"), "supervised", parts, None)
    fake_git["head"] = "b" * 40
    assert ident["busnb_source"] == P.source_hash() and P.provenance()["commit"] == "a" * 40
