import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protocol.gen.h2k.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MigrationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MIGRATION_STATE_UNSPECIFIED: _ClassVar[MigrationState]
    MIGRATION_STATE_QUEUED: _ClassVar[MigrationState]
    MIGRATION_STATE_RUNNING: _ClassVar[MigrationState]
    MIGRATION_STATE_COMPLETED: _ClassVar[MigrationState]
    MIGRATION_STATE_FAILED: _ClassVar[MigrationState]
    MIGRATION_STATE_CANCELLED: _ClassVar[MigrationState]
MIGRATION_STATE_UNSPECIFIED: MigrationState
MIGRATION_STATE_QUEUED: MigrationState
MIGRATION_STATE_RUNNING: MigrationState
MIGRATION_STATE_COMPLETED: MigrationState
MIGRATION_STATE_FAILED: MigrationState
MIGRATION_STATE_CANCELLED: MigrationState

class VmDisk(_message.Message):
    __slots__ = ("id", "path", "source_format", "capacity_bytes", "role", "label", "checksum", "offset", "size", "controller", "file_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    source_format: str
    capacity_bytes: int
    role: str
    label: str
    checksum: str
    offset: int
    size: int
    controller: str
    file_bytes: int
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ..., source_format: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., role: _Optional[str] = ..., label: _Optional[str] = ..., checksum: _Optional[str] = ..., offset: _Optional[int] = ..., size: _Optional[int] = ..., controller: _Optional[str] = ..., file_bytes: _Optional[int] = ...) -> None: ...

