import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_MODE_UNSPECIFIED: _ClassVar[ExecutionMode]
    EXECUTION_MODE_HOST: _ClassVar[ExecutionMode]
    EXECUTION_MODE_PRIVILEGED_CONTAINER: _ClassVar[ExecutionMode]
    EXECUTION_MODE_SAFE_CONTAINER: _ClassVar[ExecutionMode]

class CapabilityLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPABILITY_LEVEL_UNSPECIFIED: _ClassVar[CapabilityLevel]
    CAPABILITY_LEVEL_USERSPACE: _ClassVar[CapabilityLevel]
    CAPABILITY_LEVEL_INSPECTION: _ClassVar[CapabilityLevel]
    CAPABILITY_LEVEL_FULL: _ClassVar[CapabilityLevel]

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_READY: _ClassVar[AgentState]
    AGENT_STATE_CORDONED: _ClassVar[AgentState]
    AGENT_STATE_DRAINING: _ClassVar[AgentState]
    AGENT_STATE_LOST: _ClassVar[AgentState]
EXECUTION_MODE_UNSPECIFIED: ExecutionMode
EXECUTION_MODE_HOST: ExecutionMode
EXECUTION_MODE_PRIVILEGED_CONTAINER: ExecutionMode
EXECUTION_MODE_SAFE_CONTAINER: ExecutionMode
CAPABILITY_LEVEL_UNSPECIFIED: CapabilityLevel
CAPABILITY_LEVEL_USERSPACE: CapabilityLevel
CAPABILITY_LEVEL_INSPECTION: CapabilityLevel
CAPABILITY_LEVEL_FULL: CapabilityLevel
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_READY: AgentState
AGENT_STATE_CORDONED: AgentState
AGENT_STATE_DRAINING: AgentState
AGENT_STATE_LOST: AgentState

class CapabilityProbe(_message.Message):
    __slots__ = ("name", "available", "version", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    version: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ..., version: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("probes", "execution_mode", "level", "memory_total_bytes", "memory_available_bytes", "disk_free_bytes")
    PROBES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_MODE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[CapabilityProbe]
    execution_mode: ExecutionMode
    level: CapabilityLevel
    memory_total_bytes: int
    memory_available_bytes: int
    disk_free_bytes: int
    def __init__(self, probes: _Optional[_Iterable[_Union[CapabilityProbe, _Mapping]]] = ..., execution_mode: _Optional[_Union[ExecutionMode, str]] = ..., level: _Optional[_Union[CapabilityLevel, str]] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., disk_free_bytes: _Optional[int] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("name", "address", "capabilities", "max_concurrent_jobs", "state", "running_job_ids", "registered_at", "last_heartbeat", "version", "drain_deadline")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_JOBS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DRAIN_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    capabilities: Capabilities
    max_concurrent_jobs: int
    state: AgentState
    running_job_ids: _containers.RepeatedScalarFieldContainer[str]
    registered_at: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    version: str
    drain_deadline: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., max_concurrent_jobs: _Optional[int] = ..., state: _Optional[_Union[AgentState, str]] = ..., running_job_ids: _Optional[_Iterable[str]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[str] = ..., drain_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
