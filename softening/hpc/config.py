"""Loading ``launchpad.yaml`` and ``qadapter_slurm.yaml``: environment variables in, no secret in a file.

FireWorks reads its YAML files verbatim (and on its own only finds ``my_launchpad.yaml``), so the
package loads them itself: every string value goes through :func:`expand_env`, which understands
``${VAR}`` and ``${VAR:-default}`` (one level of nesting in the default), then the LaunchPad or queue
adapter is built from the expanded mapping.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from softening.errors import InputError, SofteningError, one_line
from softening.settings import get_settings, redact

__all__ = [
    "CATEGORIES",
    "DFT_CATEGORY",
    "UMLIP_CATEGORY",
    "QueueGroup",
    "expand_env",
    "load_launchpad",
    "load_qadapters",
    "resolve_launchpad_path",
    "resolve_qadapter_path",
]

#: FireWorks category (``spec._category``) of the uMLIP jobs: MD, frame selection, uMLIP statics,
#: comparison. Typically GPU nodes.
UMLIP_CATEGORY = "umlip"
#: FireWorks category of the reference (DFT) jobs. Typically many-core CPU nodes.
DFT_CATEGORY = "dft"
CATEGORIES = (UMLIP_CATEGORY, DFT_CATEGORY)

DEFAULT_LAUNCHPAD = "launchpad.yaml"
DEFAULT_QADAPTER = "qadapter_slurm.yaml"

# ${NAME} or ${NAME:-default}; the default may itself hold ${OTHER} (one level).
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>(?:[^{}]|\$\{\w+\})*))?\}")


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """``value`` with ``${VAR}`` / ``${VAR:-default}`` replaced from the environment, recursively.

    Unlike :func:`os.path.expandvars`, an unset variable without a default becomes the empty
    string (a literal ``${SOFTENING_MONGO_HOST}`` must never reach a server), and values taken from
    the environment are not expanded again (a password may contain ``$``).

    Parameters
    ----------
    value
        A string, or a list / mapping holding strings (other types pass through).
    env
        The variables (default: ``os.environ``).

    Returns
    -------
    Any
        The same structure with its strings expanded.
    """
    env = os.environ if env is None else env
    if isinstance(value, str):

        def one(m: re.Match) -> str:
            name, default = m.group("name"), m.group("default")
            if env.get(name):
                return env[name]
            return expand_env(default, env) if default else ""

        return _VAR.sub(one, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(
            f"the {what} {path} is not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"the {what} {path} must hold a mapping")
    return data


def resolve_launchpad_path(path: str | Path | None = None) -> Path:
    """The LaunchPad file: the argument, else the ``launchpad`` setting, else ``./launchpad.yaml``.

    Raises
    ------
    InputError
        When the file does not exist.
    """
    chosen = path or get_settings().launchpad or DEFAULT_LAUNCHPAD
    p = Path(chosen).expanduser().resolve()
    if not p.is_file():
        raise InputError(
            f"no LaunchPad file {p}: give --launchpad PATH or set SOFTENING_LAUNCHPAD "
            "(launchpad.yaml in the repository is a template)"
        )
    return p


def resolve_qadapter_path(path: str | Path | None = None, required: bool = True) -> Path | None:
    """The queue adapter file: the argument, the ``qadapter`` setting, or ``./qadapter_slurm.yaml``.

    Returns ``None`` when no file is found and ``required`` is false.
    """
    chosen = path or get_settings().qadapter or DEFAULT_QADAPTER
    p = Path(chosen).expanduser().resolve()
    if p.is_file():
        return p
    if required or path is not None:
        raise InputError(
            f"no queue adapter file {p}: give --qadapter PATH or set SOFTENING_QADAPTER "
            "(qadapter_slurm.yaml in the repository is a template)"
        )
    return None


def launchpad_dict(path: str | Path) -> dict[str, Any]:
    """The LaunchPad settings of ``path``, environment variables expanded, empty values dropped."""
    data = expand_env(_read_yaml(Path(path), "LaunchPad file"))
    # Empty strings mean "not set" (an unset variable): FireWorks then uses its defaults.
    data = {k: v for k, v in data.items() if v not in ("", None)}
    if "port" in data:
        try:
            data["port"] = int(data["port"])
        except (TypeError, ValueError):
            raise InputError(f"LaunchPad file {path}: port {data['port']!r} is no number") from None
    if "host" not in data:
        raise InputError(f"LaunchPad file {path} names no host (set SOFTENING_MONGO_HOST)")
    # FireWorks logs every action to stdout at INFO; commands print tables and JSON there.
    data.setdefault("strm_lvl", "ERROR")
    return data


def load_launchpad(path: str | Path | None = None, *, check: bool = True):
    """A connected FireWorks ``LaunchPad`` from a YAML file with ``${VAR}`` placeholders.

    Parameters
    ----------
    path
        The file (default: :func:`resolve_launchpad_path`).
    check
        Ping the server now, so that a wrong host or password is one clear error.

    Returns
    -------
    fireworks.LaunchPad
        With mongomock (``MONGOMOCK_SERVERSTORE_FILE`` set, no MongoDB server), a LaunchPad that
        also writes its file whenever a job is checked out, so that a run killed by the queue leaves
        its RUNNING state behind as it would in MongoDB.

    Raises
    ------
    SofteningError
        When the server cannot be reached or refuses the credentials (message without secrets).
    """
    p = resolve_launchpad_path(path)
    data = launchpad_dict(p)
    from fireworks import fw_config

    mock_file = fw_config.MONGOMOCK_SERVERSTORE_FILE
    if mock_file and not Path(mock_file).exists():
        Path(mock_file).write_text("{}")
    cls = _mongomock_launchpad_class() if mock_file else _launchpad_class()
    keys = (
        "host",
        "port",
        "name",
        "username",
        "password",
        "logdir",
        "strm_lvl",
        "user_indices",
        "wf_user_indices",
        "authsource",
        "uri_mode",
        "mongoclient_kwargs",
    )
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise InputError(f"LaunchPad file {p}: unknown keys {', '.join(unknown)}")
    kwargs = {k: data[k] for k in keys if k in data}
    if not mock_file:
        client = dict(kwargs.get("mongoclient_kwargs") or {})
        client.setdefault("serverSelectionTimeoutMS", int(1000 * get_settings().mongo_timeout))
        kwargs["mongoclient_kwargs"] = client
    try:
        lp = cls(**kwargs)
        if check and not mock_file:
            lp.connection.admin.command("ping")
    except Exception as exc:
        where = f"{data['host']}:{data.get('port', 27017)}/{data.get('name', 'fireworks')}"
        message = one_line(exc, "first")
        message = message.split(", Timeout:")[0].split(" (configured timeouts")[0]
        secret = data.get("password")
        if secret:
            message = message.replace(str(secret), "***")
        raise SofteningError(
            f"cannot use the LaunchPad {redact(where)}: {redact(message)}"
        ) from None
    lp.softening_path = str(p)
    return lp


def _launchpad_class():
    from fireworks import LaunchPad

    return LaunchPad


def _mongomock_launchpad_class():
    from fireworks import LaunchPad

    class _PersistingLaunchPad(LaunchPad):
        """mongomock writes its file only when the client goes away; write it at checkout too."""

        def checkout_fw(self, *args, **kwargs):
            result = super().checkout_fw(*args, **kwargs)
            store = getattr(self.connection, "_store", None)
            if result[0] is not None and hasattr(store, "_to_file"):
                store._to_file()
            return result

    return _PersistingLaunchPad


# ---- queue adapters -----------------------------------------------------------------------------


@dataclass
class QueueGroup:
    """One queue adapter and the FireWorks categories its queue jobs run.

    Attributes
    ----------
    name
        ``umlip``, ``dft``, or ``all`` when the file has no per-category section.
    categories
        The categories a worker of this group pulls.
    params
        The queue adapter parameters (``queue`` = partition, ``walltime``, ``account``, ...), with
        ``rocket_launch`` filled in.
    """

    name: str
    categories: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def reserve(self) -> bool:
        """Reservation mode (one queue job per job, tied to its SLURM id) for ``singleshot``."""
        return "singleshot" in self.params.get("rocket_launch", "")

    def adapter(self):
        """The FireWorks ``CommonAdapter`` of this group."""
        from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

        params = dict(self.params)
        q_type = params.pop("q_type", "SLURM")
        template = params.pop("template_file", None)
        return CommonAdapter(q_type, template_file=template, **params)


def default_rocket_launch() -> str:
    """The worker command a queue job runs, with placeholders :func:`load_qadapters` fills."""
    return (
        "{python} -m softening.hpc.rlaunch -l {launchpad} -c {categories} "
        "--qadapter {qadapter} --launch-dir {launch_dir} singleshot"
    )


def load_qadapters(
    path: str | Path | None,
    launchpad: str | Path | None,
    launch_dir: str | Path,
    base_only: bool = False,
) -> list[QueueGroup]:
    """The queue groups of a queue adapter file (``qadapter_slurm.yaml``).

    The file is a FireWorks ``CommonAdapter`` mapping (``_fw_q_type: SLURM``, ``queue`` = partition,
    ``walltime``, ``account``, ``job_name``, ``pre_rocket``, ``rocket_launch``...) plus an optional
    ``categories:`` section whose entries (``umlip:``, ``dft:``) override those values for the jobs
    of that category, e.g. a GPU partition for the uMLIP jobs. Without that section one group
    (``all``) runs both categories.

    In ``rocket_launch`` the placeholders ``{python}``, ``{launchpad}``, ``{qadapter}``,
    ``{launch_dir}`` and ``{categories}`` are filled with absolute paths and this group's
    categories; ``${VAR}`` / ``${VAR:-default}`` come from the environment. ``base_only`` ignores
    the ``categories`` section (one group for everything, e.g. the ``--single-job`` script).

    Raises
    ------
    InputError
        On an unreadable file, an unknown category, or an unsupported queue type.
    """
    p = resolve_qadapter_path(path)
    raw = _read_yaml(p, "queue adapter file")
    data = expand_env(raw)
    sections = data.pop("categories", None) or {}
    if not isinstance(sections, dict):
        raise InputError(f"queue adapter file {p}: `categories` must be a mapping")
    unknown = sorted(set(sections) - set(CATEGORIES))
    if unknown:
        raise InputError(
            f"queue adapter file {p}: unknown categories {', '.join(unknown)} "
            f"(known: {', '.join(CATEGORIES)})"
        )
    base = _adapter_params(data, p)
    if sections and not base_only:
        # A category without a section of its own still needs a queue: the base values.
        groups = [
            QueueGroup(cat, [cat], {**base, **_adapter_params(sections.get(cat) or {}, p)})
            for cat in CATEGORIES
        ]
    else:
        groups = [QueueGroup("all", list(CATEGORIES), base)]
    fill = {
        "python": sys.executable,
        "qadapter": str(p),
        "launch_dir": str(Path(launch_dir).resolve()),
    }
    if launchpad is not None:
        fill["launchpad"] = str(Path(launchpad).resolve())
    for g in groups:
        g.params.setdefault("rocket_launch", default_rocket_launch())
        g.params["rocket_launch"] = _fill(
            g.params["rocket_launch"], {**fill, "categories": ",".join(g.categories)}
        )
        g.params.setdefault("job_name", "softening")
    return groups


def _adapter_params(data: dict[str, Any], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if v in ("", None):
            continue  # an unset variable: leave the line out of the script
        if k in ("_fw_name",):
            continue
        if k in ("_fw_q_type", "q_type"):
            if v not in ("SLURM",):
                raise InputError(f"queue adapter file {path}: only SLURM queues are supported")
            out["q_type"] = v
        elif k in ("_fw_template_file", "template_file"):
            out["template_file"] = str(Path(str(v)).expanduser())
        elif k == "partition":
            out["queue"] = v  # FireWorks calls the partition `queue`
        else:
            out[k] = v
    return out


def _fill(text: str, values: dict[str, str]) -> str:
    import shlex

    for k, v in values.items():
        text = text.replace("{" + k + "}", shlex.quote(v))
    return text


def worker_name() -> str:
    """The FireWorker name of this process: host plus SLURM job id when in a queue job."""
    job = os.environ.get("SLURM_JOB_ID")
    host = socket.gethostname()
    return f"softening@{host}" + (f"#slurm-{job}" if job else "")
