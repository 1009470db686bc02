"""Fixtures of the robustness suite: the bad files, built once per session, and their fingerprint."""

from __future__ import annotations

import pytest

from tests.robust import bad_files


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory):
    """The folder holding every case of `bad_files.CASES` (never written to by the tests)."""
    folder = tmp_path_factory.mktemp("bad files")
    bad_files.build(folder)
    return folder


@pytest.fixture(scope="session")
def bad_paths(bad_folder):
    return {case.key: bad_folder / case.name for case in bad_files.CASES}


@pytest.fixture
def untouched(bad_folder):
    """Asserts, after the test, that no bad file changed and nothing was added next to them."""
    before = bad_files.fingerprint(bad_folder)
    yield
    assert bad_files.fingerprint(bad_folder) == before, (
        "an input file was changed, or a file was left beside it"
    )
