"""The OpenAI-compatible path against real HTTP servers on 127.0.0.1: a scripted fault server of
the test's own, and llama.cpp's server with the embedded model."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ultrarl.cli import main
from ultrarl.explain.explainer import read_explanations

GOOD = {"critical_steps": [{"step": 1, "rationale": "the pole starts falling", "suggested_action": 1,
                            "implicit_reward": -0.5}]}


def _completion(content: str) -> bytes:
    return json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "fault",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }).encode()


class FaultServer:
    """Answers /v1/chat/completions from a script: each request pops the next behaviour."""

    def __init__(self, behaviours: list[Callable[[BaseHTTPRequestHandler], None]], default: Callable) -> None:  # type: ignore[type-arg]
        self.behaviours = behaviours
        self.default = default
        self.requests: list[dict] = []  # type: ignore[type-arg]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append({"body": json.loads(body or b"{}"), "auth": self.headers.get("Authorization")})
                behaviour = server.behaviours.pop(0) if server.behaviours else server.default
                behaviour(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(content: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        data = _completion(content)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def status(code: int) -> Callable[[BaseHTTPRequestHandler], None]:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps({"error": {"message": f"scripted {code}", "type": "server_error"}}).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def hang(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(3)  # longer than the client's timeout
    try:
        answer(json.dumps(GOOD))(handler)
    except OSError:
        pass


FAKE_KEY = "sk-ultrarl-test-SECRET-0123456789"


def _explain(tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str], episodes: int = 2,
             extra: dict | None = None) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"llm": {"timeout_s": 1.0, "max_retries": 2, **(extra or {})}}))
    os.environ["ULTRARL_TEST_KEY"] = FAKE_KEY
    code = main(["explain", "CartPole-v1", "--agent", str(tmp_path.parent / "agent.zip"), "--episodes", str(episodes),
                 "--eval-episodes", "1", "--llm", "openai:fault", "--llm-base-url", url, "--llm-api-key-env",
                 "ULTRARL_TEST_KEY", "--no-cache", "--config", str(config), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    usage_path = tmp_path / "run" / "llm_usage.json"
    return code, err, json.loads(usage_path.read_text()) if usage_path.exists() else {}


@pytest.fixture
def case_dir(tmp_path: Path, cartpole_agent_path: Path) -> Path:
    (tmp_path / "agent.zip").write_bytes(cartpole_agent_path.read_bytes())
    case = tmp_path / "case"
    case.mkdir()
    return case


@pytest.fixture
def server_factory() -> Iterator[Callable[..., FaultServer]]:
    servers: list[FaultServer] = []

    def make(behaviours: list, default: Callable = answer(json.dumps(GOOD))) -> FaultServer:  # type: ignore[type-arg]
        servers.append(FaultServer(behaviours, default))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_500_then_success_is_retried(case_dir: Path, server_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    server = server_factory([status(500)])
    code, err, usage = _explain(case_dir, server.url, capsys, extra={"concurrency": 1})
    assert code == 0, err
    assert usage["retries"] == 1 and usage["calls"] == 2 and usage["failures"] == 0
    assert all(r["auth"] == f"Bearer {FAKE_KEY}" for r in server.requests)  # the key reaches the server only


def test_timeouts_fail_the_episode_not_the_run(case_dir: Path, server_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    server = server_factory([hang, hang, hang])  # the first episode: first try and both retries time out
    code, err, usage = _explain(case_dir, server.url, capsys, extra={"concurrency": 1})
    assert code == 0, err
    assert usage["failed_episodes"] == 1 and usage["retries"] == 2 and usage["calls"] == 1
    assert len(read_explanations(case_dir / "run" / "explanations.jsonl")) == 1


@pytest.mark.parametrize("content", ['{"critical_steps": [{"step": 1, "rationale": "tru', ""])
def test_truncated_or_empty_answers_are_reasked_then_counted(case_dir, server_factory, capsys, content) -> None:  # type: ignore[no-untyped-def]
    server = server_factory([], default=answer(content))
    code, err, usage = _explain(case_dir, server.url, capsys)
    assert code == 0, err
    assert usage["failed_episodes"] == 2 and usage["parse_failures"] == 4 and usage["reasks"] == 2
    assert (case_dir / "run" / "explanations.jsonl").read_text() == ""


def test_out_of_range_values_are_dropped_or_clipped(case_dir, server_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = {"critical_steps": [
        {"step": 99999, "rationale": "x", "suggested_action": 1, "implicit_reward": 0.1},
        {"step": 0, "rationale": "x", "suggested_action": 7, "implicit_reward": 0.1},
        {"step": 1, "rationale": "x", "suggested_action": 0, "implicit_reward": 42},
    ]}
    server = server_factory([], default=answer(json.dumps(bad)))
    code, err, usage = _explain(case_dir, server.url, capsys)
    assert code == 0, err
    assert usage["dropped_fields"] == 4 and usage["clipped_fields"] == 2 and usage["failed_episodes"] == 0
    states = read_explanations(case_dir / "run" / "explanations.jsonl")
    assert [s.implicit_reward for s in states] == [1.0, 1.0]


@pytest.mark.parametrize(("code_", "expected"), [(401, "refused the credentials"), (403, "refused the credentials")])
def test_auth_errors_stop_at_once_with_one_line(case_dir, server_factory, capsys, code_, expected) -> None:  # type: ignore[no-untyped-def]
    server = server_factory([], default=status(code_))
    code, err, _ = _explain(case_dir, server.url, capsys, episodes=4, extra={"concurrency": 1})
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err
    assert len(server.requests) == 1 and FAKE_KEY not in err


def test_schema_refused_steps_down_to_json_mode(case_dir, server_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    server = server_factory([status(400), status(422)])
    code, err, usage = _explain(case_dir, server.url, capsys, extra={"concurrency": 1})
    assert code == 0, err
    formats = [r["body"].get("response_format", {}) for r in server.requests]
    assert [(f.get("type"), "schema" in f) for f in formats] == [
        ("json_schema", False), ("json_object", True), ("json_object", False), ("json_object", False)
    ]
    assert usage["retries"] == 0 and usage["calls"] == 2


def test_call_budget_stops_querying_and_keeps_the_run(case_dir, server_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    server = server_factory([])
    code, err, usage = _explain(case_dir, server.url, capsys, episodes=3, extra={"max_calls": 1})
    assert code == 0, err
    assert usage["calls"] == 1 and usage["skipped_by_budget"] == 2 and len(server.requests) == 1


def test_key_never_reaches_run_dir(case_dir, server_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    server = server_factory([])
    code, err, _ = _explain(case_dir, server.url, capsys)
    assert code == 0, err
    for path in (case_dir / "run").rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server with the embedded model."""
    from ultrarl.llm.local_server import local_llama_server

    with local_llama_server("smollm2") as url:
        yield url


