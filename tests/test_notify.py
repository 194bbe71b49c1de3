"""Notifications with real processes and a real (local) HTTP server as the sink: a diverged run and a frozen
one are reported, each once and within seconds; a grid of failing runs sends a handful of messages, not one
each; a URL Apprise does not know stops the run before anything is written; a sink that is down never fails
a run."""

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime

import pytest
from conftest import ROOT, TRAIN, env, read_json, train, train_here
from test_experiments import cli, fragile_config, write_experiment

from ginlab.runfolder import parse_time

TOY = ROOT / "configs" / "toy.gin"


class Sink:
    """A local HTTP server that records every JSON notification Apprise posts (json:// URLs)."""

    def __init__(self):
        self.messages: list[dict] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.messages.append({**json.loads(body), "arrived": time.time()})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, deadline: float) -> list[dict]:
        """Poll until `count` messages arrived or time.time() passes `deadline`; the messages so far."""
        while len(self.messages) < count and time.time() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink(tmp_path, monkeypatch):
    # The shared notification state goes under the test's own folder, never the user's ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GINLAB_NOTIFY_URLS", raising=False)
    server = Sink()
    yield server
    server.close()


def epoch_seconds(iso: str) -> float:
    return parse_time(iso).timestamp()


def test_a_diverging_run_notifies_once_within_5_s(tmp_path, sink):
    run = tmp_path / "run"
    train(run, TOY, "-b", f"training_loop.optimizer=@torch.optim.SGD#torch.optim.SGD.lr=1e9#"
          f"notify.urls=['{sink.url}']", check=4)  # fmt: skip
    meta = read_json(run / "meta.json")
    assert meta["status"] == "diverged"
    ended = epoch_seconds(meta["ended"])
    messages = sink.wait_for(1, deadline=ended + 5)
    assert len(messages) == 1, messages
    message = messages[0]
    assert message["arrived"] - ended <= 5 + 1  # meta.json's time has whole seconds
    assert "DIVERGED" in message["title"] and run.name in message["title"]
    assert "diverged and stopped" in message["message"] and str(run.resolve()) in message["message"]
    time.sleep(1)
    assert len(sink.messages) == 1  # one message per event


def test_a_frozen_run_is_stale_for_every_reader_and_reported_once(tmp_path, sink):
    import psutil

    from ginlab.analysis import load_runs
    from ginlab.runfolder import read_meta, run_status

    run = tmp_path / "run"
    bindings = (f"training_loop.n_epochs=500#toy.num_samples=2048#heartbeat.every_seconds=0.2#"
                f"notify.urls=['{sink.url}']#notify.stale_after=5")  # fmt: skip
    process = subprocess.Popen([*TRAIN, str(run), str(TOY), "-b", bindings], env=env(), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "steps.jsonl").is_file() or not (run / "steps.jsonl").stat().st_size:
            assert process.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        watchdogs = watchdog_pids(process.pid)
        assert len(watchdogs) == 1  # the run started its watchdog
        # ... without the URLs on its command line, which every user of the machine can read
        assert "127.0.0.1" not in " ".join(psutil.Process(watchdogs[0]).cmdline())
        os.kill(process.pid, signal.SIGSTOP)  # frozen: alive, but its heartbeat stops
        frozen_at = time.time()
        messages = sink.wait_for(1, deadline=frozen_at + 60)
        assert len(messages) == 1, "no stale notification"
        beat = epoch_seconds(read_meta(run)["heartbeat"])
        # The event: the heartbeat is 5 s old (stale_after). The message comes within 5 s of it.
        assert messages[0]["arrived"] - (beat + 5) <= 5 + 1
        assert "STALE" in messages[0]["title"] and "heartbeat stopped" in messages[0]["message"]
        assert str(process.pid) in messages[0]["message"]
        # Every reader applies the same rule (with the same stale_after) and says stale.
        assert run_status(read_meta(run), stale_after=5) == "stale"
        assert load_runs(run, stale_after=5).loc[0, "status"] == "stale"
        time.sleep(3)
        assert len(sink.messages) == 1, "stale is reported once"
        process.kill()  # now it dies without recording anything: it was reported stale already
        os.kill(process.pid, signal.SIGCONT)
        process.wait()
        deadline = time.monotonic() + 30
        while any(pid_alive(pid) for pid in watchdogs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(pid) for pid in watchdogs), "the watchdog outlived its run"
        assert len(sink.messages) == 1
    finally:
        if process.poll() is None:
            process.kill()
            os.kill(process.pid, signal.SIGCONT)
            process.wait()


