"""``resgrad watch``'s server: its JSON endpoint against a file being written (a thread appends,
half lines included, while the test polls), a file cut back by a resume, alarms on the rows,
127.0.0.1 only, a port in use, and Ctrl-C / SIGTERM to the command (a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resgrad.cli import app
from resgrad.integrations.monitor_file import row_line
from resgrad.io import atomic_write
from resgrad.watch import make_server

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _rows(step, layers=5, vanish=False):
    return [{"step": step, "name": f"layer{i}.weight", "kind": "param", "block": i,
             "norm": (1e-7 if vanish and i == 0 else 1.0 + i + step / 1000), "rms": None, "numel": 4,
             "nonfinite": 0, "ratio": None} for i in range(layers)]


@pytest.fixture
def served(tmp_path):
    server = make_server(tmp_path, 0, window=20)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield tmp_path, server.url
    server.shutdown()
    server.server_close()


def _get(url, **headers):
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read()


def _data(url, offset=0, generation=None):
    q = f"offset={offset}" + (f"&generation={generation}" if generation is not None else "")
    return json.loads(_get(f"{url}data?{q}")[2])


def test_the_endpoint_follows_a_file_being_written_half_lines_included(served):
    folder, url = served
    path = folder / "monitor.jsonl"
    steps = list(range(0, 400, 10))
    done = threading.Event()

    def writer():
        with open(path, "ab", buffering=0) as f:
            for s in steps:
                data = "".join(map(row_line, _rows(s))).encode()
                cut = len(data) // 2 + 3  # a reader may come between the two halves of a line
                f.write(data[:cut])
                time.sleep(0.004)
                f.write(data[cut:])
                time.sleep(0.004)
        done.set()

    th = threading.Thread(target=writer)
    th.start()
    got, offset, gen, offsets, polls = [], 0, None, [], 0
    while True:
        finished = done.is_set()
        d = _data(url, offset, gen)
        assert not d["reset"]
        gen, offset = d["generation"], d["offset"]
        offsets.append(offset)
        got += d["rows"]
        polls += 1
        if finished and not d["more"]:
            break
    th.join()
    want = [[r["step"], "param", r["name"], r["norm"], 0, r["block"]] for s in steps for r in _rows(s)]
    assert got == want  # every row once, in order, none cut
    assert offsets == sorted(offsets) and offset == path.stat().st_size
    assert polls > 2  # it really polled while the file grew


def test_a_file_cut_back_by_a_resume_starts_the_reader_over(served):
    folder, url = served
    path = folder / "monitor.jsonl"
    path.write_text("".join(row_line(r) for s in range(0, 50, 10) for r in _rows(s)))
    d = _data(url)
    assert len(d["rows"]) == 25
    atomic_write(path, lambda f: f.write("".join(row_line(r) for s in range(0, 20, 10) for r in _rows(s))))
    d2 = _data(url, d["offset"], d["generation"])
    assert d2["reset"] and d2["generation"] != d["generation"]
    assert [r[0] for r in d2["rows"]] == [0] * 5 + [10] * 5


def test_metrics_and_alarms_reach_the_page(served):
    folder, url = served
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 2.0, "test_loss": 2.1}) + "\n")
    path = folder / "monitor.jsonl"
    path.write_text("".join(row_line(r) for s in range(0, 60, 10) for r in _rows(s, vanish=s >= 10)))
    d = _data(url)
    d = _data(url, d["offset"], d["generation"])  # a quiet poll: the last step is whole
    assert d["metrics"] == [{"epoch": 1, "train_loss": 2.0, "test_loss": 2.1}]
    assert [(a["kind"], a["step"], a["source"]) for a in d["alarms"]] == [("vanishing", 30, "watch")]
    assert "for 20 steps" in d["alarms"][0]["message"]


def test_an_alarm_the_run_wrote_is_shown_once(served):
    folder, url = served
    line = {"step": 5, "kind": "alarm", "alarm": "dead", "name": "fc", "since": 0, "value": 0.0,
            "message": "step 5: layer 'fc' has had a zero gradient for 5 steps (dead)"}
    (folder / "monitor.jsonl").write_text(json.dumps(line) + "\n")
    d = _data(url)
    assert d["rows"] == [] and [(a["kind"], a["message"], a["source"]) for a in d["alarms"]] == [
        ("dead", line["message"], "run")]


def test_it_serves_127_0_0_1_only(served):
    _, url = served
    assert url.startswith("http://127.0.0.1:")
    status, headers, body = _get(url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<canvas id=\"heat\"" in body and b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")
    with pytest.raises(urllib.error.HTTPError) as e:  # DNS rebinding: a foreign Host header
        _get(url, Host="attacker.example:80")
    assert e.value.code == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_another_host_is_refused_in_one_line(tmp_path, host):
    res = CliRunner().invoke(app, ["watch", str(tmp_path), "--host", host])
    assert res.exit_code == 2
    out = res.output.strip()
    assert len(out.splitlines()) <= 2 and f"--host {host!r}: resgrad watch serves on 127.0.0.1 only" in " ".join(
        out.split())


def test_a_port_in_use_is_one_line_naming_it_and_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = CliRunner().invoke(app, ["watch", str(tmp_path), "--port", str(port)])
    assert res.exit_code == 2
    line = " ".join(res.output.split())
    assert f"port {port} on 127.0.0.1 is in use" in line and "pass another --port" in line
    assert "Traceback" not in res.output


def test_a_missing_folder_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["watch", str(tmp_path / "no" / "such")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output


def _start(folder):
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "resgrad", "watch", str(folder), "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "watching" in line, line + proc.stderr.read()
    url = line.split(" at ", 1)[1].split()[0]
    assert _get(url)[0] == 200
    return proc, url


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_command_cleanly(tmp_path, signum):
    proc, url = _start(tmp_path)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "stopped" and err == ""
    with pytest.raises(OSError):  # the port is closed
        _get(url)


def test_the_server_and_its_alarms_import_no_torch(tmp_path):
    code = ("import sys\nfrom resgrad.watch import make_server\nfrom resgrad.verdicts.alarms import AlarmWatch\n"
            f"s = make_server({str(tmp_path)!r}, 0)\ns.server_close()\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_an_hf_trainers_log_lines_give_rows_and_a_loss_per_step(served):
    # What a TrainerCallback's on_log writes: {"step": global_step, **logs} (the README's snippet).
    folder, url = served
    lines = [{"step": s, "loss": 3.0 - s / 100, "learning_rate": 5e-5, "epoch": s / 40,
              "resgrad/grad_norm/transformer.h.0.attn.c_attn.weight": 0.5 + s / 1000,
              "resgrad/block_grad/0": 0.25, "resgrad/block_grad/1": 0.5, "resgrad/skip_grad/transformer.h.0": 0.2,
              "resgrad/nonfinite/total": 0.0} for s in (10, 20, 30)]
    (folder / "monitor.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    d = _data(url)
    assert d["losses"] == [[10, "loss", 2.9], [20, "loss", 2.8], [30, "loss", 2.7]]
    params = [r for r in d["rows"] if r[1] == "param"]
    assert params == [[s, "param", "transformer.h.0.attn.c_attn.weight", 0.5 + s / 1000, 0, None] for s in (10, 20, 30)]
    assert [r[2] for r in d["rows"] if r[1] == "input" and r[0] == 10] == ["unit 0", "unit 1"]
    assert [r[5] for r in d["rows"] if r[1] == "input" and r[0] == 10] == [0, 1]
    assert [r[1] for r in d["rows"] if r[0] == 10 and r[1] == "skip"] == ["skip"]


def test_a_negative_window_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["watch", str(tmp_path), "--window", "-5"])
    assert res.exit_code == 2 and "--window takes a number of steps >= 0, received -5" in res.output


def test_the_port_default_is_the_packages():
    import inspect

    from resgrad.cli import watch as cli_watch
    from resgrad.watch import DEFAULT_PORT

    assert inspect.signature(cli_watch.command).parameters["port"].default == DEFAULT_PORT


def test_a_long_file_comes_in_chunks_that_add_up(tmp_path):
    from resgrad.watch.follow import RunFiles

    lines = [r for s in range(0, 100, 10) for r in _rows(s)]
    (tmp_path / "monitor.jsonl").write_text("".join(map(row_line, lines)))
    rf = RunFiles(tmp_path)
    got, offset, gen, more, polls = [], 0, None, True, 0
    while more:
        d = rf.data(offset, gen, limit=7)
        assert len(d["rows"]) <= 7
        got += d["rows"]
        offset, gen, more = d["offset"], d["generation"], d["more"]
        polls += 1
    assert polls == 8 and [(r[0], r[2]) for r in got] == [(r["step"], r["name"]) for r in lines]


def test_watch_started_before_the_run_waits_for_its_folder(tmp_path):
    from resgrad.watch.follow import RunFiles

    run = tmp_path / "not-yet"
    rf = RunFiles(run)
    d = rf.data(0)
    assert d["found"] is False and d["rows"] == [] and d["source"] == str(run / "monitor.jsonl")
    run.mkdir()
    (run / "monitor.jsonl").write_text("".join(map(row_line, _rows(0))))
    d = rf.data(d["offset"], d["generation"])
    assert d["found"] is True and len(d["rows"]) == 5
