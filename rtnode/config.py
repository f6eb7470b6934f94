"""The node's configuration: pydantic models over config.yaml, with environment overrides.

Every key has a default here, so the node runs with no file at all (the embedded defaults); the
repository's config.yaml writes the same defaults out with a comment per key, and a test keeps the
two equal. Errors name the file, the line and the dotted key, because the person reading them is
an RT IT engineer with the file open, not a Python programmer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from rtnode.dvh.config import DVHConfig
from rtnode.qc.config import QCConfig
from rtnode.radiomics.config import RadiomicsConfig
from rtnode.section import Section
from rtnode.segmentation.config import SegmentationConfig
from rtnode.yamlsource import KeyPath, YamlError, YamlSource, load_yaml

ENV_PREFIX = "RTNODE_"
CONFIG_ENV = "RTNODE_CONFIG"
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire minus '\'


def _check_ae(value: str) -> str:
    if not AE_TITLE.match(value) or not value.strip():
        raise ValueError("an AE title is 1-16 printable characters, not all spaces, no backslash")
    return value.strip()


class DicomConfig(Section):
    """The DICOM listener."""

    ae_title: str = Field("RTNODE", description="our AE title; peers must call it exactly")
    bind: str = Field("0.0.0.0", description="address to listen on (127.0.0.1 for local only)")
    port: int = Field(11112, ge=1, le=65535, description="TCP port of the listener")
    max_pdu: int = Field(0, ge=0, description="largest PDU we accept, bytes; 0 = no limit")
    max_associations: int = Field(16, ge=1, description="concurrent associations accepted")
    allowed_callers: list[str] = Field(
        default_factory=list, description="calling AE titles accepted; empty = accept any")
    acse_timeout: float = Field(30.0, gt=0, description="seconds to wait for association messages")
    dimse_timeout: float = Field(120.0, gt=0, description="seconds to wait for DIMSE messages")
    network_timeout: float = Field(120.0, gt=0, description="seconds an idle association lives")

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        return _check_ae(v)

    @field_validator("allowed_callers")
    @classmethod
    def _callers(cls, v: list[str]) -> list[str]:
        return [_check_ae(x) for x in v]


class PeerConfig(Section):
    """Another DICOM node: where to reach it."""

    ae_title: str = Field(..., description="its AE title")
    host: str = Field(..., description="host name or address")
    port: int = Field(104, ge=1, le=65535, description="its DICOM port")

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        return _check_ae(v)


class RemoteConfig(PeerConfig):
    """A PACS we query and retrieve cohorts from (C-FIND / C-MOVE)."""

    max_parallel_moves: int = Field(2, ge=1, description="C-MOVEs running at once against it")
    query_model: Literal["study", "patient"] = Field(
        "study", description="C-FIND/C-MOVE information model: study root or patient root")


class SendConfig(Section):
    """Sending results (C-STORE) to destinations."""

    retries: int = Field(3, ge=0, description="retries after a failed or transient attempt")
    backoff_seconds: float = Field(5.0, ge=0, description="first wait; doubles each retry")


class StorageConfig(Section):
    """Where received instances, the index and course outputs live."""

    root: Path = Field(Path("storage"), description="relative paths resolve against config folder")
    min_free_gb: float = Field(1.0, ge=0, description="below this free space, refuse with 0xA700")
    fsync: bool = Field(True, description="fsync each file before acknowledging it")


class WorkersConfig(Section):
    """The one worker budget shared by every cpu stage."""

    reserved_cores: int = Field(0, ge=0, description="cores left for the listener and the OS")
    cpu_workers: int | None = Field(None, ge=1, description="cpu worker processes; null = cores - reserved")
    threads_per_worker: int = Field(1, ge=1, description="OMP/MKL/OpenBLAS/NumExpr/ITK threads per worker")
    nice: int = Field(10, ge=0, le=19,
                      description="worker processes run this much nicer than the listener")
    parts_per_worker: int = Field(
        2, ge=1, description="a fanned-out stage makes about this many parts per cpu worker")

    def cpu_budget(self, cores: int | None = None) -> int:
        cores = cores or usable_cores()
        return self.cpu_workers or max(1, cores - self.reserved_cores)


def usable_cores() -> int:
    """The cores this process may run on (taskset, cgroup cpusets), not all the host has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CoursesConfig(Section):
    """When received instances become a course that is ready to run."""

    quiet_seconds: float = Field(30.0, ge=0, description="no new instance for this long = quiet")
    max_wait_seconds: float = Field(
        600.0, ge=0, description="quiet this long and still incomplete: run with what is there")
    rules_dir: Path = Field(Path("rules"), description="YAML rules; relative to the config folder")
    poll_seconds: float = Field(
        5.0, gt=0, description="fallback: how often courses and queues are checked anyway")
    aging_seconds: float = Field(
        1800.0, gt=0, description="a waiting stage gains one priority band per this many seconds")


