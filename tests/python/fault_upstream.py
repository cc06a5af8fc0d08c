"""A fault-injecting OpenAI-compatible upstream on loopback, for the gateway's retry, failover,
breaker and deadline tests. Each tier's `base_url` is `http://127.0.0.1:PORT/<key>/v1`; the
upstream answers the n-th request for `<key>` with the n-th step of that key's script (the last
step repeats) and records every request it gets."""

import json
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "router", "tests", "fixtures")


def fixture(provider, name):
    with open(os.path.join(FIXTURES, provider, name), "rb") as f:
        return f.read()


def completion(key):
    return {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": 1767225600, "model": f"mock-{key}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer from {key}",
                                                 "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def chunk(key, delta, finish=None):
    c = {"id": f"chatcmpl-{key}", "object": "chat.completion.chunk", "created": 1767225600, "model": f"mock-{key}",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(c)}\n\n".encode()


class Upstream:
    def __init__(self, scripts):
        self.scripts = scripts
        self.log = []  # (key, monotonic time, parsed body)
        self.seen = []  # (key, path, headers)
        self.raw = []  # (key, body bytes as they arrived)
        self.target = None  # where `proxy` steps send requests
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                key = self.path.strip("/").split("/")[0]
                with upstream.lock:
                    n = sum(1 for k, _, _ in upstream.log if k == key)
                    upstream.log.append((key, time.monotonic(), json.loads(body or b"null")))
                    upstream.seen.append((key, self.path, dict(self.headers)))
                    upstream.raw.append((key, body))
                script = upstream.scripts.get(key, ["ok"])
                step = script[min(n, len(script) - 1)]
                self.streaming = bool((json.loads(body or b"{}") or {}).get("stream"))
                getattr(self, "step_" + step)(key)

            def send(self, status, body, ctype="application/json", headers=()):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def stream_head(self):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True

            def step_ok(self, key):
                """A completion, streamed when the request asks for a stream."""
                if not self.streaming:
                    self.send(200, json.dumps(completion(key)).encode())
                    return
                self.stream_head()
                parts = [chunk(key, {"role": "assistant", "content": ""}), chunk(key, {"content": "answer "}),
                         chunk(key, {"content": f"from {key}"}), chunk(key, {}, "stop")]
                # As OpenAI does: a last chunk with no choices and the usage, when asked for.
                asked = ((upstream.log[-1][2] or {}).get("stream_options") or {}).get("include_usage")
                if asked:
                    usage = {"id": f"chatcmpl-{key}", "object": "chat.completion.chunk", "created": 1767225600,
                             "model": f"mock-{key}", "choices": [], "usage": completion(key)["usage"]}
                    parts.append(f"data: {json.dumps(usage)}\n\n".encode())
                for part in parts + [b"data: [DONE]\n\n"]:
                    self.wfile.write(part)
                    self.wfile.flush()

            def step_500(self, key):
                self.send(500, b"internal error", "text/plain")

            def step_429(self, key):
                err = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                                 "code": "rate_limit_exceeded"}}
                self.send(429, json.dumps(err).encode(), headers=[("retry-after", "1")])

            def step_429_long(self, key):
                err = {"error": {"message": "Try tomorrow", "type": "requests", "param": None,
                                 "code": "rate_limit_exceeded"}}
                self.send(429, json.dumps(err).encode(), headers=[("retry-after", "120")])

            def step_400(self, key):
                err = {"error": {"message": "temperature is too high", "type": "invalid_request_error",
                                 "param": "temperature", "code": None}}
                self.send(400, json.dumps(err).encode())

            def step_hang(self, key):
                time.sleep(10)
                self.close_connection = True

            def step_reset(self, key):
                # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def step_garbled(self, key):
                self.send(200, b'{"id": "chatcmpl-x", "choices": [{"index": 0, "mess')

            def step_sse_cut(self, key):
                self.stream_head()
                for part in [chunk(key, {"role": "assistant", "content": ""}), chunk(key, {"content": "partial "})]:
                    self.wfile.write(part)
                    self.wfile.flush()

            def step_sse_stall(self, key):
                self.stream_head()
                self.wfile.write(chunk(key, {"role": "assistant", "content": "partial "}))
                self.wfile.flush()
                time.sleep(10)

            def step_sse_trickle(self, key):
                self.stream_head()
                self.wfile.write(chunk(key, {"role": "assistant", "content": ""}))
                for _ in range(40):
                    time.sleep(0.25)
                    try:
                        self.wfile.write(chunk(key, {"content": "more "}))
                        self.wfile.flush()
                    except OSError:
                        return

            def step_sse_early(self, key):
                self.stream_head()

            def step_sse_role_only(self, key):
                self.stream_head()
                self.wfile.write(b": keep-alive\n\n" + chunk(key, {"role": "assistant", "content": ""}))
                self.wfile.flush()

            def replay(self, provider, name, streaming):
                """A provider's documented answer, from the translation fixtures."""
                if streaming:
                    self.stream_head()
                    self.wfile.write(fixture(provider, f"{name}.sse"))
                else:
                    self.send(200, fixture(provider, f"{name}.wire-response.json"))

            def step_anthropic(self, key):
                tools = bool(upstream.log[-1][2].get("tools"))
                self.replay("anthropic", "tool_use" if tools else ("text" if self.streaming else "basic"),
                            self.streaming)

            def step_anthropic_overloaded(self, key):
                self.send(529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')

            def step_anthropic_error_event(self, key):
                self.stream_head()
                self.wfile.write(fixture("anthropic", "error.sse"))

            def step_gemini(self, key):
                tools = bool(upstream.log[-1][2].get("tools"))
                self.replay("gemini", "function_call" if tools else "text", ":streamGenerateContent" in self.path)

            def step_proxy(self, key):
                """Passes the request on to `upstream.target` (a real server) and its answer back."""
                import httpx

                url = upstream.target + "/chat/completions"
                body = json.dumps(upstream.log[-1][2]).encode()
                with httpx.stream("POST", url, content=body, headers={"content-type": "application/json"},
                                  timeout=120) as r:
                    ctype = r.headers.get("content-type", "application/json")
                    if ctype.startswith("text/event-stream"):
                        self.stream_head()
                        for part in r.iter_raw():
                            self.wfile.write(part)
                            self.wfile.flush()
                    else:
                        self.send(r.status_code, r.read(), ctype)

            def step_gemini_exhausted(self, key):
                self.send(429, fixture("gemini", "resource_exhausted.wire-error.json"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def base(self, key):
        return f"http://127.0.0.1:{self.port}/{key}/v1"

    def requests(self, key):
        with self.lock:
            return [(t, body) for k, t, body in self.log if k == key]

    def last(self, key):
        """The path, headers and body of the last request for `key`."""
        with self.lock:
            path, headers = next((p, h) for k, p, h in reversed(self.seen) if k == key)
            body = next(b for k, _, b in reversed(self.log) if k == key)
        return path, {k.lower(): v for k, v in headers.items()}, body

    def last_raw(self, key):
        """The bytes of the last request for `key`, as they arrived."""
        with self.lock:
            return next(b for k, b in reversed(self.raw) if k == key)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
