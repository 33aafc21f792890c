import pytest

from protocol.values import (
    HS_ADMIN,
    AdminPerm,
    AdminRecord,
    HandleValue,
    admin_perms_from_text,
    encode_admin,
)
from resolver.auth import AuthenticationFailed, Identity
from resolver.authz import (
    NotAnAdmin,
    PermissionDenied,
    admin_records,
    perms_for_change,
    perms_for_removal,
    require,
)

ME = Identity(300, "88.100.1/ADMIN")


def admin(handle="88.100.1/ADMIN", index=300, perms="011111110011"):
    return AdminRecord(handle, index, admin_perms_from_text(perms))


def test_identity_parse_accepts_encoded_colon():
    assert Identity.parse("300%3A88.100.1/ADMIN") == ME
    assert Identity.parse("300:88.100.1/ADMIN") == ME
    for bad in ("88.100.1/ADMIN", "x:88/A", "300:"):
        with pytest.raises(AuthenticationFailed):
            Identity.parse(bad)


def test_require_grants_and_denies_by_bits():
    admins = [admin(perms="011111110011")]  # no list, no prefix ops
    require(ME, AdminPerm.ADD_VALUE | AdminPerm.DELETE_HANDLE, admins, frozenset())
    with pytest.raises(PermissionDenied):
        require(ME, AdminPerm.LIST_HANDLES, admins, frozenset())


def test_admin_match_is_case_sensitive_and_index_zero_is_any():
    with pytest.raises(NotAnAdmin):
        require(Identity(300, "88.100.1/admin"), AdminPerm.ADD_VALUE, [admin()], frozenset())
    with pytest.raises(NotAnAdmin):
        require(Identity(301, "88.100.1/ADMIN"), AdminPerm.ADD_VALUE, [admin()], frozenset())
    require(Identity(301, "88.100.1/ADMIN"), AdminPerm.ADD_VALUE, [admin(index=0)], frozenset())


def test_server_admin_needs_no_hs_admin():
    require(ME, AdminPerm.DELETE_PREFIX, [], frozenset({ME}))


def test_corrupt_hs_admin_grants_nothing():
    values = [
        HandleValue(100, HS_ADMIN, b"\x00"),
        HandleValue(101, HS_ADMIN, encode_admin(admin())),
    ]
    assert admin_records(values) == [admin()]


def test_perms_for_change_distinguishes_add_modify_remove():
    url = HandleValue(1, "URL", b"a")
    adm = HandleValue(100, HS_ADMIN, encode_admin(admin()))
    old = [url, adm]
    assert perms_for_change(old, [HandleValue(2, "EMAIL", b"e")], replace=False) == (
        AdminPerm.ADD_VALUE
    )
    # Same value, new timestamp: no change needed.
    same = HandleValue(1, "URL", b"a", timestamp=99)
    assert perms_for_change(old, [same, adm], replace=True) == AdminPerm(0)
    assert perms_for_change(old, [HandleValue(1, "URL", b"b"), adm], replace=True) == (
        AdminPerm.MODIFY_VALUE
    )
    assert perms_for_change(old, [url], replace=True) == AdminPerm.REMOVE_ADMIN
    assert perms_for_removal(old, [1, 100]) == AdminPerm.REMOVE_VALUE | AdminPerm.REMOVE_ADMIN