class QueueConfig(Section):
    """The Huey queues: where tasks wait, and how many workers take them."""

    backend: Literal["sqlite", "redis"] = Field("sqlite", description="sqlite = embedded")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="used when backend is redis")
    name: str = Field("rtnode", description="queue name prefix (Redis keys, SQLite file names)")
    gpu_workers: int = Field(
        0, ge=0, description="gpu-queue workers, one per GPU slot; 0 = gpu stages join cpu pool")


class StagesConfig(Section):
    """Stage timeouts and extra stage modules."""

    default_timeout: float = Field(1800.0, gt=0, description="seconds, for stages without one")
    timeouts: dict[str, float] = Field(default_factory=dict, description="stage name -> seconds")
    plugins: list[str] = Field(default_factory=list,
                               description="importable modules that register more stages")


class LoggingConfig(Section):
    """Log level and an optional log file (relative paths resolve against storage.root)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None


class Config(Section):
    """The whole file. ``source`` is where it came from; ``None`` means the embedded defaults."""

    dicom: DicomConfig = Field(default_factory=DicomConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    courses: CoursesConfig = Field(default_factory=CoursesConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    dvh: DVHConfig = Field(default_factory=DVHConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    radiomics: RadiomicsConfig = Field(default_factory=RadiomicsConfig)
    qc: QCConfig = Field(default_factory=QCConfig)
    destinations: dict[str, PeerConfig] = Field(
        default_factory=dict, description="where results are sent (C-STORE), by name")
    send: SendConfig = Field(default_factory=SendConfig)
    remotes: dict[str, RemoteConfig] = Field(
        default_factory=dict, description="PACS queried and retrieved from, by name")
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    _source: Path | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def storage_root(self) -> Path:
        root = self.storage.root.expanduser()
        return (root if root.is_absolute() else self.base_dir / root).resolve()

    def gpu_devices(self) -> list[str]:
        """One entry per gpu-queue slot: the configured GPUs, padded with 'cpu' up to
        queue.gpu_workers. Empty = no gpu queue; gpu stages then run in the cpu pool."""
        gpus = [d for d in self.segmentation.devices if d != "cpu"]
        return gpus + ["cpu"] * max(0, self.queue.gpu_workers - len(gpus))

    @property
    def rules_dir(self) -> Path:
        d = self.courses.rules_dir.expanduser()
        return (d if d.is_absolute() else self.base_dir / d).resolve()

    @property
    def log_file(self) -> Path | None:
        f = self.logging.file
        if f is None:
            return None
        return f if f.is_absolute() else self.storage_root / f


class ConfigError(ValueError):
    """One or more problems, each already phrased as 'where: key: what is wrong'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _set_path(data: dict, key: KeyPath, value: Any) -> None:
    node = data
    for part in key[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[key[-1]] = value


def env_overrides(environ: dict[str, str] | None = None) -> dict[KeyPath, tuple[str, Any]]:
    """RTNODE_<SECTION>__<KEY>=value → {(section, key): (variable name, parsed value)}.

    Values are read as YAML scalars/flow values, so ``RTNODE_DICOM__ALLOWED_CALLERS='[TPS, PACS]'``
    and ``RTNODE_STORAGE__FSYNC=false`` mean what they look like.
    """
    environ = os.environ if environ is None else environ
    out: dict[KeyPath, tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        key = tuple(p.lower() for p in name[len(ENV_PREFIX):].split("__"))
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out[key] = (name, value)
    return out


def find_config(explicit: Path | None = None) -> Path | None:
    """--config, else $RTNODE_CONFIG, else ./config.yaml, else None (embedded defaults)."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path("config.yaml")
    return local if local.is_file() else None


def load_config(path: Path | None = None, environ: dict[str, str] | None = None,
                search: bool = True) -> Config:
    """Load, overlay the environment, validate. Raises ConfigError naming file, line and key."""
    path = find_config(path) if search else path
    if path is not None:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise ConfigError([f"{path}: config file not found"])
        try:
            source = load_yaml(path)
        except YamlError as exc:
            raise ConfigError([str(exc)]) from None
        if not isinstance(source.data, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    else:
        source = YamlSource(data={})
    data = dict(source.data)
    overrides = env_overrides(environ)
    for key, (_, value) in overrides.items():
        _set_path(data, key, value)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            env = next((name for key, (name, _) in overrides.items() if loc[: len(key)] == key), None)
            where = f"environment {env}" if env else source.where(loc)
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {_dotted(loc)}: {msg}")
        raise ConfigError(problems) from None
    config._source = path
    return config
