from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatchStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_STATUS_UNSPECIFIED: _ClassVar[BatchStatus]
    BATCH_ACCEPTED: _ClassVar[BatchStatus]
    BATCH_DUPLICATE: _ClassVar[BatchStatus]
    BATCH_REFUSED: _ClassVar[BatchStatus]
BATCH_STATUS_UNSPECIFIED: BatchStatus
BATCH_ACCEPTED: BatchStatus
BATCH_DUPLICATE: BatchStatus
BATCH_REFUSED: BatchStatus

class ForeignContact(_message.Message):
    __slots__ = ("ebid", "ecc", "time_collected", "time_from_hello", "macs", "rssi")
    EBID_FIELD_NUMBER: _ClassVar[int]
    ECC_FIELD_NUMBER: _ClassVar[int]
    TIME_COLLECTED_FIELD_NUMBER: _ClassVar[int]
    TIME_FROM_HELLO_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    RSSI_FIELD_NUMBER: _ClassVar[int]
    ebid: bytes
    ecc: bytes
    time_collected: bytes
    time_from_hello: bytes
    macs: bytes
    rssi: bytes
    def __init__(self, ebid: _Optional[bytes] = ..., ecc: _Optional[bytes] = ..., time_collected: _Optional[bytes] = ..., time_from_hello: _Optional[bytes] = ..., macs: _Optional[bytes] = ..., rssi: _Optional[bytes] = ...) -> None: ...

class ContactBatch(_message.Message):
    __slots__ = ("batch_id", "sender_country_code", "receiver_country_code", "contacts")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    CONTACTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    sender_country_code: int
    receiver_country_code: int
    contacts: _containers.RepeatedCompositeFieldContainer[ForeignContact]
    def __init__(self, batch_id: _Optional[str] = ..., sender_country_code: _Optional[int] = ..., receiver_country_code: _Optional[int] = ..., contacts: _Optional[_Iterable[_Union[ForeignContact, _Mapping]]] = ...) -> None: ...

class DeliverContactsRequest(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[ContactBatch]
    def __init__(self, batches: _Optional[_Iterable[_Union[ContactBatch, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("batch_id", "status", "reason")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    status: BatchStatus
    reason: str
    def __init__(self, batch_id: _Optional[str] = ..., status: _Optional[_Union[BatchStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class DeliverContactsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...
