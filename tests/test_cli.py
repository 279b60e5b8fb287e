"""The `basetts` command, run as a real subprocess."""
from __future__ import annotations

import array
import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
import time
import wave

import pytest

from basetts.testing import Faults, LocalServer

from .helpers import needs_no_oss_device, no_sound_card_env

SECRET = "sk-CLI-SENTINEL-93e1"


def run(*args: str, env: dict = None, stdin: str = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BASETEN", "BASETTS"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "basetts.cli", *args], input=stdin, capture_output=True,
                          text=True, env=environment, timeout=timeout)


def read_wav(path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        return wav.readframes(wav.getnframes())


def test_say_to_a_file(tmp_path, basetts_server):
    out = tmp_path / "out.wav"
    result = run("say", "Hello from the command line.", "-o", str(out), "--url", basetts_server.url,
                 env={"BASETEN_API_KEY": basetts_server.api_key})
    assert result.returncode == 0, result.stderr
    assert read_wav(out) == basetts_server.expected_pcm("Hello from the command line.")
    assert basetts_server.last().settings["voice"] == "tara"


def test_say_reads_stdin(tmp_path, basetts_server):
    out = tmp_path / "out.wav"
    result = run("say", "-o", str(out), "--voice", "leo", "--url", basetts_server.url,
                 env={"BASETEN_API_KEY": basetts_server.api_key}, stdin="piped in\nover two lines\n")
    assert result.returncode == 0, result.stderr
    assert read_wav(out) == basetts_server.expected_pcm("piped in over two lines")
    assert basetts_server.last().settings["voice"] == "leo"


def test_stdin_is_spoken_as_it_arrives(tmp_path):
    with LocalServer() as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "basetts.cli", "say", "-o", str(tmp_path / "o.wav"), "--url", server.url,
             "--buffer-size", "3"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "BASETEN_API_KEY": server.api_key})
        try:
            deadline = time.monotonic() + 30
            while not server.handshakes:  # it connects while it waits for the first words...
                assert time.monotonic() < deadline, "no connection was opened while waiting for stdin"
                time.sleep(0.02)
            assert all(c.settings is None for c in server.conversations)  # ...but asks for nothing yet
            process.stdin.write("one two three four ")
            process.stdin.flush()
            deadline = time.monotonic() + 30
            while not (server.conversations and server.conversations[-1].segments):
                assert time.monotonic() < deadline, "nothing was spoken before stdin closed"
                time.sleep(0.02)
            assert server.conversations[-1].segments[0] == ["one", "two", "three"]
            process.stdin.write("five.\n")
            process.stdin.close()
            assert process.wait(30) == 0, process.stderr.read()
        finally:
            process.kill()
            process.wait()
        assert server.last().words == "one two three four five.".split()
        assert server.handshakes == 1  # the speech went over the connection opened while waiting


@needs_no_oss_device
def test_without_a_sound_card_say_fails_saying_what_writes_a_file_and_sends_nothing(tmp_path):
    with LocalServer() as server:
        result = subprocess.run([sys.executable, "-m", "basetts.cli", "say", "--url", server.url, "Hello there."],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                env={**os.environ, **no_sound_card_env(tmp_path), "BASETEN_API_KEY": server.api_key})
    assert result.returncode == 1, result.stderr
    assert "cannot play here: No audio output device found" in result.stderr and "-o FILE" in result.stderr
    assert server.conversations == [] and not list(tmp_path.glob("*.wav"))


