"""The examples of README.md and docs/*.md, run against a live server, so docs cannot go stale.

Two kinds of fenced block run; every other block (``sh``, ``yaml``, ``js``, ...) is only
text. The rules are also in docs/runnable-examples.md, for whoever writes the docs.

- ```` ```console ````: a shell transcript, in the manner of cram. A line starting with
  ``$ `` is a command (lines starting with ``> `` right after it continue it); the lines
  after it, up to the next ``$ ``, are its expected output, stdout and stderr together.
  A last line ``[N]`` says the command exits N; without one it must exit 0. All the
  commands of a block run in one bash, in order, so variables and ``export`` carry over.
- ```` ```python ```` whose first line is ``# runnable``: run as a script with the venv's
  python; it must exit 0. When a ```` ```text ```` block follows it directly, its stdout
  must match that block.

In expected output ``...`` matches any text, within a line or across lines; a line that is
only ``...`` matches any number of whole lines, none included. Trailing spaces are ignored.

Each block gets a server of its own (``peer-grpc serve --host 127.0.0.1 --port 0``) and a
fresh temporary working directory, holding links to the repository's ``node_modules/``,
``examples/`` and ``protos/`` (so ``node_modules/.bin/buf`` works) and nothing else. The
examples write the address as ``127.0.0.1:50051`` (``make serve``'s); it is replaced by the
live server's everywhere in the block. ``peer-grpc`` and ``python`` are the venv's: its
``bin`` comes first on PATH. ``PEER_GRPC_*`` variables of the caller are not passed on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BIN = Path(sys.executable).parent
PEER_GRPC = BIN / "peer-grpc"
#: The address the examples are written for (``make serve``'s); the live server's replaces it.
EXAMPLE_ADDRESS = "127.0.0.1:50051"
#: Repository directories every working directory links to.
LINKED = ("node_modules", "examples", "protos")
#: Programs outside the venv that some examples need: a block naming one that is not
#: installed is skipped rather than failed.
OPTIONAL_PROGRAMS = ("jq", "node", "openssl")
SERVING = re.compile(r"serving on (\S+)")
BLOCK_TIMEOUT = 90.0
EXIT_LINE = re.compile(r"\[(\d+)\]")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


# --- finding the blocks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fenced:
    """One fenced code block of a Markdown file."""

    line: int  # of the opening fence, 1-based
    info: str  # the first word of the info string
    body: str
    end: int  # the line of the closing fence


def fenced_blocks(text: str) -> list[Fenced]:
    """Every fenced code block of ``text``, in order (CommonMark's fences: ``` or ~~~)."""
    lines = text.splitlines()
    blocks: list[Fenced] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        info = opening["info"].strip().split()
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            body.append(lines[end])
            end += 1
        blocks.append(Fenced(index + 1, info[0] if info else "", "\n".join(body) + "\n", end + 1))
        index = end + 1
    return blocks


@dataclass(frozen=True)
class Example:
    """A runnable block: a console transcript, or a python script and its expected stdout."""

    path: Path
    line: int
    kind: str  # "console" or "python"
    body: str
    expected_stdout: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def examples_in(path: Path) -> list[Example]:
    """The runnable blocks of one Markdown file."""
    text = path.read_text()
    lines = text.splitlines()
    blocks = fenced_blocks(text)
    found: list[Example] = []
    for number, block in enumerate(blocks):
        if block.info == "console":
            found.append(Example(path, block.line, "console", block.body))
        elif block.info == "python" and block.body.startswith("# runnable\n"):
            following = blocks[number + 1] if number + 1 < len(blocks) else None
            expected = None
            between = lines[block.end : following.line - 1] if following else []
            if following and following.info == "text" and not "".join(between).strip():
                expected = following.body
            found.append(Example(path, block.line, "python", block.body, expected))
    return found


def all_examples() -> list[Example]:
    return [example for path in DOCS for example in examples_in(path)]


# --- matching output ------------------------------------------------------------------------


def expectation(expected: str) -> re.Pattern[str]:
    """The pattern of an expected output: ``...`` is any text, a line of ``...`` any lines."""
    parts = []
    for line in expected.splitlines():
        line = line.rstrip()
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts), re.DOTALL)


