"""The API judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (http.server, urllib).

The fake server "judges" by content: it prefers the summary containing the word "good", and its
behaviour per post is scripted by a word in the post (always500, once500, slow, malformed,
malformed_once). Every request is recorded, so the tests count requests exactly.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hybridpo.judges import ApiJudge, ApiJudgeConfig, JudgeError, TLDR_JUDGE_PROMPT, parse_preferred, win_rate

KEY = "sk-test-SECRET-123"


class FakeJudgeServer:
    def __init__(self):
        self.requests: list[dict] = []  # {"post", "auth", "first"}
        self.seen: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][0]["content"]
                post = re.search(r"Post:\n(.*?)\n\nSummary A:", text, re.S).group(1)
                a = re.search(r"Summary A:\n(.*?)\n\nSummary B:", text, re.S).group(1)
                with threading.Lock():
                    server.requests.append({"post": post, "auth": self.headers.get("Authorization"), "first": a,
                                            "path": self.path, "model": body["model"]})
                    n = server.seen[post] = server.seen.get(post, 0) + 1
                if self.headers.get("Authorization") != f"Bearer {KEY}":  # echoes the key, as some servers do
                    return self._send(401, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})
                if "always500" in post or ("once500" in post and n == 1):
                    return self._send(500, {"error": "boom"})
                if "slow" in post and n == 1:
                    time.sleep(1.0)  # past the client's timeout
                if "malformed" in post and ("malformed_once" not in post or n == 1):
                    content = "Comparison: both are fine.\nPreferred: neither"
                else:
                    content = f"Comparison: one says good.\nPreferred: {'A' if 'good' in a else 'B'}"
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FakeJudgeServer() as s:
        yield s


def make_judge(server, tmp_path, **kw) -> tuple[ApiJudge, list[float]]:
    sleeps: list[float] = []
    cfg = ApiJudgeConfig(base_url=server.url, model="judge-1", api_key=KEY, cache_dir=str(tmp_path / "cache"),
                         timeout_s=0.5, backoff_s=0.5, max_retries=3, malformed_retries=1, workers=2, **kw)
    return ApiJudge(cfg, sleep=sleeps.append), sleeps


def test_verdicts_follow_the_preference_whatever_the_order(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    judge, _ = make_judge(server, tmp_path)
    prompts = [f"post number {i}" for i in range(12)]
    a = [("a good one" if i % 3 else "a poor one") + f" {i}" for i in range(12)]
    b = [("b poor" if i % 3 else "b good") + f" {i}" for i in range(12)]
    verdicts = judge.judge(prompts, a, b)
    # a wins exactly where a contains "good" (i % 3 != 0): 8 wins of 12, whichever order was shown
    assert [v.score for v in verdicts] == [0.0 if i % 3 == 0 else 1.0 for i in range(12)]
    orders = [v.order for v in verdicts]
    assert set(orders) == {"ab", "ba"}  # randomised per item (12 fair coins: both faces, p_fail = 2^-11)
    for v, p, ai, bi in zip(verdicts, prompts, a, b):
        (req,) = [r for r in server.requests if r["post"] == p]
        assert req["first"] == (ai if v.order == "ab" else bi)  # the recorded order is the order shown
        assert req["path"] == "/v1/chat/completions" and req["model"] == "judge-1"
        assert req["auth"] == f"Bearer {KEY}"
    assert win_rate(verdicts)["win_rate"] == pytest.approx(8 / 12)
    # the key is sent in the header only: not in the log, the cache or the repr
    assert KEY not in caplog.text and KEY not in repr(judge) and KEY not in repr(judge.cfg)
    assert KEY not in (tmp_path / "cache" / "verdicts.jsonl").read_text()


def test_server_errors_and_malformed_answers_are_retried_or_reported_never_verdicts(server, tmp_path):
    judge, sleeps = make_judge(server, tmp_path)
    judge.cfg.workers = 1  # sequential, so the sleep list reads in order
    prompts = ["always500 post", "once500 post", "malformed post", "malformed_once post", "slow post"]
    a = ["good a"] * 5
    b = ["plain b"] * 5
    v = judge.judge(prompts, a, b)
    # always500: 1 + max_retries = 4 requests, backoff 0.5, 1, 2 s; no verdict, an error
    assert v[0].score is None and "HTTP 500" in v[0].error and server.seen["always500 post"] == 4
    assert sleeps[:3] == [0.5, 1.0, 2.0]
    # once500: retried once, then a real verdict
    assert v[1].score == 1.0 and server.seen["once500 post"] == 2
    # malformed every time: asked 1 + malformed_retries = 2 times, reported as an error
    assert v[2].score is None and "malformed" in v[2].error and server.seen["malformed post"] == 2
    # malformed once: the second answer counts
    assert v[3].score == 1.0 and server.seen["malformed_once post"] == 2
    # a timeout is retried like a server error
    assert v[4].score == 1.0 and server.seen["slow post"] == 2
    stats = win_rate(v)
    assert stats["errors"] == 2 and stats["judged"] == 3 and stats["win_rate"] == 1.0  # errors not counted


def test_rerun_hits_the_cache_and_makes_no_request(server, tmp_path):
    judge, _ = make_judge(server, tmp_path)
    prompts, a, b = ["p1", "p2", "p3"], ["good x", "y", "good z"], ["u", "good v", "w"]
    first = judge.judge(prompts, a, b)
    assert len(server.requests) == 3 and judge.requests == 3
    again, _ = make_judge(server, tmp_path)  # a new process would read the same cache file
    second = again.judge(prompts, a, b)
    assert len(server.requests) == 3 and again.requests == 0  # zero new requests
    assert [v.score for v in second] == [v.score for v in first] == [1.0, 0.0, 1.0]
    assert [v.order for v in second] == [v.order for v in first] and all(v.cached for v in second)
    # a different judge model is a different key: it asks again
    other, _ = make_judge(server, tmp_path)
    other.cfg.model = "judge-2"
    other.judge(prompts[:1], a[:1], b[:1])
    assert len(server.requests) == 4


def test_bad_key_raises_without_leaking_it(server, tmp_path):
    judge, _ = make_judge(server, tmp_path)
    judge.cfg.api_key = "sk-wrong-SECRET"
    with pytest.raises(JudgeError) as err:
        judge.judge(["p"], ["good"], ["bad"])
    assert "401" in str(err.value) and "SECRET" not in str(err.value)


def test_prompt_is_the_tldr_judging_prompt_and_parser_is_strict():
    assert TLDR_JUDGE_PROMPT.startswith(
        "Which of the following summaries does a better job of summarizing the most important points "
        "in the given forum post, without including unimportant or irrelevant details?")
    assert "Comparison:" in TLDR_JUDGE_PROMPT and 'Preferred: <"A" or "B">' in TLDR_JUDGE_PROMPT
    assert parse_preferred("Comparison: x\nPreferred: B") == "B"
    assert parse_preferred('Comparison: x\nPreferred: "A"') == "A"
    assert parse_preferred("Comparison: A is better\nPreferred: neither") is None
    assert parse_preferred("I prefer A") is None
    assert parse_preferred("") is None
