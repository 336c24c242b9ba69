"""Fixtures shared by the example's tests.

vfido's fixtures (vfido_key, vfido_hid_key) come from its pytest plugin, which pytest loads by
itself once vfido is pip-installed; the line below also makes the example run from a vfido
checkout that is not installed (``python3 -m pytest examples/flask_rp`` from the checkout).
"""

from __future__ import annotations

import pytest
from flask import Flask
from webauthn_app import create_app

pytest_plugins = ["vfido.pytest_plugin"]


@pytest.fixture
def app() -> Flask:
    return create_app(rp_id="localhost")
