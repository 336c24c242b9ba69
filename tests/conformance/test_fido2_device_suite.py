"""python-fido2's own device test suite (``tests/device`` of its sdist) against
``vfido run --transport udp --ephemeral``.

The sdist is downloaded from PyPI at test time (never committed) into a cache outside the
repository, checked against its pinned SHA-256, and run in a pytest subprocess through our
plugin ``vfido_fido2_device.py`` (device listing -> the UDP key, controller -> power-cycle
datagram). This test asserts 0 failed and 0 errors, that every skip is one
docs/conformance.md explains, and prints the counts in the terminal summary.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

SUITE_VERSION = "2.2.1"
SDIST = f"fido2-{SUITE_VERSION}.tar.gz"
SDIST_SHA256 = "85787428a94c3f8eaf72f0ff30afba983b559a1b1b795c93318c81b4ad4062c4"
#: A relying party the key is configured for (vendor-facilitated enterprise attestation).
EP_RP_ID = "ep.example.com"
SUITE_TIMEOUT = 1200

#: Skip reasons the suite may give, each with why (docs/conformance.md lists them too).
#: A skip not matched here fails the test: a feature silently lost shows up.
EXPLAINED_SKIPS: tuple[tuple[str, str], ...] = (
    (
        r"BioEnrollment not supported by authenticator",
        "the CI key has no fingerprint sensor (vfido run --fingerprint; docs/conformance.md)",
    ),
)

#: The suite's files for the signing extension previewSign (#19): each must run (tests
#: passed, none skipped), so a key that stops advertising the extension fails CI.
MUST_RUN: tuple[str, ...] = ("test_preview_sign", "test_sign_extension_v4")


def cache_dir() -> Path:
    explicit = os.environ.get("VFIDO_CONFORMANCE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vfido" / "conformance"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def suite_root() -> Path:
    """The unpacked sdist (downloaded and checked on first use; safe to race)."""
    cache = cache_dir()
    target = cache / f"fido2-{SUITE_VERSION}"
    if (target / "tests" / "device" / "conftest.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        sdist = cache / SDIST
        if not sdist.is_file() or _sha256(sdist) != SDIST_SHA256:
            # --require-hashes: pip checks the archive before it runs anything from it
            # (preparing an sdist's metadata runs its build backend).
            requirements = tmp / "requirements.txt"
            requirements.write_text(f"fido2=={SUITE_VERSION} --hash=sha256:{SDIST_SHA256}\n")
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary"]
            command += [":all:", "--require-hashes", "--disable-pip-version-check", "-q"]
            command += ["-d", str(tmp), "-r", str(requirements)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"pip download failed:\n{done.stdout}{done.stderr}"
            downloaded = tmp / SDIST
            digest = _sha256(downloaded)
            assert digest == SDIST_SHA256, f"{SDIST}: SHA-256 {digest}, expected {SDIST_SHA256}"
            os.replace(downloaded, sdist)
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(tmp / "x", filter="data")
            else:  # Python < 3.11.4 (Debian 12's 3.11.2): no filters; the sdist's hash is pinned
                archive.extractall(tmp / "x")
        try:
            os.replace(tmp / "x" / f"fido2-{SUITE_VERSION}", target)
        except OSError:
            if not (target / "tests" / "device" / "conftest.py").is_file():
                raise
    return target


@dataclass
class SuiteResult:
    outcomes: Counter[str] = field(default_factory=Counter)
    skips: Counter[str] = field(default_factory=Counter)  # reason -> count
    problems: list[str] = field(default_factory=list)  # failed/error test ids
    by_file: dict[str, Counter[str]] = field(default_factory=dict)  # module -> outcomes

    def line(self) -> str:
        o = self.outcomes
        return (
            f"python-fido2 {SUITE_VERSION} tests/device: passed={o['passed']} "
            f"failed={o['failed']} errors={o['error']} skipped={o['skipped']} "
            f"xfailed={o['xfailed']} (spec/suite disagreements, docs/conformance.md)"
        )

    def file_line(self, module: str) -> str:
        o = self.by_file.get(module, Counter())
        return (
            f"  {module}.py: passed={o['passed']} failed={o['failed']} "
            f"errors={o['error']} skipped={o['skipped']}"
        )


def parse_junit(path: Path) -> SuiteResult:
    result = SuiteResult()
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag: child for child in case}
        module = str(case.get("classname")).rsplit(".", 1)[-1]
        before = Counter(result.outcomes)
        if "failure" in tags:
            result.outcomes["failed"] += 1
            result.problems.append(f"FAILED {name}")
        elif "error" in tags:
            result.outcomes["error"] += 1
            result.problems.append(f"ERROR {name}")
        elif "skipped" in tags:
            skipped = tags["skipped"]
            if skipped.get("type") == "pytest.xfail":
                result.outcomes["xfailed"] += 1
            else:
                result.outcomes["skipped"] += 1
                result.skips[skipped.get("message", "")] += 1
        else:
            result.outcomes["passed"] += 1
        if "error" in tags and "failure" in tags:  # a failed test whose teardown failed too
            result.outcomes["error"] += 1
            result.problems.append(f"ERROR {name}")
        result.by_file.setdefault(module, Counter()).update(result.outcomes - before)
    return result


def explained(reason: str) -> str | None:
    for pattern, why in EXPLAINED_SKIPS:
        if re.search(pattern, reason):
            return why
    return None


def _key_arguments() -> list[str]:
    args = ["--enterprise-attestation=1", f"--enterprise-rp-id={EP_RP_ID}"]
    help_text = subprocess.run(
        [sys.executable, "-m", "vfido", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    if "--mldsa" in help_text:  # ML-DSA opt-in: the suite's ML-DSA tests run too
        args.append("--mldsa")
    return [f"--vfido-arg={a}" for a in args]


def _run_suite(
    tmp_path: Path, tests: str, key_arguments: list[str]
) -> tuple[SuiteResult, int, str]:
    """Run the sdist's ``tests`` (a path under its root) against a key started with
    ``key_arguments``; the parsed results, the exit status and the output's tail."""
    root = suite_root()
    junit = tmp_path / "junit.xml"
    log = tmp_path / "suite.log"
    command = [sys.executable, "-m", "pytest", tests, "-p", "vfido_fido2_device"]
    command += ["-p", "no:cacheprovider", "-q", "-rfEsxX", f"--junitxml={junit}"]
    command += ["--timeout=300", f"--vfido-log={tmp_path / 'key.log'}", f"--ep-rp-id={EP_RP_ID}"]
    command += key_arguments
    env = dict(os.environ)
    # The suite imports its own copy of fido2 (the version it was written for) and our
    # plugin; the key it starts runs on this repository's code.
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(HERE)])
    env["VFIDO_KEY_PYTHONPATH"] = str(ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the cache is shared: no .pyc races
    with open(log, "w") as out:
        # Its own process group: on a timeout the suite and the key it started both go.
        suite = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = suite.wait(timeout=SUITE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(suite.pid, signal.SIGKILL)
            suite.wait()
            raise
    output = log.read_text(errors="replace")
    tail = "\n".join(output.splitlines()[-60:])
    assert junit.is_file(), f"the suite wrote no results (exit {returncode}):\n{tail}"
    return parse_junit(junit), returncode, tail


@pytest.mark.slow
@pytest.mark.timeout(SUITE_TIMEOUT + 600)
def test_python_fido2_device_suite(tmp_path: Path, suite_report: list[str]) -> None:
    result, returncode, tail = _run_suite(tmp_path, "tests/device", _key_arguments())
    suite_report.append(result.line())
    unexplained = {r: n for r, n in result.skips.items() if explained(r) is None}
    for reason, count in sorted(result.skips.items()):
        suite_report.append(f"  skipped {count:3d}: {reason} -- {explained(reason) or '???'}")
    suite_report.extend(result.file_line(module) for module in MUST_RUN)
    assert not result.problems, "\n".join([*result.problems, tail])
    assert returncode == 0, tail
    assert result.outcomes["passed"] > 0
    for module in MUST_RUN:  # previewSign (#19): run, not skipped
        outcomes = result.by_file.get(module, Counter())
        assert outcomes["passed"] > 0 and not outcomes["skipped"], result.file_line(module)
    assert not unexplained, f"skips docs/conformance.md does not explain: {unexplained}"


@pytest.mark.slow
@pytest.mark.timeout(SUITE_TIMEOUT + 600)
def test_python_fido2_bio_tests_against_a_fingerprint_key(
    tmp_path: Path, suite_report: list[str]
) -> None:
    """The suite's bio enrollment tests, which the default key skips (no sensor), against
    ``vfido run --fingerprint`` (simulated fingerprints): none may skip or fail."""
    arguments = [*_key_arguments(), "--vfido-arg=--fingerprint"]
    result, returncode, tail = _run_suite(tmp_path, "tests/device/test_bioenroll.py", arguments)
    suite_report.append("  with --fingerprint, test_bioenroll.py: " + result.line())
    assert not result.problems, "\n".join([*result.problems, tail])
    assert returncode == 0, tail
    assert result.outcomes["passed"] >= 3 and not result.skips, tail