@needs_no_oss_device
def test_say_with_neither_a_key_nor_a_sound_card_names_the_configuration_first(tmp_path):
    """What the user must fix first is the configuration: exit 2 naming it, and the sound card with it."""
    result = run("say", "hello", env={**no_sound_card_env(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert "BASETEN_API_KEY" in result.stderr and "cannot play here" in result.stderr
    with_output = run("say", "-o", str(tmp_path / "o.wav"), "hello", env=no_sound_card_env(tmp_path))
    assert with_output.returncode == 2 and "BASETEN_API_KEY" in with_output.stderr
    assert "cannot play" not in with_output.stderr  # a file needs no sound card


def test_say_reading_a_terminal_says_how_to_end_the_text(tmp_path, basetts_server):
    leader, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "basetts.cli", "say", "-o", str(tmp_path / "o.wav"), "--url", basetts_server.url],
            stdin=terminal, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "BASETEN_API_KEY": basetts_server.api_key})
        os.write(leader, b"typed words\n\x04")  # Ctrl+D ends the input
        _, err = process.communicate(timeout=30)
    finally:
        os.close(terminal)
        os.close(leader)
    assert process.returncode == 0, err
    assert "end it with Ctrl+D" in err
    assert read_wav(tmp_path / "o.wav") == basetts_server.expected_pcm("typed words")