def normalized(output: str) -> str:
    return "".join(line.rstrip() + "\n" for line in output.splitlines())


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is what ``expected`` describes (see the module's docstring)."""
    return expectation(expected).fullmatch(normalized(actual)) is not None


@dataclass(frozen=True)
class Command:
    """One command of a transcript: what it runs, what it must print, how it must exit."""

    source: str
    expected: str
    status: int


def parse_transcript(body: str) -> list[Command]:
    """The commands of a console block.

    Raises:
        ValueError: text before the first ``$ `` line, or a ``> `` line after output.
    """
    commands: list[tuple[list[str], list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append(([line[2:]], []))
        elif not commands:
            if line.strip():
                raise ValueError(f"output before the first command: {line!r}")
        elif line.startswith("> ") and not commands[-1][1]:
            commands[-1][0].append(line[2:])
        else:
            commands[-1][1].append(line)
    parsed = []
    for source, output in commands:
        while output and not output[-1].strip():
            output.pop()
        status = 0
        if output and (exit_line := EXIT_LINE.fullmatch(output[-1].strip())):
            status = int(exit_line[1])
            output.pop()
        parsed.append(Command("\n".join(source), "".join(f"{o}\n" for o in output), status))
    return parsed


@dataclass(frozen=True)
class Outcome:
    output: str
    status: int


def mismatches(commands: list[Command], outcomes: list[Outcome]) -> list[str]:
    """A description of every command whose output or exit status is not the expected one."""
    problems = []
    for index, command in enumerate(commands):
        if index >= len(outcomes):
            problems.append(f"$ {command.source}\n  (never ran: the shell stopped before it)")
            continue
        outcome = outcomes[index]
        if outcome.status != command.status or not output_matches(command.expected, outcome.output):
            problems.append(
                f"$ {command.source}\n"
                f"--- expected (exit {command.status}):\n{command.expected}"
                f"--- got (exit {outcome.status}):\n{outcome.output}"
            )
    return problems


# --- running --------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_GRPC_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_transcript(
    commands: list[Command], cwd: Path, timeout: float = BLOCK_TIMEOUT
) -> list[Outcome]:
    """Run the commands in one bash, in order; each one's output and exit status.

    After each command the shell prints a marker line with the command's status, on a
    line of its own, so the output can be cut into the commands' parts.
    """
    salt = f"@@peer-grpc-docs-{os.getpid()}-{id(commands)}@@"
    script = "".join(f"{command.source}\nprintf '\\n{salt} %d\\n' \"$?\"\n" for command in commands)
    process = subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env=_environment(),
        start_new_session=True,  # whatever an example leaves running is stopped with it
    )
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if timed_out:
        output, _ = process.communicate()
        pytest.fail(f"the transcript ran longer than {timeout} s:\n{output}")
    outcomes = []
    marker = re.compile(rf"\n{re.escape(salt)} (\d+)\n")
    start = 0
    for found in marker.finditer(output):
        outcomes.append(Outcome(output[start : found.start()], int(found[1])))
        start = found.end()
    if len(outcomes) < len(commands):  # a command ended the shell (``exit``): its status
        outcomes.append(Outcome(output[start:], process.returncode))
    return outcomes


@dataclass
class LiveServer:
    process: subprocess.Popen[str]
    address: str
    log: list[str]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """``peer-grpc serve`` on an ephemeral loopback port, for one block."""
    process = subprocess.Popen(
        [str(PEER_GRPC), "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env=_environment(),
    )
    assert process.stderr is not None
    log: list[str] = []
    # Keeps reading its log once it serves, or a chatty server would block on a full pipe.
    reader = threading.Thread(target=log.extend, args=(process.stderr,), daemon=True)
    try:
        address = None
        for line in process.stderr:
            log.append(line)
            if found := SERVING.search(line):
                address = found[1]
                break
        if address is None:
            process.wait(timeout=15)
            pytest.fail(f"serve exited {process.returncode} without serving:\n{''.join(log)}")
        reader.start()
        yield LiveServer(process, address, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if reader.ident is not None:  # started
            reader.join(timeout=5)
        process.stderr.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh working directory with links to the repository's tools and examples."""
    path = Path(tempfile.mkdtemp(prefix="peer-grpc-docs-"))
    try:
        for name in LINKED:
            if (ROOT / name).exists():
                (path / name).symlink_to(ROOT / name)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _needs_missing_program(body: str) -> str | None:
    for program in OPTIONAL_PROGRAMS:
        if re.search(rf"(?<![\w./-]){program}\b", body) and shutil.which(program) is None:
            return program
    return None


EXAMPLES = all_examples()


@pytest.mark.timeout(BLOCK_TIMEOUT + 30)
@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example(example: Example, live_server: LiveServer, workdir: Path) -> None:
    body = example.body.replace(EXAMPLE_ADDRESS, live_server.address)
    if missing := _needs_missing_program(body):
        pytest.skip(f"{missing} is not installed")
    if "node_modules/.bin/buf" in body:
        assert (ROOT / "node_modules/.bin/buf").exists(), "buf is missing: run make node"
    if "examples/node/" in body:
        assert (ROOT / "examples/node/node_modules").exists(), "run make test (npm ci)"
    if example.kind == "console":
        commands = parse_transcript(body)
        problems = mismatches(commands, run_transcript(commands, workdir))
        assert not problems, f"{example.name}:\n" + "\n".join(problems)
        return
    script = workdir / "example.py"
    script.write_text(body)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=_environment(),
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"{example.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    if example.expected_stdout is not None:
        expected = example.expected_stdout.replace(EXAMPLE_ADDRESS, live_server.address)
        assert output_matches(expected, done.stdout), (
            f"{example.name}: stdout differs\n--- expected:\n{expected}--- got:\n{done.stdout}"
        )


# --- the mechanism itself -------------------------------------------------------------------


def test_the_docs_have_runnable_examples() -> None:
    assert {example.kind for example in EXAMPLES} == {"console", "python"}
    assert any(example.path.name == "README.md" for example in EXAMPLES)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("hello\n", "hello\n"),
        ("hello\n", "hello   \n"),
        ('{"id": "...", "n": 1}\n', '{"id": "3f0c", "n": 1}\n'),
        ("a\n...\nz\n", "a\nz\n"),
        ("a\n...\nz\n", "a\nb\nc\nz\n"),
        ("start...end\n", "start\nmiddle\nend\n"),
        ("", ""),
    ],
)
def test_expected_output_matches(expected: str, actual: str) -> None:
    assert output_matches(expected, actual)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("hello\n", "goodbye\n"),
        ("hello\n", "hello\nworld\n"),
        ("hello\n", ""),
        ("", "something\n"),
        ('{"n": 1}\n', '{"n": 1.0}\n'),
        ("a\n...\nz\n", "a\nb\n"),
        ("...COMPLETED\n", "TASK_STATE_FAILED\n"),
    ],
)
def test_other_output_does_not_match(expected: str, actual: str) -> None:
    assert not output_matches(expected, actual)


