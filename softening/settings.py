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
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from softening import defaults
from softening.errors import InputError, SofteningError

DEFAULT_CONFIG_FILE = Path("~/.softening.yaml").expanduser()


class SettingsError(SofteningError, ValueError):
    """A settings file that cannot be parsed, or a setting with a value outside its allowed range.

    Its message names the file and line, or the variable and the allowed values, and never the
    value itself: a settings file or a ``SOFTENING_*`` variable may hold a password.
    """


def _config_path() -> Path:
    return Path(os.environ.get("SOFTENING_CONFIG", DEFAULT_CONFIG_FILE)).expanduser()


class _YamlSource(PydanticBaseSettingsSource):
    """Reads settings from the YAML file named by ``SOFTENING_CONFIG`` (or the default file)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - required by the ABC
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_path()
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            # yaml's own message quotes the offending line, which may hold a password: only the
            # position and the kind of problem are reported.
            raise SettingsError(_yaml_error(path, exc)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"cannot read settings file {redact(str(path))}: {type(exc).__name__}"
            ) from None
        if not isinstance(data, dict):
            raise SettingsError(
                f"settings file {redact(str(path))} must hold a mapping, not {type(data).__name__}"
            )
        # Accept both `store: x` and `SOFTENING_STORE: x` spellings.
        settings = {}
        for key, value in data.items():
            name = str(key).lower().removeprefix("softening_")
            _check_known(name, key, path)
            settings[name] = value
        return settings


def _check_known(name: str, key: Any, path: Path) -> None:
    """Refuse a settings-file key that is no setting (a typo would otherwise be ignored).

    Raises
    ------
    SettingsError
        Naming the key and the file, and the nearest setting when one is close.
    """
    import difflib

    known = list(SofteningSettings.model_fields)
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "settings: " + ", ".join(known)
    raise SettingsError(f"unknown setting {redact(str(key))!r} in {redact(str(path))}; {hint}")


class SofteningSettings(BaseSettings):
    """Settings of the ``softening`` package.

    Every field can be set as ``SOFTENING_<FIELD>`` in the environment or as ``<field>:`` in the YAML
    settings file.
    """

    model_config = SettingsConfigDict(env_prefix="SOFTENING_", extra="ignore")

    store: str = Field(
        "./softening-db",
        description="Result store: a folder (embedded SQLite store), a mongodb:// or "
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
        None,
        description="MongoDB password (never printed; set SOFTENING_MONGO_PASSWORD); also applied "
        "to a URI store whose URI names a user without password.",
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
    trust_model_files: bool = Field(
        False,
        description="Load whole pickled model files (e.g. MACE .model) whose SHA-256 is neither a "
        "known published model's nor one softening wrote; loading such a file runs code from it.",
    )
    max_model_gb: float = Field(
        4.0,
        gt=0,
        description="Largest unpacked size of a model file, GB (the largest published uMLIP "
        "checkpoints of the supported families are well under 1 GB): a file over it, e.g. a zip "
        "bomb, is refused before it is read.",
    )
    max_supercell_atoms: int = Field(
        2000,
        ge=1,
        description="Largest phonon supercell, atoms: a bigger one (e.g. --supercell '20 20 20' "
        "of a small cell) is refused before phonopy's symmetry search, which takes minutes there.",
    )
    md_model: str = Field(defaults.MD_MODEL, description="uMLIP that drives the MD sampling.")
    models: list[str] = Field(
        default_factory=lambda: ["chgnet"], description="uMLIPs evaluated against the reference."
    )
    reference: str = Field(
        defaults.REFERENCE, description="Reference calculator: gpaw, emt, or vasp."
    )
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
# user:password@ outside a `scheme://` URI (`mongodb:/alice:pw@host`, `alice:pw@host`): one token
# whose part before its last "@" holds a ":".
_CREDENTIALS = re.compile(r"[^\s'\"<>@]*:[^\s'\"<>]*@[^\s'\"<>@]*")
_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:/*")
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

    return _CREDENTIALS.sub(_hide_password, _URI.sub(_one, str(text)))


def _hide_password(m: re.Match) -> str:
    """``[scheme:[/...]]user:password@host`` without ``://`` (a malformed URI) -> ``user:***@``."""
    token = m.group(0)
    userinfo, host = token.rsplit("@", 1)
    scheme = _SCHEME_PREFIX.match(userinfo)
    prefix = ""
    # `mongodb:/alice:pw@` and `mongodb:alice:pw@`: the scheme is no part of the userinfo; in
    # `alice:pw@` the first word is the user, not a scheme.
    if scheme and (":" in userinfo[scheme.end() :] or scheme.group(0).endswith("/")):
        prefix, userinfo = userinfo[: scheme.end()], userinfo[scheme.end() :]
    if ":" not in userinfo:
        return token
    return f"{prefix}{userinfo.split(':', 1)[0]}:***@{host}"


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column: problem`` of a YAML parse error, without yaml's quote of the line."""
    # `context` and `problem` are yaml's fixed descriptions ("while scanning a quoted scalar",
    # "found unexpected end of stream"), never the file's content; str(exc) would quote the line.
    parts = []
    for text, mark in (
        (getattr(exc, "context", None), getattr(exc, "context_mark", None)),
        (getattr(exc, "problem", None), getattr(exc, "problem_mark", None)),
    ):
        if text:
            parts.append(text + (f" at line {mark.line + 1}" if mark is not None else ""))
    problem = ", ".join(parts) or type(exc).__name__
    return f"settings file {redact(str(path))} is not valid YAML: {problem} (values not shown)"


