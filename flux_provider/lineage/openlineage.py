"""OpenLineage for a generation: the reference images in, the images out, and the run between.

Imported only from the ``get_openlineage_facets_on_*`` methods of the
operator and the sensor, so the provider needs
``apache-airflow-providers-openlineage`` only where lineage is collected.

- Inputs: each http(s) reference image, namespace ``scheme://host[:port]``,
  name its path (query strings are dropped: they may hold signatures).
  ``data:`` URIs name nothing: they are counted in the run facet's
  ``inlineReferenceImages`` instead.
- Outputs: each stored copy, named as OpenLineage names files and object
  stores (``file`` + absolute path, ``s3://bucket`` + key, ``gs://bucket`` +
  key, ...), with its size (``outputStatistics``) and SHA-256 (``fluxImage``);
  without stored copies, the result URLs.
- Run facets: ``externalQuery`` (the API's task id, the API base URL),
  ``fluxGeneration`` (what was asked and what it cost; a hash of the prompt,
  never the prompt) and, on failure, ``errorMessage``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.event_v2 import Dataset, InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    error_message_run,
    external_query_run,
    output_statistics_output_dataset,
)

from flux_provider.api.downloads import StoredImage
from flux_provider.api.models import Flux2MaxInput, TaskInfo
from flux_provider.api.results import GenerationResult, MalformedResultError

Lineage = OperatorLineage[Dataset, RunFacet]
"""What the ``get_openlineage_facets_on_*`` methods return."""

GENERATION_FACET = "fluxGeneration"
BATCH_FACET = "fluxBatch"
IMAGE_FACET = "fluxImage"

_BUCKET_SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "s3n": "s3",
    "gs": "gs",
    "gcs": "gs",
    "abfs": "abfs",
    "abfss": "abfss",
    "wasb": "wasb",
    "wasbs": "wasbs",
    "az": "az",
}
"""Object stores whose dataset name is the object key (no leading ``/``), with
OpenLineage's spelling of the scheme (``gcs://`` is ``gs://``)."""

_AZURE_SCHEMES = frozenset({"abfs", "abfss", "wasb", "wasbs"})


@attrs.define
class FluxGenerationRunFacet(RunFacet):
    """What one FLUX.2 [max] generation was asked for, and what it cost.

    ``promptSha256`` is the SHA-256 of the rendered prompt (UTF-8): prompts can
    be sensitive, so the text itself is never emitted.
    """

    model: str | None = None
    promptSha256: str | None = None  # noqa: N815
    seed: int | None = None
    aspectRatio: str | None = None  # noqa: N815
    resolution: str | None = None
    inlineReferenceImages: int | None = None  # noqa: N815
    """``data:`` URI reference images, which are not datasets."""
    createdAt: str | None = None  # noqa: N815
    completedAt: str | None = None  # noqa: N815
    durationSeconds: float | None = None  # noqa: N815
    credits: float | None = None
    reattached: bool | None = None
    """Whether this try re-attached to an earlier try's task instead of submitting."""


@attrs.define
class FluxBatchRunFacet(RunFacet):
    """What one batch of FLUX.2 [max] generations made, and what it cost."""

    model: str | None = None
    items: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    credits: float | None = None


@attrs.define
class FluxImageDatasetFacet(DatasetFacet):
    """The content of one stored image (its size is in ``outputStatistics``)."""

    sha256: str
    contentType: str | None = None  # noqa: N815


def _authority(scheme: str, netloc: str) -> str:
    """The location's host part without credentials or an Airflow ``conn_id@`` prefix.

    Azure's ``container@account.dfs.core.windows.net`` is kept whole: OpenLineage
    names its namespaces so.
    """
    names = netloc.split("@")
    if scheme in _AZURE_SCHEMES and len(names) > 1 and names[-1].endswith(".windows.net"):
        return f"{names[-2]}@{names[-1]}"
    return names[-1]


def dataset_name(url: str) -> tuple[str, str] | None:
    """OpenLineage ``(namespace, name)`` of a file, object-store or http(s) location.

    ``None`` for ``data:`` URIs and for text that names no location. Credentials
    in the authority (``user:secret@``, or an Airflow ``conn_id@``) are dropped,
    and so are query strings and fragments.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    authority = _authority(scheme, parts.netloc)
    if scheme in ("", "file"):
        path = unquote(parts.path)
        if not path.startswith("/"):
            return None
        remote = authority and authority.lower() != "localhost"
        return (f"file://{authority}" if remote else "file"), path
    if scheme == "data" or not authority:
        return None
    if scheme in _BUCKET_SCHEMES:
        key = parts.path.lstrip("/")
        return (f"{_BUCKET_SCHEMES[scheme]}://{authority}", key) if key else None
    return f"{scheme}://{authority}", parts.path or "/"


def _iso(epoch_seconds: float | None) -> str | None:
    if epoch_seconds is None:
        return None
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat()


def _inputs(references: Sequence[str]) -> list[Dataset]:
    """Each distinct reference image, in order (as given: ``s3://…``, https, a path…)."""
    named = {name: None for url in references if (name := dataset_name(url)) is not None}
    return [InputDataset(namespace=namespace, name=name) for namespace, name in named]


def references_of(value: object) -> list[str]:
    """The reference images an ``input_urls`` value names, as text (anything else: none)."""
    return [str(item) for item in value] if isinstance(value, (list, tuple)) else []


def _stored_output(image: StoredImage) -> Dataset | None:
    named = dataset_name(image.location)
    if named is None:
        return None
    statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        size=image.bytes, fileCount=1
    )
    return OutputDataset(
        namespace=named[0],
        name=named[1],
        facets={IMAGE_FACET: FluxImageDatasetFacet(image.sha256, image.content_type)},
        outputFacets={"outputStatistics": statistics},
    )


