"""MT-Bench judging with the real `openai` client against a judge server on 127.0.0.1 (started here)."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from balora.cli import eval_mt_bench
from balora.eval import mt_bench

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ROOT = Path(__file__).resolve().parent.parent


class JudgeServer:
    """An OpenAI-compatible /v1/chat/completions endpoint that rates by a rule and records requests.

    Rating: 8 if the judged answer contains the reference answer (or no reference is given), else 3.
    `fail_first` makes the first N requests return HTTP 503; `fail_after` fails every request after N.
    """

    def __init__(self, fail_first=0, fail_after=None):
        self.requests, self.fail_first, self.fail_after = [], fail_first, fail_after
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                count = len(server.requests)
                if count <= server.fail_first or (
                    server.fail_after is not None and count > server.fail_after
                ):
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "overloaded"}}')
                    return
                user = body["messages"][-1]["content"]
                rating = 8
                if "[Reference]" in user:
                    reference = user.split("[Reference]\n", 1)[1].split("\n", 1)[0]
                    answer = user.split("[Answer]\n", 1)[1]
                    rating = 8 if reference in answer else 3
                content = (
                    f"The answer is fine. Rating: [[{rating}]]"
                    if "Rate turn 2" not in user
                    else "Rating: [[6]]"
                )
                payload = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _argv(output_dir, url, *extra):
    return [
        "--samples",
        str(FIXTURES / "mt_bench_samples.jsonl"),
        "--data",
        str(FIXTURES / "mt_bench_questions.jsonl"),
        "--judge_prompts",
        str(FIXTURES / "mt_bench_judge_prompts.jsonl"),
        "--reference_answers",
        str(FIXTURES / "mt_bench_reference.jsonl"),
        "--judge_base_url",
        url,
        "--judge_model",
        "loopback-judge",
        "--judge_backoff_s",
        "0.01",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def test_parse_rating():
    assert mt_bench.parse_rating("blah Rating: [[7]]") == 7.0
    assert mt_bench.parse_rating("Rating: [[8.5]]") == 8.5
    assert mt_bench.parse_rating("Rating: [6]") == 6.0
    assert mt_bench.parse_rating("no rating") == -1.0


def test_turn2_prompt_continues_training_template():
    prompt = mt_bench.turn2_prompt("Q1", " A1", "Q2")
    assert prompt.endswith(
        "### Instruction:\nQ1\n\n### Response: A1\n\n### Instruction:\nQ2\n\n### Response:"
    )


def test_judging_scores_caches_and_uses_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPBACK_KEY", "sk-test-key")
    with JudgeServer() as server:
        metrics = eval_mt_bench.main(_argv(tmp_path, server.url, "--judge_api_key_env", "LOOPBACK_KEY"))
        assert len(server.requests) == 6  # 3 questions x 2 turns
        assert server.requests[0]["auth"] == "Bearer sk-test-key"
        assert server.requests[0]["body"]["temperature"] == 0
        assert server.requests[0]["body"]["model"] == "loopback-judge"
        # math and coding get the reference-answer prompt with the hand-written references in it
        math_request = [
            r for r in server.requests if "What is 2 + 3?" in r["body"]["messages"][-1]["content"]
        ][0]
        assert "single-math-v1" in math_request["body"]["messages"][0]["content"]
        assert metrics["score"] == pytest.approx(8.0) and metrics["turn1_score"] == pytest.approx(8.0)
        assert metrics["turn2_score"] == pytest.approx(6.0) and metrics["average_score"] == pytest.approx(7.0)
        assert metrics["n"] == 3 and metrics["judge_model"] == "loopback-judge"
        assert metrics["protocol"] == "balora-mt-bench"
        rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
        assert rows[0]["correct"] == [8.0, 6.0] and rows[1]["completion"] == [" 2 + 3 = 5", " 2 * 3 = 6"]
        assert "sk-test-key" not in (tmp_path / "metrics.json").read_text()
        # a rerun costs nothing: every judgment comes from the cache
        again = eval_mt_bench.main(_argv(tmp_path, server.url))
        assert len(server.requests) == 6
        assert again["score"] == metrics["score"]


def test_wrong_reference_answer_lowers_rating(tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": 111, "completion": [" 2 + 3 = 4", " 6"]}) + "\n")
    with JudgeServer() as server:
        argv = _argv(tmp_path / "out", server.url, "--judge_turns", "1")
        argv[1] = str(samples)
        metrics = eval_mt_bench.main(argv)
    assert metrics["score"] == 3.0 and metrics["missing"] == 2 and metrics["turn2_score"] is None


def test_transient_failures_are_retried(tmp_path):
    with JudgeServer(fail_first=2) as server:
        metrics = eval_mt_bench.main(_argv(tmp_path, server.url))
    assert metrics["score"] == pytest.approx(8.0)
    assert len(server.requests) == 8


def test_judge_down_fails_clearly_and_keeps_judgments(tmp_path):
    with JudgeServer(fail_after=3) as server:
        with pytest.raises(RuntimeError, match="failed 2 times.*cached"):
            eval_mt_bench.main(_argv(tmp_path, server.url, "--judge_retries", "2"))
    cached = [json.loads(line) for line in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    assert len(cached) == 3
    with JudgeServer() as server:
        metrics = eval_mt_bench.main(_argv(tmp_path, server.url))
        assert len(server.requests) == 3  # only the judgments that were not made before
    assert metrics["judged_turn1"] == 3 and metrics["judged_turn2"] == 3


def test_unreachable_endpoint_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    argv = _argv(tmp_path, "http://127.0.0.1:9/v1", "--judge_retries", "2")
    monkeypatch.setattr("sys.argv", ["balora-eval-mt-bench", *argv])
    assert eval_mt_bench.cli() == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        len(re.findall(r"error: The judge at http://127.0.0.1:9/v1 failed 2 times.*APIConnectionError", err))
        == 1
    )


def test_real_questions_need_references_for_math(shared_data):
    questions, _ = mt_bench.load_questions(str(shared_data / "mt_bench" / "question.jsonl"))
    assert len(questions) == 80 and {q["task_id"] for q in questions} == set(range(81, 161))
    prompts = mt_bench.load_judge_prompts(shared_data / "mt_bench" / "judge_prompts.jsonl")
    references = mt_bench.load_reference_answers(
        shared_data / "mt_bench" / "reference_answer" / "gpt-4.jsonl"
    )
    for question in questions:
        for turn in (1, 2):
            name, messages = mt_bench.judge_messages(question, ["a1", "a2"], turn, prompts, references)
            assert ("math" in name) == (question["category"] in ("math", "reasoning", "coding"))
            assert "[[rating]]" in messages[0]["content"] + messages[1]["content"]


def test_missing_judge_key_fails_before_generating(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        eval_mt_bench.main(
            [
                "--model",
                "tiny-llama",
                "--data",
                str(FIXTURES / "mt_bench_questions.jsonl"),
                "--judge_api_key_env",
                "NO_SUCH_KEY_VAR",
                "--output_dir",
                str(tmp_path),
            ]
        )
    assert not (tmp_path / "completions.jsonl").exists()


def test_answers_are_written_in_fastchat_model_answer_format(tmp_path, shared_data):
    metrics = eval_mt_bench.main(
        _argv(tmp_path, "http://127.0.0.1:9/v1", "--judge_turns", "0", "--answer_model_id", "balora-test")
    )
    assert metrics["n"] == 3
    rows = [
        json.loads(line)
        for line in (tmp_path / "model_answer" / "balora-test.jsonl").read_text().splitlines()
    ]
    # FastChat's own reference answers (reference_answer/gpt-4.jsonl) have exactly these fields
    fastchat = json.loads(
        (shared_data / "mt_bench" / "reference_answer" / "gpt-4.jsonl").read_text().splitlines()[0]
    )
    assert [sorted(r) for r in rows] == [sorted(fastchat)] * 3
    assert [r["question_id"] for r in rows] == [81, 111, 121] and {r["model_id"] for r in rows} == {
        "balora-test"
    }
    assert rows[1]["choices"] == [{"index": 0, "turns": [" 2 + 3 = 5", " 2 * 3 = 6"]}]
    assert sorted(rows[1]["choices"][0]) == sorted(fastchat["choices"][0])
    assert all(
        isinstance(r["answer_id"], str) and len(r["answer_id"]) == 22 and isinstance(r["tstamp"], float)
        for r in rows
    )
