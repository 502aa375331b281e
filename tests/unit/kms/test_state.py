"""The key-state table: every cell this service implements, with AWS's error."""

from __future__ import annotations

import pytest

from keyplane.errors import DisabledError, KeyStateError
from keyplane.kms._state import KeyState, Op, require

ARN = "arn:aws:kms:us-east-1:111122223333:key/k"
E, D, PD, PI = (
    KeyState.ENABLED,
    KeyState.DISABLED,
    KeyState.PENDING_DELETION,
    KeyState.PENDING_IMPORT,
)
OK = None

# AWS KMS Developer Guide, "Key states of AWS KMS keys": En, Dis, PD, PI.
TABLE = {
    Op.CRYPTO: (OK, DisabledError, KeyStateError, KeyStateError),
    Op.DESCRIBE: (OK, OK, OK, OK),
    Op.CREATE_ALIAS: (OK, OK, KeyStateError, OK),
    Op.TAG: (OK, OK, KeyStateError, OK),
    Op.ENABLE_DISABLE: (OK, OK, KeyStateError, KeyStateError),
    Op.SCHEDULE_DELETION: (OK, OK, KeyStateError, OK),
    Op.CANCEL_DELETION: (KeyStateError, KeyStateError, OK, KeyStateError),
}


@pytest.mark.parametrize(("op", "expected"), TABLE.items(), ids=lambda v: str(v))
def test_table(op, expected):
    for state, error in zip((E, D, PD, PI), expected, strict=True):
        if error is None:
            require(state, op, ARN)
        else:
            with pytest.raises(error) as caught:
                require(state, op, ARN)
            assert ARN in str(caught.value)


def test_messages_match_aws():
    with pytest.raises(DisabledError, match=r"^arn:.* is disabled\.$"):
        require(D, Op.CRYPTO, ARN)
    with pytest.raises(KeyStateError, match=r"is pending deletion\.$"):
        require(PD, Op.CRYPTO, ARN)
    with pytest.raises(KeyStateError, match=r"is not pending deletion\.$"):
        require(E, Op.CANCEL_DELETION, ARN)
