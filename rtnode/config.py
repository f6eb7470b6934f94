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
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

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


class TLSConfig(Section):
    """DICOM TLS (PS3.15 Annex B): one certificate for the listener and every outgoing
    association, the CA that signs the peers'."""

    enabled: bool = Field(False, description="TLS on the listener and on outgoing associations")
    certificate: Path | None = Field(None, description="our certificate (PEM)")
    private_key: Path | None = Field(None, description="its private key (PEM, unencrypted)")
    ca_certificates: Path | None = Field(
        None, description="CA certificate(s) (PEM) that peers' certificates must chain to")
    require_client_certificate: bool = Field(
        False, description="refuse callers that present no certificate signed by the CA")


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
    request_timeout: float = Field(
        10.0, gt=0, description="seconds a new connection has to complete its A-ASSOCIATE-RQ")
    read_timeout: float = Field(
        30.0, gt=0, description="seconds a PDU being received may stall between bytes")
    max_pending: int = Field(
        32, ge=1, description="connections without a complete A-ASSOCIATE-RQ, in all")
    max_pending_per_address: int = Field(
        8, ge=1, description="connections without a complete A-ASSOCIATE-RQ, per peer address")
    max_instance_mb: float = Field(
        512.0, gt=0, description="largest instance accepted (as received and decompressed), MB")
    caller_hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="calling AE title -> the only hosts/addresses it may call from")
    tls: TLSConfig = Field(default_factory=TLSConfig,
                             description="DICOM TLS on the listener and outgoing associations")

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        return _check_ae(v)

    @field_validator("allowed_callers")
    @classmethod
    def _callers(cls, v: list[str]) -> list[str]:
        return [_check_ae(x) for x in v]

    @field_validator("caller_hosts")
    @classmethod
    def _caller_hosts(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return {_check_ae(ae): hosts for ae, hosts in v.items()}

    @property
    def max_instance_bytes(self) -> int:
        return int(self.max_instance_mb * 1024 * 1024)


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
    reserve_mb: float = Field(
        32.0, ge=0, description="space held back so the node can start and log on a full disk")


class WorkersConfig(Section):
    """The one worker budget shared by every cpu stage."""

    reserved_cores: int = Field(0, ge=0, description="cores left for the listener and the OS")
    cpu_workers: int | None = Field(None, ge=1, description="cpu worker processes; null = cores - reserved")
    threads_per_worker: int = Field(1, ge=1, description="OMP/MKL/OpenBLAS/NumExpr/ITK threads per worker")
    nice: int = Field(10, ge=0, le=19,
                      description="worker processes run this much nicer than the listener")
    parts_per_worker: int = Field(
        2, ge=1, description="a fanned-out stage makes about this many parts per cpu worker")
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="how often each worker refreshes its row in the worker registry")
    heartbeat_timeout: float = Field(
        30.0, gt=0, description="a worker silent this long is dead: its runs go back to pending")

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
    claim_timeout: float = Field(
        60.0, gt=0, description="a queued run not claimed this long (message lost) is resent")


class IndexConfig(Section):
    """Where the index lives: the embedded SQLite file, or a PostgreSQL server."""

    url: str = Field("", description="'' = storage/index.sqlite; postgresql://user@host/db")


class StagesConfig(Section):
    """Stage timeouts and extra stage modules."""

    default_timeout: float = Field(1800.0, gt=0, description="seconds, for stages without one")
    timeouts: dict[str, float] = Field(default_factory=dict, description="stage name -> seconds")
    plugins: list[str] = Field(default_factory=list,
                               description="importable modules that register more stages")


class HttpConfig(Section):
    """The web dashboard, REST API (/api/v1), /metrics and /healthz served by ``rtnode serve``.

    Reading needs no login unless a token or a user is configured; then every page and API call
    that shows patient data needs one, and changing state (requeue, cancel, send, pause) always
    does: with neither configured, the actions are switched off."""

    enabled: bool = Field(True, description="serve HTTP beside the DICOM listener")
    bind: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 = every interface)")
    port: int = Field(8043, ge=1, le=65535, description="TCP port of the dashboard and API")
    token: str | None = Field(None, description="shared secret: 'Authorization: Bearer <token>' "
                              "or the login form")
    username: str | None = Field(None, description="HTTP basic auth / login form user")
    password: str | None = Field(None, description="password of http.username")
    tls_cert: Path | None = Field(None, description="PEM certificate; with tls_key: HTTPS only")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")

    @model_validator(mode="after")
    def _pairs(self) -> "HttpConfig":
        if (self.username is None) != (self.password is None):
            raise ValueError("http.username and http.password go together")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("http.tls_cert and http.tls_key go together")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("http.token must be at least 8 characters")
        return self

    @property
    def auth_configured(self) -> bool:
        return self.token is not None or self.username is not None


