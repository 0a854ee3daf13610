"""One JOBS table: every job type, the sweep runner's script table, compare's analysis jobs and the
docs derive from it."""

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from bindexp.jobs.registry import ANALYSIS_JOB_TYPES, JOB_TYPES, JOBS
from bindexp.results.tables import summary_scalars
from bindexp.sweeps.spec import SCRIPT_JOBS, settings_class

ROOT = Path(__file__).resolve().parents[2]


def test_every_job_loads_its_settings_and_runner():
    for name, job in JOBS.items():
        assert issubclass(job.settings_class(), BaseSettings), name
        assert callable(job.runner()), name
        assert job.script is None or (ROOT / job.script).is_file(), job.script


def test_the_sweep_runner_knows_every_script():
    scripts = {job.script for job in JOBS.values() if job.script}
    assert set(SCRIPT_JOBS) == scripts >= {"scripts/checkpoints.py", "scripts/find_robust.py"}
    assert settings_class({"program": "scripts/checkpoints.py"}) is JOBS["over_training"].settings_class()


def test_job_types_and_analyses_come_from_the_table():
    assert JOB_TYPES == tuple(JOBS)
    assert {"attention", "lens", "subspace", "locate"} <= set(ANALYSIS_JOB_TYPES)
    assert all(JOBS[name].kind == "analysis" for name in ANALYSIS_JOB_TYPES)
    assert summary_scalars([]).empty


def test_the_readme_documents_every_job_with_a_script():
    readme, architecture = (ROOT / "README.md").read_text(), (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for name, job in JOBS.items():
        if job.script is not None:
            assert re.search(rf"job_type[^)\n]*\b{name}\b", readme), f"README names no job_type {name}"
            assert job.script in readme, f"README never shows {job.script}"
    assert "jobs/registry.py" in architecture