def _allowed(name: str) -> str:
    """The allowed values of the setting ``name``, in words (from its type and constraints)."""
    import typing

    info = SofteningSettings.model_fields.get(name)
    if info is None:
        return "see `softening --help`"
    annotation = info.annotation
    if typing.get_origin(annotation) is list:
        return "a list"
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    literal = next((a for a in [annotation, *args] if typing.get_origin(a) is Literal), None)
    if literal is not None:
        return "one of " + ", ".join(map(str, typing.get_args(literal)))
    bounds = []
    for meta in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    base = args[0] if args else annotation
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(
        base, getattr(base, "__name__", str(base))
    )
    return kind + (" " + " and ".join(bounds) if bounds else "")


def _settings_error(exc: ValidationError) -> SettingsError:
    """One line naming each invalid setting, where it came from and what is allowed (no values)."""
    config = _config_path()
    problems = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err.get("loc") else "?"
        env = f"SOFTENING_{name.upper()}"
        source = env if env in os.environ else f"`{name}` in {redact(str(config))}"
        problems.append(f"{source} must be {_allowed(name)}")
    return SettingsError("invalid setting: " + "; ".join(problems))


def load_settings(**overrides: Any) -> SofteningSettings:
    """Settings from the environment and the settings file, with user-facing errors.

    Parameters
    ----------
    **overrides
        Field values that take precedence over everything else.

    Returns
    -------
    SofteningSettings
        The validated settings.

    Raises
    ------
    SettingsError
        A settings file that is not valid YAML (file and line named), or a value outside a
        setting's allowed values (the variable and the allowed values named, never the value).
    """
    from pydantic_settings import SettingsError as SourceError

    try:
        return SofteningSettings(**overrides)
    except ValidationError as exc:
        raise _settings_error(exc) from None
    except SourceError as exc:
        # pydantic-settings could not decode a variable (e.g. a list that is not JSON); its
        # message names the field, not the value.
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1) if field else "?"
        raise SettingsError(
            f"invalid setting: SOFTENING_{name.upper()} must be {_allowed(name)}"
            + (' given as JSON (e.g. ["chgnet", "m3gnet"])' if name == "models" else "")
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> SofteningSettings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env).

    Raises
    ------
    SettingsError
        See :func:`load_settings`.
    """
    return load_settings()


# ---- store specs: what a store setting names (the store factory builds it) ----------------------

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
URI_SCHEMES = ("mongodb://", "mongodb+srv://")

StoreKind = Literal["embedded", "mongodb", "config"]


def resolve_store_spec(store: str | Path | None = None) -> str:
    """The store spec to use: the argument, else the ``store`` setting."""
    return str(store) if store is not None else get_settings().store


def store_kind(spec: str | Path) -> StoreKind:
    """Which kind of store a spec names: ``embedded`` (folder), ``mongodb`` or ``config`` (file).

    Raises
    ------
    InputError
        For a spec that looks like a URI but is not a ``mongodb://`` / ``mongodb+srv://`` one
        (``mongodb:/host``, ``ftp://...``, ``user:password@host``): it is never taken as a folder
        name, so that no folder named after it (password included) is created; and for a folder
        that is, after following links, the file system's root or a system folder
        (:func:`check_store_folder`). Messages show passwords as ``***``.
    """
    text = str(spec).strip()
    if text == "mongodb" or text.startswith(URI_SCHEMES):
        return "mongodb"
    _refuse_uri_like(text)
    if Path(text).suffix.lower() in CONFIG_SUFFIXES:
        return "config"
    check_store_folder(text)
    return "embedded"


# `word:` at the start (a one-letter word is a Windows drive), or `user:password@` anywhere.
_URI_LIKE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+):")
_USERINFO = re.compile(r"[^/\\\s@:]+:[^\s@]*@")
# `mongodb//me@host/db`, `mongodb/me@host`: a MongoDB URI with its colon missing.
_MONGO_TYPO = re.compile(r"(?i)^mongodb(\+srv)?[:/].*@")


def _refuse_uri_like(text: str) -> None:
    """Raise :class:`InputError` when ``text`` looks like a URI (of any scheme but mongodb's)."""
    uri = _URI_LIKE.match(text)
    mongo_typo = _MONGO_TYPO.match(text)
    if not uri and not mongo_typo and not _USERINFO.search(text):
        return
    shown = redact(text)
    scheme = uri.group("scheme").lower() if uri else ""
    if scheme in ("mongodb", "mongodb+srv") or mongo_typo:
        raise InputError(
            f"store {shown!r} is not a valid MongoDB URI: write "
            "mongodb://[user@]host[:port]/database or mongodb+srv://[user@]host/database (keep "
            "the password in SOFTENING_MONGO_PASSWORD)"
        )
    if "://" in text:
        raise InputError(
            f"store {shown!r}: unknown scheme {scheme or text.split('://', 1)[0]!r}; give a "
            "folder, a mongodb:// or mongodb+srv:// URI, or a .yaml store config"
        )
    credentials = bool(_USERINFO.search(text))
    what = "a URI (user:password@host)" if credentials else f"a URI (scheme {scheme!r})"
    hint = "" if credentials else f" (./{shown} for a folder of that name)"
    raise InputError(
        f"store {shown!r} looks like {what}, not a folder: give a folder{hint}, a mongodb:// or "
        "mongodb+srv:// URI, or a .yaml store config"
    )


#: Folders that are never a store, with everything inside them (after following links).
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr", "/var", "/System", "/private/etc", "/private/var",
)  # fmt: skip
#: Scratch space inside :data:`SYSTEM_TREES` where a store is fine (and the temporary folder).
SCRATCH_TREES = ("/dev/shm", "/var/tmp", "/var/folders", "/private/var/tmp", "/private/var/folders")
#: Folders that are never a store themselves (their subfolders are fine), besides the home folder.
SYSTEM_FOLDERS = ("/home", "/root", "/Users")


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None


def check_store_folder(folder: str | Path) -> Path:
    """The resolved store folder, or :class:`InputError` when it is a system folder.

    A store folder gets ``softening.sqlite`` (and its journal files, ``models/``, lock files):
    after following links it must not be the file system's root, a folder of
    :data:`SYSTEM_TREES` or anything inside one (except :data:`SCRATCH_TREES` and the temporary
    folder), nor one of :data:`SYSTEM_FOLDERS` or the user's home folder itself.

    Parameters
    ----------
    folder
        The store folder as given (``~`` is expanded, links followed; it need not exist).

    Returns
    -------
    Path
        The folder, absolute, links resolved.
    """
    import tempfile

    path = Path(folder).expanduser().resolve()

    def inside(tree: str | Path) -> bool:
        return path == Path(tree) or Path(tree) in path.parents

    problem = None
    if path == Path(path.anchor):
        problem = f"the root folder {path}"
    elif os.name == "posix":
        tree = next((t for t in SYSTEM_TREES if inside(t)), None)
        scratch = [*SCRATCH_TREES, Path(tempfile.gettempdir()).resolve()]
        # Scratch space counts only strictly inside the system folder (a TMPDIR=/var allows nothing).
        if tree is not None and not any(
            inside(t) and Path(tree) in Path(t).parents for t in scratch
        ):
            problem = (
                f"the system folder {tree}"
                if path == Path(tree)
                else f"in the system folder {tree}"
            )
        elif str(path) in SYSTEM_FOLDERS or path == _home():
            problem = f"the folder {path} itself"
    if problem is None:
        return path
    raise InputError(
        f"store {redact(str(folder))!r} is {problem} (links followed), where the store's files "
        "would go among the system's: give a folder of its own (e.g. ./softening-db)"
    )
