"""bin/sync.py and ginlab.sync against a real watchman daemon and real rsync.

The watchman daemon is started by a fixture with its own socket, state and log files in a temporary
folder and shut down afterwards, even when a test fails. Without watchman, rsync or ssh installed the
tests that need them are skipped, unless GINLAB_REQUIRE_SERVICES=1 (CI) makes that a failure.
Waiting is done by polling with a deadline, never by fixed sleeps.
"""

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ginlab import sync as gsync
from ginlab.processes import process_alive

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "bin" / "sync.py"


def require_tool(name: str) -> str:
    """The path of `name`; skip the test when it is missing, or fail when GINLAB_REQUIRE_SERVICES=1."""
    path = shutil.which(name)
    if path is None:
        package = {"ssh": "openssh-client"}.get(name, name)
        message = f"{name} is not installed (Debian: apt-get install {package})"
        if os.environ.get("GINLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message}, and GINLAB_REQUIRE_SERVICES=1 requires it")
        pytest.skip(f"{message}; set GINLAB_REQUIRE_SERVICES=1 to make this a failure")
    return path


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def watchman_sock(tmp_path_factory):
    """A private watchman daemon for this module; yields its socket path."""
    require_tool("watchman")
    folder = tmp_path_factory.mktemp("wm")  # short: unix socket paths are limited to ~104 bytes
    sock = folder / "sock"
    started = subprocess.run(
        [
            "watchman",
            f"--sockname={sock}",
            f"--statefile={folder / 'state'}",
            f"--logfile={folder / 'log'}",
            f"--pidfile={folder / 'pid'}",
            "get-sockname",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 0, started.stderr
    try:
        yield str(sock)
    finally:
        subprocess.run(
            ["watchman", f"--sockname={sock}", "shutdown-server"],
            check=False,
            capture_output=True,
            timeout=30,
        )
        pid = int((folder / "pid").read_text())
        try:
            wait_until(lambda: not process_alive(pid), timeout=5, what="watchman to exit")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def env(watchman_sock):
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WATCHMAN_SOCK": watchman_sock}


@pytest.fixture
def plain_env():
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    environment.pop("WATCHMAN_SOCK", None)
    return environment


@pytest.fixture
def project(tmp_path):
    """A small project with code, and with paths that must never be synced."""
    require_tool("rsync")
    root = tmp_path / "project"
    for path, text in {
        "src/pkg/model.py": "print('model')\n",
        "src/pkg/data/loader.py": "# a code package named data: synced\n",
        "configs/base.gin": "train.lr = 0.1\n",
        "README.md": "hello\n",
        "results/run1/metrics.csv": "step,loss\n",
        "data/train.bin": "x" * 1000,
        ".git/HEAD": "ref: refs/heads/main\n",
        ".venv/bin/python": "",
        "src/pkg/__pycache__/model.cpython-311.pyc": "",
        "notes/scratch.tmp": "from .syncignore\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    (root / ".syncignore").write_text("# local scratch\n*.tmp\n")
    return root


SYNCED = {"src/pkg/model.py", "src/pkg/data/loader.py", "configs/base.gin", "README.md", ".syncignore"}
# Written into DEST by the first sync: DEST is ginlab's mirror of the project (and --delete is allowed there).
MARKER = ".ginlab-sync.json"


def read_marker(dest: Path) -> dict:
    return json.loads((dest / MARKER).read_text())


class Watcher:
    """bin/sync.py running in watch mode, with its output in files to poll."""

    def __init__(self, args: list[str], env: dict, folder: Path):
        self.stdout_path, self.stderr_path = folder / "sync.out", folder / "sync.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(BIN), *args], stdout=out, stderr=err, env=env
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for_output(self, pattern: str, count: int = 1, timeout: float = 10.0) -> None:
        def found():
            assert self.process.poll() is None, f"sync.py exited early:\n{self.stdout}\n{self.stderr}"
            return len(re.findall(pattern, self.stdout + self.stderr)) >= count

        wait_until(found, timeout, what=f"{count} x {pattern!r} in the output of sync.py")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=15)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_watcher(tmp_path):
    watchers = []

    def start(args: list[str], env: dict) -> Watcher:
        watchers.append(Watcher(args, env, tmp_path))
        return watchers[-1]

    yield start
    for watcher in watchers:
        watcher.kill()


def run_sync(args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BIN), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def watched_roots(sock: str) -> list[str]:
    import pywatchman

    with pywatchman.client(sockpath=sock) as client:
        return client.query("watch-list")["roots"]


# --------------------------------------------------------------------------------------------------
# Command line, one sync


def test_help_does_not_import_torch(plain_env):
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN), "--help"],
        check=False,
        capture_output=True,
        text=True,
        env=plain_env,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--delete" in completed.stdout
    imported = [line.split("|")[-1].strip() for line in completed.stderr.splitlines() if "|" in line]
    assert not [
        name for name in imported if name.split(".")[0] in ("torch", "pytorch_lightning", "pywatchman")
    ]


