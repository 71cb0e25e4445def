from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    BAD_ARGUMENT: _ClassVar[ErrorReason]
    UNKNOWN_IDENTITY: _ClassVar[ErrorReason]
    NO_KEY_FOR_DAY: _ClassVar[ErrorReason]
    INVALID_MAC: _ClassVar[ErrorReason]
    EPOCH_MISMATCH: _ClassVar[ErrorReason]

class RequestType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_TYPE_UNSPECIFIED: _ClassVar[RequestType]
    STATUS: _ClassVar[RequestType]
    UNREGISTER: _ClassVar[RequestType]
    DELETE_EXPOSURE_HISTORY: _ClassVar[RequestType]

class ContactStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTACT_STATUS_UNSPECIFIED: _ClassVar[ContactStatus]
    CONTACT_VALID: _ClassVar[ContactStatus]
    CONTACT_FOREIGN_COUNTRY: _ClassVar[ContactStatus]
    CONTACT_UNDECRYPTABLE: _ClassVar[ContactStatus]
    CONTACT_UNKNOWN_IDENTITY: _ClassVar[ContactStatus]
    CONTACT_MALFORMED: _ClassVar[ContactStatus]

class HelloVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HELLO_VERDICT_UNSPECIFIED: _ClassVar[HelloVerdict]
    HELLO_VALID: _ClassVar[HelloVerdict]
    HELLO_BAD_MAC: _ClassVar[HelloVerdict]
    HELLO_TIME_MISMATCH: _ClassVar[HelloVerdict]
    HELLO_BAD_EPOCH: _ClassVar[HelloVerdict]
ERROR_REASON_UNSPECIFIED: ErrorReason
BAD_ARGUMENT: ErrorReason
UNKNOWN_IDENTITY: ErrorReason
NO_KEY_FOR_DAY: ErrorReason
INVALID_MAC: ErrorReason
EPOCH_MISMATCH: ErrorReason
REQUEST_TYPE_UNSPECIFIED: RequestType
STATUS: RequestType
UNREGISTER: RequestType
DELETE_EXPOSURE_HISTORY: RequestType
CONTACT_STATUS_UNSPECIFIED: ContactStatus
CONTACT_VALID: ContactStatus
CONTACT_FOREIGN_COUNTRY: ContactStatus
CONTACT_UNDECRYPTABLE: ContactStatus
CONTACT_UNKNOWN_IDENTITY: ContactStatus
CONTACT_MALFORMED: ContactStatus
HELLO_VERDICT_UNSPECIFIED: HelloVerdict
HELLO_VALID: HelloVerdict
HELLO_BAD_MAC: HelloVerdict
HELLO_TIME_MISMATCH: HelloVerdict
HELLO_BAD_EPOCH: HelloVerdict

class CreateRegistrationRequest(_message.Message):
    __slots__ = ("client_public_key", "first_epoch_id", "bundle_days", "country_code")
    CLIENT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FIRST_EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_DAYS_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    client_public_key: bytes
    first_epoch_id: int
    bundle_days: int
    country_code: int
    def __init__(self, client_public_key: _Optional[bytes] = ..., first_epoch_id: _Optional[int] = ..., bundle_days: _Optional[int] = ..., country_code: _Optional[int] = ...) -> None: ...

class CreateRegistrationResponse(_message.Message):
    __slots__ = ("id_a", "sealed_tuples")
    ID_A_FIELD_NUMBER: _ClassVar[int]
    SEALED_TUPLES_FIELD_NUMBER: _ClassVar[int]
    id_a: bytes
    sealed_tuples: bytes
    def __init__(self, id_a: _Optional[bytes] = ..., sealed_tuples: _Optional[bytes] = ...) -> None: ...

