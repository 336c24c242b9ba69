"""Whose is a vfido key's hidraw node (issue #15, low 5): udev/70-vfido.rules in the guest
(tests/vm/guest_udev.py records, the assertions are here)."""

from __future__ import annotations

import pytest
from vmharness import TEST_TIMEOUT, GuestResults

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT)]


def test_udev_key_node_belongs_to_its_creator(vm: GuestResults) -> None:
    data = vm.require_ok("udev_rules")
    key = data["key"]
    assert (key["uid"], key["gid"], key["mode"]) == (65534, 0, "0o600"), key
    for needed in ("VFIDO_OWNER_UID=65534", "ID_FIDO_TOKEN=1", "ID_SECURITY_TOKEN=1", "uaccess"):
        assert needed in key["udev"], needed
    assert data["creator_opens"]
    assert data["creator_info"]["rc"] == 0, data["creator_info"]
    assert key["path"] in data["creator_list"]["out"]


def test_udev_other_vfido_member_cannot_use_the_key(vm: GuestResults) -> None:
    """Before: any member of group vfido could open every vfido key (0660 group vfido)."""
    data = vm.require_ok("udev_rules")
    assert not data["other_opens"]
    assert data["other_info"]["rc"] != 0
    assert "fido_dev_open" in data["other_info"]["err"]  # libfido2 cannot open the node
    assert data["key"]["path"] not in data["other_list"]["out"]


def test_udev_uhid_is_for_group_vfido(vm: GuestResults) -> None:
    data = vm.require_ok("udev_rules")
    assert data["uhid"]["mode"] == "0o660"
    assert data["uhid_member_opens"]
    assert not data["uhid_outsider_opens"]


@pytest.mark.parametrize("label", ["usb_phys", "bad_uid"])
def test_udev_ignores_devices_that_are_not_vfidos(vm: GuestResults, label: str) -> None:
    """A 1209:0001 HID device with another phys (as a hobby USB device has), or a phys naming no
    numeric uid: the rule does not touch it (before: group vfido 0660)."""
    node = vm.require_ok("udev_rules")["foreign"][label]
    assert "VFIDO_OWNER_UID" not in node["udev"]
    assert (node["uid"], node["gid"], node["mode"]) == (0, 0, "0o600"), node
    assert not node["member_opens"]
