"""Model-serving engines on this machine (issue 14): start-up, memory and latency of
the inference service (`bcdiag.serving.service`, Ray Serve: score and Grad-CAM heatmap),
of the champion's pyfunc on Ray Serve (score only), and on MLServer's MLflow runtime.

Registers the ultrasound recipe's network (`app_latency.recipe_network`: untrained, so
latency, not quality) as the US champion in a throwaway home, then starts each engine on
127.0.0.1 in turn: start = process start until ready (service: ``/health`` lists the
champion; MLServer: ``/v2/models/<name>/ready``); memory = RSS and PSS summed over the
engine's session (Ray's GCS, raylet and workers; MLServer's workers) when ready and after
the sequential requests; latency of BreastMNIST test image 0 as PNG after one warm-up:
N sequential requests, then C clients x R requests at once. torch runs one thread
everywhere; each start and each latency phase waits for a load average below --max-load.

MLServer comes from its own venv (its pins conflict with requirements.lock: fastapi<0.116,
protobuf<7; 1.7.1's workers need uvloop<0.22, SeldonIO/MLServer#2286); its stock runtime
cannot encode the pyfunc's output under pandas 3 (string columns, None), hence `RUNTIME`.
Its gRPC server cannot be turned off (it binds 127.0.0.1); metrics are.

    cd benchmarks && ../.venv/bin/python serving_engines.py \\
        --mlserver-python /path/to/mlserver-venv/bin/python [--data-dir ../../shared/data]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import mlflow
import psutil
from app_latency import recipe_network, register, ultrasound_pngs

from bcdiag.platform.services import scoring_service
from bcdiag.processes import free_port, stop
from bcdiag.serving.client import SCORING_TOKEN_ENV
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage, upgrade

MODEL = "bcdiag-us"
RUNTIME = """from mlserver_mlflow import MLflowRuntime
class BcdiagRuntime(MLflowRuntime):
    async def predict(self, payload):  # string columns as objects, None as ""
        output = self._model.predict(self.decode_request(payload))
        text = ["call", "error"]
        output[text] = output[text].astype(object).where(output[text].notna(), "")
        return self.encode_response(output)
"""
Request = tuple[str, bytes, dict[str, str]]  # url, body, headers


def quiet(max_load: float, patience_s: float = 1200.0) -> float:
    """Wait until the 1-minute load average is below `max_load`; return it."""
    deadline = time.monotonic() + patience_s
    while (load := os.getloadavg()[0]) >= max_load and time.monotonic() < deadline:
        time.sleep(30)
    return load


def champion_home(home: Path) -> tuple[Settings, str]:
    """Settings of `home`, whose registry gets the ultrasound champion; its pyfunc's folder."""
    uri = f"sqlite:///{home / 'mlflow.sqlite'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", str(home / "models")))
    settings = Settings(home=home, scoring_port=free_port(), mlflow_tracking_uri=uri)
    upgrade(settings.resolved_database_url)
    with Storage.from_settings(settings) as storage:
        register(recipe_network("busi256", "US"), storage)
    return settings, mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion")


def answers(url: str, check: Callable[[bytes], bool] = lambda _: True) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and check(response.read())
    except OSError:
        return False


def session(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """`process` and every process of its session: Ray's GCS, raylet and workers; MLServer's
    inference workers."""
    found = []
    for each in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(each.pid) == process.pid:
                found.append(each)
    return found


def memory(process: subprocess.Popen[bytes]) -> tuple[float, float]:
    """RSS and PSS (MiB) summed over the session of `process`."""
    rss = pss = 0
    for each in session(process):
        with contextlib.suppress(psutil.Error):
            info = each.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
    return rss / 2**20, pss / 2**20


def timed(request: Request) -> float:
    url, body, headers = request
    began = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=120) as reply:
        reply.read()  # any status but 2xx raises
    return time.perf_counter() - began


def p50_p95(values: list[float]) -> str:
    p95 = statistics.quantiles(values, n=20)[18]
    return f"p50 {statistics.median(values):.3f} s p95 {p95:.3f} s"


def run(
    args: argparse.Namespace,
    name: str,
    argv: list[str],
    env: dict[str, str],
    ready: Callable[[], bool],
    request: Request,
) -> str:
    """Start an engine once the load is low, wait until `ready`, time `request`, stop it
    and what it started; its line of figures."""
    start_load = quiet(args.max_load)
    began = time.perf_counter()
    process = subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True)
    try:
        while not ready():
            if process.poll() is not None or time.perf_counter() - began > 300:
                raise RuntimeError(f"{name} did not get ready")
            time.sleep(0.1)
        start_s = time.perf_counter() - began
        ready_mem = memory(process)
        timed(request)  # warm-up, not counted
        load = quiet(args.max_load)
        sequential = [timed(request) for _ in range(args.requests)]
        after_mem = memory(process)
        with ThreadPoolExecutor(args.clients) as pool:
            began = time.perf_counter()
            burst = list(pool.map(timed, [request] * (args.clients * args.each)))
            rate = len(burst) / (time.perf_counter() - began)
        end_load = os.getloadavg()[0]
    finally:
        started = session(process)
        stop([process])
        for each in started:
            with contextlib.suppress(psutil.Error):
                each.kill()  # what outlived its parent
    return (
        f"{name:<22} start {start_s:5.1f} s  memory RSS {ready_mem[0]:.0f} MiB / PSS "
        f"{ready_mem[1]:.0f} MiB (after {args.requests}: {after_mem[0]:.0f} / {after_mem[1]:.0f})"
        f"  sequential {p50_p95(sequential)}  {args.clients} clients {p50_p95(burst)} "
        f"{rate:.1f} req/s  [load {start_load:.2f} at start, {load:.2f} → {end_load:.2f} "
        "over the requests]"
    )


