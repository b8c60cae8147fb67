"""Serving an image model: base64 JSON and multipart uploads to ``POST /classify``.

Two parts:
- the request guard in process (httpx's ASGI transport, real multipart bodies built by httpx, the
  real image request model behind it, answering as BentoML's endpoint does): the upload rewrite,
  the body caps, the 415 for a text model, and every bad upload or image a clear 4xx;
- the real thing: an EfficientNet-Lite0 fine-tuned for a few steps on 100 MNIST digits (64 px),
  packaged, and served by ``tuneops serve`` as a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tuneops.components.config import IMAGE_TASK, TEXT_TASK, ServingConfig
from tuneops.components.tasks.image.decode import content_hash
from tuneops.components.tasks.registry import get_task
from tuneops.serving.guard import RequestGuard, max_body_bytes

from tests.e2e.serving_process import served, tuneops_home

MAX_ITEMS, MAX_IMAGE_BYTES, MAX_PIXELS = 4, 200_000, 1_000_000
CONFIG = ServingConfig(max_items=MAX_ITEMS, max_image_bytes=MAX_IMAGE_BYTES, max_image_pixels=MAX_PIXELS,
                       max_text_chars=300)


# --- images, good and bad ------------------------------------------------------------------------

def digit_pngs(count: int, seed: int = 3) -> list[tuple[str, bytes]]:
    """``count`` real MNIST digits (label, PNG bytes), from the demo's own digits file."""
    from PIL import Image

    from tuneops.components.data.demo_images import SIDE, read_digits

    pixels, labels = read_digits()
    rows = np.random.default_rng(seed).choice(len(labels), size=count, replace=False)
    found = []
    for row in rows:
        buffer = io.BytesIO()
        Image.fromarray(pixels[row].reshape(SIDE, SIDE), mode="L").save(buffer, format="PNG")
        found.append((str(labels[row]), buffer.getvalue()))
    return found


