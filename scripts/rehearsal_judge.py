"""The MT-Bench judge of the rehearsal: an OpenAI-compatible chat endpoint on 127.0.0.1.

    python scripts/rehearsal_judge.py --port_file /tmp/port      # serves until killed

It answers every /v1/chat/completions request with "Rating: [[5]]", so a rehearsal of the paper's
MT-Bench column runs the real evaluator, the real `openai` client and the real rating parser, without a
GPT-4 key. The rating says nothing about the answers: it only proves the plumbing.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class JudgeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the rehearsal's log is the evaluator's
        pass

    def do_POST(self):  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        body = json.dumps(
            {
                "id": "rehearsal",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", "rehearsal-judge"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Rating: [[5]]"},
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--port_file", help="write the port here once the server listens")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), JudgeHandler)
    if args.port_file:
        Path(args.port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