def ray_env(settings: Settings) -> dict[str, str]:
    """The inference service's environment as `make run` sets it."""
    return {**scoring_service(settings).env, "OMP_NUM_THREADS": "1"}


def ray_service(args: argparse.Namespace, settings: Settings, png: bytes) -> str:
    service, env = scoring_service(settings), ray_env(settings)
    url = f"{service.public_url}/score?filename=us_0.png&modality=US"
    request = (url, png, {"Authorization": f"Bearer {env[SCORING_TOKEN_ENV]}"})
    health = f"{service.public_url}/health"
    ready = partial(answers, health, lambda body: MODEL.encode() in body)
    return run(args, "ray service+heatmap", service.argv, env, ready, request)


def ray_pyfunc(args: argparse.Namespace, settings: Settings, model: str, png: bytes) -> str:
    port = free_port()
    argv = [sys.executable, __file__, "--serve-on-ray", model, str(port)]
    url = f"http://127.0.0.1:{port}/"
    env = ray_env(settings)
    return run(args, "ray pyfunc score-only", argv, env, partial(answers, url), (url, png, {}))


def serve_on_ray(model: str, port: int) -> None:
    """Serve the pyfunc with Ray Serve as MLServer serves it: predict only, no batching."""
    import pandas as pd
    import ray
    from ray import serve
    from starlette.requests import Request as HttpRequest

    @serve.deployment(name="pyfunc", ray_actor_options={"num_cpus": 0})
    class Pyfunc:
        def __init__(self) -> None:
            self.model = mlflow.pyfunc.load_model(model)

        async def __call__(self, request: HttpRequest) -> dict[str, str]:
            if request.method == "GET":
                return {"status": "ok"}
            frame = pd.DataFrame({"image": [await request.body()], "name": ["us_0.png"]})
            return {k: str(v) for k, v in self.model.predict(frame).iloc[0].items()}

    temp = tempfile.mkdtemp(prefix="bcdiag-ray-")  # as the service: short socket paths
    ray.init(
        address="local", include_dashboard=False, object_store_memory=128 * 2**20, _temp_dir=temp
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Pyfunc.bind(), name="pyfunc", route_prefix="/")  # type: ignore[attr-defined]
    stopping = threading.Event()  # set after ray.init, which installs a SIGTERM handler too
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def mlserver(args: argparse.Namespace, repo: Path, model: str, png: bytes) -> str:
    """MLServer with `RUNTIME` on `model` from `repo`, REST on a free port; V2 requests."""
    port, workers = free_port(), args.mlserver_workers
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port()}
    settings |= {"metrics_endpoint": None, "parallel_workers": workers}
    (repo / MODEL).mkdir(parents=True)
    (repo / "settings.json").write_text(json.dumps(settings))
    (repo / MODEL / "bcdiag_runtime.py").write_text(RUNTIME)
    implementation = {"name": MODEL, "implementation": "bcdiag_runtime.BcdiagRuntime"}
    (repo / MODEL / "model-settings.json").write_text(
        json.dumps({**implementation, "parameters": {"uri": model}})
    )
    cell: dict[str, object] = {"datatype": "BYTES", "shape": [1, 1]}
    image = {**cell, "name": "image", "data": [b64encode(png).decode()]}
    image["parameters"] = {"content_type": "base64"}
    name = {**cell, "name": "name", "data": ["us_0.png"]}
    url = f"http://127.0.0.1:{port}/v2/models/{MODEL}"
    body = json.dumps({"inputs": [image, name]}).encode()
    request = (f"{url}/infer", body, {"Content-Type": "application/json"})
    argv = [str(Path(args.mlserver_python).parent / "mlserver"), "start", str(repo)]
    env = {"OMP_NUM_THREADS": "1"}
    ready = partial(answers, f"{url}/ready")
    return run(args, f"mlserver workers={workers}", argv, env, ready, request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mlserver-python", help="python of MLServer's venv (required)")
    parser.add_argument("--data-dir", type=Path, help="default: BCDIAG_DATA_DIR")
    parser.add_argument("--mlserver-workers", type=int, default=1, help="its parallel_workers")
    parser.add_argument("--requests", type=int, default=50, help="sequential requests")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--each", type=int, default=10, help="requests per client")
    parser.add_argument("--max-load", type=float, default=0.7, help="wait for a lower load")
    parser.add_argument("--engines", nargs="+", default=["ray", "ray-pyfunc", "mlserver"])
    parser.add_argument("--serve-on-ray", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_on_ray:
        serve_on_ray(args.serve_on_ray[0], int(args.serve_on_ray[1]))
        return
    if "mlserver" in args.engines and not args.mlserver_python:
        parser.error("--mlserver-python is required to measure MLServer")
    data_dir = get_settings().required_data_dir(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="bcdiag-engines-") as folder:
        settings, model = champion_home(Path(folder))
        png = ultrasound_pngs(data_dir, settings.home, 1)[0].read_bytes()
        runs = {
            "ray": lambda: ray_service(args, settings, png),
            "ray-pyfunc": lambda: ray_pyfunc(args, settings, model, png),
            "mlserver": lambda: mlserver(args, settings.home / "mlserver", model, png),
        }
        print(f"{os.cpu_count()} CPU cores; BreastMNIST test image 0 as PNG; torch 1 thread")
        for engine in args.engines:
            print(runs[engine](), flush=True)


if __name__ == "__main__":
    main()
