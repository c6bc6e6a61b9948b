"""Configuration: YAML with ${VAR:-default}, environment overrides, errors naming the field."""

from pathlib import Path

import pytest

from api.settings import ConfigError, load_settings, substitute_env


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_shipped_config_is_the_embedded_mode(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TOLLGATE_MASTER_KEY", "DATABASE_URL", "TOLLGATE_LOG_LEVEL"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings(repo_root / "config.yml")
    assert settings.dependencies.database.url.startswith("sqlite+aiosqlite:///./data/")
    assert settings.dependencies.redis is None
    assert settings.dependencies.qdrant.path == "./data/qdrant"
    assert settings.uses_default_master_key
    assert settings.settings.log_format == "text"  # a person reads `make run`; a container logs JSON


def test_substitution_uses_environment_then_default() -> None:
    data = {"a": "${X:-fallback}", "b": ["${Y}", 3], "c": "pre-${X:-d}-post"}
    assert substitute_env(data, {"Y": "why"}) == {"a": "fallback", "b": ["why", 3], "c": "pre-d-post"}
    assert substitute_env(data, {"X": "ex", "Y": "y"})["c"] == "pre-ex-post"
    with pytest.raises(ConfigError, match="Y is not set"):
        substitute_env(data, {})


def test_comments_are_not_substituted(tmp_path: Path) -> None:
    path = write(tmp_path, "# mention ${UNSET_VARIABLE} in a comment\nsettings:\n  log_level: DEBUG\n")
    assert load_settings(path).settings.log_level == "DEBUG"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "settings:\n  auth_master_key: from-file\n  login:\n    max_failures: 7\n")
    monkeypatch.setenv("TOLLGATE_SETTINGS__LOGIN__MAX_FAILURES", "3")
    monkeypatch.setenv("TOLLGATE_DEPENDENCIES__REDIS__URL", "redis://cache:6379/1")
    settings = load_settings(path)
    assert settings.settings.login.max_failures == 3
    assert settings.settings.login.window_seconds == 60
    assert settings.settings.auth_master_key == "from-file"
    assert settings.dependencies.redis is not None and settings.dependencies.redis.url == "redis://cache:6379/1"


def test_environment_can_set_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_DEPENDENCIES__QDRANT__PATH", "null")
    monkeypatch.setenv("TOLLGATE_DEPENDENCIES__QDRANT__URL", "http://qdrant:6333")
    qdrant = load_settings(write(tmp_path, "settings: {}\n")).dependencies.qdrant
    assert qdrant.path is None and qdrant.url == "http://qdrant:6333"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("settings:\n  login:\n    max_failures: lots\n", "settings.login.max_failures"),
        ("settings:\n  log_levle: INFO\n", "settings.log_levle"),
        ("dependencies:\n  database:\n    url: mysql://db/x\n", "dependencies.database"),
        ("dependencies:\n  qdrant:\n    path: null\n", "dependencies.qdrant"),
        ("settings:\n  auth_cache_ttl_seconds: 30\n", "settings.auth_cache_ttl_seconds"),
        ("surprise: 1\n", "surprise"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text))
    assert field in str(error.value) and str(tmp_path) in str(error.value)


def test_unreadable_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "settings: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yml")