def test_a_killed_run_is_reported_stale_by_its_watchdog(tmp_path, sink):
    run = tmp_path / "run"
    bindings = (f"training_loop.n_epochs=500#toy.num_samples=2048#heartbeat.every_seconds=0.2#"
                f"notify.urls=['{sink.url}']#notify.stale_after=5")  # fmt: skip
    process = subprocess.Popen([*TRAIN, str(run), str(TOY), "-b", bindings], env=env(), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "steps.jsonl").is_file():
            assert process.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        process.kill()  # SIGKILL: no chance to record anything
        process.wait()
        killed = time.time()
        messages = sink.wait_for(1, deadline=killed + 5)
        assert len(messages) == 1 and "STALE" in messages[0]["title"]
        assert "gone without recording how it ended" in messages[0]["message"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_unknown_url_scheme_exits_2_and_writes_nothing(tmp_path, sink, capsys):
    run = tmp_path / "run"
    code, _, err = train_here(run, TOY, "-b", "notify.urls=['jsn://127.0.0.1:9/hook']", capsys=capsys)
    assert code == 2 and not run.exists()
    assert "notify.urls[0] = 'jsn://127.0.0.1:9/hook'" in err and "-b 'notify.urls=" in err
    assert "'jsn://' is not a notification service Apprise knows" in err and "Did you mean: json" in err
    assert "json://host:port/path" in err  # what would be valid


@pytest.mark.parametrize(
    "binding, expected",
    [
        (
            'notify.urls="json://127.0.0.1:9/"',
            ["notify.urls = 'json://127.0.0.1:9/'", "a list of Apprise URLs"],
        ),
        ('notify.events=["finish"]', ["notify.events", "'finish' is none (did you mean 'finished'?)"]),
        ("notify.burst=0", ["notify.burst = 0", "a positive integer"]),
        ("notify.retries=-1", ["notify.retries = -1", "an integer >= 0"]),
        ("notify.stale_after=0", ["notify.stale_after = 0", "> 0"]),
        ('notify.urls=["json://"]', ["Apprise knows 'json://' but cannot read this URL"]),
    ],
)
def test_bad_notify_settings_exit_2_writing_nothing(tmp_path, sink, capsys, binding, expected):
    code, _, err = train_here(tmp_path / "run", TOY, "-b", binding, capsys=capsys)
    assert code == 2 and not (tmp_path / "run").exists()
    for text in expected:
        assert text in err, err


def test_an_unknown_scheme_in_the_environment_variable_exits_2_too(tmp_path, sink, monkeypatch):
    monkeypatch.setenv("GINLAB_NOTIFY_URLS", "nosuchservice://x")
    result = train(tmp_path / "run", TOY, check=2)
    assert "$GINLAB_NOTIFY_URLS entry 1 = 'nosuchservice://x'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_unreachable_target_is_a_warning_with_retries_and_the_run_finishes(tmp_path, sink):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "run"
    result = train(run, TOY, "-b", f"training_loop.n_epochs=1#notify.urls=['json://127.0.0.1:{port}/']#"
                   "notify.retries=2#notify.backoff_seconds=0.2", check=0)  # fmt: skip
    assert read_json(run / "meta.json")["status"] == "finished"
    log = (run / "log.txt").read_text() + result.stderr
    assert "failed (attempt 1 of 3); trying again in 0.2 s" in log
    assert "failed (attempt 2 of 3); trying again in 0.4 s" in log
    assert "failed 3 times; giving up (the run is not affected)" in log


@pytest.mark.slow  # 50 runs through the local backend (warm-started; fresh interpreters took 2-3 minutes)
def test_a_grid_of_50_failing_runs_sends_a_handful_of_messages(tmp_path, sink):
    """Each run fails at its first training step (a model that raises: a failure at training time)."""
    config = fragile_config(tmp_path)
    main = write_experiment(
        tmp_path, "storm", {"training_loop.seed": list(range(50))}, configs=[str(config)],
        bindings=["fragile.fail_at = 0", "training_loop.n_epochs = 1", f"notify.urls = ['{sink.url}']",
                  "notify.window_seconds = 3600"],  # a busy machine may take over 10 min for the 50 runs
        x="training_loop.seed",
    )  # fmt: skip
    assert cli(main, "prepare", "--no-check").returncode == 0
    started = time.time()
    result = cli(main, "run", "--retries", "0", timeout=900, pythonpath=[tmp_path])
    assert result.returncode == 1, result.stdout[-3000:]
    runs = tmp_path / "results" / "runs"
    assert sorted(read_json(p)["status"] for p in runs.glob("*/meta.json")) == ["failed"] * 50
    messages = sink.wait_for(10**6, deadline=time.time() + 3)
    titles = [m["title"] for m in messages]
    assert len(messages) <= 5, titles  # a handful, not 50
    one_by_one = sum("FAILED" in title for title in titles)
    assert one_by_one >= 1 and titles[-1] == "[storm] experiment finished: 50 failed"
    closing = messages[-1]["message"]
    held = int(re.search(r"(\d+) events held back", closing).group(1))
    assert one_by_one + held == 50, (titles, closing)  # every failure told once: alone or in the digest
    assert "seed=" in closing and "FAILED" in closing  # the digest names them
    assert f"Report: {tmp_path / 'results' / 'report' / 'summary.md'}" in closing
    print(f"50 failing runs: {time.time() - started:.0f} s, {len(messages)} messages: {titles}")


def watchdog_pids(parent: int) -> list[int]:
    import psutil

    return [
        child.pid
        for child in psutil.Process(parent).children()
        if "ginlab.health.watchdog" in " ".join(child.cmdline())
    ]


def pid_alive(pid: int) -> bool:
    from ginlab.processes import process_alive

    return process_alive(pid)


def test_the_event_time_is_iso():
    from ginlab.health.events import Event

    assert datetime.fromisoformat(Event("failed", "t", "b").time).tzinfo is not None


def test_the_outbox_sends_a_burst_then_holds_then_sends_one_digest_a_window_later(tmp_path, monkeypatch):
    from ginlab.health import throttle
    from ginlab.health.events import Event, compose

    clock = [1000.0]
    monkeypatch.setattr(throttle.time, "time", lambda: clock[0])
    outbox = throttle.Outbox(tmp_path, burst=2, window_seconds=60)
    events = [Event("failed", f"run {i} FAILED", "...") for i in range(6)]
    assert outbox.admit(events[0]) == [events[0]] and outbox.admit(events[1]) == [events[1]]
    assert outbox.admit(events[2]) is None and outbox.admit(events[3]) is None  # held
    clock[0] += 59
    assert outbox.admit(events[4]) is None  # still within the window of the last message
    clock[0] += 2
    batch = outbox.admit(events[5])  # a whole window later: everything held, and this one, in one message
    assert batch == events[2:6]
    title, body = compose(batch)
    assert title == "4 events: 4 failed" and body.startswith("4 events held back")
    assert outbox.admit(Event("failed", "x", "")) is not None  # the window's second message
    assert outbox.admit(Event("failed", "y", "")) is None  # its third: held again
    assert [e.title for e in outbox.drain()] == ["y"]  # the experiment's closing message takes it
    assert outbox.drain() == []


@pytest.mark.slurm
def test_a_run_in_a_slurm_job_notifies_from_the_job_and_run_closes_the_experiment(tmp_path, sink):
    from test_slurm import cluster_problem

    problem = cluster_problem()
    if problem:
        if os.environ.get("GINLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"GINLAB_REQUIRE_SERVICES=1 but {problem}")
        pytest.skip(problem)
    main = write_experiment(
        tmp_path, "onslurm", {"torch.optim.SGD.lr": [1e9]}, x="torch.optim.SGD.lr",
        bindings=["training_loop.optimizer = @torch.optim.SGD", "training_loop.n_epochs = 2",
                  f"notify.urls = ['{sink.url}']"],
    )  # fmt: skip
    assert cli(main, "prepare", "--no-check").returncode == 0
    result = cli(main, "run", "--backend", "slurm", "--time", "00:10:00", "--poll", "1", timeout=600)
    assert "DIVERGED lr=1000000000.0" in result.stdout, result.stdout[-3000:]
    messages = sink.wait_for(2, deadline=time.time() + 5)
    titles = [m["title"] for m in messages]
    # The run's own message came from its job (bin/train.py there), then `run`'s closing message.
    assert titles == ["[onslurm] lr=1000000000.0 DIVERGED", "[onslurm] experiment finished: 1 diverged"], (
        titles
    )
    assert "Report: " in messages[1]["message"]


def test_a_finished_runs_message_names_its_numbers_and_folder(tmp_path, monkeypatch):
    from ginlab.health.events import run_ended_event

    monkeypatch.setenv("GINLAB_EXPERIMENT", "tune_lr")
    meta = {"status": "finished", "host": "node3", "started": "2026-12-03T10:00:00+00:00",
            "ended": "2026-12-03T10:01:05+00:00"}  # fmt: skip
    summary = {
        "epochs": 8,
        "best": {"epoch": 6, "step": 140, "val_acc": 0.99, "checkpoint": "checkpoints/best.ckpt"},
        "test": {"test_acc": 0.9815, "checkpoint": "checkpoints/best.ckpt"},
        "max": {"sys_peak_rss_mb": 812.4},
    }
    event = run_ended_event(tmp_path / "lr=0.001", meta, summary)
    assert event.kind == "finished" and event.title == "[tune_lr] lr=0.001 finished"
    assert event.body.splitlines() == [
        "Finished on node3 after 0:01:05: 8 epochs.",
        "test_acc 0.9815, best val_acc 0.99 (epoch 7)",
        "Peak memory 812 MiB.",
        f"Run folder: {(tmp_path / 'lr=0.001').resolve()}",
    ]
    assert run_ended_event(tmp_path, {**meta, "status": "interrupted"}, summary) is None  # not an event


def test_an_experiment_with_an_unknown_url_scheme_is_refused_before_anything_is_written(tmp_path, sink):
    main = write_experiment(tmp_path, "badurl", {"training_loop.seed": [0, 1]}, x="training_loop.seed",
                            bindings=["notify.urls = ['slak://T/B/C']"])  # fmt: skip
    result = cli(main, "prepare", "--no-check")
    assert result.returncode == 2, result.stdout
    assert (
        "'slak://' is not a notification service Apprise knows" in result.stdout and "slack" in result.stdout
    )
    assert not (tmp_path / "results").exists()
