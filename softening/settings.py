"""Package settings: environment variables with the ``SOFTENING_`` prefix, or a YAML file.

Precedence (highest first): keyword arguments, ``SOFTENING_*`` environment variables, the YAML file
named by ``SOFTENING_CONFIG`` (default ``~/.softening.yaml`` when it exists), the defaults below.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_FILE = Path("~/.softening.yaml").expanduser()


class _YamlSource(PydanticBaseSettingsSource):
    """Reads settings from the YAML file named by ``SOFTENING_CONFIG`` (or the default file)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - required by the ABC
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("SOFTENING_CONFIG", DEFAULT_CONFIG_FILE)).expanduser()
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"settings file {path} must hold a mapping, not {type(data).__name__}")
        # Accept both `store: x` and `SOFTENING_STORE: x` spellings.
        return {k.lower().removeprefix("softening_"): v for k, v in data.items()}


class SofteningSettings(BaseSettings):
    """Settings of the ``softening`` package.

    Every field can be set as ``SOFTENING_<FIELD>`` in the environment or as ``<field>:`` in the YAML
    settings file.
    """

    model_config = SettingsConfigDict(env_prefix="SOFTENING_", extra="ignore")

    store: str = Field(
        "./softening-db",
        description="Result store: a folder (embedded MontyDB, sqlite), a mongodb:// or "
        "mongodb+srv:// URI, a .yaml/.json jobflow JobStore config, or 'mongodb' (the mongo_* "
        "settings below).",
    )
    mongo_host: str = Field(
        "localhost", description="MongoDB host name, used when `store` is 'mongodb'."
    )
    mongo_port: int = Field(27017, ge=1, le=65535, description="MongoDB TCP port.")
    mongo_database: str = Field(
        "softening",
        description="MongoDB database; also used for a URI store whose URI names no database.",
    )
    mongo_username: str | None = Field(
        None,
        description="MongoDB user; also applied to a URI store whose URI holds no credentials.",
    )
    mongo_password: SecretStr | None = Field(
        None, description="MongoDB password (never printed; set SOFTENING_MONGO_PASSWORD)."
    )
    mongo_auth_source: str | None = Field(
        None, description="Database the MongoDB user is defined in (default: mongo_database)."
    )
    mongo_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a MongoDB server before giving up, s."
    )
    models_dir: Path | None = Field(
        None,
        description="Folder searched for local model weights by name (e.g. ../shared/models).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device for uMLIPs; auto = cuda when available."
    )
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="Floating-point precision of uMLIP evaluation."
    )
    torch_threads: int = Field(
        1,
        ge=1,
        description="Torch intra-op threads; 1 was 5-10x faster than 2 on small shared CPUs.",
    )
    batch_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory budget of one uMLIP evaluation batch, GB; default 4 on a CPU and 70 %"
        " of the free memory on a GPU (recalibrated there from each batch's measured peak).",
    )
    graph_workers: int | None = Field(
        None,
        ge=0,
        description="Processes that build uMLIP graphs while the model evaluates; default: the "
        "cores left beside torch's threads, at most 8; 0 builds them in the main process.",
    )
    md_model: str = Field("chgnet", description="uMLIP that drives the MD sampling.")
    models: list[str] = Field(
        default_factory=lambda: ["chgnet"], description="uMLIPs evaluated against the reference."
    )
    reference: str = Field("gpaw", description="Reference calculator: gpaw, emt, or vasp.")
    seed: int = Field(0, description="Seed of MD velocities, frame selection and bootstraps.")
    n_bootstrap: int = Field(1000, ge=10, description="Bootstrap resamples of the scale CI.")
    launchpad: str | None = Field(
        None,
        description="FireWorks LaunchPad YAML (${VAR} placeholders expanded) for submit/status/"
        "rerun; default ./launchpad.yaml.",
    )
    qadapter: str | None = Field(
        None, description="FireWorks SLURM queue adapter YAML; default ./qadapter_slurm.yaml."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls,
        init_settings,
        env_settings,
        dotenv_settings,
        file_secret_settings,
    ):
        return (init_settings, env_settings, _YamlSource(settings_cls))

    def __repr_args__(self):
        # A URI in `store` may carry a password: repr() and str() show it redacted.
        for name, value in super().__repr_args__():
            yield name, redact(value) if name == "store" and isinstance(value, str) else value


# scheme://user:password@host... -> the userinfo, up to the last "@" before the host (an unescaped
# "@" in a password then still ends up hidden).
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"<>]+)")
# Query options that carry secrets (e.g. ?password=..., authMechanismProperties=AWS_SESSION_TOKEN:..).
_SECRET_OPTION = re.compile(
    r"(?i)([?&;](?:password|pwd|secret|token|authmechanismproperties|tlscertificatekeyfilepassword)=)"
    r"[^&;\s]*"
)


def redact(text: str) -> str:
    """``text`` with the passwords of every URI in it replaced by ``***``.

    ``mongodb://user:pw@host/db?authSource=admin`` becomes ``mongodb://user:***@host/db?authSource=admin``;
    secret query options (``password=``, ``authMechanismProperties=``...) are hidden too. Use it on
    every message that may hold a store spec.

    Parameters
    ----------
    text
        A URI, or any message that may contain URIs.

    Returns
    -------
    str
        The same text with credentials hidden.
    """

    def _one(m: re.Match) -> str:
        rest = m.group("rest")
        if "@" in rest:
            userinfo, host = rest.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            rest = f"{user}:***@{host}" if ":" in userinfo else f"{userinfo}@{host}"
        return m.group("scheme") + _SECRET_OPTION.sub(r"\1***", rest)

    return _URI.sub(_one, str(text))


@lru_cache(maxsize=1)
def get_settings() -> SofteningSettings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env)."""
    return SofteningSettings()