def png_bomb(side: int = 30_000) -> bytes:
    """A real decompression bomb: a valid 1-bit PNG of ``side`` x ``side`` white pixels, about
    100 KB on disk and 112 MB of rows once inflated (compressed row block by row block)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte, then the packed pixels
    deflate, parts = zlib.compressobj(9), []
    for _ in range(0, side, 1000):
        parts.append(deflate.compress(row * 1000))
    parts.append(deflate.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def digits() -> list[tuple[str, bytes]]:
    return digit_pngs(12)


@pytest.fixture(scope="module")
def bad_images(digits) -> dict[str, tuple[bytes, str]]:
    """What a client may send instead of an image: (bytes, a fragment of the error it must get)."""
    good = digits[0][1]
    bomb = png_bomb()
    assert len(bomb) < MAX_IMAGE_BYTES  # small as a file: only the header can tell
    return {
        "random bytes": (random.Random(0).randbytes(3000), "not an image"),
        "truncated PNG": (good[: len(good) // 2], "cannot be decoded"),
        "30000x30000 PNG": (bomb, f"over the limit of {MAX_PIXELS:,} pixels"),
        "text file": (b"label,text\npositive,great phone\n", "not an image"),
        "empty file": (b"", "empty"),
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def multipart(files: list[tuple[str, bytes]], data: dict | None = None) -> dict:
    """Request kwargs of a real multipart/form-data body (httpx builds it, as a client would)."""
    request = httpx.Request("POST", "http://test/classify",
                            files=[(field, (f"upload-{i}.png", content, "image/png"))
                                   for i, (field, content) in enumerate(files)], data=data)
    return {"content": request.read(), "headers": {"content-type": request.headers["content-type"]}}


# --- the guard in process ------------------------------------------------------------------------

class Endpoint:
    """The service's request parsing as BentoML does it (``_bentoml_impl/server/app.py``: the body
    validated by the IODescriptor BentoML makes of the task's request model, a ValidationError
    answered as a 400 of its errors without inputs), answering each input's content hash; it keeps
    the headers it was given."""

    def __init__(self, task: str, config: ServingConfig = CONFIG) -> None:
        # What ``@bentoml.api(input_spec=...)`` turns the model into: BentoML rewrites its field
        # annotations, so the plain pydantic model would not be the schema the service runs.
        from _bentoml_sdk.io_models import ensure_io_descriptor

        self.request_model = ensure_io_descriptor(get_task(task).request_model(config))
        self.seen_headers: dict[bytes, bytes] = {}

    async def __call__(self, scope, receive, send) -> None:
        self.seen_headers = dict(scope["headers"])
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            request = self.request_model.model_validate_json(body or b"{}")
            status, payload = 200, [content_hash(bytes(item)) if isinstance(item, bytes) else str(item)
                                    for item in request.inputs]
        except ValidationError as exc:
            status = 400
            payload = {"error": f"{exc.error_count()} validation error for {exc.title}",
                       "detail": exc.errors(include_context=False, include_input=False)}
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def post(app, **request) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/classify", **request)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def image_endpoint() -> Endpoint:
    return Endpoint(IMAGE_TASK)


@pytest.fixture(scope="module")
def image_guard(image_endpoint) -> RequestGuard:
    return RequestGuard(image_endpoint, CONFIG, task=IMAGE_TASK)


def test_a_multipart_upload_becomes_the_json_request(image_guard, image_endpoint, digits) -> None:
    files = [("images", digits[0][1]), ("file", digits[1][1]), ("anything", digits[2][1])]
    response = post(image_guard, **multipart(files))
    assert response.status_code == 200, response.text
    assert response.json() == [content_hash(content) for _, content in files]  # each file, in order
    # The service saw a JSON body, described as one.
    seen = image_endpoint.seen_headers
    assert seen[b"content-type"] == b"application/json"
    as_json = {"images": [b64(content) for _, content in files]}
    assert int(seen[b"content-length"]) == len(json.dumps(as_json))
    # The same images as base64 JSON: the same answer.
    assert post(image_guard, json=as_json).json() == response.json()


def test_a_text_model_refuses_uploads_with_415_and_keeps_json(digits) -> None:
    guard = RequestGuard(Endpoint(TEXT_TASK), CONFIG, task=TEXT_TASK)
    response = post(guard, **multipart([("images", digits[0][1])]))
    assert response.status_code == 415
    assert response.json()["error"] == ("multipart uploads are for image models; this service answers "
                                        "text-classification requests: send JSON")
    assert post(guard, json={"texts": ["fine"]}).status_code == 200


def test_the_body_cap_fits_every_valid_request_and_no_more(image_guard, digits) -> None:
    # max_items images of max_image_bytes each, as base64 JSON, fit under the image cap...
    largest = json.dumps({"images": ["A" * (4 * -(-MAX_IMAGE_BYTES // 3))] * MAX_ITEMS}, separators=(",", ":"))
    cap = max_body_bytes(CONFIG, IMAGE_TASK)
    assert len(largest) <= cap < len(largest) + 8192
    assert max_body_bytes(CONFIG, TEXT_TASK) == max_body_bytes(CONFIG) < cap
    # ...and one byte over it is a 413 that says what to do.
    response = post(image_guard, content=b"x" * (cap + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == f"request body over {cap} bytes; send fewer or smaller images"
    text_guard = RequestGuard(Endpoint(TEXT_TASK), CONFIG, task=TEXT_TASK)
    response = post(text_guard, json={"texts": ["x" * 20_000]})
    assert response.status_code == 413 and "send fewer or shorter texts" in response.json()["error"]


def test_every_bad_upload_gets_a_one_line_4xx(image_guard, digits) -> None:
    good = digits[0][1]
    upload = multipart([("images", good), ("images", good)])
    body, content_type = upload["content"], upload["headers"]["content-type"]
    cases = [
        ("a form field", multipart([("images", good)], data={"images": "photo.png"}), 400,
         "(field 'images') is a form field, not a file; send each image as a file part"),
        ("truncated body", {"content": body[:-40], "headers": {"content-type": content_type}}, 400,
         "multipart body ends before its closing boundary"),
        ("no boundary", {"content": body, "headers": {"content-type": "multipart/form-data"}}, 400,
         "without a boundary"),
        ("not multipart inside", {"content": b"hello", "headers": {"content-type": content_type}}, 400,
         "malformed multipart body"),
        ("empty body", {"content": b"", "headers": {"content-type": content_type}}, 400, "empty multipart body"),
        ("too many files", multipart([("images", good)] * (MAX_ITEMS + 1)), 400,
         f"images holds more than {MAX_ITEMS} files; at most {MAX_ITEMS} per request"),
        ("a file over the limit", multipart([("images", good), ("images", b"\0" * (MAX_IMAGE_BYTES + 1))]), 413,
         f"images[1] (upload-1.png) is over the limit of {MAX_IMAGE_BYTES:,} bytes per image"),
        ("multipart/mixed", {"content": body, "headers": {"content-type": "multipart/mixed; boundary=x"}}, 415,
         "multipart/mixed is not an upload this service reads"),
        ("no file at all", {"content": f"--{content_type.split('boundary=')[1]}--\r\n".encode(),
                            "headers": {"content-type": content_type}}, 400, "images is empty"),
    ]
    failures = []
    for what, request, status, fragment in cases:
        response = post(image_guard, **request)
        error = response.json().get("error", "")
        if response.status_code != status or fragment not in error or "\n" in error:
            failures.append(f"{what}: {response.status_code} {response.text[:300]}")
    assert failures == []


def test_bad_images_are_named_in_a_one_line_400_as_json_or_upload(image_guard, digits, bad_images) -> None:
    good = digits[0][1]
    failures = []
    for what, (content, fragment) in bad_images.items():
        for how, request in (("json", {"json": {"images": [b64(good), b64(content)]}}),
                             ("upload", multipart([("images", good), ("images", content)]))):
            response = post(image_guard, **request)
            error = response.json().get("error", "")
            if response.status_code != 400 or not error.startswith("images[1]: ") or fragment not in error \
                    or "\n" in error:
                failures.append(f"{what} ({how}): {response.status_code} {response.text[:300]}")
    for what, request, fragment in [
        ("not base64", {"json": {"images": [b64(good), "not base64!"]}}, "images[1]: not valid base64"),
        ("empty list", {"json": {"images": []}}, "images is empty; send at least one image"),
        ("too many", {"json": {"images": [b64(good)] * (MAX_ITEMS + 1)}}, f"at most {MAX_ITEMS} per request"),
        ("not strings", {"json": {"images": [b64(good), 7]}}, "images[1]: Input should be a valid string"),
        ("texts to an image model", {"json": {"texts": ["fine"]}}, "images: Field required"),
    ]:
        response = post(image_guard, **request)
        if response.status_code != 400 or fragment not in response.json().get("error", ""):
            failures.append(f"{what}: {response.status_code} {response.text[:300]}")
    assert failures == []


def test_a_request_of_many_bad_images_gets_a_short_error(image_guard) -> None:
    noise = [b64(random.Random(seed).randbytes(500)) for seed in range(MAX_ITEMS)]
    response = post(image_guard, json={"images": noise})
    body = response.json()
    assert response.status_code == 400 and len(body["detail"]) == MAX_ITEMS
    assert [item["msg"].split(": ", 1)[0] for item in body["detail"]] == [f"images[{i}]" for i in range(MAX_ITEMS)]
    assert body["error"].count("not an image") == MAX_ITEMS
    # Eight bad images: every one in the detail, the first five in the error line.
    many = CONFIG.model_copy(update={"max_items": 8})
    guard = RequestGuard(Endpoint(IMAGE_TASK, many), many, task=IMAGE_TASK)
    response = post(guard, json={"images": [b64(random.Random(seed).randbytes(64)) for seed in range(8)]})
    assert response.status_code == 400 and len(response.json()["detail"]) == 8
    assert response.json()["error"].count("not an image") == 5
    assert response.json()["error"].endswith("; and 3 more")


# --- the served model over real HTTP -------------------------------------------------------------

TOKEN = "image-token-51c2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVER_SETTINGS = [
    f"serving.max_items={MAX_ITEMS}", f"serving.max_image_bytes={MAX_IMAGE_BYTES}",
    f"serving.max_image_pixels={MAX_PIXELS}",
    "serving.torch_threads=1",  # see tests/e2e/test_serving.py: a shared CPU stalls torch's thread barriers
    "serving.max_latency_ms=30000",
    "serving.keep_images=true",
]


@dataclass
class ImageServer:
    url: str
    home: Path
    labels: list[str]
    model_dir: Path

    def post(self, request: dict, headers: dict | None = None) -> httpx.Response:
        """POST /classify with ``request`` (httpx keyword arguments), the token and ``headers``."""
        merged = {**AUTH, **request.get("headers", {}), **(headers or {})}
        return httpx.post(f"{self.url}/classify", timeout=60, **{**request, "headers": merged})


@pytest.fixture(scope="module")
def image_release(tmp_path_factory):
    """EfficientNet-Lite0 fine-tuned for 20 steps on 100 real digits at 64 px, packaged."""
    from tuneops.components import registry
    from tuneops.components.config import TrainingConfig
    from tuneops.components.data.demo_images import write_image_demo
    from tuneops.components.training.finetune import finetune

    folder = write_image_demo(tmp_path_factory.mktemp("digits"), 120, seed=5)
    frame = pd.DataFrame([{"image": str(path.resolve()), "label": path.parent.name}
                          for path in sorted(folder.glob("*/*.png"))]).sample(frac=1, random_state=0)
    labels = sorted(frame["label"].unique())
    config = TrainingConfig(max_steps=20, batch_size=16, image_size=64, eval_every_steps=20, learning_rate=1e-3)
    trained = finetune(frame.iloc[:100], frame.iloc[100:], labels, "packaged:efficientnet-lite0", config,
                       tmp_path_factory.mktemp("image-model"), task=get_task(IMAGE_TASK))
    assert trained.last_loss < trained.first_loss
    reference = frame.iloc[:60].assign(prediction=frame["label"].iloc[:60])
    release = registry.package_model(trained.path, {"run_id": "serve-images", "metrics": {"macro_f1": 0.5}},
                                     reference)
    return release, labels


@pytest.fixture(scope="module")
def image_server(image_release, tmp_path_factory):
    from tuneops.components import registry

    release, labels = image_release
    home = tmp_path_factory.mktemp("image-serving-home")
    with tuneops_home(home):
        registry.set_champion(release.tag)
    with served(home, SERVER_SETTINGS, TOKEN) as (url, _):
        yield ImageServer(url, home, labels, release.model_dir)


def test_base64_and_multipart_get_one_prediction_per_image_in_order(image_server, digits) -> None:
    from tuneops.components.predictor import Predictor

    images = [content for _, content in digits[:MAX_ITEMS]]
    as_json = image_server.post({"json": {"images": [b64(image) for image in images]}},
                                headers={"X-Request-ID": "images-json-1"})
    upload = image_server.post(multipart([("images", image) for image in images]),
                               headers={"X-Request-ID": "images-upload-1"})
    assert as_json.status_code == 200, as_json.text
    assert upload.status_code == 200, upload.text
    expected = Predictor.from_dir(image_server.model_dir).predict_proba(images)
    for response, request_id in ((as_json, "images-json-1"), (upload, "images-upload-1")):
        body = response.json()
        assert len(body) == len(images) and response.headers["x-request-id"] == request_id
        for item, row in zip(body, expected):  # in order: each answer is its own image's
            assert item["request_id"] == request_id and item["label"] in image_server.labels
            assert list(item["probabilities"]) == image_server.labels
            np.testing.assert_allclose([item["probabilities"][label] for label in image_server.labels], row,
                                       atol=1e-4)
            assert item["label"] == image_server.labels[int(row.argmax())]


def test_bad_images_get_4xx_and_the_service_keeps_serving(image_server, digits, bad_images) -> None:
    good = digits[0][1]
    cases = []
    for what, (content, fragment) in bad_images.items():
        cases.append((f"{what} (json)", {"json": {"images": [b64(good), b64(content)]}}, 400, fragment))
        cases.append((f"{what} (upload)", multipart([("images", good), ("images", content)]), 400, fragment))
    cases += [
        ("not base64", {"json": {"images": ["%%% not base64 %%%"]}}, 400, "images[0]: not valid base64"),
        ("empty list", {"json": {"images": []}}, 400, "images is empty"),
        ("too many images", {"json": {"images": [b64(good)] * (MAX_ITEMS + 1)}}, 400,
         f"at most {MAX_ITEMS} per request"),
        ("too many files", multipart([("images", good)] * (MAX_ITEMS + 1)), 400, f"at most {MAX_ITEMS} per request"),
        ("a form field", multipart([("images", good)], data={"note": "x"}), 400, "is a form field, not a file"),
        ("a file over the limit", multipart([("images", b"\0" * (MAX_IMAGE_BYTES + 1))]), 413, "per image"),
        ("a body over the cap", {"content": b"x" * (max_body_bytes(CONFIG, IMAGE_TASK) + 1),
                                 "headers": {"content-type": "application/json"}}, 413,
         "send fewer or smaller images"),
    ]
    failures = []
    for what, request, status, fragment in cases:
        response = image_server.post(request)
        error = response.json().get("error", "") if response.headers.get("content-type", "").startswith(
            "application/json") else response.text
        named = not what.endswith(("(json)", "(upload)")) or error.startswith("images[1]: ")
        if response.status_code != status or fragment not in error or "\n" in error or not named:
            failures.append(f"{what}: {response.status_code} {response.text[:300]}")
    assert failures == []
    after = image_server.post({"json": {"images": [b64(good)]}})
    assert after.status_code == 200 and after.json()[0]["label"] in image_server.labels
    metrics = httpx.get(image_server.url + "/metrics", timeout=10).text
    assert 'tuneops_requests_rejected_total{reason="invalid_request"}' in metrics
    assert 'tuneops_requests_rejected_total{reason="too_large"}' in metrics


def test_bad_images_among_concurrent_good_ones_fail_only_their_own_request(image_server, digits,
                                                                          bad_images) -> None:
    """Validation runs before the adaptive batcher: a bad image cannot fail a batch it shares."""
    good = [b64(content) for _, content in digits[:MAX_ITEMS]]
    bad = [b64(content) for content, _ in bad_images.values()]
    bodies = [{"images": good[i % len(good):] or good} for i in range(12)] + [{"images": [item]} for item in bad]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
            return await asyncio.gather(*(client.post(f"{image_server.url}/classify", json=body) for body in bodies))

    responses = asyncio.run(send_all())
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 12 + [400] * len(bad)
    assert [len(response.json()) for response in responses[:12]] == [len(body["images"]) for body in bodies[:12]]


def test_the_prediction_log_keeps_a_content_hash_and_descriptors_per_image(image_server, digits) -> None:
    from tuneops.components.monitoring.prediction_log import INPUT, PredictionLog

    images = [content for _, content in digits[4:4 + MAX_ITEMS]]
    response = image_server.post(multipart([("file", image) for image in images]),
                                 headers={"X-Request-ID": "images-log-1"})
    assert response.status_code == 200, response.text
    logged = PredictionLog(image_server.home / "predictions").read()
    rows = logged[logged["request_id"] == "images-log-1"]
    records = [json.loads(value) for value in rows[INPUT]]
    assert [record["image"] for record in records] == [content_hash(image) for image in images]
    # The drift descriptors of each image, measured at request time (what monitoring compares).
    assert all(record["width"] == 28 and 0 <= record["brightness"] <= 1 for record in records), records[:2]
    assert rows["label"].tolist() == [item["label"] for item in response.json()]
    # Nothing of the pixels anywhere in the log: no record is longer than a hash and its numbers.
    longest = max(len(line) for path in (image_server.home / "predictions").glob("*.jsonl")
                  for line in path.read_text().splitlines())
    assert longest < 2000


def test_kept_images_are_the_served_bytes_once_each_and_never_a_refused_file(image_server, digits, bad_images) -> None:
    """``serving.keep_images``: each classified image is kept once, under its content hash, so that
    a feedback table can name it with its true label; what was refused is not kept."""
    from PIL import Image

    images = [content for _, content in digits[:3]]
    for request_id in ("keep-1", "keep-2"):  # the same images twice: still one file each
        response = image_server.post({"json": {"images": [b64(image) for image in images]}},
                                     headers={"X-Request-ID": request_id})
        assert response.status_code == 200, response.text
    kept = image_server.home / "predictions" / "images"
    for image in images:
        path = kept / f"{content_hash(image).split(':', 1)[1]}.png"
        assert path.read_bytes() == image
    files = sorted(kept.iterdir())
    assert len({path.name for path in files}) == len(files) and not any(path.name.startswith(".") for path in files)
    refused = {content_hash(data).split(":", 1)[1] for data, _ in bad_images.values()}
    assert not refused & {path.stem for path in files}
    for path in files:
        with Image.open(path) as opened:
            opened.verify()
