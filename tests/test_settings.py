"""Settings: defaults, SOFTENING_ environment variables, YAML file, precedence."""

from __future__ import annotations

from softening.settings import SofteningSettings, get_settings


def test_defaults():
    s = SofteningSettings()
    assert s.torch_threads == 1 and s.models == ["chgnet"] and s.reference == "gpaw"


def test_env_overrides_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("store: /from/yaml\nSOFTENING_TORCH_THREADS: 3\nseed: 7\n")
    monkeypatch.setenv("SOFTENING_CONFIG", str(cfg))
    monkeypatch.setenv("SOFTENING_SEED", "11")
    monkeypatch.delenv("SOFTENING_STORE")
    get_settings.cache_clear()
    s = get_settings()
    assert s.store == "/from/yaml" and s.torch_threads == 3 and s.seed == 11


def test_broken_settings_file_names_file_and_line_never_the_value(tmp_path, monkeypatch):
    import pytest

    from softening.settings import SettingsError

    cfg = tmp_path / "s.yaml"
    cfg.write_text('store: ./db\nmongo_password: "s3cr3t-pw\nmongo_host: h\n')
    monkeypatch.setenv("SOFTENING_CONFIG", str(cfg))
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as info:
        get_settings()
    msg = str(info.value)
    assert str(cfg) in msg and "line 2" in msg and "s3cr3t" not in msg and "\n" not in msg


def test_invalid_settings_name_the_variable_and_allowed_values(monkeypatch):
    import pytest

    from softening.errors import SofteningError

    for var, value, allowed in [
        ("SOFTENING_DEVICE", "nonsense", "auto, cpu, cuda"),
        ("SOFTENING_MONGO_PORT", "notanint", "an integer >= 1 and <= 65535"),
        ("SOFTENING_MODELS", "notjson", "a list"),
    ]:
        monkeypatch.setenv(var, value)
        get_settings.cache_clear()
        with pytest.raises(SofteningError) as info:
            get_settings()
        msg = str(info.value)
        assert var in msg and allowed in msg and value not in msg, msg
        monkeypatch.delenv(var)
    get_settings.cache_clear()


def test_cli_settings_errors_are_one_line_without_the_secret(tmp_path):
    import os
    import subprocess
    import sys

    cfg = tmp_path / "s.yaml"
    cfg.write_text('mongo_password: "s3cr3t-pw\n')
    (tmp_path / "db").mkdir()
    for extra in ({"SOFTENING_CONFIG": str(cfg)}, {"SOFTENING_MONGO_PORT": "notanint"}):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTENING_")}
        res = subprocess.run(
            [sys.executable, "-m", "softening.cli", "query"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**env, "SOFTENING_STORE": str(tmp_path / "db"), **extra},
            timeout=300,
        )
        err = res.stderr.strip()
        assert res.returncode == 1 and err.startswith("error:") and "\n" not in err, err
        assert "Traceback" not in err and "s3cr3t" not in err and "notanint" not in err
