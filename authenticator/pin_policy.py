"""CTAP 2.2 pinComplexityPolicy: what this key refuses as a new PIN when the policy is on.

CTAP 2.2 leaves the policy to the authenticator (getInfo pinComplexityPolicy says
whether one is enforced, pinComplexityPolicyURL where it is described). This key's
policy, on top of minPINLength, refuses the PINs guessed first:

* one character repeated ("0000", "aaaaaa");
* a straight run of consecutive code points, up or down ("1234", "98765", "abcd");
* a shorter block repeated ("1212", "123123", "abab").

setPIN and changePIN answer CTAP2_ERR_PIN_POLICY_VIOLATION for them (CTAP 2.2
section 6.5.5.5 step 8, 6.5.5.6 step 10).
"""

from __future__ import annotations

import itertools

from vfido.authenticator.errors import CtapError, CtapStatus


def complexity_problem(pin: str) -> str | None:
    """Why ``pin`` breaks the policy (for logs: never the PIN itself), or None."""
    if len(set(pin)) == 1:
        return "one character repeated"
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(pin)}
    if steps in ({1}, {-1}):
        return "a run of consecutive characters"
    for size in range(2, len(pin) // 2 + 1):
        if len(pin) % size == 0 and pin == pin[:size] * (len(pin) // size):
            return "a repeated block"
    return None


def check_pin_complexity(pin: str) -> None:
    """Raise PIN_POLICY_VIOLATION if ``pin`` breaks the policy."""
    problem = complexity_problem(pin)
    if problem is not None:
        raise CtapError(CtapStatus.PIN_POLICY_VIOLATION, f"PIN complexity: {problem}")