class CreateRegistrationsRequest(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class CreateRegistrationsResponse(_message.Message):
    __slots__ = ("id_as",)
    ID_AS_FIELD_NUMBER: _ClassVar[int]
    id_as: bytes
    def __init__(self, id_as: _Optional[bytes] = ...) -> None: ...

class AuthenticateRequestRequest(_message.Message):
    __slots__ = ("ebid", "epoch_id", "time", "mac", "request_type", "bundle")
    EBID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TYPE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    ebid: bytes
    epoch_id: int
    time: bytes
    mac: bytes
    request_type: RequestType
    bundle: BundleRequest
    def __init__(self, ebid: _Optional[bytes] = ..., epoch_id: _Optional[int] = ..., time: _Optional[bytes] = ..., mac: _Optional[bytes] = ..., request_type: _Optional[_Union[RequestType, str]] = ..., bundle: _Optional[_Union[BundleRequest, _Mapping]] = ...) -> None: ...

class BundleRequest(_message.Message):
    __slots__ = ("first_epoch_id", "bundle_days", "country_code")
    FIRST_EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_DAYS_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    first_epoch_id: int
    bundle_days: int
    country_code: int
    def __init__(self, first_epoch_id: _Optional[int] = ..., bundle_days: _Optional[int] = ..., country_code: _Optional[int] = ...) -> None: ...

class AuthenticateRequestResponse(_message.Message):
    __slots__ = ("id_a", "epoch_id", "sealed_tuples")
    ID_A_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_TUPLES_FIELD_NUMBER: _ClassVar[int]
    id_a: bytes
    epoch_id: int
    sealed_tuples: bytes
    def __init__(self, id_a: _Optional[bytes] = ..., epoch_id: _Optional[int] = ..., sealed_tuples: _Optional[bytes] = ...) -> None: ...

class AuthenticateRequestsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AuthenticateRequestRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AuthenticateRequestRequest, _Mapping]]] = ...) -> None: ...

class AuthenticateRequestError(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: ErrorReason
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[_Union[ErrorReason, str]] = ...) -> None: ...

class AuthenticateRequestResult(_message.Message):
    __slots__ = ("ok", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: AuthenticateRequestResponse
    error: AuthenticateRequestError
    def __init__(self, ok: _Optional[_Union[AuthenticateRequestResponse, _Mapping]] = ..., error: _Optional[_Union[AuthenticateRequestError, _Mapping]] = ...) -> None: ...

class AuthenticateRequestsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AuthenticateRequestResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AuthenticateRequestResult, _Mapping]]] = ...) -> None: ...

class DeleteIdentityRequest(_message.Message):
    __slots__ = ("id_a",)
    ID_A_FIELD_NUMBER: _ClassVar[int]
    id_a: bytes
    def __init__(self, id_a: _Optional[bytes] = ...) -> None: ...

class DeleteIdentityResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListIdentitiesRequest(_message.Message):
    __slots__ = ("after_id_a", "created_before", "limit")
    AFTER_ID_A_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_id_a: bytes
    created_before: int
    limit: int
    def __init__(self, after_id_a: _Optional[bytes] = ..., created_before: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListIdentitiesResponse(_message.Message):
    __slots__ = ("id_as",)
    ID_AS_FIELD_NUMBER: _ClassVar[int]
    id_as: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, id_as: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Contact(_message.Message):
    __slots__ = ("ebid", "ecc", "time_collected", "time_from_hello", "macs")
    EBID_FIELD_NUMBER: _ClassVar[int]
    ECC_FIELD_NUMBER: _ClassVar[int]
    TIME_COLLECTED_FIELD_NUMBER: _ClassVar[int]
    TIME_FROM_HELLO_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    ebid: bytes
    ecc: bytes
    time_collected: bytes
    time_from_hello: bytes
    macs: bytes
    def __init__(self, ebid: _Optional[bytes] = ..., ecc: _Optional[bytes] = ..., time_collected: _Optional[bytes] = ..., time_from_hello: _Optional[bytes] = ..., macs: _Optional[bytes] = ...) -> None: ...

class ValidateContactsRequest(_message.Message):
    __slots__ = ("contacts", "server_country_code", "hello_tolerance")
    CONTACTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    HELLO_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    contacts: _containers.RepeatedCompositeFieldContainer[Contact]
    server_country_code: int
    hello_tolerance: int
    def __init__(self, contacts: _Optional[_Iterable[_Union[Contact, _Mapping]]] = ..., server_country_code: _Optional[int] = ..., hello_tolerance: _Optional[int] = ...) -> None: ...

class ContactValidation(_message.Message):
    __slots__ = ("status", "country_code", "id_a", "epoch_id", "hello_verdicts")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    ID_A_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_VERDICTS_FIELD_NUMBER: _ClassVar[int]
    status: ContactStatus
    country_code: int
    id_a: bytes
    epoch_id: int
    hello_verdicts: bytes
    def __init__(self, status: _Optional[_Union[ContactStatus, str]] = ..., country_code: _Optional[int] = ..., id_a: _Optional[bytes] = ..., epoch_id: _Optional[int] = ..., hello_verdicts: _Optional[bytes] = ...) -> None: ...

class ValidateContactsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ContactValidation]
    def __init__(self, results: _Optional[_Iterable[_Union[ContactValidation, _Mapping]]] = ...) -> None: ...

class GetRegistrationPublicKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRegistrationPublicKeyResponse(_message.Message):
    __slots__ = ("public_key",)
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    def __init__(self, public_key: _Optional[bytes] = ...) -> None: ...
