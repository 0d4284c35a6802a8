"""`llmsizer serve`: the API answers what the CLI prints, refuses in one line, serves only the
package's own files and bounds what it reads."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading

import pytest

from llmsizer.cli import build_parser
from llmsizer.web.api import NOT_IN_API
from llmsizer.web.server import MAX_UPLOAD_BYTES, make_server


@pytest.fixture(scope="module")
def server():
    srv, app = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    app.close()


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


def get_json(port, path):
    status, _, data = request(port, "GET", path)
    return status, json.loads(data)


def cli_json(*argv):
    out = subprocess.run([sys.executable, "-m", "llmsizer", *argv, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 3), out.stderr
    return json.loads(out.stdout)


def assert_one_line_error(status, body, code=400):
    assert status == code
    assert set(body) == {"error"}
    assert body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]


# -- the API mirrors the CLI ---------------------------------------------------------------------

@pytest.mark.parametrize("query, argv", [
    ("train?model=llama-2-7b&gpu=a100&gpus=8&zero=1&global-batch=64",
     ["train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1",
      "--global-batch", "64"]),
    ("infer?model=llama-2-70b&gpu=h100&tp=4&batch=16&prompt=2k&sweep=1",
     ["infer", "llama-2-70b", "--gpu", "h100", "--tp", "4", "--batch", "16", "--prompt", "2k",
      "--sweep"]),
    ("params?model=mixtral-8x7b&tp=2&ep=4",
     ["params", "mixtral-8x7b", "--tp", "2", "--ep", "4"]),
])
def test_api_answer_equals_cli_json(server, query, argv):
    status, data = get_json(server, "/api/" + query)
    assert status == 200
    assert data == cli_json(*argv)


def test_remembered_sweep_passes_give_the_cli_answer(server):
    # a second batch for the same workload reuses the sweep the server remembers: the answer is
    # still what the command line (which remembers nothing) prints for that batch
    for batch in ("8", "24"):
        status, data = get_json(server, "/api/infer?model=llama-3-8b&gpu=a100&batch=" + batch
                                + "&prompt=1500&sweep=1")
        assert status == 200
        assert data == cli_json("infer", "llama-3-8b", "--gpu", "a100", "--batch", batch,
                                "--prompt", "1500", "--sweep")


def test_the_memo_answers_only_inside_the_api():
    from llmsizer.analysis import inference
    from llmsizer.web import memo

    memo.install()
    inference.compute_bound_batch.cache_clear()
    spec_args = _small_serving_args()
    inference.compute_bound_batch(*spec_args)  # outside the API: computed, not remembered
    assert inference.compute_bound_batch.cache_info().currsize == 0
    with memo.active():
        first = inference.compute_bound_batch(*spec_args)
        again = inference.compute_bound_batch(*spec_args)
    info = inference.compute_bound_batch.cache_info()
    assert first == again and info.hits == 1 and info.currsize == 1


def _small_serving_args():
    from llmsizer import get_accelerator, get_model
    from llmsizer.analysis.inference import ServingConfig

    return get_model("gpt2"), get_accelerator("a100"), ServingConfig(), 1024


def test_does_not_fit_is_still_an_answer_with_its_exit_status(server):
    status, headers, data = request(server, "GET", "/api/train?model=llama-2-70b&gpu=a100&gpus=8")
    assert status == 200
    assert headers["X-Llmsizer-Status"] == "3"
    assert json.loads(data)["fits"] is False


def test_view_carries_the_same_result_and_its_charts(server):
    _, plain = get_json(server, "/api/infer?model=llama-2-7b&gpu=a100&sweep=true")
    status, view = get_json(server, "/api/view/infer?model=llama-2-7b&gpu=a100&sweep=true")
    assert status == 200 and view["result"] == plain
    assert [c["title"] for c in view["charts"]][1].startswith("Batch sweep")


# -- refusals: 400 and one line -------------------------------------------------------------------

@pytest.mark.parametrize("query, words", [
    ("train?model=llama-2-7b&gpu=a100&zero=7", "--zero"),
    ("train?model=llama-2-7b&gpu=a100&tp=x", "--tp"),
    ("train?model=llama-2-7b", "--gpu"),
    ("infer?model=llama-2-7b&gpu=h101", "did you mean"),
    ("infer?model=llama-2-7b&gpu=a100&sweep=maybe", "sweep"),
    ("infer?model=llama-2-7b&gpu=a100&bogus=1", "not a flag of infer"),
    ("infer?model=llama-2-7b&gpu=a100&tp=1&tp=2", "twice"),
    ("train?model=llama-2-7b&gpu=a100&calibration=/etc/passwd", "not allowed on the server"),
    ("plan?model=llama-2-7b&gpu=a100&gpus=8&seq=4k&global-batch=8&export=deepspeed&"
     "output-file=/tmp/x", "not allowed on the server"),
    ("params?model=../../etc/passwd", "catalog name"),
    ("params?model=/etc/passwd", "catalog name"),
    ("params?model=~/config.json", "catalog name"),
    ("params?model=C:%5Cconfig.json", "catalog name"),
    ("params?model=--help", "catalog name"),
    ("params?model=upload:0123456789", "upload token"),
    ("train?model=llama-2-7b&gpu=/etc/passwd", "catalog name"),
    ("params?model=llama-2-7b&x=%ff", "query string"),
])
def test_bad_input_is_400_with_one_line(server, query, words):
    status, body = get_json(server, "/api/" + query)
    assert_one_line_error(status, body)
    assert words in body["error"]


def test_unknown_command_is_404_with_one_line(server):
    status, body = get_json(server, "/api/serve?port=1")
    assert_one_line_error(status, body, 404)


def test_errors_speak_chinese_when_asked(server):
    status, body = get_json(server, "/api/infer?model=llama-2-7b&gpu=h101&lang=zh")
    assert_one_line_error(status, body)
    assert "未知 GPU" in body["error"]


# -- only packaged files --------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/api.py",
    "/../../../../etc/passwd", "//etc/passwd", "/static/", "/static//etc/passwd",
    "/static/index.html%00.js", "/static/.hidden", "/server.py", "/web/server.py",
    "/static/chart.js/..", "/%2e%2e/%2e%2e/etc/passwd",
])
def test_no_file_outside_the_packaged_assets_is_served(server, path):
    status, _, data = request(server, "GET", path)
    assert status == 404
    assert b"import" not in data and b"root:" not in data


def test_page_and_assets_are_served_with_a_content_security_policy(server):
    status, headers, data = request(server, "GET", "/")
    assert status == 200 and b"/static/app.js" in data
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, _ = request(server, "GET", "/static/chart.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")


def test_requests_addressed_to_another_host_are_refused(server):
    status, _, data = request(server, "GET", "/api/schema", headers={"Host": "evil.example"})
    assert_one_line_error(status, json.loads(data))


# -- bounded sizes --------------------------------------------------------------------------------

def test_long_urls_are_refused(server):
    status, _, data = request(server, "GET", "/api/params?model=" + "a" * 9000)
    assert_one_line_error(status, json.loads(data), 414)


def test_long_values_and_many_parameters_are_refused(server):
    status, body = get_json(server, "/api/params?model=" + "a" * 2000)
    assert_one_line_error(status, body)
    many = "&".join(f"k{i}=1" for i in range(100))
    status, body = get_json(server, "/api/params?model=gpt2&" + many)
    assert_one_line_error(status, body)


def test_oversized_uploads_are_refused_without_reading_them(server):
    status, _, data = request(server, "POST", "/api/config", body=b"{}",
                              headers={"Content-Length": str(MAX_UPLOAD_BYTES + 1),
                                       "Content-Type": "application/json"})
    assert_one_line_error(status, json.loads(data), 413)


def test_uploads_need_a_length_and_json(server):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    conn.putrequest("POST", "/api/config")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 411
    conn.close()
    status, _, data = request(server, "POST", "/api/config", body=b"{}",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_one_line_error(status, json.loads(data), 415)


@pytest.mark.parametrize("body, words", [
    (b"not json", "broken JSON"),
    (b'{"a": NaN}', "NaN"),
    (b"[" * 100 + b"]" * 100, "nested"),
    (b"\xff\xfe{}", "UTF-16"),
    (b'{"model_type": "llama", "hidden_size": 1, "hidden_size": 2}', "twice"),
    (b'{"model_type": "llama", "hidden_size": -4}', "hidden_size"),
])
def test_bad_uploads_are_400_with_one_line_naming_no_server_path(server, body, words):
    status, _, data = request(server, "POST", "/api/config", body=body,
                              headers={"Content-Type": "application/json"})
    error = json.loads(data)
    assert_one_line_error(status, error)
    assert words in error["error"]
    assert "/tmp" not in error["error"] and "llmsizer-uploads" not in error["error"]


def test_an_uploaded_config_answers_like_the_cli_given_the_file(server, tmp_path):
    from llmsizer.catalog import model_entry

    config = dict(model_entry("llama-2-7b").config, num_hidden_layers=12)
    text = json.dumps(config).encode()
    status, _, data = request(server, "POST", "/api/config", body=text,
                              headers={"Content-Type": "application/json"})
    assert status == 200
    token = json.loads(data)["model"]
    assert token.startswith("upload:")
    status, answer = get_json(server, f"/api/params?model={token}")
    assert status == 200
    path = tmp_path / "config.json"
    path.write_bytes(text)
    expected = cli_json("params", str(path))
    assert answer["total"] == expected["total"] and answer["breakdown"] == expected["breakdown"]


# -- concurrency ----------------------------------------------------------------------------------

CONCURRENT_QUERIES = [
    *[("train", [("model", "llama-2-7b"), ("gpu", "a100"), ("gpus", "8"), ("zero", z),
                 ("global-batch", "64")]) for z in "0123"],
    ("train", [("model", "gpt2"), ("gpu", "a100")]),  # leaves a note: --seq at gpt2's limit
    ("train", [("model", "llama-2-7b"), ("gpu", "h100"), ("gpus", "16"),
               ("global-batch-tokens", "4M")]),  # a note: 4M read as binary
    ("train", [("model", "llama-2-70b"), ("gpu", "h100"), ("gpus", "64"), ("tp", "8"),
               ("pp", "4"), ("schedule", "interleaved:2"), ("global-batch", "128")]),
    ("infer", [("model", "llama-2-7b"), ("gpu", "a100"), ("batch", "8")]),
    ("infer", [("model", "mixtral-8x7b"), ("gpu", "h100"), ("tp", "2"), ("prompt", "4k")]),
    ("params", [("model", "llama-2-13b"), ("tp", "2")]),
    ("infer", [("model", "llama-2-7b"), ("gpu", "h101")]),  # a refusal
    ("plan", [("model", "llama-2-7b"), ("gpu", "a100"), ("gpus", "8"), ("seq", "2k")]),
]


def answers(cli, queries, threads):
    from concurrent.futures import ThreadPoolExecutor

    from llmsizer.web.api import ApiError

    def one(query):
        try:
            a = cli.run(*query)
            return a.text, a.status, a.notes
        except ApiError as e:
            return e.message, e.status, ()

    if threads == 1:
        return [one(q) for q in queries]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, queries))


def test_concurrent_requests_answer_as_sequential_ones():
    from llmsizer.web.api import Cli

    sequential = answers(Cli(), CONCURRENT_QUERIES, 1)
    concurrent = answers(Cli(), CONCURRENT_QUERIES * 2, 8)  # each twice, cold cache
    assert concurrent == sequential * 2
    assert any(notes for _, _, notes in sequential)  # notes stay with their own request


def test_requests_run_in_parallel_not_one_at_a_time(monkeypatch):
    # Two requests that can only finish together: with one lock around every command, the
    # first would wait at the barrier for a second that never starts.
    from llmsizer import cli
    from llmsizer.web.api import Cli

    barrier = threading.Barrier(2, timeout=20)

    def models(args):
        barrier.wait()
        return cli.Outcome('{"models": []}', wrap=False)

    monkeypatch.setitem(cli.COMMANDS, "models", models)
    got = answers(Cli(), [("models", [])] * 2, 2)
    assert got == [('{"models": []}', 0, ())] * 2


def test_the_serving_simulation_still_runs_one_at_a_time(monkeypatch):
    import time

    from llmsizer import cli
    from llmsizer.web.api import Cli

    running, most = [0], [0]

    def simulate(args):
        running[0] += 1
        most[0] = max(most[0], running[0])
        time.sleep(0.05)
        running[0] -= 1
        return cli.Outcome("{}", wrap=False)

    monkeypatch.setitem(cli.COMMANDS, "simulate", simulate)
    queries = [("simulate", [("model", "llama-2-7b"), ("gpu", "a100"), ("qps", str(q))])
               for q in (1, 2, 3, 4)]
    answers(Cli(), queries, 4)
    assert most[0] == 1


def test_concurrent_http_requests_get_the_sequential_bodies(server):
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlencode

    from llmsizer.web.api import Cli

    queries = [q for q in CONCURRENT_QUERIES if q[0] != "plan"]
    paths = [f"/api/{command}?{urlencode(query)}" for command, query in queries]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda p: request(server, "GET", p), paths))
    for (status, _, body), (text, code, _) in zip(got, answers(Cli(), queries, 1), strict=True):
        if code == 400:
            assert status == 400 and json.loads(body) == {"error": text}
        else:
            assert status == 200 and json.loads(body) == json.loads(text)


# -- the schema -----------------------------------------------------------------------------------

def test_schema_describes_every_command_and_every_flag_of_the_parser(server):
    status, schema = get_json(server, "/api/schema")
    assert status == 200
    parser = build_parser()
    subs = next(a for a in parser._actions if hasattr(a, "choices") and a.choices).choices
    assert set(schema["commands"]) == set(subs) - NOT_IN_API and "train" in schema["commands"]
    for name, command in schema["commands"].items():
        options = {s.lstrip("-") for s in subs[name]._option_string_actions} - {"h", "help"}
        listed = {f["name"] for f in command["flags"] if not f["positional"]}
        assert listed <= options and all(f"{n}" in options for n in listed)
        longest = {max(a.option_strings, key=len).lstrip("-") for a in subs[name]._actions
                   if a.option_strings and a.dest != "help"}
        assert listed == longest


def test_schema_states_types_defaults_choices_and_help(server):
    _, schema = get_json(server, "/api/schema")
    train = {f["name"]: f for f in schema["commands"]["train"]["flags"]}
    assert train["model"]["positional"] and train["model"]["required"]
    assert train["tp"]["type"] == "int" and train["tp"]["default"] == 1
    assert train["seq"]["type"] == "length"
    assert train["tokens"]["type"] == "count"
    assert train["sequence-parallel"]["type"] == "bool"
    assert train["lang"]["choices"] == ["en", "zh"]
    assert train["global-batch"]["group"] == train["global-batch-tokens"]["group"] is not None
    assert train["calibration"]["web"] is False and train["gpu"]["web"] is True
    assert all(f["help"] for f in train.values() if f["name"] != "json")
    simulate = {f["name"]: f for f in schema["commands"]["simulate"]["flags"]}
    assert simulate["engine"]["choices"]


def test_serve_binds_loopback_by_default():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000


def test_llmsizer_serve_runs_as_a_process_on_loopback():
    proc = subprocess.Popen([sys.executable, "-m", "llmsizer", "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("llmsizer: serving http://127.0.0.1:")
        port = int(line.split(":")[3].split("/")[0])
        status, schema = get_json(port, "/api/schema")
        assert status == 200 and "train" in schema["commands"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
