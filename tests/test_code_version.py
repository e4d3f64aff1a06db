"""A result records the code that made it: the git commit and a dirty flag, or the package version alone."""

from __future__ import annotations

import re
import subprocess

import asg
from asg.results import CODE_PATHS, code_version

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


def test_rewritten_results_files_do_not_make_the_code_dirty(tmp_path, monkeypatch):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "asg").mkdir()
    (tmp_path / "experiments" / "results").mkdir(parents=True)
    (tmp_path / "asg" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "results" / "study.md").write_text("old report\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(asg, "__file__", str(tmp_path / "asg" / "__init__.py"))
    (tmp_path / "experiments" / "results" / "study.md").write_text("a study's report, rewritten as it runs\n")
    assert code_version()["git_dirty"] is False
    (tmp_path / "asg" / "__init__.py").write_text("x = 1\n")
    assert code_version()["git_dirty"] is True
