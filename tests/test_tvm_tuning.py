"""The MetaSchedule database's cache key and resume bookkeeping (no tuning runs here: even 8
trials take ~75 s; tests/test_tvm_relax.py has that test behind AUDITOR_TVM_TUNE_TEST=1)."""

import pytest

pytest.importorskip("tvm")

from ground.targets import TARGETS  # noqa: E402
from compilers.tvm_relax import TvmRelax  # noqa: E402
from compilers.tvm_tuning import RECORDS, cost_model_name, records_in, tuning_dir, tvm_version  # noqa: E402


def test_database_lives_under_the_cache_root_keyed_by_model_target_budget_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE", str(tmp_path))
    options = TvmRelax.resolve_options({"tune_trials": 64})
    path = tuning_dir("abc123", TARGETS["host"], options)
    assert path == tmp_path / "tvm-tuning" / f"abc123-host-64-fuse1-O3-tvm{tvm_version()}"
    assert tuning_dir("abc123", TARGETS["host"], {**options, "tune_trials": 8}) != path


def test_a_record_cut_short_by_a_kill_is_dropped_before_resuming(tmp_path):
    assert records_in(tmp_path) == 0
    (tmp_path / RECORDS).write_text('[0, [[1.0]]]\n[1, [[2.0]]]\n[2, [[3.')
    assert records_in(tmp_path) == 2
    assert (tmp_path / RECORDS).read_text() == '[0, [[1.0]]]\n[1, [[2.0]]]\n'


def test_the_cost_model_is_named():
    name, detail = cost_model_name()
    assert name in ("xgb", "random") and detail
