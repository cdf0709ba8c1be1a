"""A missing dev dataset skips the tests that need it, naming where it was looked for; under
``CI=true`` it fails them instead. Checked by running pytest on a probe test in a subprocess with
``CAMLABEL_SHARED_DATASETS`` pointed at a folder that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prerequisites import ROOT, shared_datasets

PROBE = '''
def test_reads_the_dev_photos(shared_dataset):
    assert (shared_dataset / "raccoon" / "images").is_dir()
'''


def _run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on the probe with the suite's fixtures (``-p tests.conftest``) and no dev datasets."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(CAMLABEL_SHARED_DATASETS=str(tmp_path / "absent"), PYTHONPATH=str(ROOT))
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rsE", "-q",
                           "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_probe.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # starts pytest in a process
def test_a_missing_dataset_skips_with_the_path_it_looked_at(tmp_path: Path) -> None:
    done = _run_probe(tmp_path, ci=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert f"the raccoon-kangaroo dev dataset is not at {tmp_path / 'absent' / 'raccoon-kangaroo'}" in done.stdout


@pytest.mark.slow  # starts pytest in a process
def test_under_ci_a_missing_dataset_fails_instead(tmp_path: Path) -> None:
    done = _run_probe(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "SKIPPED" not in done.stdout
    assert "CI=true: tests that need it must not be skipped" in done.stdout


def test_the_datasets_are_looked_for_beside_the_checkout_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMLABEL_SHARED_DATASETS", raising=False)
    assert shared_datasets() == ROOT.parent / "shared" / "datasets"
