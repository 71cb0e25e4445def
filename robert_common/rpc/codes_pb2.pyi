from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CodeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODE_KIND_UNSPECIFIED: _ClassVar[CodeKind]
    CODE_KIND_SHORT: _ClassVar[CodeKind]
    CODE_KIND_LONG: _ClassVar[CodeKind]
    CODE_KIND_JWT: _ClassVar[CodeKind]
CODE_KIND_UNSPECIFIED: CodeKind
CODE_KIND_SHORT: CodeKind
CODE_KIND_LONG: CodeKind
CODE_KIND_JWT: CodeKind

class IssueShortCodeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IssuedCode(_message.Message):
    __slots__ = ("code", "kind", "valid_from", "valid_until", "qr_payload", "lot_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    QR_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    kind: CodeKind
    valid_from: int
    valid_until: int
    qr_payload: str
    lot_id: str
    def __init__(self, code: _Optional[str] = ..., kind: _Optional[_Union[CodeKind, str]] = ..., valid_from: _Optional[int] = ..., valid_until: _Optional[int] = ..., qr_payload: _Optional[str] = ..., lot_id: _Optional[str] = ...) -> None: ...

class IssueLongCodesRequest(_message.Message):
    __slots__ = ("count", "valid_from_date", "lot_id")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    count: int
    valid_from_date: str
    lot_id: str
    def __init__(self, count: _Optional[int] = ..., valid_from_date: _Optional[str] = ..., lot_id: _Optional[str] = ...) -> None: ...

class RevokeCodeRequest(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: str
    def __init__(self, code: _Optional[str] = ...) -> None: ...

class RevokeCodeResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class GetDailyCountsRequest(_message.Message):
    __slots__ = ("from_date", "to_date")
    FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    TO_DATE_FIELD_NUMBER: _ClassVar[int]
    from_date: str
    to_date: str
    def __init__(self, from_date: _Optional[str] = ..., to_date: _Optional[str] = ...) -> None: ...

class DailyCount(_message.Message):
    __slots__ = ("date", "kind", "issued", "used", "expired")
    DATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ISSUED_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    date: str
    kind: CodeKind
    issued: int
    used: int
    expired: int
    def __init__(self, date: _Optional[str] = ..., kind: _Optional[_Union[CodeKind, str]] = ..., issued: _Optional[int] = ..., used: _Optional[int] = ..., expired: _Optional[int] = ...) -> None: ...

class GetDailyCountsResponse(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[DailyCount]
    def __init__(self, counts: _Optional[_Iterable[_Union[DailyCount, _Mapping]]] = ...) -> None: ...