def test_once_sends_code_and_leaves_excluded_paths_behind(project, tmp_path, plain_env):
    dest = tmp_path / "mirror"
    completed = run_sync([str(dest), "--source", str(project), "--once"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(dest) == SYNCED | {MARKER}
    # One line per sync: files, bytes, time.
    assert re.search(
        r"synced: 5 files, [\d.]+ (B|kB) \([\d.]+ (B|kB) sent\) in \d+\.\d\d s", completed.stdout
    )


def test_same_size_edit_within_the_same_second_is_sent(project, tmp_path, plain_env):
    dest = tmp_path / "mirror"
    model = project / "src/pkg/model.py"
    second = int(time.time()) * 10**9
    model.write_text("lr = 0.1\n")
    os.utime(model, ns=(second + 100, second + 100))
    assert run_sync([str(dest), "--source", str(project), "--once"], plain_env).returncode == 0
    model.write_text("lr = 0.2\n")  # same size, same whole second: rsync's default check misses it
    os.utime(model, ns=(second + 200, second + 200))
    assert run_sync([str(dest), "--source", str(project), "--once"], plain_env).returncode == 0
    assert (dest / "src/pkg/model.py").read_text() == "lr = 0.2\n"


def test_dry_run_lists_what_would_go_and_sends_nothing(project, tmp_path, plain_env):
    dest = tmp_path / "mirror"
    dest.mkdir()
    (dest / "stale.py").write_text("deleted locally long ago\n")
    # --adopt: DEST was not made by ginlab (it has no marker), so --delete alone would be refused.
    completed = run_sync([str(dest), "--source", str(project), "--dry-run", "--delete", "--adopt"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert "would send: 5 files" in completed.stdout
    assert re.search(r"^  \S+ +src/pkg/model\.py$", completed.stdout, re.MULTILINE)
    assert re.search(r"^  \*deleting +stale\.py$", completed.stdout, re.MULTILINE)
    assert "results" not in completed.stdout
    assert files_under(dest) == {"stale.py"}, "a dry run writes nothing, not even the marker"


def test_delete_removes_only_inside_dest_and_keeps_remote_excluded_paths(project, tmp_path, plain_env):
    dest = tmp_path / "mirror"
    remote_only = {
        "results/run7/metrics.csv": "produced on the remote",
        "data/cache.bin": "downloaded on the remote",
        "src/pkg/__pycache__/model.cpython-311.pyc": "remote bytecode",
        "old/scratch.tmp": ".syncignore'd, only on the remote",
        "stale.py": "deleted locally",
        "gone_pkg/__pycache__/x.pyc": "cache in a folder deleted locally",
    }
    for path, text in remote_only.items():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_text(text)
    beside = tmp_path / "beside"
    beside.mkdir()
    (beside / "keep.txt").write_text("next to DEST")

    # --adopt: DEST holds files and no marker; this makes it the project's mirror (see the tests below).
    completed = run_sync([str(dest), "--source", str(project), "--once", "--adopt"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(dest) == SYNCED | set(remote_only) | {MARKER}, "without --delete nothing is deleted"

    completed = run_sync([str(dest), "--source", str(project), "--once", "--delete"], plain_env)
    assert completed.returncode == 0, completed.stderr
    kept = {
        "results/run7/metrics.csv",
        "data/cache.bin",
        "src/pkg/__pycache__/model.cpython-311.pyc",
        "old/scratch.tmp",
    }
    assert files_under(dest) == SYNCED | kept | {MARKER}, "--delete never deletes the marker"
    assert (dest / "results/run7/metrics.csv").read_text() == "produced on the remote"
    assert files_under(beside) == {"keep.txt"}
    assert re.search(r"synced: 0 files, 0 B .*, 4 deleted", completed.stdout)


@pytest.mark.parametrize(
    "dest, message",
    [
        ("{source}/mirror", "inside the source"),
        ("{source}/..", "contains the source"),
        ("user@host:", "home or root folder"),
        ("user@host:~", "home or root folder"),
        ("user@host:/", "home or root folder"),
        ("rsync://host/module", "rsync daemon"),
    ],
)
def test_unsafe_dest_is_a_usage_error(project, plain_env, dest, message):
    completed = run_sync(
        [dest.format(source=project), "--source", str(project), "--once", "--delete"], plain_env
    )
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "Give a folder of its own" in completed.stderr


# --------------------------------------------------------------------------------------------------
# --delete only into a DEST that ginlab created (its marker names this project)


@pytest.fixture
def local_ssh(tmp_path):
    """A stand-in for ssh that runs the remote rsync on this machine (user@host:PATH is local PATH)."""
    script = tmp_path / "local-ssh"
    script.write_text('#!/bin/sh\nwhile [ "$1" != rsync ]; do shift; done\nexec sh -c "$*"\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def unrelated_folder(tmp_path):
    """A folder that ginlab did not create: somebody's thesis."""
    folder = tmp_path / "thesis"
    (folder / "figures").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\documentclass{article}\n")
    (folder / "figures/plot.pdf").write_text("%PDF")
    return folder


@pytest.mark.parametrize("mode", [["--dry-run"], ["--once"], []], ids=["dry-run", "once", "watch"])
def test_delete_into_a_folder_ginlab_did_not_create_is_refused(
    project, unrelated_folder, env, watchman_sock, mode
):
    completed = run_sync(
        [str(unrelated_folder), "--source", str(project), "--delete", *mode], env, timeout=30
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert f"DEST {unrelated_folder} holds 2 files or folders (figures/, thesis.tex)" in completed.stderr
    assert "has no .ginlab-sync.json" in completed.stderr
    assert "--adopt" in completed.stderr
    assert "deleting" not in completed.stdout
    assert files_under(unrelated_folder) == {"thesis.tex", "figures/plot.pdf"}, (
        "nothing sent, nothing deleted"
    )
    assert str(project) not in watched_roots(watchman_sock)


def test_remote_delete_into_a_folder_ginlab_did_not_create_is_refused(
    project, unrelated_folder, tmp_path, plain_env, local_ssh
):
    completed = run_sync(
        [
            f"alice@cluster:{unrelated_folder}",
            "--source",
            str(project),
            "--once",
            "--delete",
            "--rsh",
            local_ssh,
        ],
        plain_env,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert f"DEST alice@cluster:{unrelated_folder} holds 2 files or folders" in completed.stderr
    assert files_under(unrelated_folder) == {"thesis.tex", "figures/plot.pdf"}

    # A remote DEST that the first sync creates gets the marker, and --delete works there.
    dest = tmp_path / "remote-home" / "mirror"
    dest.parent.mkdir()
    remote = [f"alice@cluster:{dest}", "--source", str(project), "--once", "--rsh", local_ssh]
    assert run_sync(remote, plain_env).returncode == 0
    assert read_marker(dest)["source"] == str(project)
    (dest / "stale.py").write_text("")
    completed = run_sync([*remote, "--delete"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(dest) == SYNCED | {MARKER}


def test_first_sync_writes_the_marker_and_delete_keeps_it(project, tmp_path, plain_env):
    dest = tmp_path / "mirror"
    assert run_sync([str(dest), "--source", str(project), "--once"], plain_env).returncode == 0
    marker = read_marker(dest)
    assert (marker["source"], marker["host"]) == (str(project), socket.gethostname())
    assert datetime.datetime.fromisoformat(marker["created"]).tzinfo is not None
    (dest / "stale.py").write_text("")
    completed = run_sync([str(dest), "--source", str(project), "--once", "--delete"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(dest) == SYNCED | {MARKER}
    assert read_marker(dest) == marker, "the marker is written once, when ginlab creates DEST"


def test_an_empty_folder_becomes_a_mirror(project, tmp_path, plain_env):
    dest = tmp_path / "mirror"
    dest.mkdir()
    completed = run_sync([str(dest), "--source", str(project), "--once", "--delete"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(dest) == SYNCED | {MARKER}


def test_sync_without_delete_into_a_folder_ginlab_did_not_create_adds_no_marker(
    project, unrelated_folder, plain_env
):
    completed = run_sync([str(unrelated_folder), "--source", str(project), "--once"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(unrelated_folder) == SYNCED | {"thesis.tex", "figures/plot.pdf"}
    assert "Without --delete nothing is deleted there; --delete will be refused there" in completed.stderr


def test_adopt_makes_a_folder_this_projects_mirror(project, unrelated_folder, plain_env):
    args = [str(unrelated_folder), "--source", str(project)]
    completed = run_sync([*args, "--dry-run", "--delete", "--adopt"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"^  \*deleting +thesis\.tex$", completed.stdout, re.MULTILINE)
    assert files_under(unrelated_folder) == {"thesis.tex", "figures/plot.pdf"}, "a dry run adopts nothing"

    completed = run_sync([*args, "--once", "--adopt"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert read_marker(unrelated_folder)["source"] == str(project)
    completed = run_sync([*args, "--once", "--delete"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(unrelated_folder) == SYNCED | {MARKER}


def test_delete_into_another_projects_mirror_is_refused(project, tmp_path, plain_env):
    dest = tmp_path / "mirror"
    assert run_sync([str(dest), "--source", str(project), "--once"], plain_env).returncode == 0
    other = tmp_path / "other-project"
    shutil.copytree(project, other)
    (other / "README.md").unlink()

    completed = run_sync([str(dest), "--source", str(other), "--once", "--delete"], plain_env)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert f"DEST {dest} is the mirror of {project} on {socket.gethostname()}" in completed.stderr
    assert f"not of {other}" in completed.stderr
    assert files_under(dest) == SYNCED | {MARKER}

    completed = run_sync([str(dest), "--source", str(other), "--once", "--delete", "--adopt"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert read_marker(dest)["source"] == str(other)
    assert files_under(dest) == SYNCED - {"README.md"} | {MARKER}


def test_invalid_syncignore_is_a_usage_error_naming_the_line(project, tmp_path, plain_env):
    (project / ".syncignore").write_text("*.tmp\n\\\n")
    completed = run_sync([str(tmp_path / "mirror"), "--source", str(project), "--once"], plain_env)
    assert completed.returncode == 2
    assert ".syncignore line 2: '\\\\' is not a gitignore pattern" in completed.stderr


def test_missing_watchman_names_the_install_commands(project, tmp_path, plain_env):
    only_rsync = tmp_path / "bin-without-watchman"
    only_rsync.mkdir()
    (only_rsync / "rsync").symlink_to(shutil.which("rsync"))
    completed = run_sync(
        [str(tmp_path / "mirror"), "--source", str(project)], {**plain_env, "PATH": str(only_rsync)}
    )
    assert completed.returncode == 1
    assert "watchman is not installed" in completed.stderr
    assert "sudo apt-get install watchman" in completed.stderr
    assert "brew install watchman" in completed.stderr


# --------------------------------------------------------------------------------------------------
# Excludes: rsync and the watchman-side filter must agree


TRICKY_SYNCIGNORE = """
# comment
*.log
!keep.log
/build/
docs/**/draft.md
**/secret
logs/
a/b.txt
/*.csv
!/wanted.csv
cache/**
!/mlruns/
"""

TRICKY_TREE = [
    "x.log",
    "sub/y.log",
    "keep.log",
    "sub/keep.log",
    "build/out.o",
    "src/build/kept.py",
    "docs/draft.md",
    "docs/a/b/draft.md",
    "docs/other.md",
    "secret",
    "deep/er/secret",
    "deep/secret/inside.txt",
    "logs/run.txt",
    "src/logs/x.txt",
    "a/b.txt",
    "z/a/b.txt",
    "table.csv",
    "wanted.csv",
    "sub/table.csv",
    "cache/c.bin",
    "results/r.txt",
    "src/results/ok.py",
    "data/d.bin",
    "src/data/loader.py",
    "pkg/__pycache__/m.pyc",
    "pkg/m.pyc",
    ".git/HEAD",
    "sub/.git",
    "mlruns/0/meta.yaml",
    "sub/mlruns/1/meta.yaml",
    ".venv/pyvenv.cfg",
    "venv/pyvenv.cfg",
    "app.egg-info/PKG-INFO",
    "notes.txt~",
    ".watchman-cookie-vm-1-2",
    "plain.py",
    ".ginlab-sync.json",  # the source is itself a mirror: its marker is not this mirror's
    "sub/.ginlab-sync.json",
]


def test_rsync_sends_exactly_what_the_filter_does_not_exclude(tmp_path, plain_env):
    require_tool("rsync")
    source = tmp_path / "source"
    for path in TRICKY_TREE:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(path)
    (source / ".syncignore").write_text(TRICKY_SYNCIGNORE)
    sync_filter = gsync.build_filter(source)
    expected = {path for path in files_under(source) if not sync_filter.is_excluded(path)}

    completed = run_sync([str(tmp_path / "mirror"), "--source", str(source), "--once"], plain_env)
    assert completed.returncode == 0, completed.stderr
    assert files_under(tmp_path / "mirror") == expected | {MARKER}
    assert read_marker(tmp_path / "mirror")["source"] == str(source), "the source's own marker stays home"
    # And the filter itself matches gitignore semantics on these paths.
    assert expected == {
        ".syncignore",
        "keep.log",
        "sub/keep.log",
        "src/build/kept.py",
        "docs/other.md",
        "z/a/b.txt",
        "wanted.csv",
        "sub/table.csv",
        "src/results/ok.py",
        "src/data/loader.py",
        "plain.py",
        "mlruns/0/meta.yaml",  # a default brought back by `!`, at the top only
        "sub/.ginlab-sync.json",  # only the top-level marker is DEST's own
    }


@pytest.mark.parametrize(
    "line, rules",
    [
        ("# comment", []),
        ("", []),
        ("*.log", ["- *.log"]),
        ("!keep.log", ["+ keep.log"]),
        ("/build/", ["- /build/"]),
        ("a/b.txt", ["- /a/b.txt"]),
        ("**/secret", ["- secret"]),
        ("**/x/y", ["- x/y"]),
        ("docs/**/draft.md", ["- /docs/**/draft.md", "- /docs/draft.md"]),
        ("\\#hash", ["- #hash"]),
        ("trailing   ", ["- trailing"]),
    ],
)
def test_gitignore_lines_become_rsync_rules(line, rules):
    assert gsync.gitignore_to_rsync(line) == rules


def test_cache_rules_are_perishable():
    assert gsync.gitignore_to_rsync("__pycache__/", perishable=True) == ["-p __pycache__/"]
    rules = gsync.build_filter(Path("/nonexistent")).rsync_rules()
    assert "-p __pycache__/" in rules and "- /results/" in rules
    assert rules[:3] == ["- .git", "- .watchman-cookie-*", "- /.ginlab-sync.json"], (
        "git, cookies and DEST's marker come first: no `!` can undo them"
    )


def test_rsync_stats_are_parsed():
    output = (
        "*deleting   old.py\n>f+++++++++ src/a.py\n.d..t...... src/\n\n"
        "Number of files: 22 (reg: 9, dir: 13)\n"
        "Number of deleted files: 1 (reg: 1)\nNumber of regular files transferred: 2\n"
        "Total transferred file size: 123,458 bytes\nTotal bytes sent: 1,124,072\n"
    )
    result = gsync.parse_rsync_output(output, seconds=0.25)
    assert (result.num_files, result.num_deleted, result.num_bytes, result.num_bytes_sent) == (
        2,
        1,
        123458,
        1124072,
    )
    assert result.changes == ("*deleting   old.py", ">f+++++++++ src/a.py", ".d..t...... src/")
    assert result.summary() == "2 files, 123.5 kB (1.1 MB sent), 1 deleted in 0.25 s"


def test_load_destination():
    source = Path("/tmp/project")
    assert gsync.load_destination("alice@cluster:work/ginlab", source) == gsync.Destination(
        "work/ginlab", "alice@cluster"
    )
    assert gsync.load_destination("./odd:name", source).host is None  # a slash before the colon: local
    with pytest.raises(gsync.UsageError, match="remote home or root folder"):
        gsync.load_destination("cluster:.", source)


# --------------------------------------------------------------------------------------------------
# Watching


def test_watch_follows_create_modify_delete_rename(project, tmp_path, env, watchman_sock, start_watcher):
    dest = tmp_path / "mirror"
    watcher = start_watcher([str(dest), "--source", str(project), "--delete"], env)
    watcher.wait_for_output(r"initial sync: 5 files")
    assert files_under(dest) == SYNCED | {MARKER}

    (project / "src/pkg/new.py").write_text("created\n")
    wait_until(lambda: (dest / "src/pkg/new.py").is_file(), what="a created file")
    (project / "src/pkg/model.py").write_text("print('model v2')\n")
    wait_until(
        lambda: (dest / "src/pkg/model.py").read_text() == "print('model v2')\n", what="a modification"
    )
    (project / "README.md").unlink()
    wait_until(lambda: not (dest / "README.md").exists(), what="a deletion")
    (project / "src/pkg/new.py").rename(project / "src/pkg/renamed.py")
    wait_until(
        lambda: (dest / "src/pkg/renamed.py").is_file() and not (dest / "src/pkg/new.py").exists(),
        what="a file rename",
    )
    (project / "configs").rename(project / "gin_configs")
    wait_until(
        lambda: (dest / "gin_configs/base.gin").is_file() and not (dest / "configs").exists(),
        what="a folder rename",
    )

    # Excluded paths never arrive: write them, then a synced file, and check once that one is there.
    (project / "results/run2").mkdir()
    (project / "results/run2/metrics.csv").write_text("step,loss\n")
    (project / "src/pkg/__pycache__/new.cpython-311.pyc").write_text("")
    (project / "src/pkg/draft.tmp").write_text("")
    (project / "src/pkg/after.py").write_text("")
    wait_until(lambda: (dest / "src/pkg/after.py").exists(), what="the file after the excluded ones")
    assert not (dest / "results").exists() and not (dest / "src/pkg/draft.tmp").exists()
    assert not (dest / "src/pkg/__pycache__").exists()

    assert str(project) in watched_roots(watchman_sock)
    assert watcher.interrupt() == 0
    assert "stopped" in watcher.stderr
    assert str(project) not in watched_roots(watchman_sock)


def test_a_watch_that_existed_before_is_left_in_place(project, tmp_path, env, watchman_sock, start_watcher):
    import pywatchman

    with pywatchman.client(sockpath=watchman_sock) as client:
        client.query("watch-project", str(project))  # someone else's watch, e.g. an editor's
    watcher = start_watcher([str(tmp_path / "mirror"), "--source", str(project)], env)
    watcher.wait_for_output(r"initial sync")
    assert watcher.interrupt() == 0
    assert str(project) in watched_roots(watchman_sock)
    with pywatchman.client(sockpath=watchman_sock) as client:
        client.query("watch-del", str(project))


def test_watch_ignores_changes_to_excluded_paths(project, tmp_path, env, start_watcher):
    dest = tmp_path / "mirror"
    watcher = start_watcher([str(dest), "--source", str(project)], env)
    watcher.wait_for_output(r"initial sync")
    for step in range(5):  # a training run writing its results and checkpoints
        (project / f"results/run1/step{step}.csv").write_text("1,2\n")
        (project / f"src/pkg/__pycache__/m{step}.pyc").write_text("")
    # A negative can only be seen by waiting: watchman reports in ~20-50 ms, so 0.5 s is ample.
    time.sleep(0.5)
    assert "synced: " not in watcher.stdout, "a change to excluded paths alone must not run rsync"
    (project / "src/pkg/late.py").write_text("")
    wait_until(lambda: (dest / "src/pkg/late.py").exists(), what="late.py")
    assert watcher.interrupt() == 0


def test_watch_of_a_subfolder_of_a_watched_root(project, tmp_path, env, watchman_sock, start_watcher):
    """watchman watches the enclosing root (it has .git); paths come relative to the subfolder."""
    dest = tmp_path / "mirror"
    watcher = start_watcher([str(dest), "--source", str(project / "src")], env)
    watcher.wait_for_output(r"initial sync: 2 files")
    (project / "src/pkg/new.py").write_text("")
    wait_until(lambda: (dest / "pkg/new.py").exists(), what="pkg/new.py")
    assert str(project) in watched_roots(watchman_sock)
    assert watcher.interrupt() == 0
    assert str(project) not in watched_roots(watchman_sock)


def test_watch_without_delete_keeps_files_deleted_locally(project, tmp_path, env, start_watcher):
    dest = tmp_path / "mirror"
    watcher = start_watcher([str(dest), "--source", str(project)], env)
    watcher.wait_for_output(r"initial sync")
    (project / "README.md").unlink()
    (project / "src/pkg/marker.py").write_text("")
    wait_until(lambda: (dest / "src/pkg/marker.py").exists(), what="marker.py")
    assert (dest / "README.md").exists()
    assert watcher.interrupt() == 0


def test_changed_syncignore_is_reloaded(project, tmp_path, env, start_watcher):
    dest = tmp_path / "mirror"
    watcher = start_watcher([str(dest), "--source", str(project)], env)
    watcher.wait_for_output(r"initial sync")
    (project / ".syncignore").write_text("*.tmp\n!\n")
    watcher.wait_for_output(
        r"\.syncignore line 2: '!' is not a gitignore pattern .*; still using the excludes"
    )
    (project / ".syncignore").write_text("*.tmp\n*.ckpt\n")
    watcher.wait_for_output(r"reloaded the excludes")
    (project / "src/pkg/weights.ckpt").write_text("big")
    (project / "src/pkg/marker.py").write_text("")
    wait_until(lambda: (dest / "src/pkg/marker.py").exists(), what="marker.py")
    assert not (dest / "src/pkg/weights.ckpt").exists()
    assert watcher.interrupt() == 0


def test_own_watchman_is_started_and_shut_down(project, tmp_path, plain_env, start_watcher):
    require_tool("watchman")
    dest = tmp_path / "mirror"
    watcher = start_watcher([str(dest), "--source", str(project), "--own-watchman"], plain_env)
    watcher.wait_for_output(r"initial sync")
    sock = re.search(r"started a private watchman \(socket (\S+),", watcher.stderr)[1]
    (project / "src/pkg/new.py").write_text("")
    wait_until(lambda: (dest / "src/pkg/new.py").exists(), what="new.py")
    assert watcher.interrupt() == 0

    def daemon_running():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if f"--sockname={sock}".encode() in cmdline.read_bytes():
                    return True
            except OSError:
                continue
        return False

    assert not daemon_running()
    assert not Path(sock).parent.exists(), "the private watchman's folder is removed"


# --------------------------------------------------------------------------------------------------
# A remote that fails


@pytest.fixture
def unreachable_rsh():
    """ssh to a closed port on loopback: fails at once with 'Connection refused'."""
    require_tool("ssh")
    port = closed_loopback_port()
    return f"ssh -p {port} -o ConnectTimeout=2 -o BatchMode=yes -o StrictHostKeyChecking=no"


def test_once_to_unreachable_dest_retries_then_fails(project, plain_env, unreachable_rsh):
    completed = run_sync(
        [
            "tester@127.0.0.1:mirror",
            "--source",
            str(project),
            "--once",
            "--rsh",
            unreachable_rsh,
            "--retries",
            "2",
            "--retry-wait",
            "0.05",
        ],
        plain_env,
    )
    assert completed.returncode == 1
    assert "retry 1 in 0.05 s" in completed.stderr and "retry 2 in 0.1 s" in completed.stderr
    assert "Connection refused" in completed.stderr
    # ssh exits 255; rsync reports 255 or 12 (stream closed) depending on which side notices first.
    assert re.search(r"sync\.py: failed: rsync exit (255|12)", completed.stderr)
    assert "Traceback" not in completed.stderr


def test_watch_keeps_retrying_unreachable_dest_and_stops_cleanly(
    project, env, unreachable_rsh, start_watcher
):
    watcher = start_watcher(
        [
            "tester@127.0.0.1:mirror",
            "--source",
            str(project),
            "--rsh",
            unreachable_rsh,
            "--retry-wait",
            "0.05",
        ],
        env,
    )
    watcher.wait_for_output(r"failed \(rsync exit (255|12).*Connection refused.*\); retry \d+ in", count=4)
    assert re.search(r"retry 1 in 0\.05 s.*\n.*retry 2 in 0\.1 s.*\n.*retry 3 in 0\.2 s", watcher.stderr)
    assert watcher.interrupt() == 0
    assert "Traceback" not in watcher.stderr


def test_remote_that_comes_back_gets_the_changes(project, tmp_path, env, start_watcher):
    """A fake ssh runs the remote rsync locally, but fails its first 3 connections."""
    fake_ssh = tmp_path / "flaky-ssh"
    attempts = tmp_path / "attempts"
    fake_ssh.write_text(
        "#!/bin/sh\n"
        f"echo x >> {attempts}\n"
        f"if [ $(wc -l < {attempts}) -le 3 ]; then\n"
        '  echo "ssh: connect to host cluster: No route" >&2; exit 255\n'
        "fi\n"
        'while [ "$1" != rsync ]; do shift; done\n'
        'exec sh -c "$*"\n'
    )
    fake_ssh.chmod(0o755)
    dest = tmp_path / "remote-home" / "mirror"
    dest.parent.mkdir()
    watcher = start_watcher(
        [f"alice@cluster:{dest}", "--source", str(project), "--rsh", str(fake_ssh), "--retry-wait", "0.05"],
        env,
    )
    watcher.wait_for_output(r"retry 3 in")
    (project / "src/pkg/while_down.py").write_text("")
    watcher.wait_for_output(r"works again after 3 failed attempts")
    wait_until(lambda: files_under(dest) >= SYNCED | {"src/pkg/while_down.py"}, what="the catch-up sync")
    assert watcher.interrupt() == 0


# --------------------------------------------------------------------------------------------------
# Stopping ends rsync's remote shell too


def live_group_members(group: int) -> list[int]:
    """The live (not zombie) processes of process group `group`, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(process_group) == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


class HangingSsh:
    """A remote shell that never connects: it notes its pid, its child's and its process group, then waits.

    Args:
        ignore_sigterm: make it (and its child) ignore SIGTERM, so that only SIGKILL ends them.
        quiet_child: its child writes to /dev/null instead of holding rsync's stdout and stderr open.
    """

    def __init__(self, folder: Path, ignore_sigterm: bool = False, quiet_child: bool = False):
        self.path = folder / "hanging-ssh"
        self.info = folder / "hanging-ssh.info"
        self.path.write_text(
            "#!/bin/sh\n"
            + ("trap '' TERM\n" if ignore_sigterm else "")
            + ("sleep 600 >/dev/null 2>&1 &\n" if quiet_child else "sleep 600 &\n")
            + f"echo \"$$ $! $(cut -d' ' -f5 /proc/$$/stat)\" > {self.info}.tmp\n"
            + f"mv {self.info}.tmp {self.info}\n"
            + "wait\n"
        )
        self.path.chmod(0o755)

    def wait_until_started(self) -> tuple[int, int, int]:
        """(its pid, its child's pid, its process group), once it runs."""
        wait_until(self.info.exists, what="the remote shell to start")
        pid, child, group = map(int, self.info.read_text().split())
        return pid, child, group

    def kill_leftovers(self) -> None:
        """SIGKILL the shell and its child if they are still there (the bug under test leaves them)."""
        if self.info.exists():
            for pid in map(int, self.info.read_text().split()[:2]):
                if process_alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "mode, signum, ignore_sigterm, exit_code",
    [
        (["--once"], signal.SIGINT, False, 1),
        ([], signal.SIGINT, False, 0),
        ([], signal.SIGTERM, True, 0),
        ([], signal.SIGHUP, False, 0),
    ],
    ids=["once-ctrl-c", "watch-ctrl-c", "watch-sigterm-ignored-by-ssh", "watch-terminal-closed"],
)
def test_stopping_while_ssh_hangs_leaves_no_process_behind(
    project, tmp_path, env, start_watcher, mode, signum, ignore_sigterm, exit_code
):
    ssh = HangingSsh(tmp_path, ignore_sigterm)
    watcher = start_watcher(
        [f"alice@cluster:{tmp_path / 'mirror'}", "--source", str(project), "--rsh", str(ssh.path), *mode], env
    )
    try:
        pid, child, group = ssh.wait_until_started()
        watcher.process.send_signal(signum)
        assert watcher.process.wait(timeout=30) == exit_code, watcher.stderr
        assert not process_alive(pid) and not process_alive(child), "the remote shell outlived sync.py"
        assert group != os.getpgrp(), "rsync and its remote shell run in a process group of their own"
        assert live_group_members(group) == []
        assert ("stopped" if exit_code == 0 else "interrupted before the sync finished") in watcher.stderr
        assert "Traceback" not in watcher.stderr
    finally:
        ssh.kill_leftovers()


@pytest.mark.parametrize("quiet_child", [True, False], ids=["quiet-child", "child-holds-output"])
def test_rsync_timeout_leaves_no_process_behind(project, tmp_path, quiet_child):
    """rsync gives up on a silent remote shell after its I/O timeout; what it started must end too."""
    require_tool("rsync")
    ssh = HangingSsh(tmp_path, quiet_child=quiet_child)
    config = gsync.SyncConfig(
        source=project,
        dest=gsync.Destination(str(tmp_path / "mirror"), host="alice@cluster"),
        rsh=str(ssh.path),
        retries=0,
        io_timeout=1,
    )
    errors = []

    def run():
        try:
            gsync.sync(config)
        except gsync.RsyncError as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        thread.join(timeout=60)  # a deadline against a hang, not a measurement
        assert not thread.is_alive(), "sync did not return after rsync's own timeout"
        assert errors and errors[0].returncode == 30 and "io timeout" in str(errors[0])
        pid, child, group = ssh.wait_until_started()
        assert not process_alive(pid) and not process_alive(child), "the remote shell outlived rsync"
        assert live_group_members(group) == []
    finally:
        ssh.kill_leftovers()
        thread.join(timeout=10)