def _outputs(result: GenerationResult | None) -> list[Dataset]:
    """The stored copies; without any, the result URLs."""
    if result is None:
        return []
    if result.stored:
        return [d for d in map(_stored_output, result.stored) if d is not None]
    named = [dataset_name(url) for url in result.result_urls]
    return [OutputDataset(namespace=n[0], name=n[1]) for n in named if n is not None]


def _generation_facet(
    request: Flux2MaxInput | None,
    references: Sequence[str],
    model: str | None,
    task: TaskInfo | None,
    reattached: bool | None,
) -> FluxGenerationRunFacet | None:
    """The generation's run facet, or ``None`` when nothing about it is known."""
    asked: dict[str, Any] = {}
    if request is not None:
        inline = sum(1 for url in references if dataset_name(url) is None)
        asked = {
            "promptSha256": hashlib.sha256(request.prompt.encode()).hexdigest(),
            "seed": request.seed,
            "aspectRatio": request.aspect_ratio,
            "resolution": request.resolution,
            "inlineReferenceImages": inline or None,
        }
    made: dict[str, Any] = {}
    if task is not None:
        made = {
            "createdAt": _iso(task.created_at),
            "completedAt": _iso(task.completed_at),
            "durationSeconds": task.duration_s,
            "credits": task.credits,
        }
    fields = {"model": model, "reattached": reattached, **asked, **made}
    if all(value is None for value in fields.values()):
        return None
    return FluxGenerationRunFacet(**fields)


def generation_lineage(
    *,
    request: Flux2MaxInput | None = None,
    references: Sequence[str] = (),
    model: str | None = None,
    flux_task_id: str | None = None,
    api_base_url: str | None = None,
    result: GenerationResult | None = None,
    reattached: bool | None = None,
    failure_message: str | None = None,
) -> Lineage:
    """The datasets and facets of one generation, from what the task knows at that point.

    :param request: the validated input (``None`` when unknown or invalid).
    :param references: the reference images as the task named them (before stored ones were
        read and sent as ``data:`` URIs).
    :param model: the API model name.
    :param flux_task_id: the API's task id, once submitted or re-attached.
    :param api_base_url: where the API was reached (the external query's source).
    :param result: the delivered result.
    :param reattached: whether the try re-attached instead of submitting.
    :param failure_message: why the try failed (``errorMessage``).
    """
    task = result.task if result is not None else None
    run_facets: dict[str, RunFacet] = {}
    generation = _generation_facet(request, references, model, task, reattached)
    if generation is not None:
        run_facets[GENERATION_FACET] = generation
    flux_task_id = task.flux_task_id if task is not None else flux_task_id
    if flux_task_id is not None and api_base_url is not None:
        run_facets["externalQuery"] = external_query_run.ExternalQueryRunFacet(
            externalQueryId=flux_task_id, source=api_base_url.rstrip("/")
        )
    if failure_message is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=failure_message, programmingLanguage="python"
        )
    return OperatorLineage(
        inputs=_inputs(references), outputs=_outputs(result), run_facets=run_facets
    )


def built_api_base_url(operator: object) -> str | None:
    """The API base URL of the operator's hook if this process already read its connection.

    Never reads the connection: lineage runs after the task, possibly in a
    forked process, and must not ask Airflow for anything.
    """
    # ``hook`` is a cached property: a built one sits in the instance's dict.
    hook = vars(operator).get("hook")
    built_base_url = getattr(hook, "built_base_url", None)
    return built_base_url() if callable(built_base_url) else None


def batch_lineage(
    *,
    requests: Sequence[Flux2MaxInput],
    references: Sequence[str] = (),
    model: str | None = None,
    result: Mapping[str, Any] | None = None,
    failure_message: str | None = None,
) -> Lineage:
    """The datasets and facets of a batch: every reference image in, every stored image out.

    :param requests: every item's validated input (empty when unknown or invalid).
    :param references: every reference image the items name, as they named them.
    :param result: the batch's return value (``{"items": [...], ...}``), once delivered.
    """
    outputs: list[Dataset] = []
    for item in (result or {}).get("items") or []:
        if item.get("state") != "success":
            continue
        try:
            generated = GenerationResult.from_xcom(item)
        except MalformedResultError:
            continue
        outputs.extend(_outputs(generated))
    run_facets: dict[str, RunFacet] = {
        BATCH_FACET: FluxBatchRunFacet(
            model=model,
            items=len(requests) or None,
            succeeded=(result or {}).get("succeeded"),
            failed=(result or {}).get("failed"),
            credits=(result or {}).get("credits"),
        )
    }
    if failure_message is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=failure_message, programmingLanguage="python"
        )
    return OperatorLineage(inputs=_inputs(references), outputs=outputs, run_facets=run_facets)