def test_explain_through_real_llama_cpp_server(tmp_path: Path, cartpole_agent_path: Path, llama_server: str) -> None:
    cache = tmp_path / "cache"
    args = ["--agent", str(cartpole_agent_path), "--episodes", "2", "--eval-episodes", "1", "--token-budget", "700",
            "--llm", "openai:smollm2", "--llm-base-url", llama_server, "--cache-dir", str(cache)]
    assert main(["explain", "CartPole-v1", *args, "--run-dir", str(tmp_path / "a")]) == 0
    usage = json.loads((tmp_path / "a" / "llm_usage.json").read_text())
    print("llama.cpp server usage:", usage)
    assert usage["calls"] >= 2 and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    for state in read_explanations(tmp_path / "a" / "explanations.jsonl"):
        assert state.suggested_action in (0, 1)
    assert main(["explain", "CartPole-v1", *args, "--run-dir", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "llm_usage.json").read_text())
    # Every episode comes from the cache, a failed one included (its reason is replayed).
    assert again["calls"] == 0 and again["cache_hits"] == 2, (usage, again)
    assert again["cached_failures"] == usage["failed_episodes"], (usage, again)
    assert (tmp_path / "a" / "explanations.jsonl").read_text() == (tmp_path / "b" / "explanations.jsonl").read_text()


def test_warm_cache_rerun_is_byte_identical_and_replays_failures(case_dir: Path, server_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    """Same command twice: the first run gets one unusable answer (after its re-ask), the second
    asks nothing, replays the failure from the cache and writes the same bytes."""
    server = server_factory([answer("garbage"), answer("still garbage")])
    os.environ["ULTRARL_TEST_KEY"] = FAKE_KEY

    def explain(run: str) -> int:
        return main(["explain", "CartPole-v1", "--agent", str(case_dir.parent / "agent.zip"), "--episodes", "3",
                     "--eval-episodes", "2", "--llm", "openai:fault", "--llm-base-url", server.url,
                     "--llm-api-key-env", "ULTRARL_TEST_KEY", "--llm-concurrency", "1",
                     "--cache-dir", str(case_dir / "cache"), "--run-dir", str(case_dir / run)])

    assert explain("first") == 0
    first_requests = len(server.requests)
    assert explain("second") == 0
    capsys.readouterr()
    assert first_requests == 4 and len(server.requests) == first_requests  # 2 failed + 2 good; then none
    usage = [json.loads((case_dir / run / "llm_usage.json").read_text()) for run in ("first", "second")]
    assert usage[0]["failed_episodes"] == usage[1]["failed_episodes"] == 1
    assert usage[1]["cached_failures"] == 1 and usage[1]["calls"] == 0
    for name in ("explanations.jsonl", "guidance.npz", "eval.json"):
        assert (case_dir / "first" / name).read_bytes() == (case_dir / "second" / name).read_bytes(), name
