from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DropCount(_message.Message):
    __slots__ = ("reason", "frames")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    reason: str
    frames: int
    def __init__(self, reason: _Optional[str] = ..., frames: _Optional[int] = ...) -> None: ...

class AuthFailureCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    count: int
    def __init__(self, reason: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("relay_id", "protocol_version", "uptime_seconds", "connections", "registered_peers", "frames_forwarded", "bytes_forwarded", "drops", "auth_failures", "registrations", "allowlist_enabled")
    RELAY_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_PEERS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    REGISTRATIONS_FIELD_NUMBER: _ClassVar[int]
    ALLOWLIST_ENABLED_FIELD_NUMBER: _ClassVar[int]
    relay_id: str
    protocol_version: int
    uptime_seconds: float
    connections: int
    registered_peers: int
    frames_forwarded: int
    bytes_forwarded: int
    drops: _containers.RepeatedCompositeFieldContainer[DropCount]
    auth_failures: _containers.RepeatedCompositeFieldContainer[AuthFailureCount]
    registrations: int
    allowlist_enabled: bool
    def __init__(self, relay_id: _Optional[str] = ..., protocol_version: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., connections: _Optional[int] = ..., registered_peers: _Optional[int] = ..., frames_forwarded: _Optional[int] = ..., bytes_forwarded: _Optional[int] = ..., drops: _Optional[_Iterable[_Union[DropCount, _Mapping]]] = ..., auth_failures: _Optional[_Iterable[_Union[AuthFailureCount, _Mapping]]] = ..., registrations: _Optional[int] = ..., allowlist_enabled: _Optional[bool] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Peer(_message.Message):
    __slots__ = ("public_key", "remote_address", "connected_seconds", "frames_in", "bytes_in", "frames_out", "bytes_out")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    FRAMES_OUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    remote_address: str
    connected_seconds: float
    frames_in: int
    bytes_in: int
    frames_out: int
    bytes_out: int
    def __init__(self, public_key: _Optional[str] = ..., remote_address: _Optional[str] = ..., connected_seconds: _Optional[float] = ..., frames_in: _Optional[int] = ..., bytes_in: _Optional[int] = ..., frames_out: _Optional[int] = ..., bytes_out: _Optional[int] = ...) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...
