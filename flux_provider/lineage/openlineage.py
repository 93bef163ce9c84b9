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

from flux_provider.api.models import Flux2MaxInput, TaskInfo

Lineage = OperatorLineage[Dataset, RunFacet]
"""What the ``get_openlineage_facets_on_*`` methods return."""

GENERATION_FACET = "fluxGeneration"
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


def _inputs(request: Flux2MaxInput | None) -> list[Dataset]:
    datasets: list[Dataset] = []
    for url in (request.input_urls or []) if request is not None else []:
        named = dataset_name(url)
        if named is not None:
            datasets.append(InputDataset(namespace=named[0], name=named[1]))
    return datasets


def _outputs(result: Mapping[str, Any] | None) -> list[Dataset]:
    if result is None:
        return []
    stored: Sequence[Mapping[str, Any]] = result.get("stored") or []
    datasets: list[Dataset] = []
    for image in stored:
        named = dataset_name(str(image["location"]))
        if named is None:
            continue
        facets: dict[str, Any] = {
            "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                size=int(image["bytes"]), fileCount=1
            )
        }
        image_facet = FluxImageDatasetFacet(
            sha256=str(image["sha256"]), contentType=image.get("content_type")
        )
        datasets.append(
            OutputDataset(
                namespace=named[0],
                name=named[1],
                facets={IMAGE_FACET: image_facet},
                outputFacets=facets,
            )
        )
    if stored:
        return datasets
    for url in result.get("result_urls") or []:
        named = dataset_name(str(url))
        if named is not None:
            datasets.append(OutputDataset(namespace=named[0], name=named[1]))
    return datasets


def _generation_facet(
    request: Flux2MaxInput | None,
    model: str | None,
    task: TaskInfo | None,
    reattached: bool | None,
) -> FluxGenerationRunFacet | None:
    """The generation's run facet, or ``None`` when nothing about it is known."""
    asked: dict[str, Any] = {}
    if request is not None:
        inline = sum(1 for url in request.input_urls or [] if dataset_name(url) is None)
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
    model: str | None = None,
    flux_task_id: str | None = None,
    api_base_url: str | None = None,
    result: Mapping[str, Any] | None = None,
    reattached: bool | None = None,
    failure_message: str | None = None,
) -> Lineage:
    """The datasets and facets of one generation, from what the task knows at that point.

    :param request: the validated input (``None`` when unknown or invalid).
    :param model: the API model name.
    :param flux_task_id: the API's task id, once submitted or re-attached.
    :param api_base_url: where the API was reached (the external query's source).
    :param result: the delivered result dict (``TaskInfo`` summary plus ``stored``).
    :param reattached: whether the try re-attached instead of submitting.
    :param failure_message: why the try failed (``errorMessage``).
    """
    task = TaskInfo.model_validate(result) if result is not None else None
    run_facets: dict[str, RunFacet] = {}
    generation = _generation_facet(request, model, task, reattached)
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
    return OperatorLineage(inputs=_inputs(request), outputs=_outputs(result), run_facets=run_facets)


def built_api_base_url(operator: object) -> str | None:
    """The API base URL of the operator's client if this process already built it.

    Never reads the connection: lineage runs after the task, possibly in a
    forked process, and must not ask Airflow for anything.
    """
    # ``hook`` and ``client`` are cached properties: built ones sit in the instance dicts.
    hook = vars(operator).get("hook")
    client = vars(hook).get("client") if hook is not None else None
    config = getattr(client, "config", None)
    base_url = getattr(config, "base_url", None)
    return base_url if isinstance(base_url, str) else None
