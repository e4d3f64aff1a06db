"""A result records the code that made it: the git commit and a dirty flag, or the package version alone."""

from __future__ import annotations

import re
import subprocess

import asg
from asg.results import CODE_PATHS, code_version, fit_version

ROOT = asg.__file__.rsplit("/asg/", 1)[0]


def test_a_checkout_records_its_commit_and_dirty_flag():
    version = code_version()
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", version["git_commit"]) and version["git_commit"] == head
    status = subprocess.run(
        ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
        capture_output=True,
        text=True,
    ).stdout
    assert version["git_dirty"] is bool(status.strip()) and version["package"] == asg.__version__


def test_an_installed_copy_without_git_records_the_package_version(tmp_path, monkeypatch):
    (tmp_path / "asg").mkdir()
    monkeypatch.setattr(asg, "__file__", str(tmp_path / "asg" / "__init__.py"))
    assert code_version() == {"package": asg.__version__, "git_commit": None, "git_dirty": None}


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _commit(repo, files: dict[str, str]) -> str:
    """Write files into a scratch repository, commit them, and return the commit."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "change")
    return _git(repo, "rev-parse", "HEAD").strip()


def test_rewritten_results_files_do_not_make_the_code_dirty(tmp_path, monkeypatch):
    _commit(tmp_path, {"asg/__init__.py": "", "experiments/results/study.md": "old report\n"})
    monkeypatch.setattr(asg, "__file__", str(tmp_path / "asg" / "__init__.py"))
    (tmp_path / "experiments" / "results" / "study.md").write_text("a study's report, rewritten as it runs\n")
    assert code_version()["git_dirty"] is False
    (tmp_path / "asg" / "__init__.py").write_text("x = 1\n")
    assert code_version()["git_dirty"] is True


def test_a_runs_fit_version_is_read_from_its_commit_when_metrics_json_predates_it(tmp_path, monkeypatch):
    older = _commit(tmp_path, {"asg/__init__.py": "", "asg/quantize.py": "x = 0\nFIT_VERSION = 2\n"})
    newer = _commit(tmp_path, {"asg/quantize.py": "FIT_VERSION = 3  # a comment\n"})
    monkeypatch.setattr(asg, "__file__", str(tmp_path / "asg" / "__init__.py"))
    assert fit_version({"code": {"git_commit": older, "git_dirty": False}}) == 2
    assert fit_version({"code": {"git_commit": newer, "git_dirty": False}}) == 3
    assert fit_version({"fit_version": 4, "code": {"git_commit": older, "git_dirty": False}}) == 4  # recorded wins
    assert fit_version({"code": {"git_commit": older, "git_dirty": True}}) is None  # the tree was not that commit
    assert fit_version({"code": {"git_commit": "0" * 40, "git_dirty": False}}) is None  # not in this history
    assert fit_version({"code": {"git_commit": None, "git_dirty": None, "package": "0.1.0"}}) is None
    assert fit_version({}) is None
