"""What a process pays at start-up for what it does not use (#16, #18): `vfido run` does not
import the other commands' modules, and importing the COSE module does not run the ML-DSA
self-test (it runs on first ML-DSA use). Each check runs in a fresh interpreter."""

from __future__ import annotations

from tests.service_helpers import fresh_python as _fresh


def test_vfido_run_parser_imports_no_other_command() -> None:
    answer = _fresh(
        """
        import json, sys
        from vfido.cli import build_parser
        args = build_parser().parse_args(["run", "--ephemeral", "--transport", "udp"])
        assert args.func.__module__ == "vfido.cli.run"
        print(json.dumps(sorted(sys.modules)))
        """
    )
    loaded = set(answer)
    for module in (
        "vfido.dashboard",
        "vfido.trace",
        "vfido.backup",
        "vfido.doctor",
        "vfido.metadata",
        "vfido.testing.webdriver",
        "vfido.api",
        "vfido.testing.virtual_key",
        "vfido.testing.service_key",
        "vfido.udev_install",
        "selenium",
        "http.server",
        "webbrowser",
        # A transport is loaded when the key starts, not to name its default ports.
        "vfido.transports.udp",
        "fido2.hid",
    ):
        assert module not in loaded, f"building `vfido run`'s parser imported {module}"
    # the parser itself is complete: the other commands' choices are there when asked for
    choices = _fresh(
        """
        import json
        from vfido.cli import build_parser
        args = build_parser().parse_args(
            ["webdriver", "--upstream", "http://127.0.0.1:1", "--key-transport", "unix"]
        )
        print(json.dumps({"key_transport": args.key_transport}))
        """
    )
    assert choices == {"key_transport": "unix"}


def test_mldsa_self_test_runs_on_first_use_not_at_import() -> None:
    answer = _fresh(
        """
        import json
        from vfido.authenticator import cose
        calls = []
        detect = cose._detect_mldsa
        cose._detect_mldsa = lambda: calls.append(1) or detect()
        from vfido.authenticator.config import Config
        Config()  # a key that does not offer ML-DSA: no self-test
        at_import = len(calls)
        reason = cose.mldsa_unavailable_reason()  # first use: the self-test runs, once
        cose.can_sign(cose.MLDSA44)
        Config(mldsa=True) if reason is None else None
        print(json.dumps({"at_import": at_import, "after_use": len(calls),
                          "available": reason is None,
                          "supported": cose.MLDSA44 in cose.supported_algorithms()}))
        """
    )
    assert answer["at_import"] == 0
    assert answer["after_use"] == 1
    assert answer["supported"] == answer["available"]
