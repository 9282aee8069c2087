import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    OPERATION_INSPECT: _ClassVar[Operation]
    OPERATION_CONVERT: _ClassVar[Operation]
    OPERATION_OFFLINE_FIX: _ClassVar[Operation]
    OPERATION_BOOT_REPAIR: _ClassVar[Operation]
    OPERATION_SELINUX_PREP: _ClassVar[Operation]
    OPERATION_LVM_REPAIR: _ClassVar[Operation]
    OPERATION_FS_REPAIR: _ClassVar[Operation]
    OPERATION_INITRAMFS_REGENERATE: _ClassVar[Operation]
    OPERATION_MIGRATION_PUBLISH: _ClassVar[Operation]
    OPERATION_MIGRATION_CLEANUP: _ClassVar[Operation]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_CREATED: _ClassVar[JobState]
    JOB_STATE_VALIDATED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_ASSIGNED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_PROGRESSING: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_RETRYING: _ClassVar[JobState]
OPERATION_UNSPECIFIED: Operation
OPERATION_INSPECT: Operation
OPERATION_CONVERT: Operation
OPERATION_OFFLINE_FIX: Operation
OPERATION_BOOT_REPAIR: Operation
OPERATION_SELINUX_PREP: Operation
OPERATION_LVM_REPAIR: Operation
OPERATION_FS_REPAIR: Operation
OPERATION_INITRAMFS_REGENERATE: Operation
OPERATION_MIGRATION_PUBLISH: Operation
OPERATION_MIGRATION_CLEANUP: Operation
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_CREATED: JobState
JOB_STATE_VALIDATED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_ASSIGNED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_PROGRESSING: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_RETRYING: JobState

class ImageRef(_message.Message):
    __slots__ = ("path", "format", "checksum", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: str
    checksum: str
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., format: _Optional[str] = ..., checksum: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class CapabilityRequirements(_message.Message):
    __slots__ = ("needs_nbd", "needs_lvm", "needs_mount", "needs_selinux_tools", "min_memory_gb", "min_disk_space_gb")
    NEEDS_NBD_FIELD_NUMBER: _ClassVar[int]
    NEEDS_LVM_FIELD_NUMBER: _ClassVar[int]
    NEEDS_MOUNT_FIELD_NUMBER: _ClassVar[int]
    NEEDS_SELINUX_TOOLS_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    MIN_DISK_SPACE_GB_FIELD_NUMBER: _ClassVar[int]
    needs_nbd: bool
    needs_lvm: bool
    needs_mount: bool
    needs_selinux_tools: bool
    min_memory_gb: int
    min_disk_space_gb: int
    def __init__(self, needs_nbd: _Optional[bool] = ..., needs_lvm: _Optional[bool] = ..., needs_mount: _Optional[bool] = ..., needs_selinux_tools: _Optional[bool] = ..., min_memory_gb: _Optional[int] = ..., min_disk_space_gb: _Optional[int] = ...) -> None: ...

class ExecutionPolicy(_message.Message):
    __slots__ = ("retry_count", "timeout_seconds", "idempotent", "priority")
    RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    retry_count: int
    timeout_seconds: int
    idempotent: bool
    priority: int
    def __init__(self, retry_count: _Optional[int] = ..., timeout_seconds: _Optional[int] = ..., idempotent: _Optional[bool] = ..., priority: _Optional[int] = ...) -> None: ...

class Artifacts(_message.Message):
    __slots__ = ("output_path", "log_upload", "store_fixed_image", "keep_intermediates")
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    LOG_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    STORE_FIXED_IMAGE_FIELD_NUMBER: _ClassVar[int]
    KEEP_INTERMEDIATES_FIELD_NUMBER: _ClassVar[int]
    output_path: str
    log_upload: bool
    store_fixed_image: bool
    keep_intermediates: bool
    def __init__(self, output_path: _Optional[str] = ..., log_upload: _Optional[bool] = ..., store_fixed_image: _Optional[bool] = ..., keep_intermediates: _Optional[bool] = ...) -> None: ...

class Audit(_message.Message):
    __slots__ = ("requested_by", "ticket", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    requested_by: str
    ticket: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, requested_by: _Optional[str] = ..., ticket: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("version", "job_id", "operation", "image", "requested_actions", "capability_requirements", "execution_policy", "artifacts", "audit", "parameters", "created_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    job_id: str
    operation: Operation
    image: ImageRef
    requested_actions: _containers.RepeatedScalarFieldContainer[str]
    capability_requirements: CapabilityRequirements
    execution_policy: ExecutionPolicy
    artifacts: Artifacts
    audit: Audit
    parameters: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[str] = ..., job_id: _Optional[str] = ..., operation: _Optional[_Union[Operation, str]] = ..., image: _Optional[_Union[ImageRef, _Mapping]] = ..., requested_actions: _Optional[_Iterable[str]] = ..., capability_requirements: _Optional[_Union[CapabilityRequirements, _Mapping]] = ..., execution_policy: _Optional[_Union[ExecutionPolicy, _Mapping]] = ..., artifacts: _Optional[_Union[Artifacts, _Mapping]] = ..., audit: _Optional[_Union[Audit, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StateTransition(_message.Message):
    __slots__ = ("from_state", "to_state", "time", "reason", "attempt")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    from_state: JobState
    to_state: JobState
    time: _timestamp_pb2.Timestamp
    reason: str
    attempt: int
    def __init__(self, from_state: _Optional[_Union[JobState, str]] = ..., to_state: _Optional[_Union[JobState, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class JobOutput(_message.Message):
    __slots__ = ("kind", "path", "size_bytes", "format", "sha256")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    kind: str
    path: str
    size_bytes: int
    format: str
    sha256: str
    def __init__(self, kind: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., format: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("phase", "code", "message")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    phase: str
    code: str
    message: str
    def __init__(self, phase: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("outputs", "metrics", "details", "error")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[JobOutput]
    metrics: _struct_pb2.Struct
    details: _struct_pb2.Struct
    error: JobError
    def __init__(self, outputs: _Optional[_Iterable[_Union[JobOutput, _Mapping]]] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("spec", "state", "history", "assigned_agent", "attempt", "result", "submitted_at", "updated_at", "started_at", "finished_at", "queue_reason", "last_seq", "phase", "progress_percent", "cancel_requested", "trace_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AGENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    state: JobState
    history: _containers.RepeatedCompositeFieldContainer[StateTransition]
    assigned_agent: str
    attempt: int
    result: JobResult
    submitted_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    queue_reason: str
    last_seq: int
    phase: str
    progress_percent: float
    cancel_requested: bool
    trace_id: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., history: _Optional[_Iterable[_Union[StateTransition, _Mapping]]] = ..., assigned_agent: _Optional[str] = ..., attempt: _Optional[int] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queue_reason: _Optional[str] = ..., last_seq: _Optional[int] = ..., phase: _Optional[str] = ..., progress_percent: _Optional[float] = ..., cancel_requested: _Optional[bool] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "phase", "progress_percent", "bytes_done", "bytes_total", "message", "details", "state", "result", "attempt", "agent")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    phase: str
    progress_percent: float
    bytes_done: int
    bytes_total: int
    message: str
    details: _containers.ScalarMap[str, str]
    state: JobState
    result: JobResult
    attempt: int
    agent: str
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phase: _Optional[str] = ..., progress_percent: _Optional[float] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., attempt: _Optional[int] = ..., agent: _Optional[str] = ...) -> None: ...
