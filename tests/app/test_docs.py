"""Every code block in README.md, docs/ and examples/ runs, as written, in the test suite.

The blocks are extracted from the Markdown at collection time, so whatever lands in the
documents is checked. A fenced block's language decides how it runs:

- ``python``: a script, run by this interpreter (the venv) in a fresh process; a block that
  defines ``test_...`` functions is a pytest file instead, run by ``python -m pytest`` (the
  vfido plugin loads by its entry point, as in a user's project).
- ``sh`` (``bash``, ``shell``): ``bash -euo pipefail``, from the checkout, with the venv's
  ``bin`` first on PATH.

Both run with HOME, XDG_DATA_HOME (the keystore) and XDG_RUNTIME_DIR (control sockets) in a
temporary directory and ``VFIDO_PASSPHRASE`` set, so key commands touch nothing of the user's.

An HTML comment on the line before a block changes that:

- ``<!-- not-run: REASON -->``: the block is not run (a synopsis, a root-only set-up step, a
  command that serves until stopped); the reason is required. Every other block must have a
  language this file runs.
- ``<!-- run-in: DIR -->``: run from DIR (relative to the checkout), which is also put on
  PYTHONPATH (e.g. an example's own modules).
- ``<!-- run-with: udp-key -->``: a ``vfido run --transport udp --ephemeral --uv`` key
  (:data:`UDP_KEY`, which the text before the block must name) is started first on
  free ports; the ports 8111 and 7112 written in the block are replaced by them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service_helpers import PASSPHRASE
from vfido.transports.udp import free_ports

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs", "examples")
PYTHON = ("python", "py")
SHELL = ("sh", "bash", "shell")
MARKER = re.compile(r"^\s*<!--\s*(not-run|run-in|run-with)\s*:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
BLOCK_TIMEOUT = 600
#: The key a ``<!-- run-with: udp-key -->`` block gets, and the text before it tells users
#: to start (a newcomer's review: the README said `vfido run --ephemeral --uv`, which is a
#: UHID key on a machine with UHID, and the block then found no UDP key).
UDP_KEY = "vfido run --transport udp --ephemeral --uv"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    markers: tuple[tuple[str, str], ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def marker(self, name: str) -> str | None:
        return next((value for key, value in self.markers if key == name), None)


def documents() -> list[Path]:
    paths: list[Path] = []
    for name in DOCUMENTS:
        path = ROOT / name
        paths += sorted(path.rglob("*.md")) if path.is_dir() else [path]
    return paths


def parse(path: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown file, and the indented code blocks found (problems:
    an indented block has no language, so it must be fenced)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    indented: list[str] = []
    i = 0
    markers: list[tuple[str, str]] = []
    previous = ""  # the last non-blank line outside a block
    while i < len(lines):
        line = lines[i]
        match = FENCE.match(line)
        if match:
            indent, fence, lang = match.groups()
            start, body = i, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
                i += 1
            blocks.append(
                Block(path, start + 1, lang.lower(), "\n".join(body) + "\n", tuple(markers))
            )
            markers, previous = [], line
            i += 1
            continue
        marker = MARKER.match(line)
        if marker:
            markers.append((marker.group(1), marker.group(2)))
        elif line.strip():
            in_list = re.match(r"^\s*([-*+]|\d+\.)\s", previous) or previous.startswith(" ")
            blank_before = i > 0 and not lines[i - 1].strip()
            if line.startswith("    ") and blank_before and not in_list:
                indented.append(f"{path.relative_to(ROOT)}:{i + 1}: {line.strip()}")
            markers = []
            previous = line
        i += 1
    return blocks, indented


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in parse(path)[0]]


def runnable() -> list[Block]:
    return [b for b in all_blocks() if b.marker("not-run") is None and b.lang in PYTHON + SHELL]


def test_every_block_runs_or_says_why() -> None:
    problems: list[str] = []
    for path in documents():
        blocks, indented = parse(path)
        problems += [f"{where}: an indented code block: fence it (```sh ...)" for where in indented]
        for block in blocks:
            reason = block.marker("not-run")
            if reason is not None and not reason:
                problems.append(f"{block.where}: <!-- not-run: --> needs a reason")
            if reason is None and block.lang not in PYTHON + SHELL:
                problems.append(
                    f"{block.where}: a ```{block.lang} block this test cannot run: use python "
                    "or sh, or put <!-- not-run: REASON --> on the line before it"
                )
            with_key = block.marker("run-with")
            if with_key is not None and with_key != "udp-key":
                problems.append(f"{block.where}: unknown <!-- run-with: {with_key} -->")
            text = path.read_text().splitlines()[: block.line]
            if with_key == "udp-key" and f"`{UDP_KEY}`" not in " ".join(text[-12:]):
                problems.append(f"{block.where}: the text before it must say `{UDP_KEY}`")
    assert not problems, "\n".join(problems)
    assert len(runnable()) >= 5  # the extractor finds the blocks it should


def environment(tmp_path: Path, run_in: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    home, data, runtime = tmp_path / "home", tmp_path / "data", tmp_path / "run"
    for directory in (home, data, runtime):
        directory.mkdir(mode=0o700)
    paths = [str(ROOT)] + ([str(run_in)] if run_in else [])
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(data),
        XDG_RUNTIME_DIR=str(runtime),
        VFIDO_PASSPHRASE=PASSPHRASE,
        PYTHONPATH=os.pathsep.join([*paths, env.get("PYTHONPATH", "")]),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    for name in ("VFIDO_REQUIRE_UHID", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    return env


@contextmanager
def udp_key(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """``vfido run --transport udp --ephemeral --uv`` on free ports, as a user starts it for
    the block."""
    port, peer_port = free_ports(2)
    argv = [sys.executable, "-m", *UDP_KEY.split()]
    argv += ["--udp-port", str(port), "--udp-peer-port", str(peer_port)]
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if line.startswith("vfido: listening on udp"):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not ready.wait(60):
            pytest.fail("vfido run did not start:\n" + "".join(log))
        yield port, peer_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_block(
    block: Block, tmp_path: Path, pytest_args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the block as the module docstring says (``pytest_args``: for a pytest block)."""
    run_in_name = block.marker("run-in")
    run_in = ROOT / run_in_name if run_in_name else None
    env = environment(tmp_path, run_in)
    code = block.code
    with udp_key(env) if block.marker("run-with") == "udp-key" else _nothing() as ports:
        if ports:
            code = code.replace("8111", str(ports[0])).replace("7112", str(ports[1]))
        if block.lang in SHELL:
            argv = ["bash", "-euo", "pipefail", "-c", code]
            cwd = run_in or ROOT
        elif re.search(r"^def test_", code, re.MULTILINE):
            script = tmp_path / "test_doc_block.py"
            script.write_text(code)
            argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q"]
            argv += ["--rootdir", str(tmp_path), *pytest_args, str(script)]
            cwd = run_in or tmp_path
        else:
            script = tmp_path / "doc_block.py"
            script.write_text(code)
            argv, cwd = [sys.executable, str(script)], run_in or tmp_path
        return subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable(), ids=lambda b: f"{b.where}-{b.lang}")
def test_block_runs(block: Block, tmp_path: Path) -> None:
    result = run_block(block, tmp_path)
    output = f"{block.where}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, output
    assert "Traceback" not in result.stderr, output
    skipped = re.findall(r"^SKIPPED \[\d+\] (.*)$", result.stdout, re.MULTILINE)
    if skipped and " passed" not in result.stdout:
        # The fixtures it names must still exist: --setup-plan resolves them without running.
        (tmp_path / "plan").mkdir()
        plan = run_block(block, tmp_path / "plan", ("--setup-plan",))
        assert plan.returncode == 0, f"{block.where}\n{plan.stdout}\n{plan.stderr}"
        pytest.skip(f"{block.where}: the block's test skipped: {'; '.join(skipped)}")