class RetentionConfig(Section):
    """What the node deletes by itself (rtnode/store/retention.py); every rule is off (null)
    unless set. Courses not yet processed are never deleted."""

    received_after_days: float | None = Field(
        None, ge=0, description="received instances of done clinical courses go this many days "
                                "after their last stage finished; outputs stay")
    cohort_after_days: float | None = Field(
        None, ge=0, description="finished cohort courses go entirely (instances and outputs)")
    free_below_gb: float | None = Field(
        None, ge=0, description="disk pressure: below this free space, oldest eligible first")
    max_stored_gb: float | None = Field(
        None, gt=0, description="disk pressure: above this much DICOM held, oldest first")
    interval_seconds: float = Field(3600.0, gt=0, description="how often the policy runs")


class ExportConfig(Section):
    """``rtnode export``: pseudonymised cohort tables (rtnode/pseudonymise.py)."""

    pseudonymise: bool = Field(False, description="pseudonymise every export by default")
    pseudonym_key: str | None = Field(
        None, min_length=16, description="secret HMAC key; same key = same pseudonyms")
    mapping_file: Path | None = Field(
        None, description="pseudonym -> original CSV (0600); relative to storage.root; "
                          "null = pseudonyms/mapping.csv there")


class LoggingConfig(Section):
    """Log level and an optional log file (relative paths resolve against storage.root)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None
    format: Literal["text", "json"] = Field(
        "text", description="text lines, or one JSON object per line")
    rotate: Literal["size", "external", "none"] = Field(
        "size", description="size: rtnode rotates the file; external: logrotate moves it and "
                            "rtnode reopens it; none: grows for ever")
    max_mb: float = Field(50.0, gt=0, description="with rotate: size, rotate at this size")
    backups: int = Field(5, ge=0, description="with rotate: size, rotated files kept")
    quiet: list[str] = Field(default_factory=lambda: ["huey", "pykwalify"],
                             description="loggers shown from WARNING up unless level is DEBUG")


class Config(Section):
    """The whole file. ``source`` is where it came from; ``None`` means the embedded defaults."""

    dicom: DicomConfig = Field(default_factory=DicomConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
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
    http: HttpConfig = Field(default_factory=HttpConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

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

    def http_path(self, path: Path | None) -> Path | None:
        """An http.tls_* file; relative paths resolve against the config folder."""
        if path is None:
            return None
        path = path.expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def pseudonym_mapping(self) -> Path:
        f = self.export.mapping_file or Path("pseudonyms") / "mapping.csv"
        f = f.expanduser()
        return f if f.is_absolute() else self.storage_root / f

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


def did_you_mean(word: str, known: list[str]) -> str:
    """' (did you mean 'port'?)' for a misspelt key, or ''."""
    import difflib

    close = difflib.get_close_matches(word.lower(), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_keys(model: type, loc: tuple) -> list[str]:
    """The keys a section model accepts at loc (dict-of-model levels such as destinations.NAME
    are stepped over)."""
    import typing

    from pydantic import BaseModel

    def inner(annotation):
        for arg in typing.get_args(annotation) or ():
            found = inner(arg)
            if found is not None:
                return found
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        return None

    current: type | None = model
    dict_level = False
    for part in loc:
        if current is None:
            return []
        if dict_level:
            dict_level = False
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        dict_level = typing.get_origin(ann) is dict
        current = inner(ann)
    return sorted(current.model_fields) if current is not None and not dict_level else []


#: where a service install keeps its configuration (packaging/systemd, README)
SYSTEM_CONFIG = Path("/etc/rtnode/config.yaml")


def find_config(explicit: Path | None = None) -> Path | None:
    """--config, else $RTNODE_CONFIG, else ./config.yaml, else /etc/rtnode/config.yaml, else
    None (embedded defaults)."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path("config.yaml")
    if local.is_file():
        return local
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


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
            # the variable that set this key, or a whole section/key it lies in or holds
            env = next((name for key, (name, _) in overrides.items()
                        if loc[: len(key)] == key or key[: len(loc)] == loc), None)
            where = f"environment {env}" if env else source.where(loc)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + did_you_mean(str(loc[-1]), known_keys(Config, loc[:-1]))
            problems.append(f"{where}: {_dotted(loc)}: {msg}")
        raise ConfigError(problems) from None
    config._source = path
    return config