def test_a_transcript_fails_when_a_command_prints_something_else(tmp_path: Path) -> None:
    commands = parse_transcript(
        "$ X=2\n$ echo one $X\none 2\n$ echo two\nthree\n$ false\n$ exit 4\n[4]\n"
    )
    assert [c.status for c in commands] == [0, 0, 0, 0, 4]
    problems = mismatches(commands, run_transcript(commands, tmp_path))
    assert len(problems) == 2
    assert problems[0].startswith("$ echo two\n")
    assert "three" in problems[0]
    assert problems[1].startswith("$ false\n")
    assert "exit 1" in problems[1]


def test_a_transcript_passes_when_every_command_does_as_shown(tmp_path: Path) -> None:
    commands = parse_transcript(
        "$ printf 'a\\nb\\nc'\na\n...\nc\n$ cat <<'EOF'\n> x...y\n> EOF\nx...y\n"
        "$ echo oops >&2; (exit 3)\noops\n[3]\n$ echo after\nafter\n"
    )
    assert mismatches(commands, run_transcript(commands, tmp_path)) == []


def test_python_examples_take_the_text_block_right_after_them(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```python\n# runnable\nprint(1)\n```\n\n```text\n1\n```\n\n"
        "```python\n# runnable\nprint(2)\n```\nprose\n```text\n2\n```\n\n"
        "```python\nprint('not runnable')\n```\n"
        "````markdown\n```console\n$ not a block of its own\n```\n````\n"
    )
    found = [(e.kind, e.line, e.expected_stdout) for e in examples_in(doc)]
    assert found == [("python", 1, "1\n"), ("python", 10, None)]
