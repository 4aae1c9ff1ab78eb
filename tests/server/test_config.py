"""Settings: FLREPO_* variables, defaults, and the aerOS DB_ADDRESS/DB_PORT fallback."""

from __future__ import annotations

import pytest

from flrepo.server.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("FLREPO_MONGODB_URL", "DB_ADDRESS", "DB_PORT", "FLREPO_PORT", "FLREPO_LIST_CAP"):
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    s = Settings()
    assert s.mongodb_url == "mongodb://localhost:27017"
    assert (s.db_name, s.gridfs_db_name) == ("repository", "repository_grid")
    assert (s.host, s.port, s.list_cap) == ("0.0.0.0", 9012, 1000)


def test_env_prefix(monkeypatch):
    monkeypatch.setenv("FLREPO_PORT", "9100")
    monkeypatch.setenv("FLREPO_LIST_CAP", "50")
    s = Settings()
    assert s.port == 9100 and s.list_cap == 50


def test_aeros_db_address_fallback(monkeypatch):
    monkeypatch.setenv("DB_ADDRESS", "repositorydb")
    monkeypatch.setenv("DB_PORT", "27018")
    assert Settings().mongodb_url == "mongodb://repositorydb:27018"
    monkeypatch.setenv("FLREPO_MONGODB_URL", "mongodb://explicit:1")
    assert Settings().mongodb_url == "mongodb://explicit:1"


def test_invalid_value_is_refused(monkeypatch):
    monkeypatch.setenv("FLREPO_PORT", "not-a-port")
    with pytest.raises(ValueError):
        Settings()