class VmNic(_message.Message):
    __slots__ = ("id", "mac", "network", "model")
    ID_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    mac: str
    network: str
    model: str
    def __init__(self, id: _Optional[str] = ..., mac: _Optional[str] = ..., network: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class VmDefinition(_message.Message):
    __slots__ = ("name", "disks", "cpus", "memory_mib", "firmware", "secure_boot", "nics", "provider", "datacenter", "vm_id", "os_hint", "ignored", "notes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_FIELD_NUMBER: _ClassVar[int]
    SECURE_BOOT_FIELD_NUMBER: _ClassVar[int]
    NICS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    OS_HINT_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    disks: _containers.RepeatedCompositeFieldContainer[VmDisk]
    cpus: int
    memory_mib: int
    firmware: str
    secure_boot: bool
    nics: _containers.RepeatedCompositeFieldContainer[VmNic]
    provider: str
    datacenter: str
    vm_id: str
    os_hint: str
    ignored: _containers.RepeatedScalarFieldContainer[str]
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., disks: _Optional[_Iterable[_Union[VmDisk, _Mapping]]] = ..., cpus: _Optional[int] = ..., memory_mib: _Optional[int] = ..., firmware: _Optional[str] = ..., secure_boot: _Optional[bool] = ..., nics: _Optional[_Iterable[_Union[VmNic, _Mapping]]] = ..., provider: _Optional[str] = ..., datacenter: _Optional[str] = ..., vm_id: _Optional[str] = ..., os_hint: _Optional[str] = ..., ignored: _Optional[_Iterable[str]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class NetworkTarget(_message.Message):
    __slots__ = ("libvirt_network", "libvirt_bridge", "kubevirt_network")
    LIBVIRT_NETWORK_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_BRIDGE_FIELD_NUMBER: _ClassVar[int]
    KUBEVIRT_NETWORK_FIELD_NUMBER: _ClassVar[int]
    libvirt_network: str
    libvirt_bridge: str
    kubevirt_network: str
    def __init__(self, libvirt_network: _Optional[str] = ..., libvirt_bridge: _Optional[str] = ..., kubevirt_network: _Optional[str] = ...) -> None: ...

class MigrationPipeline(_message.Message):
    __slots__ = ("inspect", "repair", "fstab_mode", "update_grub", "regen_initramfs", "remove_vmware_tools", "compress", "validate", "collect_guest_info", "boot_check")
    INSPECT_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    FSTAB_MODE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_GRUB_FIELD_NUMBER: _ClassVar[int]
    REGEN_INITRAMFS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_VMWARE_TOOLS_FIELD_NUMBER: _ClassVar[int]
    COMPRESS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_FIELD_NUMBER: _ClassVar[int]
    COLLECT_GUEST_INFO_FIELD_NUMBER: _ClassVar[int]
    BOOT_CHECK_FIELD_NUMBER: _ClassVar[int]
    inspect: bool
    repair: bool
    fstab_mode: str
    update_grub: bool
    regen_initramfs: bool
    remove_vmware_tools: bool
    compress: bool
    validate: bool
    collect_guest_info: bool
    boot_check: bool
    def __init__(self, inspect: _Optional[bool] = ..., repair: _Optional[bool] = ..., fstab_mode: _Optional[str] = ..., update_grub: _Optional[bool] = ..., regen_initramfs: _Optional[bool] = ..., remove_vmware_tools: _Optional[bool] = ..., compress: _Optional[bool] = ..., validate: _Optional[bool] = ..., collect_guest_info: _Optional[bool] = ..., boot_check: _Optional[bool] = ...) -> None: ...

class MigrationSpec(_message.Message):
    __slots__ = ("migration_id", "vm", "pipeline", "output_directory", "output_format", "network_map", "keep_partial_outputs", "dry_run", "source_key", "max_in_flight_per_source", "input_kind", "input_document", "audit", "labels")
    class NetworkMapEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: NetworkTarget
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[NetworkTarget, _Mapping]] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_MAP_FIELD_NUMBER: _ClassVar[int]
    KEEP_PARTIAL_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_PER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    INPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    INPUT_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    vm: VmDefinition
    pipeline: MigrationPipeline
    output_directory: str
    output_format: str
    network_map: _containers.MessageMap[str, NetworkTarget]
    keep_partial_outputs: bool
    dry_run: bool
    source_key: str
    max_in_flight_per_source: int
    input_kind: str
    input_document: str
    audit: _job_pb2.Audit
    labels: _containers.ScalarMap[str, str]
    def __init__(self, migration_id: _Optional[str] = ..., vm: _Optional[_Union[VmDefinition, _Mapping]] = ..., pipeline: _Optional[_Union[MigrationPipeline, _Mapping]] = ..., output_directory: _Optional[str] = ..., output_format: _Optional[str] = ..., network_map: _Optional[_Mapping[str, NetworkTarget]] = ..., keep_partial_outputs: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., source_key: _Optional[str] = ..., max_in_flight_per_source: _Optional[int] = ..., input_kind: _Optional[str] = ..., input_document: _Optional[str] = ..., audit: _Optional[_Union[_job_pb2.Audit, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MigrationTransition(_message.Message):
    __slots__ = ("from_state", "to_state", "time", "reason")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_state: MigrationState
    to_state: MigrationState
    time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, from_state: _Optional[_Union[MigrationState, str]] = ..., to_state: _Optional[_Union[MigrationState, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class MigrationJob(_message.Message):
    __slots__ = ("job_id", "disk_id", "role", "state", "progress_percent", "bytes_done", "bytes_total", "output_path", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DISK_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    disk_id: str
    role: str
    state: _job_pb2.JobState
    progress_percent: float
    bytes_done: int
    bytes_total: int
    output_path: str
    error: str
    def __init__(self, job_id: _Optional[str] = ..., disk_id: _Optional[str] = ..., role: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., progress_percent: _Optional[float] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., output_path: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Migration(_message.Message):
    __slots__ = ("spec", "state", "history", "jobs", "stage", "reason", "bytes_done", "bytes_total", "disks_done", "disks_total", "submitted_at", "updated_at", "finished_at", "cancel_requested", "outputs", "eta_seconds")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DISKS_DONE_FIELD_NUMBER: _ClassVar[int]
    DISKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    spec: MigrationSpec
    state: MigrationState
    history: _containers.RepeatedCompositeFieldContainer[MigrationTransition]
    jobs: _containers.RepeatedCompositeFieldContainer[MigrationJob]
    stage: str
    reason: str
    bytes_done: int
    bytes_total: int
    disks_done: int
    disks_total: int
    submitted_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    cancel_requested: bool
    outputs: _containers.RepeatedScalarFieldContainer[str]
    eta_seconds: float
    def __init__(self, spec: _Optional[_Union[MigrationSpec, _Mapping]] = ..., state: _Optional[_Union[MigrationState, str]] = ..., history: _Optional[_Iterable[_Union[MigrationTransition, _Mapping]]] = ..., jobs: _Optional[_Iterable[_Union[MigrationJob, _Mapping]]] = ..., stage: _Optional[str] = ..., reason: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., disks_done: _Optional[int] = ..., disks_total: _Optional[int] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_requested: _Optional[bool] = ..., outputs: _Optional[_Iterable[str]] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class SubmitMigrationRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: MigrationSpec
    def __init__(self, spec: _Optional[_Union[MigrationSpec, _Mapping]] = ...) -> None: ...

class SubmitMigrationResponse(_message.Message):
    __slots__ = ("migration", "created")
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    created: bool
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class SubmitMigrationsRequest(_message.Message):
    __slots__ = ("specs",)
    SPECS_FIELD_NUMBER: _ClassVar[int]
    specs: _containers.RepeatedCompositeFieldContainer[MigrationSpec]
    def __init__(self, specs: _Optional[_Iterable[_Union[MigrationSpec, _Mapping]]] = ...) -> None: ...

class SubmitMigrationsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitMigrationResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitMigrationResponse, _Mapping]]] = ...) -> None: ...

class GetMigrationRequest(_message.Message):
    __slots__ = ("migration_id",)
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    def __init__(self, migration_id: _Optional[str] = ...) -> None: ...

class ListMigrationsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[MigrationState]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[MigrationState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMigrationsResponse(_message.Message):
    __slots__ = ("migrations", "next_page_token")
    MIGRATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    migrations: _containers.RepeatedCompositeFieldContainer[Migration]
    next_page_token: str
    def __init__(self, migrations: _Optional[_Iterable[_Union[Migration, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelMigrationRequest(_message.Message):
    __slots__ = ("migration_id", "reason")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    reason: str
    def __init__(self, migration_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
