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