@needs_no_oss_device
def test_the_demos_fallback_writes_a_wav_and_says_where(tmp_path):
    result = subprocess.run([sys.executable, "-m", "basetts.cli", "say", "--local", "--fallback-output",
                             "basetts-demo.wav", "Hello there."],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **no_sound_card_env(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "cannot play here (No audio output device found" in result.stderr
    assert f"writing {tmp_path / 'basetts-demo.wav'} instead" in result.stderr
    assert len(read_wav(tmp_path / "basetts-demo.wav")) > 24000  # the sentence, spoken by the local server


def test_local_serves_the_protocol_asked_for(tmp_path):
    """`--local --protocol X` starts a local server that speaks X: an HTTP protocol's is a predict route (a
    websocket server would have been posted to, and the call failed)."""
    result = run("say", "--local", "--protocol", "orpheus-http", "-o", str(tmp_path / "o.wav"), "Hello there.")
    assert result.returncode == 0, result.stderr
    assert "/environments/production/predict" in result.stderr and len(read_wav(tmp_path / "o.wav")) > 24000
    (tmp_path / "in.txt").write_text("One text.\nTwo texts.\n")
    result = run("batch", "--local", "--protocol", "kokoro", str(tmp_path / "in.txt"), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert len(read_wav(tmp_path / "out" / "000002.wav")) > 0
    for args, env in ((("doctor", "--local"), {"BASETTS_PROTOCOL": "xtts-streaming"}),
                      (("doctor", "--local", "--protocol", "kokoro"), None)):
        result = run(*args, env=env)
        assert re.search(r"ok  configuration: the local server at http://\S+/predict", result.stdout), result.stdout
        assert re.search(r"ok  time to first audio", result.stdout), result.stdout


def test_doctor_takes_the_endpoint_flags_say_takes(tmp_path, serve):
    """--protocol, --model-id, --environment and --api-key-file, as say and batch take them; nothing configured
    is a warning that says what to set, and the local server is measured instead; an unreadable key file exits 2."""
    server = serve(protocol="xtts-streaming")
    (tmp_path / "key").write_text(server.api_key)
    result = run("doctor", "--url", server.url, "--protocol", "xtts-streaming", "--api-key-file", str(tmp_path / "key"))
    assert f"ok  configuration: endpoint {server.url}, protocol xtts-streaming" in result.stdout, result.stdout
    assert "ok  time to first audio" in result.stdout and server.begun == 1
    result = run("doctor", env={"HOME": str(tmp_path)})
    assert "warn  configuration: missing the endpoint: --model-id ID or --url URL" in result.stdout
    assert "or --api-key-file FILE. Measuring against the local server instead." in result.stdout
    result = run("doctor", "--model-id", "abc123", "--api-key-file", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "--api-key-file: cannot read" in result.stderr


@pytest.mark.playback
@pytest.mark.parametrize("device", ["nonexistent", "99"])
def test_a_bad_device_is_a_usage_error_listing_the_devices(pulse, device):
    with LocalServer() as server:
        result = run("say", "--device", device, "--url", server.url, "hello",
                     env={"BASETEN_API_KEY": server.api_key, "PULSE_SERVER": pulse.server})
    assert result.returncode == 2, result.stderr
    assert f"--device {device}" in result.stderr and "Devices: " in result.stderr and "(default)" in result.stderr
    assert server.conversations == []


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_dash_writes_the_audio_to_stdout(basetts_server, fmt):
    result = subprocess.run([sys.executable, "-m", "basetts.cli", "say", "-o", "-", "--format", fmt, "--url",
                             basetts_server.url, "piped out"], capture_output=True, timeout=60,
                            env={**os.environ, "BASETEN_API_KEY": basetts_server.api_key})
    assert result.returncode == 0, result.stderr
    expected = basetts_server.expected_pcm("piped out")
    if fmt == "wav":
        from basetts.audio import wav_header
        assert result.stdout == wav_header() + expected  # a pipe: the header says "length unknown"
    else:
        assert result.stdout == expected
    assert not os.path.exists("-")


def test_a_failure_with_o_keeps_what_arrived_in_a_valid_file_and_says_partial(tmp_path):
    out = tmp_path / "partial.wav"
    with LocalServer(faults=Faults(drop_after_bytes=4096 * 3)) as server:
        result = run("say", " ".join(f"w{i}" for i in range(20)), "-o", str(out), "--url", server.url,
                     env={"BASETEN_API_KEY": server.api_key})
    assert result.returncode == 1
    # A server that drops every connection: recovered from twice (the file cut back each time), then given up
    # on, said in a warning line of the CLI's; the error's line last.
    *warned, error = result.stderr.strip().splitlines()
    assert warned and all(line.startswith("basetts: WARNING: ") for line in warned)
    assert "partial" in error and str(out) in error
    assert read_wav(out) == server.expected_pcm(" ".join(f"w{i}" for i in range(20)))[:4096 * 3]


def test_ctrl_c_with_o_keeps_what_arrived_and_exits_130(tmp_path):
    out = tmp_path / "interrupted.pcm"
    with LocalServer(speed=1.0) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "basetts.cli", "say", "-o", str(out), "--url", server.url,
             " ".join(f"w{i}" for i in range(100))], stderr=subprocess.PIPE, text=True,
            env={**os.environ, "BASETEN_API_KEY": server.api_key})
        try:
            deadline = time.monotonic() + 20
            while not (out.exists() and out.stat().st_size >= 4096 * 4):
                assert time.monotonic() < deadline, "no audio arrived"
                time.sleep(0.02)
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err and "partial" in err
    data = out.read_bytes()
    assert len(data) >= 4096 * 4 and server.expected_pcm(" ".join(f"w{i}" for i in range(100))).startswith(data)


def test_an_unknown_output_extension_is_a_usage_error_before_anything_is_sent(tmp_path, basetts_server):
    result = run("say", "hi", "-o", str(tmp_path / "out.xyz"), "--url", basetts_server.url,
                 env={"BASETEN_API_KEY": basetts_server.api_key})
    assert result.returncode == 2 and ".wav, .pcm" in result.stderr and ".mp3" in result.stderr
    assert basetts_server.conversations == [] and not (tmp_path / "out.xyz").exists()
    result = run("say", "hi", "-o", str(tmp_path / "missing" / "out.wav"), "--url", basetts_server.url,
                 env={"BASETEN_API_KEY": basetts_server.api_key})
    assert result.returncode == 2 and "missing does not exist" in result.stderr and "holds none" not in result.stderr
    assert basetts_server.conversations == []


def test_o_writes_the_format_the_name_says(tmp_path, basetts_server):
    import soundfile

    out = tmp_path / "out.flac"
    result = run("say", "a flac file", "-o", str(out), "--url", basetts_server.url,
                 env={"BASETEN_API_KEY": basetts_server.api_key})
    assert result.returncode == 0, result.stderr
    samples, rate = soundfile.read(str(out), dtype="int16")
    assert rate == 24000 and samples.tobytes() == basetts_server.expected_pcm("a flac file")


def test_version():
    import basetts

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"basetts {basetts.__version__}"


def test_model_id_environment_and_timeouts_are_flags_and_the_key_comes_from_a_file(tmp_path, basetts_server):
    key_file = tmp_path / "key"
    key_file.write_text(basetts_server.api_key + "\n")
    out = tmp_path / "out.wav"
    result = run("say", "flagged", "-o", str(out), "--url", basetts_server.url, "--api-key-file", str(key_file),
                 "--read-timeout", "5", "--first-audio-timeout", "5", "--connect-timeout", "2",
                 "--handshake-timeout", "5")
    assert result.returncode == 0, result.stderr
    assert read_wav(out) == basetts_server.expected_pcm("flagged")
    result = run("say", "hi", "-o", str(out), "--model-id", "bad/id", "--api-key-file", str(key_file))
    assert result.returncode == 2 and "model_id" in result.stderr
    result = run("say", "hi", "-o", str(out), "--url", basetts_server.url, "--api-key-file", str(tmp_path / "none"))
    assert result.returncode == 2 and "--api-key-file" in result.stderr
    assert run("say", "hi", "--read-timeout", "0").returncode == 2


@pytest.mark.parametrize("command", ["say", "batch", "voices", "doctor"])
def test_a_key_given_as_a_flag_is_refused_saying_where_it_goes_and_never_read_as_a_file(tmp_path, command):
    """argparse took `--api-key KEY` for an abbreviation of --api-key-file: "cannot read KEY", the key echoed."""
    (tmp_path / "secret-k").write_text("not a key file")  # were the flag a file's name, this would be read
    args = {"say": ["hi", "-o", "o.wav"], "batch": ["in.txt", "out"], "voices": [], "doctor": []}[command]
    result = subprocess.run([sys.executable, "-m", "basetts.cli", command, *args, "--api-key", "secret-k"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "BASETEN_API_KEY" in result.stderr and "--api-key-file FILE" in result.stderr
    assert "secret-k" not in result.stderr + result.stdout
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "out").exists()


def test_bad_option_values_are_clear_usage_errors():
    result = run("serve", "--fault", "drop_after_bytes=abc")
    assert result.returncode == 2 and "drop_after_bytes='abc': expected a whole number" in result.stderr
    result = run("say", "--buffer-size", "-3", "x")
    assert result.returncode == 2 and "must be above 0" in result.stderr


def test_a_late_first_audio_gets_a_status_line(tmp_path):
    with LocalServer(faults=Faults(stall_after_bytes=0, stall_seconds=3.0)) as server:
        result = run("say", "slow start", "-o", str(tmp_path / "o.wav"), "--url", server.url,
                     env={"BASETEN_API_KEY": server.api_key})
    assert result.returncode == 0, result.stderr
    assert "waiting for the first audio (a deployment scaled to zero can take minutes" in result.stderr
    with LocalServer() as server:
        result = run("say", "quick", "-o", str(tmp_path / "o.wav"), "--url", server.url,
                     env={"BASETEN_API_KEY": server.api_key})
    assert "waiting" not in result.stderr


@pytest.mark.playback
@pytest.mark.parametrize("from_stdin", [False, True], ids=["arguments", "stdin"])
def test_say_plays_on_the_sound_card(pulse, from_stdin):
    text = "Played through the card."
    with LocalServer() as server:
        recording = pulse.record()
        result = run("say", *([] if from_stdin else [text]), "--url", server.url, stdin=text if from_stdin else None,
                     env={**pulse.env, "BASETEN_API_KEY": server.api_key})
        played = recording.stop()
        assert server.handshakes == 1  # from stdin: the connection opened while waiting carried the speech
    assert result.returncode == 0, result.stderr
    assert server.expected_pcm(text) in played  # every sample, in order


def verdicts(stdout: str) -> dict:
    """{check name: status} from doctor's lines ("  ok  name: detail")."""
    lines = [line.split(":", 1)[0].split(None, 1) for line in stdout.splitlines() if not line.startswith("verdict")]
    return {name: status for status, name in lines}


@pytest.mark.playback
def test_doctor_checks_sound_and_endpoint_and_plays_a_tone(pulse):
    with LocalServer(api_key=SECRET) as server:
        recording = pulse.record()
        result = run("doctor", "--url", server.url, env={**pulse.env, "BASETEN_API_KEY": SECRET})
        played = recording.stop()
        assert len(server.conversations) == 1  # measured against the configured endpoint
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == {"PortAudio": "ok", "output device": "ok", "24 kHz": "ok", "test tone": "ok",
                                       "configuration": "ok", "time to first audio": "ok"}
    assert result.stdout.rstrip().endswith("verdict: all checks passed")
    assert SECRET not in result.stdout + result.stderr
    loud = [s for s in array.array("h", played) if abs(s) > 1000]
    assert len(loud) > 0.2 * 24000, "the test tone was not played"


@needs_no_oss_device
def test_doctor_without_a_sound_card_fails_those_checks_and_still_measures_the_local_server(tmp_path):
    result = run("doctor", env=no_sound_card_env(tmp_path))
    assert result.returncode == 1
    found = verdicts(result.stdout)
    assert found["output device"] == "FAIL" and found["test tone"] == "FAIL"
    assert found["configuration"] == "warn" and found["time to first audio"] == "ok"
    assert "No audio output device found" in result.stdout and "synthesize" in result.stdout
    assert "Measuring against the local server" in result.stdout
    assert result.stdout.rstrip().endswith("verdict: 3 check(s) failed")


def test_a_refusal_while_connecting_ahead_of_stdin_is_retried_by_the_call(tmp_path):
    out = tmp_path / "out.wav"
    with LocalServer(faults=Faults(handshake_status=503, handshake_failures=1)) as server:
        result = run("say", "-o", str(out), "--url", server.url, stdin="spoken all the same",
                     env={"BASETEN_API_KEY": server.api_key})
        assert server.handshakes == 2
    assert result.returncode == 0, result.stderr
    assert read_wav(out) == server.expected_pcm("spoken all the same")


@pytest.mark.parametrize("stdin", ["", " \n\t\n"], ids=["empty", "blank"])
def test_no_words_on_stdin_is_a_usage_error_and_writes_nothing(tmp_path, basetts_server, stdin):
    out = tmp_path / "out.wav"
    result = run("say", "-o", str(out), "--url", basetts_server.url, stdin=stdin,
                 env={"BASETEN_API_KEY": basetts_server.api_key})
    assert result.returncode == 2, result.stderr
    assert "stdin is empty" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    assert all(c.settings is None for c in basetts_server.conversations)  # no speech was asked for


def test_the_progress_line_counts_words_split_across_reads_once(tmp_path):
    """On a terminal, stderr shows words sent and audio received; a word cut by a read counts once."""
    leader, terminal = pty.openpty()
    with LocalServer() as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "basetts.cli", "say", "-o", str(tmp_path / "o.wav"), "--url", server.url],
            stdin=subprocess.PIPE, stderr=terminal, text=True, env={**os.environ, "BASETEN_API_KEY": server.api_key})
        os.close(terminal)
        try:
            # Each piece is written once the previous one was read (the server has its complete words).
            for piece, complete in (("one two thr", "two"), ("ee four fi", "four")):
                process.stdin.write(piece)
                process.stdin.flush()
                deadline = time.monotonic() + 30
                while not (server.conversations and complete in server.conversations[-1].words):
                    assert time.monotonic() < deadline, f"{complete!r} was never sent"
                    time.sleep(0.02)
            process.stdin.write("ve.\n")
            process.stdin.close()
            assert process.wait(30) == 0
            shown = b""
            with contextlib.suppress(OSError):  # EIO once everything written to the terminal is read
                while True:
                    piece = os.read(leader, 4096)
                    if not piece:
                        break
                    shown += piece
        finally:
            process.kill()
            process.wait()
            os.close(leader)
    assert server.last().words == "one two three four five.".split()
    counts = re.findall(r"(\d+) words sent, ([\d.]+) s of audio", shown.decode())
    assert counts and counts[-1] == ("5", "0.4"), shown  # 5 words of 2048 samples (0.085 s) each


@pytest.mark.parametrize("command", ["say", "doctor"])
def test_local_and_url_together_are_a_usage_error(command):
    result = run(command, "--local", "--url", "ws://127.0.0.1:9/x")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


@pytest.mark.playback
def test_devices_lists_the_outputs_with_the_default_marked(pulse):
    result = run("devices", env=pulse.env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d+: .*\[ALSA, .* Hz\]  \(default\)$", result.stdout, re.MULTILINE), result.stdout


@needs_no_oss_device
def test_devices_without_any_output_says_so_and_fails(tmp_path):
    result = run("devices", env=no_sound_card_env(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "basetts: no audio output devices found" in result.stderr
    assert "say -o out.wav" in result.stderr and "doctor" in result.stderr
    # Only our line: not the hundred lines ALSA and JACK print while PortAudio probes for devices...
    assert result.stderr.strip().count("\n") == 0, result.stderr
    # ...which are there for whoever asks for --debug.
    debugging = run("--debug", "devices", env=no_sound_card_env(tmp_path))
    assert debugging.stderr.strip().count("\n") > 0


def test_empty_text_is_a_usage_error():
    result = run("say", "  ", "--url", "ws://127.0.0.1:9/x", env={"BASETEN_API_KEY": "k"})
    assert result.returncode == 2
    assert "empty" in result.stderr and "Traceback" not in result.stderr


def test_missing_configuration_is_exit_2_and_names_everything_missing_in_the_clis_terms(tmp_path):
    result = subprocess.run([sys.executable, "-m", "basetts.cli", "say", "hi", "-o", "x.wav"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith(("BASETEN", "BASETTS"))})
    assert result.returncode == 2
    for named in ("--model-id", "--url", "BASETEN_MODEL_ID", "BASETEN_API_KEY", "--api-key-file"):
        assert named in result.stderr, named
    assert "model_id=" not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_usage_errors_are_exit_2():
    assert run("say", "--buffer-size", "many", "x").returncode == 2
    assert run("frobnicate").returncode == 2


def test_failures_are_one_line_exit_1_and_never_show_the_key(tmp_path):
    with LocalServer(faults=Faults(drop_after_bytes=100)) as server:
        result = run("say", "hello there", "-o", str(tmp_path / "x.wav"), "--url", server.url,
                     env={"BASETEN_API_KEY": server.api_key})
    assert result.returncode == 1
    *warned, error = result.stderr.strip().splitlines()  # warnings (recoveries given up on) and the error: a line each
    assert all(line.startswith("basetts: WARNING: ") for line in warned) and "incomplete" in error
    with LocalServer() as server:
        result = run("--debug", "say", "hello", "-o", str(tmp_path / "x.wav"), "--url", server.url,
                     env={"BASETEN_API_KEY": SECRET})
    assert result.returncode == 1
    assert "AuthenticationError" in result.stderr  # --debug shows the traceback
    assert SECRET not in result.stderr + result.stdout


def test_voices():
    """What --voice takes for the protocol asked: Orpheus's voices over HTTP too, each preset's from its model."""
    for args, env in ((("voices",), None), (("voices", "--protocol", "orpheus-http"), None)):
        result = run(*args, env=env)
        assert result.returncode == 0
        assert "tara" in result.stdout and "<laugh>" in result.stdout
    result = run("voices", env={"BASETTS_PROTOCOL": "kokoro"})
    assert result.returncode == 0 and "af_bella" in result.stdout and "tara" not in result.stdout
    result = run("voices", "--protocol", "piper")
    assert result.returncode == 0 and "piper-tts) reads no voice" in result.stdout


def test_serve_prints_url_and_key_and_serves(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "basetts.cli", "serve", "--api-key", "local-k"],
                               stdout=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[1].startswith("export BASETTS_URL=")  # lines a shell can run
        url = lines[1].split("=", 1)[1].strip()
        assert url.startswith("ws://127.0.0.1:") and lines[2].strip() == "export BASETEN_API_KEY=local-k"
        out = tmp_path / "served.wav"
        result = run("say", "served words", "-o", str(out), env={"BASETTS_URL": url, "BASETEN_API_KEY": "local-k"})
        assert result.returncode == 0, result.stderr
        assert read_wav(out) == LocalServer().expected_pcm("served words")
    finally:
        process.terminate()
        process.wait(10)


def test_a_server_asking_to_wait_says_how_long(tmp_path):
    with LocalServer(faults=Faults(handshake_status=429, retry_after=60)) as server:  # too long to wait out
        result = run("say", "hi", "-o", str(tmp_path / "o.wav"), "--url", server.url,
                     env={"BASETEN_API_KEY": server.api_key})
    assert result.returncode == 1 and "retry after 60 s" in result.stderr
    with LocalServer(faults=Faults(handshake_status=503, retry_after=1, handshake_failures=1)) as server:
        result = run("say", "hi", "-o", str(tmp_path / "o.wav"), "--url", server.url,
                     env={"BASETEN_API_KEY": server.api_key})
    assert result.returncode == 0, result.stderr
    assert "retrying in 1.00 s" in result.stderr  # the wait it is doing, as the server asked


@pytest.mark.parametrize("protocol", ["orpheus-http", "xtts-streaming"])
def test_serve_say_batch_and_doctor_speak_orpheus_over_http(tmp_path, protocol):
    """`basetts serve --protocol orpheus-http` prints a …/predict URL, and say, batch and doctor speak to it
    from that URL alone (a predict URL means the HTTP protocol); for xtts-streaming it prints the protocol too."""
    server = subprocess.Popen([sys.executable, "-m", "basetts.cli", "serve", "--protocol", protocol],
                              stdout=subprocess.PIPE, text=True)
    try:
        lines = [server.stdout.readline() for _ in range(3 if protocol == "orpheus-http" else 4)]
        env = dict(line.strip()[len("export "):].split("=", 1) for line in lines if line.startswith("export "))
        assert env["BASETTS_URL"].endswith("/environments/production/predict")
        out = tmp_path / "out.wav"
        said = run("say", "Hello over HTTP. Two sentences.", "-o", str(out), env=env)
        assert said.returncode == 0, said.stderr
        assert read_wav(out) == LocalServer().expected_pcm("Hello over HTTP. Two sentences.")
        if protocol == "orpheus-http":
            # A websocket protocol asked of a predict URL: the URL rewritten is said once (the configuration's
            # check and the call share one Synthesizer), and the error says no audio came, not "partial".
            wrong = run("say", "hi", "-o", str(tmp_path / "wrong.wav"), "--protocol", "qwen3", env=env)
            assert wrong.returncode == 1
            assert wrong.stderr.count("is an HTTP URL; using its websocket URL") == 1, wrong.stderr
            assert "no audio arrived" in wrong.stderr and "partial" not in wrong.stderr, wrong.stderr
        source = tmp_path / "in.txt"
        source.write_text("first text\nsecond text\n")
        batch = subprocess.run([sys.executable, "-m", "basetts", "batch", str(source), str(tmp_path / "b")],
                               capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
        assert batch.returncode == 0 and "2 written" in batch.stderr, batch.stderr
        doctor = run("doctor", env={**no_sound_card_env(tmp_path), **env})
        assert f"protocol {protocol}" in doctor.stdout and verdicts(doctor.stdout)["time to first audio"] == "ok"
    finally:
        server.terminate()
        server.wait(10)
