"""The bad-input catalogue: one table, each row end to end through the operator.

Every row is rejected before any HTTP request (the fake API, registered as the
connection, sees none) with a message naming the field and what is allowed.
Rows marked ``PARSE`` fail when the operator is built, that is when Airflow
parses the DAG file (also proven through a real ``DagBag``, whose import
errors carry the message); ``RUN`` rows hold templated fields, known only
once rendered, or connection fields, read only when the task runs: they are
rendered with Airflow's template machinery and executed, and must fail with
``AirflowFailException`` (no retry can help) or the connection's ``ValueError``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from flux_provider.api.models import MAX_PROMPT_CHARS
from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.testing import FakeFluxServer, render_image
from tests.support.airflow import FakeTI, task_context
from tests.support.security import KEY

Stage = Literal["parse", "run"]
PARSE: Stage = "parse"
RUN: Stage = "run"


@dataclass(frozen=True)
class Bad:
    """One malformed input: the operator arguments (or connection fields) and the verdict."""

    id: str
    stage: Stage
    param: str
    allowed: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    connection: dict[str, Any] | None = None


def _urls(count: int) -> list[str]:
    return [f"https://img.example/{index}.png" for index in range(count)]


PNG_BASE64 = base64.b64encode(render_image("reference", 1, "1:1")).decode()
DATA_PNG = f"data:image/png;base64,{PNG_BASE64}"


CATALOGUE: list[Bad] = [
    # -- caught when the DAG is parsed --------------------------------------------------
    Bad("aspect-ratio-16x9", PARSE, "aspect_ratio", "W:H such as", {"aspect_ratio": "16x9"}),
    Bad("aspect-ratio-0:1", PARSE, "aspect_ratio", "'16:9'", {"aspect_ratio": "0:1"}),
    Bad("aspect-ratio-word", PARSE, "aspect_ratio", "'auto'", {"aspect_ratio": "wide"}),
    Bad("aspect-ratio-empty", PARSE, "aspect_ratio", "'1:1'", {"aspect_ratio": ""}),
    Bad("resolution-8K", PARSE, "resolution", "'1K' or '2K'", {"resolution": "8K"}),
    Bad("resolution-lowercase", PARSE, "resolution", "'1K' or '2K'", {"resolution": "1k"}),
    Bad("seed-negative", PARSE, "seed", "greater than or equal to 0", {"seed": -1}),
    Bad("seed-float", PARSE, "seed", "valid integer", {"seed": 1.5}),
    Bad("seed-string", PARSE, "seed", "valid integer", {"seed": "7"}),
    Bad("seed-bool", PARSE, "seed", "valid integer", {"seed": True}),
    Bad("seed-over-32-bits", PARSE, "seed", "less than or equal to 4294967295", {"seed": 2**32}),
    Bad("model-wrong-name", PARSE, "model", "'flux-2-max'", {"model": "flux-2-pro"}),
    Bad("poll-interval-zero", PARSE, "poll_interval", "> 0", {"poll_interval": 0}),
    Bad("poll-interval-negative", PARSE, "poll_interval", "> 0", {"poll_interval": -2.5}),
    Bad("poll-interval-nan", PARSE, "poll_interval", "> 0", {"poll_interval": math.nan}),
    Bad("timeout-zero", PARSE, "timeout", "> 0", {"timeout": 0}),
    Bad("timeout-negative", PARSE, "timeout", "> 0", {"timeout": -60}),
    Bad(
        "max-errors-negative",
        PARSE,
        "max_consecutive_errors",
        ">= 0",
        {"max_consecutive_errors": -1},
    ),
    Bad("max-download-bytes-zero", PARSE, "max_download_bytes", "> 0", {"max_download_bytes": 0}),
    *(
        Bad(f"{name.replace('_', '-')}-{label}", PARSE, name, ">= 0", {name: value})
        for name in ("min_balance", "max_credits")
        for label, value in (
            ("negative", -1),
            ("nan", math.nan),
            ("infinite", math.inf),
            ("string", "100"),
            ("list", [100]),
        )
    ),
    # -- templated fields: rendered, then rejected before the create request ------------
    Bad("prompt-empty", RUN, "prompt", "at least 1 character", {"prompt": ""}),
    Bad("prompt-whitespace", RUN, "prompt", "must not be blank", {"prompt": " \n\t "}),
    Bad("prompt-renders-blank", RUN, "prompt", "must not be blank", {"prompt": "{{ '   ' }}"}),
    Bad(
        "prompt-over-the-limit",
        RUN,
        "prompt",
        f"at most {MAX_PROMPT_CHARS} characters",
        {"prompt": "x" * (MAX_PROMPT_CHARS + 1)},
    ),
    Bad("prompt-not-a-string", RUN, "prompt", "valid string", {"prompt": 42}),
    Bad("nine-input-urls", RUN, "input_urls", "at most 8 items", {"input_urls": _urls(9)}),
    Bad(
        "input-url-file-not-an-image",
        RUN,
        "input_urls[0]",
        "PNG, JPEG, WebP or GIF",
        {"input_urls": ["file:///etc/passwd"]},
    ),
    Bad(
        "input-url-javascript",
        RUN,
        "input_urls[1]",
        "http(s) URL, a data: URI or a storage location",
        {"input_urls": [*_urls(1), "javascript:alert(1)"]},
    ),
    Bad(
        "input-url-missing-path",
        RUN,
        "input_urls[0]",
        "does not exist",
        {"input_urls": ["/images/a.png"]},
    ),
    Bad(
        "input-url-scheme-relative",
        RUN,
        "input_urls[0]",
        "does not exist",
        {"input_urls": ["//img.example/a.png"]},
    ),
    *(
        Bad(
            f"input-url-{label}",
            RUN,
            "input_urls[0]",
            "data:image/...;base64, URI",
            {"input_urls": [uri]},
        )
        for label, uri in (
            ("data-text-plain", f"data:text/plain;base64,{PNG_BASE64}"),
            ("data-html", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
            ("data-image-not-base64", "data:image/png,raw-bytes"),
            ("data-image-bad-base64", "data:image/png;base64,!!not*base64!!"),
            ("data-image-empty", "data:image/png;base64,"),
            ("data-no-type", f"data:;base64,{PNG_BASE64}"),
            ("data-image-no-subtype", f"data:image/;base64,{PNG_BASE64}"),
            ("data-uppercase-not-an-image", f"DATA:TEXT/plain;base64,{PNG_BASE64}"),
        )
    ),
    Bad(
        "input-url-data-second-of-two",
        RUN,
        "input_urls[1]",
        "data:image/...;base64, URI",
        {"input_urls": [DATA_PNG, "data:application/pdf;base64,JVBERi0xLjQK"]},
    ),
    Bad(
        "img-urls-in-extra-input-and-input-urls",
        RUN,
        "img_urls",
        "give the reference images once, as input_urls",
        {"input_urls": _urls(1), "extra_input": {"img_urls": _urls(1)}},
    ),
    Bad(
        "img-urls-in-extra-input-file-url",
        RUN,
        "input_urls[0]",
        "absolute http(s) URL",
        {"extra_input": {"img_urls": ["file:///etc/passwd"]}},
    ),
    Bad(
        "img-urls-in-extra-input-nine",
        RUN,
        "input_urls",
        "at most 8 items",
        {"extra_input": {"img_urls": _urls(9)}},
    ),
    Bad(
        "prompt-blank-with-credit-checks",
        RUN,
        "prompt",
        "must not be blank",
        {"prompt": "   ", "min_balance": 1, "max_credits": 100},
    ),
    Bad(
        "input-urls-renders-to-a-string",
        RUN,
        "input_urls",
        "valid list",
        {"input_urls": "{{ 'https://img.example/a.png' }}"},
    ),
    Bad(
        "safety-tolerance-6",
        RUN,
        "safety_tolerance",
        "less than or equal to 5",
        {"extra_input": {"safety_tolerance": 6}},
    ),
    Bad(
        "safety-tolerance-renders-to-a-string",
        RUN,
        "safety_tolerance",
        "valid integer",
        {"extra_input": {"safety_tolerance": "{{ 2 }}"}},
    ),
    Bad(
        "seed-renders-to-a-string",
        RUN,
        "seed",
        "valid integer",
        {"extra_input": {"seed": "{{ 7 }}"}},
    ),
    Bad(
        "output-format-bmp",
        RUN,
        "output_format",
        "'png'",
        {"extra_input": {"output_format": "bmp"}},
    ),
    Bad(
        "extra-field-a-set",
        RUN,
        "style",
        "not JSON-serialisable",
        {"extra_input": {"style": {1, 2}}},
    ),
    Bad(
        "extra-field-nan",
        RUN,
        "guidance",
        "not JSON-serialisable",
        {"extra_input": {"guidance": math.nan}},
    ),
    Bad(
        "extra-input-renders-to-a-string",
        RUN,
        "extra_input",
        "mapping",
        {"extra_input": "{{ 'x' }}"},
    ),
    Bad(
        "callback-url-not-a-url",
        RUN,
        "callback_url",
        "absolute http(s) URL",
        {"callback_url": "not a url"},
    ),
    Bad(
        "callback-url-file",
        RUN,
        "callback_url",
        "absolute http(s) URL",
        {"callback_url": "file:///tmp/hook"},
    ),
    # -- the connection: read when the task runs ----------------------------------------
    Bad("connection-password-empty", RUN, "api_key", "password", connection={"password": ""}),
    Bad("connection-password-blank", RUN, "api_key", "password", connection={"password": "  "}),
    Bad("connection-password-missing", RUN, "api_key", "password", connection={"password": None}),
    Bad(
        "base-url-ftp",
        RUN,
        "base_url",
        "absolute http(s) URL such as 'https://api.crun.ai'",
        connection={"host": "ftp://api.flux.example"},
    ),
    Bad(
        "base-url-scheme-only",
        RUN,
        "base_url",
        "absolute http(s) URL",
        connection={"host": "https://"},
    ),
    Bad(
        "base-url-space-in-host",
        RUN,
        "base_url",
        "invalid host name",
        connection={"host": "https://api flux.example"},
    ),
    Bad(
        "base-url-bad-port",
        RUN,
        "base_url",
        "absolute http(s) URL",
        connection={"host": "https://api.flux.example:99999"},
    ),
    Bad(
        "base-url-with-credentials",
        RUN,
        "base_url",
        "without credentials",
        connection={"host": "https://user:hunter2@api.flux.example"},
    ),
    Bad(
        "base-url-with-query",
        RUN,
        "base_url",
        "without a query",
        connection={"host": "https://api.flux.example/?key=x"},
    ),
    Bad(
        "base-url-plain-http-remote",
        RUN,
        "base_url",
        "allow_insecure_http",
        connection={"host": "http://api.flux.example"},
    ),
    Bad(
        "connection-timeout-zero",
        RUN,
        "timeout",
        "> 0 seconds",
        connection={"extra": {"timeout": "0"}},
    ),
    Bad(
        "connection-timeout-infinite",
        RUN,
        "timeout",
        "finite",
        connection={"extra": {"timeout": "inf"}},
    ),
    Bad(
        "connection-create-path-relative",
        RUN,
        "create_path",
        "start with '/'",
        connection={"extra": {"create_path": "api/v1/client/job/CreateTask"}},
    ),
    Bad(
        "connection-balance-path-relative",
        RUN,
        "balance_path",
        "start with '/'",
        kwargs={"min_balance": 1},
        connection={"extra": {"balance_path": "api/v1/client/account/balance"}},
    ),
    Bad(
        "connection-header-name-blank",
        RUN,
        "auth_header",
        "'x-api-key'",
        connection={"extra": {"header_name": "   "}},
    ),
]

GOOD = {"task_id": "generate", "prompt": "a watercolour fox", "poll_interval": 0.05}


def _operator(case: Bad) -> FluxGenerateImageOperator:
    """The operator as a DAG file would declare it."""
    with DAG(dag_id=f"bad_{case.stage}", schedule=None, start_date=datetime(2026, 1, 1)):
        return FluxGenerateImageOperator(**{**GOOD, "deferrable": True, **case.kwargs})


def _use_connection(fake: FakeFluxServer, case: Bad, monkeypatch: pytest.MonkeyPatch) -> None:
    connection: dict[str, Any] = {"conn_type": "flux", "host": fake.base_url, "password": KEY}
    connection.update(case.connection or {})
    connection = {key: value for key, value in connection.items() if value is not None}
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", json.dumps(connection))


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.id for case in CATALOGUE])
def test_bad_input_is_rejected_before_any_request_naming_field_and_allowed_values(
    fake_api: FakeFluxServer, monkeypatch: pytest.MonkeyPatch, case: Bad
) -> None:
    _use_connection(fake_api, case, monkeypatch)
    error: BaseException
    if case.stage == PARSE:
        with pytest.raises(ValueError, match=re.escape(case.param)) as parse_info:
            _operator(case)
        error = parse_info.value
    else:
        operator = _operator(case)
        ti = FakeTI()
        context = task_context(ti)
        operator.render_template_fields(context)
        with pytest.raises(AirflowFailException) as run_info:
            operator.execute(context)
        error = run_info.value
        assert "flux_task_id" not in ti.xcoms
    message = str(error)
    assert case.param in message, message
    assert case.allowed in message, message
    assert KEY not in message
    assert fake_api.stats.requests == []


def test_the_catalogue_covers_the_issue() -> None:
    """At least 25 rows, each kind the issue names, and no duplicate ids."""
    ids = [case.id for case in CATALOGUE]
    assert len(ids) == len(set(ids))
    assert len(CATALOGUE) >= 25
    parse = sum(case.stage == PARSE for case in CATALOGUE)
    print(f"\nbad inputs: {len(CATALOGUE)} rows, {parse} fail at parse time")
    assert sum("data" in case.id for case in CATALOGUE) >= 8
    fields = {case.param.split("[")[0] for case in CATALOGUE}
    assert fields >= {
        "min_balance",
        "max_credits",
        "img_urls",
        "prompt",
        "input_urls",
        "aspect_ratio",
        "resolution",
        "seed",
        "safety_tolerance",
        "model",
        "api_key",
        "base_url",
        "poll_interval",
        "timeout",
    }


def _python(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    return repr(value)


def test_parse_time_rows_are_import_errors_of_a_real_dagbag(tmp_path: Path) -> None:
    """The PARSE rows, each in a DAG file of its own, next to one good file."""
    from airflow.dag_processing.dagbag import DagBag

    parse_rows = [case for case in CATALOGUE if case.stage == PARSE]
    header = (
        "from datetime import datetime\n"
        "from airflow.sdk import DAG\n"
        "from flux_provider.operators.generate import FluxGenerateImageOperator\n"
    )
    files: dict[str, Bad] = {}
    for index, case in enumerate([*parse_rows, Bad("good", RUN, "", "")]):
        arguments = ", ".join(f"{k}={_python(v)}" for k, v in {**GOOD, **case.kwargs}.items())
        source = (
            f"{header}\nwith DAG(dag_id='file_{index}', schedule=None, "
            f"start_date=datetime(2026, 1, 1)):\n"
            f"    FluxGenerateImageOperator({arguments})\n"
        )
        path = tmp_path / f"dag_{index:02d}.py"
        path.write_text(source)
        files[str(path)] = case

    bag = DagBag(dag_folder=tmp_path, safe_mode=False)

    errors = {str(tmp_path / Path(name).name): text for name, text in bag.import_errors.items()}
    for file_name, case in files.items():
        if case.id == "good":
            assert file_name not in errors
            continue
        assert file_name in errors, f"{case.id} parsed without error"
        assert case.param in errors[file_name]
        assert case.allowed in errors[file_name]
    assert bag.dag_ids == [f"file_{len(parse_rows)}"]


@pytest.mark.parametrize(
    "references",
    [
        {"input_urls": [DATA_PNG]},
        {"input_urls": [DATA_PNG, "data:image/jpeg;base64,/9j/4AAQSkZJRg==", *_urls(1)]},
        {"input_urls": ["data:image/webp;base64,UklGRhoAAABXRUJQ\nVlA4IA4AAAAwAQCdASoBAAEAAQ=="]},
        {"extra_input": {"img_urls": [DATA_PNG]}},
        {"input_urls": [f"DATA:Image/png;base64,{PNG_BASE64}"]},
    ],
    ids=[
        "png",
        "png-jpeg-and-url",
        "webp-with-line-break",
        "img-urls-in-extra-input",
        "scheme-in-any-case",
    ],
)
def test_valid_data_image_uris_are_accepted_and_sent_as_img_urls(
    fake_api: FakeFluxServer, references: dict[str, Any]
) -> None:
    """Positive control of the data-URI rows: well-formed ones reach the API untouched."""
    expected = references.get("input_urls") or references["extra_input"]["img_urls"]
    with DAG(dag_id="good_data_uris", schedule=None, start_date=datetime(2026, 1, 1)):
        operator = FluxGenerateImageOperator(
            **{**GOOD, "deferrable": False, "wait_for_completion": False, **references}
        )
    context = task_context()
    operator.render_template_fields(context)

    result = operator.execute(context)

    (task,) = fake_api.tasks.values()
    assert task.flux_task_id == result["flux_task_id"]
    assert task.input["img_urls"] == expected
    assert "input_urls" not in task.input
    assert fake_api.stats.create_requests == 1


def test_a_refused_reference_image_is_not_echoed_whole(
    fake_api: FakeFluxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5 MB refused reference (not an image type): the error stays a log line, not 5 MB."""
    _use_connection(fake_api, Bad("good", RUN, "", ""), monkeypatch)
    huge = "DATA:text/plain;base64," + "A" * (5 << 20)
    operator = _operator(Bad("huge", RUN, "", "", {"input_urls": [huge]}))
    with pytest.raises(AirflowFailException, match=re.escape("input_urls[0]")) as info:
        operator.execute(task_context())
    assert fake_api.stats.requests == []
    assert len(str(info.value)) < 10_000


@pytest.mark.parametrize("name", ["min_balance", "max_credits"])
def test_a_bool_is_not_a_credit_limit(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _operator(Bad("bool", PARSE, name, "", {name: True}))
