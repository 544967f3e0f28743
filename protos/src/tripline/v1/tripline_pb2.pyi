from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostInfo(_message.Message):
    __slots__ = ("hostname", "os", "os_release", "architecture", "machine_id", "cpu_count", "memory_total_bytes", "boot_time_seconds", "python_version", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    OS_RELEASE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    BOOT_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    os: str
    os_release: str
    architecture: str
    machine_id: str
    cpu_count: int
    memory_total_bytes: int
    boot_time_seconds: float
    python_version: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, hostname: _Optional[str] = ..., os: _Optional[str] = ..., os_release: _Optional[str] = ..., architecture: _Optional[str] = ..., machine_id: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., boot_time_seconds: _Optional[float] = ..., python_version: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("enrollment_token", "host", "site")
    ENROLLMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    enrollment_token: str
    host: HostInfo
    site: str
    def __init__(self, enrollment_token: _Optional[str] = ..., host: _Optional[_Union[HostInfo, _Mapping]] = ..., site: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("agent_id", "credential", "customer")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    credential: str
    customer: str
    def __init__(self, agent_id: _Optional[str] = ..., credential: _Optional[str] = ..., customer: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "report", "snapshot")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    report: Report
    snapshot: Snapshot
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., report: _Optional[_Union[Report, _Mapping]] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class CollectorMessage(_message.Message):
    __slots__ = ("welcome", "ack", "settings", "snapshot_request")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: Ack
    settings: Settings
    snapshot_request: SnapshotRequest
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., settings: _Optional[_Union[Settings, _Mapping]] = ..., snapshot_request: _Optional[_Union[SnapshotRequest, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_version", "instance_id", "host", "sent_at_seconds")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    instance_id: str
    host: HostInfo
    sent_at_seconds: float
    def __init__(self, agent_version: _Optional[str] = ..., instance_id: _Optional[str] = ..., host: _Optional[_Union[HostInfo, _Mapping]] = ..., sent_at_seconds: _Optional[float] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("agent_id", "customer", "site", "settings", "applied_seq", "series_table_max")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SERIES_TABLE_MAX_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    customer: str
    site: str
    settings: Settings
    applied_seq: int
    series_table_max: int
    def __init__(self, agent_id: _Optional[str] = ..., customer: _Optional[str] = ..., site: _Optional[str] = ..., settings: _Optional[_Union[Settings, _Mapping]] = ..., applied_seq: _Optional[int] = ..., series_table_max: _Optional[int] = ...) -> None: ...

class Settings(_message.Message):
    __slots__ = ("interval_seconds", "inventory_interval_seconds", "collect_processes")
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COLLECT_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: float
    inventory_interval_seconds: float
    collect_processes: bool
    def __init__(self, interval_seconds: _Optional[float] = ..., inventory_interval_seconds: _Optional[float] = ..., collect_processes: _Optional[bool] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("name", "labels", "value")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    value: float
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., value: _Optional[float] = ...) -> None: ...

class SeriesDef(_message.Message):
    __slots__ = ("id", "name", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ProcessInfo(_message.Message):
    __slots__ = ("pid", "name", "username", "cpu_ratio", "memory_rss_bytes", "cmdline")
    PID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    CPU_RATIO_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CMDLINE_FIELD_NUMBER: _ClassVar[int]
    pid: int
    name: str
    username: str
    cpu_ratio: float
    memory_rss_bytes: int
    cmdline: str
    def __init__(self, pid: _Optional[int] = ..., name: _Optional[str] = ..., username: _Optional[str] = ..., cpu_ratio: _Optional[float] = ..., memory_rss_bytes: _Optional[int] = ..., cmdline: _Optional[str] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("top_cpu", "top_memory", "logged_in_users")
    TOP_CPU_FIELD_NUMBER: _ClassVar[int]
    TOP_MEMORY_FIELD_NUMBER: _ClassVar[int]
    LOGGED_IN_USERS_FIELD_NUMBER: _ClassVar[int]
    top_cpu: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    top_memory: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    logged_in_users: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, top_cpu: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ..., top_memory: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ..., logged_in_users: _Optional[_Iterable[str]] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("instance_id", "seq", "collected_at_seconds", "samples", "context", "spool_dropped_reports_total", "host", "series_defs", "series_ids", "series_values")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COLLECTED_AT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DROPPED_REPORTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SERIES_DEFS_FIELD_NUMBER: _ClassVar[int]
    SERIES_IDS_FIELD_NUMBER: _ClassVar[int]
    SERIES_VALUES_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    seq: int
    collected_at_seconds: float
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    context: Context
    spool_dropped_reports_total: int
    host: HostInfo
    series_defs: _containers.RepeatedCompositeFieldContainer[SeriesDef]
    series_ids: _containers.RepeatedScalarFieldContainer[int]
    series_values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, instance_id: _Optional[str] = ..., seq: _Optional[int] = ..., collected_at_seconds: _Optional[float] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., spool_dropped_reports_total: _Optional[int] = ..., host: _Optional[_Union[HostInfo, _Mapping]] = ..., series_defs: _Optional[_Iterable[_Union[SeriesDef, _Mapping]]] = ..., series_ids: _Optional[_Iterable[int]] = ..., series_values: _Optional[_Iterable[float]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class FilesystemInfo(_message.Message):
    __slots__ = ("mountpoint", "fstype", "device", "size_bytes", "avail_bytes", "used_ratio")
    MOUNTPOINT_FIELD_NUMBER: _ClassVar[int]
    FSTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAIL_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_RATIO_FIELD_NUMBER: _ClassVar[int]
    mountpoint: str
    fstype: str
    device: str
    size_bytes: int
    avail_bytes: int
    used_ratio: float
    def __init__(self, mountpoint: _Optional[str] = ..., fstype: _Optional[str] = ..., device: _Optional[str] = ..., size_bytes: _Optional[int] = ..., avail_bytes: _Optional[int] = ..., used_ratio: _Optional[float] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("request_id", "taken_at_seconds", "cpu_span_seconds", "top_cpu", "top_memory", "filesystems", "logged_in_users", "uptime_seconds", "cpu_usage_ratio", "memory_used_ratio", "processes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_SPAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOP_CPU_FIELD_NUMBER: _ClassVar[int]
    TOP_MEMORY_FIELD_NUMBER: _ClassVar[int]
    FILESYSTEMS_FIELD_NUMBER: _ClassVar[int]
    LOGGED_IN_USERS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_RATIO_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_RATIO_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    taken_at_seconds: float
    cpu_span_seconds: float
    top_cpu: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    top_memory: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    filesystems: _containers.RepeatedCompositeFieldContainer[FilesystemInfo]
    logged_in_users: _containers.RepeatedScalarFieldContainer[str]
    uptime_seconds: float
    cpu_usage_ratio: float
    memory_used_ratio: float
    processes: int
    def __init__(self, request_id: _Optional[str] = ..., taken_at_seconds: _Optional[float] = ..., cpu_span_seconds: _Optional[float] = ..., top_cpu: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ..., top_memory: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ..., filesystems: _Optional[_Iterable[_Union[FilesystemInfo, _Mapping]]] = ..., logged_in_users: _Optional[_Iterable[str]] = ..., uptime_seconds: _Optional[float] = ..., cpu_usage_ratio: _Optional[float] = ..., memory_used_ratio: _Optional[float] = ..., processes: _Optional[int] = ...) -> None: ...
